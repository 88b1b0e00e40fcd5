// Matrix-vector product for one token: y[row0 + r] = dot(W[r], x) for each row r
// of the weight chunk.
//
// Each invocation serves ROWS rows and every LANES-th block of 32 columns: it
// loads a block of x into registers once and uses it for all of its rows. With
// LANES > 1 (GPUs: neighbouring invocations read neighbouring blocks) the LANES
// partial sums of a row are then added in workgroup memory. With LANES = 1 (CPU
// adapters: src/gpu/kernels.rs, KernelShapes) an invocation walks whole rows,
// every invocation at the same block at once, and writes its sums itself.
// Loads, not arithmetic, bound this kernel on CPU adapters such as lavapipe, so
// reusing x across rows is what matters there, and x comes through a uniform
// binding: lavapipe serves a uniform load as one gather, where a storage load is
// repeated lane by lane with bounds checks (about twice the cost per value).

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    y_stride: u32, // elements between token rows of y (unused here: one token)
}

// The longest x the uniform binding holds (64 KiB, WebGPU's least limit).
const MAX_COLS: u32 = 16384u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
// binding 2 is x as a storage array, which matmul.wgsl reads; this kernel reads
// the first token row of the same buffer through binding 4
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // [rows of the whole tensor]
@group(0) @binding(4) var<uniform> x: array<vec4<f32>, MAX_COLS / 4u>; // [cols]

// With GLU, y already holds the gate projection, this product is the up
// projection, and what is stored is SwiGLU's silu(gate) * up, where
// silu(g) = g / (1 + e^-g): the feed-forward's activation needs no pass of its own.
override GLU: bool = false;

fn store(i: u32, value: f32) {
    if GLU {
        let gate = y[i];
        y[i] = gate / (1.0 + exp(-gate)) * value;
    } else {
        y[i] = value;
    }
}

// Invocations that share a row: 8 or 1, chosen per adapter.
override LANES: u32 = 8u;
const ROWS: u32 = 4u;
// [invocation][row of the invocation]
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let lane = lid % LANES;
    let first_row = ((wid.x + wid.y * groups.x) * (64u / LANES) + lid / LANES) * ROWS;

    // (no test of first_row around the loop: with LANES = 1 every invocation
    // then takes it in step, and a CPU adapter reads each block of x once for
    // all of its lanes)
    var acc = vec4<f32>();
    for (var b = lane; b < chunk.cols / 32u; b += LANES) {
        var xb: Block;
        var x_sum = 0.0;
        for (var i = 0u; i < 8u; i++) {
            xb[i] = x[b * 8u + i];
            x_sum += xb[i].x + xb[i].y + xb[i].z + xb[i].w;
        }
        for (var r = 0u; r < ROWS; r++) {
            if first_row + r < chunk.rows {
                acc[r] += dot_block(first_row + r, b, &xb, x_sum);
            }
        }
    }
    if LANES == 1u {
        for (var r = 0u; r < ROWS; r++) {
            if first_row + r < chunk.rows {
                store(chunk.row0 + first_row + r, acc[r]);
            }
        }
        return;
    }
    for (var r = 0u; r < ROWS; r++) {
        partial[lid * ROWS + r] = acc[r];
    }
    workgroupBarrier();

    if lane == 0u {
        for (var r = 0u; r < ROWS; r++) {
            if first_row + r < chunk.rows {
                var total = 0.0;
                for (var l = 0u; l < LANES; l++) {
                    total += partial[(lid + l) * ROWS + r];
                }
                store(chunk.row0 + first_row + r, total);
            }
        }
    }
}

// Matrix-vector product for one token: y[row0 + r] = dot(W[r], x) for each row r
// of the weight chunk.
//
// Each invocation serves ROWS rows and every LANES-th block of 32 columns: it
// loads a block of x into registers once and uses it for all of its rows. The
// LANES partial sums of a row are then added in workgroup memory. Loads, not
// arithmetic, bound this kernel on CPU adapters such as lavapipe, so reusing x
// across rows is what matters there.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    x_from_last: u32, // 1: x is the step's last token row of a [n_tokens, cols] buffer
    y_stride: u32,    // elements between token rows of y (unused here: one token)
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;       // [n_tokens, cols]
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // [rows of the whole tensor]

const LANES: u32 = 8u;
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
    var x_base = 0u;
    if params.x_from_last == 1u {
        x_base = (step.n_tokens - 1u) * chunk.cols;
    }

    var acc = vec4<f32>();
    if first_row < chunk.rows {
        for (var b = lane; b < chunk.cols / 32u; b += LANES) {
            var xb: Block;
            var x_sum = 0.0;
            for (var i = 0u; i < 8u; i++) {
                let at = x_base + b * 32u + 4u * i;
                xb[i] = vec4<f32>(x[at], x[at + 1u], x[at + 2u], x[at + 3u]);
                x_sum += xb[i].x + xb[i].y + xb[i].z + xb[i].w;
            }
            for (var r = 0u; r < ROWS; r++) {
                if first_row + r < chunk.rows {
                    acc[r] += dot_block(first_row + r, b, &xb, x_sum);
                }
            }
        }
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
                y[chunk.row0 + first_row + r] = total;
            }
        }
    }
}

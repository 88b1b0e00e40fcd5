// Matrix-vector product for one token: y[row0 + r] = dot(W[r], x) for each row r
// of the weight chunk, stored as shaders/product.wgsl's `finish` says.
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
//
// With NORM, x is the residual stream and the product is of its RMSNorm,
// x / sqrt(mean(x^2) + eps) * weight: a decode step then needs no norm pass.
// The product multiplies each block of x by the norm's weights as it loads it,
// adds up the squares of x on the way (every block passes through some lane of
// the row), and scales its sums by 1 / rms at the end.

override NORM: bool = false;
@group(0) @binding(5) var<storage, read> norm_weight: array<vec4<f32>>; // [cols / 4]

// 1 / sqrt(mean(x^2) + eps), from the sum of x's squares; 1 without NORM.
fn inverse_rms(squares: f32) -> f32 {
    if !NORM {
        return 1.0;
    }
    return 1.0 / sqrt(squares / f32(chunk.cols) + params.eps);
}

// Invocations that share a row: 8 or 1, chosen per adapter.
override LANES: u32 = 8u;
const ROWS: u32 = 4u;
// Invocations per workgroup, chosen per adapter: at most 64.
override WORKGROUP: u32 = 64u;
// [invocation][row of the invocation]
var<workgroup> partial: array<f32, 256>;
// [invocation]: with NORM, the squares of x that each lane saw
var<workgroup> square_partial: array<f32, 64>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let lane = lid % LANES;
    let first_row = ((wid.x + wid.y * groups.x) * (WORKGROUP / LANES) + lid / LANES) * ROWS;

    // (no test of first_row around the loop: with LANES = 1 every invocation
    // then takes it in step, and a CPU adapter reads each block of x once for
    // all of its lanes)
    var acc = vec4<f32>();
    var squares = vec4<f32>();
    for (var b = lane; b < chunk.cols / 32u; b += LANES) {
        var xb: Block;
        var x_sum = 0.0;
        for (var i = 0u; i < 8u; i++) {
            xb[i] = x_row[b * 8u + i];
            if NORM {
                squares += xb[i] * xb[i];
                xb[i] *= norm_weight[b * 8u + i];
            }
            x_sum += xb[i].x + xb[i].y + xb[i].z + xb[i].w;
        }
        for (var r = 0u; r < ROWS; r++) {
            if first_row + r < chunk.rows {
                acc[r] += dot_block(first_row + r, b, &xb, x_sum);
            }
        }
    }
    let square_sum = squares.x + squares.y + squares.z + squares.w;
    if LANES == 1u {
        if first_row < chunk.rows {
            finish(0u, first_row, acc * inverse_rms(square_sum));
        }
        return;
    }
    for (var r = 0u; r < ROWS; r++) {
        partial[lid * ROWS + r] = acc[r];
    }
    if NORM {
        square_partial[lid] = square_sum;
    }
    workgroupBarrier();

    if lane == 0u && first_row < chunk.rows {
        var all_squares = 0.0;
        if NORM {
            for (var l = 0u; l < LANES; l++) {
                all_squares += square_partial[lid + l];
            }
        }
        var totals = vec4<f32>();
        for (var r = 0u; r < ROWS; r++) {
            for (var l = 0u; l < LANES; l++) {
                totals[r] += partial[(lid + l) * ROWS + r];
            }
        }
        finish(0u, first_row, totals * inverse_rms(all_squares));
    }
}

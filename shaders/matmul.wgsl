// Matrix-matrix product for a block of prompt tokens: Y[t, row0 + r] = dot(W[r], X[t]).
//
// Each invocation computes ROWS rows for TOKENS tokens. It walks the columns a
// block of 32 at a time: for each token it loads that block of X into registers
// once and uses it for all of its rows, so every weight is read once per
// TOKENS tokens and every activation once per ROWS rows.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    y_stride: u32, // elements between token rows of Y: the whole tensor's rows
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;       // [n_tokens, cols]
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // [n_tokens, y_stride]
// binding 4, x's first row as uniform, is matvec.wgsl's: one bind group serves both

const ROWS: u32 = 4u;
const TOKENS: u32 = 8u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first_row = (wid.x * 64u + lid) * ROWS;
    let t0 = wid.y * TOKENS;
    if first_row >= chunk.rows {
        return;
    }
    let tokens = min(TOKENS, step.n_tokens - t0);

    // [token of the tile][row of the invocation]
    var acc: array<vec4<f32>, TOKENS>;
    for (var b = 0u; b < chunk.cols / 32u; b++) {
        for (var tt = 0u; tt < tokens; tt++) {
            var xb: Block;
            var x_sum = 0.0;
            for (var i = 0u; i < 8u; i++) {
                let at = (t0 + tt) * chunk.cols + b * 32u + 4u * i;
                xb[i] = vec4<f32>(x[at], x[at + 1u], x[at + 2u], x[at + 3u]);
                x_sum += xb[i].x + xb[i].y + xb[i].z + xb[i].w;
            }
            for (var r = 0u; r < ROWS; r++) {
                if first_row + r < chunk.rows {
                    acc[tt][r] += dot_block(first_row + r, b, &xb, x_sum);
                }
            }
        }
    }

    for (var tt = 0u; tt < tokens; tt++) {
        for (var r = 0u; r < ROWS; r++) {
            if first_row + r < chunk.rows {
                y[(t0 + tt) * params.y_stride + chunk.row0 + first_row + r] = acc[tt][r];
            }
        }
    }
}

// Matrix-matrix product for a block of prompt tokens: Y[t, row0 + r] = dot(W[r], X[t]),
// stored as shaders/product.wgsl's `finish` says.
//
// Each invocation computes ROWS rows for TOKENS tokens. It walks the columns a
// block of 32 at a time: it dequantizes that block of each of its rows into
// registers once, then loads each token's block of X and uses it for all of its
// rows. So every weight is read and decoded once per TOKENS tokens and every
// activation loaded once per ROWS rows.

const ROWS: u32 = 4u;
// Tokens per invocation, chosen per adapter (src/gpu/kernels.rs, KernelShapes):
// more reuse of each decoded weight against more registers. At most MAX_TOKENS.
override TOKENS: u32 = 8u;
const MAX_TOKENS: u32 = 32u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first_row = (wid.x * 64u + lid) * ROWS;
    let t0 = wid.y * TOKENS;
    if first_row >= chunk.rows {
        return;
    }
    let tokens = min(TOKENS, step.n_tokens - t0);

    // [token of the tile][row of the invocation]
    var acc: array<vec4<f32>, MAX_TOKENS>;
    for (var b = 0u; b < chunk.cols / 32u; b++) {
        // the block of each row, dequantized; rows past the chunk repeat its
        // last row and are never written
        var w: array<Block, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            let row = min(first_row + r, chunk.rows - 1u);
            for (var g = 0u; g < 4u; g++) {
                let eight = load8(row, 4u * b + g);
                w[r][2u * g] = eight.lo;
                w[r][2u * g + 1u] = eight.hi;
            }
        }
        for (var tt = 0u; tt < tokens; tt++) {
            let at = ((t0 + tt) * chunk.cols + 32u * b) / 4u;
            var sums = vec4<f32>();
            for (var i = 0u; i < 8u; i++) {
                let xi = x[at + i];
                // one lane of `sums` per row: ROWS is 4
                sums += vec4<f32>(
                    dot(w[0][i], xi),
                    dot(w[1][i], xi),
                    dot(w[2][i], xi),
                    dot(w[3][i], xi),
                );
            }
            acc[tt] += sums;
        }
    }

    for (var tt = 0u; tt < tokens; tt++) {
        finish(t0 + tt, first_row, acc[tt]);
    }
}

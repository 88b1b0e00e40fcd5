// Matrix-matrix product for a block of prompt tokens: Y[t, row0 + r] = dot(W[r], X[t]),
// stored as shaders/product.wgsl's `finish` says.
//
// Each invocation computes ROWS rows for TOKENS tokens. It walks the columns a
// block of 32 at a time: it dequantizes that block of each of its rows into
// registers once, then loads each token's block of X and uses it for all of its
// rows. So every weight is read and decoded once per TOKENS tokens and every
// activation loaded once per ROWS rows.
//
// Rows and tokens per invocation are chosen per adapter (src/gpu/kernels.rs,
// KernelShapes): more reuse of each decoded weight and each loaded activation
// against more registers. ROWS is 4 or 8, its two quads of rows spelled out:
// lavapipe runs an array of sums indexed by a loop over the quads at 0.7 times
// the speed (prefill of 128 tokens: 47 against 67 tokens/s), and 16 rows at a
// third of it.
override ROWS: u32 = 4u;
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

    // [token of the tile]: the sums of rows 0-3, and of rows 4-7 with ROWS 8
    var acc: array<vec4<f32>, MAX_TOKENS>;
    var acc_hi: array<vec4<f32>, MAX_TOKENS>;
    for (var b = 0u; b < chunk.cols / 32u; b++) {
        // the block of each row, dequantized; rows past the chunk repeat its
        // last row and are never written
        var w: array<Block, 8>;
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
            // one lane of `sums` per row
            var sums = vec4<f32>();
            var sums_hi = vec4<f32>();
            for (var i = 0u; i < 8u; i++) {
                let xi = x[at + i];
                sums += vec4<f32>(
                    dot(w[0][i], xi),
                    dot(w[1][i], xi),
                    dot(w[2][i], xi),
                    dot(w[3][i], xi),
                );
                if ROWS == 8u {
                    sums_hi += vec4<f32>(
                        dot(w[4][i], xi),
                        dot(w[5][i], xi),
                        dot(w[6][i], xi),
                        dot(w[7][i], xi),
                    );
                }
            }
            acc[tt] += sums;
            acc_hi[tt] += sums_hi;
        }
    }

    for (var tt = 0u; tt < tokens; tt++) {
        finish(t0 + tt, first_row, acc[tt]);
        if ROWS == 8u {
            finish(t0 + tt, first_row + 4u, acc_hi[tt]);
        }
    }
}

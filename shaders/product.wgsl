// What matvec.wgsl and matmul.wgsl share, prepended to both after quant.wgsl:
// their group-0 bindings, and what a product does with the sums it finishes.
//
// One bind group layout serves both kernels, so one bind group per role serves
// a decode token and a prompt block alike: matvec reads x's first token row
// through the uniform window `x_row`, matmul every row through `x`.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    y_stride: u32, // elements between token rows of y: the whole tensor's rows
    eps: f32,      // RMSNorm's epsilon, for matvec.wgsl with NORM
    // With EPILOGUE == QKV: rows [0, q_rows) are the queries, then kv_rows of
    // keys and kv_rows of values, in heads of head_dim; the caches hold max_seq
    // positions.
    head_dim: u32,
    q_rows: u32,
    kv_rows: u32,
    max_seq: u32,
}

// The longest x the uniform window holds (64 KiB, WebGPU's least limit).
const MAX_COLS: u32 = 16384u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>; // [n_tokens, cols / 4]
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // [n_tokens, y_stride]
@group(0) @binding(4) var<uniform> x_row: array<vec4<f32>, MAX_COLS / 4u>; // x's row 0
// binding 5, RMSNorm's weights, is matvec.wgsl's
// With QKV: (cos, sin) of every position and pair of a head (src/forward.rs,
// rope_table), and the layer's caches, [kv heads, max_seq, head_dim] each.
@group(0) @binding(6) var<storage, read> rope_table: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(8) var<storage, read_write> v_cache: array<f32>;

// What is stored (src/gpu/kernels.rs, Epilogue):
const STORE: u32 = 0u;  // y = W x
const ADD: u32 = 1u;    // y += W x: the residual stream takes a projection in place
const SWIGLU: u32 = 2u; // y = silu(y) * W x, silu(g) = g / (1 + e^-g): with y
                        // holding the gate and W the up projection, the
                        // feed-forward's activation needs no pass of its own
const QKV: u32 = 3u;    // W stacks the Q, K and V projections: the queries are
                        // rotated (RoPE) into y, the keys rotated and the values
                        // copied into the caches at their positions
override EPILOGUE: u32 = STORE;
// With QKV: GGUF `llama` files rotate adjacent pairs (2i, 2i + 1) of a head,
// llama.cpp's converter having permuted the weights for it; NEOX models (qwen2,
// ...) rotate (i, i + head_dim / 2), and src/model/weights.rs reorders their Q
// and K rows at load so that those pairs are adjacent rows here too.
override NEOX: bool = false;

// Each element of y is stored by exactly one invocation, so the read-modify-write
// of ADD and SWIGLU races with nothing.
fn store(i: u32, value: f32) {
    if EPILOGUE == ADD {
        y[i] += value;
    } else if EPILOGUE == SWIGLU {
        let gate = y[i];
        y[i] = gate / (1.0 + exp(-gate)) * value;
    } else {
        y[i] = value;
    }
}

// The biases of the chunk's rows `row` .. `row + 3` (`row` a multiple of 4),
// zero without. src/gpu/matrix.rs starts them at a multiple of 4 words and pads
// them to a multiple of 4 rows.
fn biases(row: u32) -> vec4<f32> {
    if chunk.bias_offset == NO_BIAS {
        return vec4<f32>();
    }
    return bitcast<vec4<f32>>(quads[(chunk.bias_offset + row) / 4u]);
}

// Stores the sums of the chunk's rows `row` .. `row + 3` for token `t` of the
// step (`row` a multiple of 4; rows past the chunk are dropped).
fn finish(t: u32, row: u32, sums: vec4<f32>) {
    let values = sums + biases(row);
    if EPILOGUE == QKV {
        // (every part has an even number of rows, so pairs never straddle)
        if row < chunk.rows {
            finish_qkv_pair(t, chunk.row0 + row, values.x, values.y);
        }
        if row + 2u < chunk.rows {
            finish_qkv_pair(t, chunk.row0 + row + 2u, values.z, values.w);
        }
        return;
    }
    for (var r = 0u; r < 4u; r++) {
        if row + r < chunk.rows {
            store(t * params.y_stride + chunk.row0 + row + r, values[r]);
        }
    }
}

// With QKV: rows `row` and `row + 1` (`row` even) of the stacked projections,
// for token t: a query pair, a key pair or two values.
fn finish_qkv_pair(t: u32, row: u32, a: f32, b: f32) {
    let pos = step.pos0 + t;
    let head_dim = params.head_dim;
    let v_row0 = params.q_rows + params.kv_rows;
    if row >= v_row0 {
        let local = row - v_row0;
        let at = ((local / head_dim) * params.max_seq + pos) * head_dim + local % head_dim;
        v_cache[at] = a;
        v_cache[at + 1u] = b;
        return;
    }
    let is_key = row >= params.q_rows;
    let local = select(row, row - params.q_rows, is_key);
    let half_dim = head_dim / 2u;
    let i = (local % head_dim) / 2u; // the pair within its head
    let angle = rope_table[pos * half_dim + i];
    let first = a * angle.x - b * angle.y;
    let second = a * angle.y + b * angle.x;
    // where the pair's elements sit in their head
    let d0 = select(2u * i, i, NEOX);
    let d1 = select(2u * i + 1u, i + half_dim, NEOX);
    let head = local / head_dim;
    if is_key {
        let base = (head * params.max_seq + pos) * head_dim;
        k_cache[base + d0] = first;
        k_cache[base + d1] = second;
    } else {
        let base = t * params.q_rows + head * head_dim;
        y[base + d0] = first;
        y[base + d1] = second;
    }
}

// Rotary position embedding, in place, on query or key rows of the step's tokens.
// The angles come from a table made on the CPU in f64: table[pos][i] holds
// (cos, sin) of pos * base^(-2i / head_dim). GGUF `llama` files rotate adjacent
// pairs (2i, 2i + 1): llama.cpp's converter already permuted the Q/K weights for
// that. NEOX-style models (qwen2, ...) rotate (i, i + head_dim / 2) instead.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    n_heads: u32,  // heads in each token row
    head_dim: u32, // elements per head
}

// true: rotate the halves of a head (NEOX); false: adjacent pairs.
override NEOX: bool = false;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>; // [max_seq, head_dim / 2]
@group(0) @binding(3) var<storage, read_write> qk: array<f32>;  // [n_tokens, n_heads, head_dim]

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * groups.x) * 64u + lid;
    let half_dim = params.head_dim / 2u;
    let pairs_per_token = params.n_heads * half_dim;
    let t = index / pairs_per_token;
    if t >= step.n_tokens {
        return;
    }
    let head = (index % pairs_per_token) / half_dim;
    let i = index % half_dim;

    let base = (t * params.n_heads + head) * params.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if NEOX {
        a = base + i;
        b = a + half_dim;
    }
    let angle = table[(step.pos0 + t) * half_dim + i];
    let x0 = qk[a];
    let x1 = qk[b];
    qk[a] = x0 * angle.x - x1 * angle.y;
    qk[b] = x0 * angle.y + x1 * angle.x;
}

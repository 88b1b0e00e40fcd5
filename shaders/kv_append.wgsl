// KV-cache append: the step's keys and values are written in place into one
// layer's cache at their positions pos0 .. pos0 + n_tokens.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    n_kv_head: u32,
    head_dim: u32,
    max_seq: u32, // positions the cache holds
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> k: array<f32>;             // [n_tokens, n_kv_head, head_dim]
@group(0) @binding(3) var<storage, read> v: array<f32>;             // [n_tokens, n_kv_head, head_dim]
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>; // [n_kv_head, max_seq, head_dim]
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>; // [n_kv_head, max_seq, head_dim]

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * groups.x) * 64u + lid;
    let kv_dim = params.n_kv_head * params.head_dim;
    let t = index / kv_dim;
    if t >= step.n_tokens {
        return;
    }
    let head = (index % kv_dim) / params.head_dim;
    let d = index % params.head_dim;

    let to = (head * params.max_seq + step.pos0 + t) * params.head_dim + d;
    k_cache[to] = k[index];
    v_cache[to] = v[index];
}

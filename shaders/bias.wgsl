// Bias add, in place, on every token row: x[t, i] += bias[i]. qwen2 adds one to each
// of its Q, K and V products, before RoPE rotates Q and K.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    n: u32, // elements per token row: the bias's length
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> bias: array<f32>;    // [n]
@group(0) @binding(3) var<storage, read_write> x: array<f32>; // [n_tokens, n]

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * groups.x) * 64u + lid;
    if i >= step.n_tokens * params.n {
        return;
    }
    x[i] += bias[i % params.n];
}

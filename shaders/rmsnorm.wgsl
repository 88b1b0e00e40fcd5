// RMSNorm of each token row: out = x / sqrt(mean(x^2) + eps) * weight.
// One workgroup per token; with `last_only`, one workgroup normalises the step's
// last token into row 0 of `out`, all that a last-token product reads.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    n: u32,         // elements per row
    eps: f32,       // added to the mean square
    last_only: u32, // 1: only the step's last token, written to row 0
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;       // [n_tokens, n]
@group(0) @binding(3) var<storage, read> weight: array<f32>;  // [n]
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // [n_tokens, n]

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = select(wid.x, step.n_tokens - 1u, params.last_only == 1u);
    let base = row * params.n;
    let out_base = select(base, 0u, params.last_only == 1u);

    var sum = 0.0;
    for (var i = lid; i < params.n; i += 64u) {
        sum += x[base + i] * x[base + i];
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half /= 2u) {
        if lid < half {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }

    let scale = 1.0 / sqrt(partial[0] / f32(params.n) + params.eps);
    for (var i = lid; i < params.n; i += 64u) {
        out[out_base + i] = x[base + i] * scale * weight[i];
    }
}

// Merges the splits attention_decode.wgsl left for one decode token: for query
// head h, with m_s, l_s and o_s a split's largest score, sum of weights and
// unnormalised output, and m the largest m_s,
//     out = sum_s exp(m_s - m) o_s / sum_s exp(m_s - m) l_s.
// A workgroup serves one query head; an invocation one element of it.

struct Step {
    pos0: u32,     // position of the token: it sees keys 0 ..= pos0
    n_tokens: u32, // 1
}

struct Params {
    n_head: u32,      // query heads
    n_kv_head: u32,   // KV heads
    max_seq: u32,     // positions the cache holds
    max_splits: u32,  // splits `partial` has room for, per query head
    scale: f32,       // 1 / sqrt(head_dim)
}

override HEAD_DIM: u32 = 64u;
// The splits of n keys: min(ceil(n / SPLIT_KEYS), MAX_SPLITS), as
// src/gpu/kernels.rs (DecodeAttention::splits) dispatched them.
override SPLIT_KEYS: u32 = 256u;
override MAX_SPLITS: u32 = 4294967295u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
// [n_head, max_splits, head_dim] outputs, then [n_head, max_splits] (max, sum) pairs
@group(0) @binding(2) var<storage, read> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [n_head, head_dim]

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;
    let splits = min((step.pos0 + SPLIT_KEYS) / SPLIT_KEYS, MAX_SPLITS);
    let pairs = params.n_head * params.max_splits * HEAD_DIM + head * params.max_splits * 2u;

    var m = partial[pairs];
    for (var s = 1u; s < splits; s++) {
        m = max(m, partial[pairs + 2u * s]);
    }
    var total = 0.0;
    for (var s = 0u; s < splits; s++) {
        total += exp(partial[pairs + 2u * s] - m) * partial[pairs + 2u * s + 1u];
    }

    for (var d = lid; d < HEAD_DIM; d += 64u) {
        var o = 0.0;
        for (var s = 0u; s < splits; s++) {
            let weight = exp(partial[pairs + 2u * s] - m);
            o += weight * partial[(head * params.max_splits + s) * HEAD_DIM + d];
        }
        out[head * HEAD_DIM + d] = o / total;
    }
}

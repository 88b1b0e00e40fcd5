// Grouped-query attention over the KV cache, for one decode token or a causal
// block of prompt tokens.
//
// A workgroup serves one KV head and one query token, for the query heads that
// share that KV head (query head h reads KV head h / group_size). Each key and
// value is loaded once per workgroup and used for all of those query heads: the
// group's K/V is never copied per head. Keys are taken 64 at a time with an
// online softmax, so any context length fits in a fixed amount of workgroup
// memory.
//
// When a group has more query heads than fit in workgroup memory
// (heads_per_workgroup * head_dim <= MAX_Q), the host splits it across
// `splits` workgroups; each still reads the K/V once for the heads it serves.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    n_head: u32,              // query heads
    n_kv_head: u32,           // KV heads
    head_dim: u32,            // elements per head
    max_seq: u32,             // positions the cache holds
    heads_per_workgroup: u32, // query heads each workgroup serves
    splits: u32,              // workgroups per KV head: group size / heads_per_workgroup
    scale: f32,               // 1 / sqrt(head_dim)
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> q: array<f32>;          // [n_tokens, n_head, head_dim]
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;    // [n_kv_head, max_seq, head_dim]
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;    // [n_kv_head, max_seq, head_dim]
@group(0) @binding(5) var<storage, read_write> out: array<f32>;  // [n_tokens, n_head, head_dim]

const TILE: u32 = 64u;       // keys per tile: one per invocation
const MAX_HEADS: u32 = 16u;  // query heads per workgroup
const MAX_Q: u32 = 1024u;    // heads_per_workgroup * head_dim
const NEG_LARGE: f32 = -1.0e30;

var<workgroup> q_s: array<f32, MAX_Q>;             // the served heads' queries, pre-scaled
var<workgroup> o_s: array<f32, MAX_Q>;             // their unnormalised outputs
var<workgroup> p_s: array<f32, MAX_HEADS * TILE>;  // [head][key of tile]: score, then weight
var<workgroup> max_s: array<f32, MAX_HEADS>;       // running maximum score per head
var<workgroup> sum_s: array<f32, MAX_HEADS>;       // running sum of weights per head
var<workgroup> fix_s: array<f32, MAX_HEADS>;       // this tile's rescale of earlier sums

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kv_head = wid.x / params.splits;
    let heads = params.heads_per_workgroup;
    let head0 = kv_head * (params.n_head / params.n_kv_head)
        + (wid.x % params.splits) * heads;
    let t = wid.y;
    let hd = params.head_dim;
    // causal: the token at position pos0 + t sees keys 0 ..= pos0 + t
    let n_keys = step.pos0 + t + 1u;
    let q_base = (t * params.n_head + head0) * hd;
    let kv_base = kv_head * params.max_seq * hd;

    for (var i = lid; i < heads * hd; i += 64u) {
        q_s[i] = q[q_base + i] * params.scale;
        o_s[i] = 0.0;
    }
    if lid < heads {
        max_s[lid] = NEG_LARGE;
        sum_s[lid] = 0.0;
    }
    workgroupBarrier();

    for (var tile = 0u; tile < n_keys; tile += TILE) {
        // scores: this invocation's key against every served head
        let key = tile + lid;
        var score: array<f32, MAX_HEADS>;
        for (var h = 0u; h < heads; h++) {
            score[h] = NEG_LARGE;
        }
        if key < n_keys {
            for (var h = 0u; h < heads; h++) {
                score[h] = 0.0;
            }
            for (var d = 0u; d < hd; d++) {
                let k = k_cache[kv_base + key * hd + d];
                for (var h = 0u; h < heads; h++) {
                    score[h] += q_s[h * hd + d] * k;
                }
            }
        }
        for (var h = 0u; h < heads; h++) {
            p_s[h * TILE + lid] = score[h];
        }
        workgroupBarrier();

        // online softmax: new maximum per head, and how much earlier sums shrink
        if lid < heads {
            var m = max_s[lid];
            for (var j = 0u; j < TILE; j++) {
                m = max(m, p_s[lid * TILE + j]);
            }
            fix_s[lid] = exp(max_s[lid] - m);
            max_s[lid] = m;
        }
        workgroupBarrier();

        for (var h = 0u; h < heads; h++) {
            p_s[h * TILE + lid] = exp(p_s[h * TILE + lid] - max_s[h]);
        }
        workgroupBarrier();

        if lid < heads {
            var s = 0.0;
            for (var j = 0u; j < TILE; j++) {
                s += p_s[lid * TILE + j];
            }
            sum_s[lid] = sum_s[lid] * fix_s[lid] + s;
        }
        // outputs: this invocation's dimensions, every key of the tile, every head
        let keys_here = min(TILE, n_keys - tile);
        for (var d = lid; d < hd; d += 64u) {
            var acc: array<f32, MAX_HEADS>;
            for (var h = 0u; h < heads; h++) {
                acc[h] = o_s[h * hd + d] * fix_s[h];
            }
            for (var j = 0u; j < keys_here; j++) {
                let v = v_cache[kv_base + (tile + j) * hd + d];
                for (var h = 0u; h < heads; h++) {
                    acc[h] += p_s[h * TILE + j] * v;
                }
            }
            for (var h = 0u; h < heads; h++) {
                o_s[h * hd + d] = acc[h];
            }
        }
        workgroupBarrier();
    }

    for (var i = lid; i < heads * hd; i += 64u) {
        out[q_base + i] = o_s[i] / sum_s[i / hd];
    }
}

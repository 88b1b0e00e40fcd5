// The softmax weights of the step's newest token, for the attention explainer.
// Dispatched only when a caller asks to see attention, once per layer right after
// attention.wgsl, while `q` still holds that layer's queries.
//
// A workgroup serves one query head. It recomputes the head's scores against every
// key of the context (query head h reads KV head h / group_size, as attention.wgsl
// does), then writes exp(score - max) / sum into the capture buffer, laid out
// [n_layer, n_head, context] with context = pos0 + n_tokens: the keys the newest
// token sees.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

struct Params {
    n_head: u32,    // query heads
    n_kv_head: u32, // KV heads
    head_dim: u32,  // elements per head
    max_seq: u32,   // positions the cache holds
    layer: u32,     // which layer's rows of `weights` this dispatch writes
    scale: f32,     // 1 / sqrt(head_dim)
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> q: array<f32>;              // [n_tokens, n_head, head_dim]
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;        // [n_kv_head, max_seq, head_dim]
@group(0) @binding(4) var<storage, read_write> weights: array<f32>;  // [n_layer, n_head, context]

const WG: u32 = 64u;
const MAX_DIM: u32 = 256u; // head_dim at most; the host checks it

var<workgroup> q_s: array<f32, MAX_DIM>;  // this head's query, pre-scaled
var<workgroup> red_s: array<f32, WG>;     // reductions: maximum, then sum

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let hd = params.head_dim;
    let kv_head = h / (params.n_head / params.n_kv_head);
    let context = step.pos0 + step.n_tokens;
    let t = step.n_tokens - 1u;
    let kv_base = kv_head * params.max_seq * hd;
    let out_base = (params.layer * params.n_head + h) * context;

    for (var d = lid; d < hd; d += WG) {
        q_s[d] = q[(t * params.n_head + h) * hd + d] * params.scale;
    }
    workgroupBarrier();

    // scores, kept in `weights` until normalised; each invocation's running maximum
    var m = -3.0e38;
    for (var j = lid; j < context; j += WG) {
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            s += q_s[d] * k_cache[kv_base + j * hd + d];
        }
        weights[out_base + j] = s;
        m = max(m, s);
    }
    red_s[lid] = m;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if lid < width {
            red_s[lid] = max(red_s[lid], red_s[lid + width]);
        }
        workgroupBarrier();
    }
    let top = red_s[0];
    workgroupBarrier();

    // exp and their sum; each invocation rereads only the entries it wrote
    var total = 0.0;
    for (var j = lid; j < context; j += WG) {
        let e = exp(weights[out_base + j] - top);
        weights[out_base + j] = e;
        total += e;
    }
    red_s[lid] = total;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if lid < width {
            red_s[lid] += red_s[lid + width];
        }
        workgroupBarrier();
    }
    let sum = red_s[0];

    for (var j = lid; j < context; j += WG) {
        weights[out_base + j] /= sum;
    }
}

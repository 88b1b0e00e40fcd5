// Grouped-query attention for one decode token, split along the keys
// (flash-decoding): workgroup (x, y) serves KV head x / heads_split and the y-th
// of num_workgroups.y equal runs of keys, for HEADS query heads of that KV head.
//
// Every key and value row is loaded from the cache once per workgroup and used
// for all of its query heads (query head h reads KV head h / group_size). The
// queries come through a uniform binding: every invocation reads the same
// element at the same time, which a uniform load serves as one broadcast where
// a storage or workgroup load would be repeated for each lane on CPU adapters.
//
// A workgroup walks its keys TILE at a time with a running softmax: each tile's
// scores go through workgroup memory, and the output and sum so far are scaled
// by exp(old max - new max) whenever a tile raises the maximum. So a split's
// length is free of workgroup memory: the host picks the number of splits per
// adapter and context (src/gpu/kernels.rs, DecodeAttention::splits): many for
// a GPU's many cores, just enough on a CPU adapter to keep its few threads
// equally busy.
//
// Within a tile the keys go in runs of 4: an invocation scores 4 keys at once
// and weighs 4 values at once, so that each score or weight passes through
// workgroup memory as one vec4 (lavapipe loads workgroup memory lane by lane;
// runs of 4 took its attention at 512 keys from 0.86 to 0.50 ms, at 2,048 from
// 2.6-3.3 to 1.5-2.2).
//
// With one split the normalised output is written directly. With more, each
// split leaves its unnormalised output, its maximum score and its sum of
// weights in `partial`, and attention_combine.wgsl merges the splits.
//
// Compiled with PREFILL, the same kernel serves a causal block of prompt
// tokens: workgroup (x, t) takes token t of the step over every key it sees,
// with no splits, reading its queries from `q_rows`. Within a workgroup that
// address is the same for every invocation, which lavapipe loads once.

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

// Query heads each workgroup serves (at most 8) and the head size (a multiple of
// 4, at most 256): pipeline constants, so the loops over them are fixed.
override HEADS: u32 = 1u;
override HEAD_DIM: u32 = 64u;
// Keys per tile: HEADS * TILE scores fit p_s.
override TILE: u32 = 256u;
// A block of prompt tokens, one a workgroup row, instead of one decode token.
override PREFILL: bool = false;

const WORKGROUP: u32 = 64u;
const MAX_Q: u32 = 4096u;                     // the longest query row the binding holds
override QUADS: u32 = HEAD_DIM / 4u;          // vec4s per head
override KEY_LANES: u32 = WORKGROUP / QUADS;  // keys taken side by side in the value pass

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<uniform> q: array<vec4<f32>, MAX_Q / 4u>;  // [n_head, head_dim]
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;  // [n_kv_head, max_seq, head_dim]
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<f32>>;  // [n_kv_head, max_seq, head_dim]
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>; // [n_head, head_dim]
// [n_head, max_splits, head_dim] outputs, then [n_head, max_splits] (max, sum) pairs
@group(0) @binding(6) var<storage, read_write> partial: array<f32>;
// The same queries as `q`, every token of the step: [n_tokens, n_head, head_dim]
@group(0) @binding(7) var<storage, read> q_rows: array<vec4<f32>>;

var<workgroup> p_s: array<vec4<f32>, 256>;  // [head][4 keys of the tile]: scores, then weights
var<workgroup> o_s: array<vec4<f32>, 512>;  // [key lane][head][quad]: outputs to add up
var<workgroup> max_s: array<f32, 8>;        // per head: the largest score so far
var<workgroup> sum_s: array<f32, 8>;        // per head: the sum of weights so far
var<workgroup> rescale_s: array<f32, 8>;    // per head: exp(old max - new max) of this tile

// Quad `d` of query row `row` (token * n_head + head).
fn query(row: u32, d: u32) -> vec4<f32> {
    if PREFILL {
        return q_rows[row * QUADS + d];
    }
    return q[row * QUADS + d];
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group_size = params.n_head / params.n_kv_head;
    let heads_split = group_size / HEADS;
    let kv_head = wid.x / heads_split;
    let head0 = kv_head * group_size + (wid.x % heads_split) * HEADS;
    // decode: split wid.y of token 0; prefill: token wid.y, unsplit
    let t = select(0u, wid.y, PREFILL);
    let split = select(wid.y, 0u, PREFILL);
    let n_keys = step.pos0 + t + 1u;
    let span = (n_keys + groups.y - 1u) / groups.y; // keys per split, the last one short
    let split_end = select(min((split + 1u) * span, n_keys), n_keys, PREFILL);
    let q_row = t * params.n_head;
    let kv_head_base = kv_head * params.max_seq * QUADS;

    if lid < HEADS {
        max_s[lid] = -3.0e38; // exp of it minus any score is 0
        sum_s[lid] = 0.0;
    }
    // values: an invocation owns one vec4 of the head and every KEY_LANES-th key
    // of a tile (a head of 48 leaves the last 4 invocations without a lane)
    let quad = lid % QUADS;
    let lane = lid / QUADS;
    var acc: array<vec4<f32>, 8>;

    for (var key0 = split * span; key0 < split_end; key0 += TILE) {
        let keys = min(TILE, split_end - key0);
        // the tile in runs of 4 keys; the last run's missing keys score -3e38,
        // so their weights come out 0
        let runs = (keys + 3u) / 4u;
        let last = keys - 1u;
        let kv_base = kv_head_base + key0 * QUADS;
        let head_runs = TILE / 4u; // runs of p_s per head

        // scores: an invocation takes every 64th run of the tile, for every head
        for (var r = lid; r < runs; r += WORKGROUP) {
            var score: array<vec4<f32>, 8>;
            let j = 4u * r;
            let row0 = kv_base + j * QUADS;
            let row1 = kv_base + min(j + 1u, last) * QUADS;
            let row2 = kv_base + min(j + 2u, last) * QUADS;
            let row3 = kv_base + min(j + 3u, last) * QUADS;
            for (var d = 0u; d < QUADS; d++) {
                let k0 = k_cache[row0 + d];
                let k1 = k_cache[row1 + d];
                let k2 = k_cache[row2 + d];
                let k3 = k_cache[row3 + d];
                for (var h = 0u; h < HEADS; h++) {
                    let q = query(q_row + head0 + h, d);
                    score[h] += vec4<f32>(dot(q, k0), dot(q, k1), dot(q, k2), dot(q, k3));
                }
            }
            let real = vec4<u32>(j, j + 1u, j + 2u, j + 3u) < vec4<u32>(keys);
            for (var h = 0u; h < HEADS; h++) {
                p_s[h * head_runs + r] = select(vec4<f32>(-3.0e38), score[h] * params.scale, real);
            }
        }
        workgroupBarrier();

        if lid < HEADS {
            var m = max_s[lid];
            for (var r = 0u; r < runs; r++) {
                let p = p_s[lid * head_runs + r];
                m = max(m, max(max(p.x, p.y), max(p.z, p.w)));
            }
            rescale_s[lid] = exp(max_s[lid] - m);
            max_s[lid] = m;
        }
        workgroupBarrier();

        for (var r = lid; r < runs; r += WORKGROUP) {
            for (var h = 0u; h < HEADS; h++) {
                p_s[h * head_runs + r] = exp(p_s[h * head_runs + r] - max_s[h]);
            }
        }
        workgroupBarrier();

        if lane < KEY_LANES {
            for (var h = 0u; h < HEADS; h++) {
                acc[h] *= rescale_s[h];
            }
            for (var r = lane; r < runs; r += KEY_LANES) {
                let j = 4u * r;
                let v0 = v_cache[kv_base + j * QUADS + quad];
                let v1 = v_cache[kv_base + min(j + 1u, last) * QUADS + quad];
                let v2 = v_cache[kv_base + min(j + 2u, last) * QUADS + quad];
                let v3 = v_cache[kv_base + min(j + 3u, last) * QUADS + quad];
                for (var h = 0u; h < HEADS; h++) {
                    let p = p_s[h * head_runs + r];
                    acc[h] += p.x * v0 + p.y * v1 + p.z * v2 + p.w * v3;
                }
            }
        }
        if lid < HEADS {
            var s = 0.0;
            for (var r = 0u; r < runs; r++) {
                s += dot(p_s[lid * head_runs + r], vec4<f32>(1.0));
            }
            sum_s[lid] = sum_s[lid] * rescale_s[lid] + s;
        }
        // the next tile overwrites p_s and rescale_s
        workgroupBarrier();
    }

    if lane < KEY_LANES {
        for (var h = 0u; h < HEADS; h++) {
            o_s[(lane * HEADS + h) * QUADS + quad] = acc[h];
        }
    }
    workgroupBarrier();

    // add up the key lanes; one split is the whole answer, more leave partials
    for (var i = lid; i < HEADS * QUADS; i += WORKGROUP) {
        let h = i / QUADS;
        var o = vec4<f32>();
        for (var l = 0u; l < KEY_LANES; l++) {
            o += o_s[l * HEADS * QUADS + i];
        }
        let head = head0 + h;
        if PREFILL || groups.y == 1u {
            out[(q_row + head) * QUADS + i % QUADS] = o / sum_s[h];
        } else {
            let at = ((head * params.max_splits + split) * QUADS + i % QUADS) * 4u;
            partial[at] = o.x;
            partial[at + 1u] = o.y;
            partial[at + 2u] = o.z;
            partial[at + 3u] = o.w;
        }
    }
    if !PREFILL && groups.y > 1u && lid < HEADS {
        let pairs = params.n_head * params.max_splits * HEAD_DIM;
        let at = pairs + ((head0 + lid) * params.max_splits + split) * 2u;
        partial[at] = max_s[lid];
        partial[at + 1u] = sum_s[lid];
    }
}

// Greedy choice: the index of the largest logit (the lowest index among equals).
// One workgroup of 256 invocations; each scans a strided share, then the
// candidates are reduced pairwise in workgroup memory.

struct Params {
    n: u32, // logits
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;    // [n]
@group(0) @binding(2) var<storage, read_write> chosen: array<u32>; // [1]

var<workgroup> best_value: array<f32, 256>;
var<workgroup> best_index: array<u32, 256>;

// Whether candidate (v, i) beats (w, j).
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    var value = -0x1.fffffep+127f; // the lowest f32
    var index = 0xffffffffu;
    for (var i = lid; i < params.n; i += 256u) {
        if beats(logits[i], i, value, index) {
            value = logits[i];
            index = i;
        }
    }
    best_value[lid] = value;
    best_index[lid] = index;
    workgroupBarrier();

    for (var half = 128u; half > 0u; half /= 2u) {
        if lid < half {
            let v = best_value[lid + half];
            let i = best_index[lid + half];
            if beats(v, i, best_value[lid], best_index[lid]) {
                best_value[lid] = v;
                best_index[lid] = i;
            }
        }
        workgroupBarrier();
    }
    if lid == 0u {
        chosen[0] = best_index[0];
    }
}

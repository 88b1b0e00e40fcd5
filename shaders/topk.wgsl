// The k largest logits and their ids (in no particular order), so that sampling
// reads back a bounded set of candidates instead of the whole vocabulary.
//
// A radix select in one workgroup: each logit maps to a u32 key with the same
// order; four rounds over the logits each histogram the next 8 bits of the keys
// that share the bits chosen so far, and pick the digit where the k-th largest
// key lies. The final pass writes every logit above that key, and as many equal
// to it as are still wanted.

struct Params {
    n: u32, // logits
    k: u32, // candidates wanted, at most n
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;          // [n]
@group(0) @binding(2) var<storage, read_write> out: array<vec2<u32>>; // [k] (id, bits of the logit)

var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> prefix: u32;        // the bits of the k-th largest key found so far
var<workgroup> wanted: u32;        // keys still to take at the current prefix
var<workgroup> written: atomic<u32>;
var<workgroup> ties: atomic<u32>;

// An order-preserving map from f32 to u32: negative values reversed below the
// positive ones.
fn sort_key(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if (bits & 0x80000000u) != 0u {
        return ~bits;
    }
    return bits | 0x80000000u;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    if lid == 0u {
        prefix = 0u;
        wanted = min(params.k, params.n);
        atomicStore(&written, 0u);
        atomicStore(&ties, 0u);
    }

    for (var round = 0u; round < 4u; round++) {
        let shift = 24u - 8u * round;
        // the bits above this round's digit (none in the first round)
        let high = select(0xffffffffu << (shift + 8u), 0u, round == 0u);
        atomicStore(&histogram[lid], 0u);
        workgroupBarrier();

        for (var i = lid; i < params.n; i += 256u) {
            let key = sort_key(logits[i]);
            if (key & high) == (prefix & high) {
                atomicAdd(&histogram[(key >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();

        if lid == 0u {
            var remaining = wanted;
            var digit = 255u;
            loop {
                let count = atomicLoad(&histogram[digit]);
                if count >= remaining || digit == 0u {
                    break;
                }
                remaining -= count;
                digit -= 1u;
            }
            prefix |= digit << shift;
            wanted = remaining;
        }
        workgroupBarrier();
    }

    // prefix is now the k-th largest key; `wanted` keys equal to it complete the k
    let threshold = prefix;
    let equal_wanted = wanted;
    for (var i = lid; i < params.n; i += 256u) {
        let key = sort_key(logits[i]);
        var take = key > threshold;
        if key == threshold {
            take = atomicAdd(&ties, 1u) < equal_wanted;
        }
        if take {
            let slot = atomicAdd(&written, 1u);
            out[slot] = vec2<u32>(i, bitcast<u32>(logits[i]));
        }
    }
}

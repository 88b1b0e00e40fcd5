// Weights of one chunk of rows, in the GPU layout of src/quant.rs, and how to
// dequantize them. This file is prepended to every kernel that reads weights
// (embed, matvec, matmul); those kernels bind a chunk at group 1.
//
// Layout: [the quants of every block][the scales of every block], as u32 words
// (the table in src/quant.rs). A block is 32 consecutive elements of a row, as in
// ggml; a k-quant superblock of 256 is read as 8 such blocks, so every kernel
// walks rows 32 elements at a time whatever the format.

const FORMAT_F32: u32 = 0u;
const FORMAT_F16: u32 = 1u;
const FORMAT_Q8_0: u32 = 2u;
const FORMAT_Q4_0: u32 = 3u;
const FORMAT_Q4_1: u32 = 4u;
const FORMAT_Q5_0: u32 = 5u;
const FORMAT_Q5_1: u32 = 6u;
const FORMAT_Q4_K: u32 = 7u;
const FORMAT_Q5_K: u32 = 8u;
const FORMAT_Q6_K: u32 = 9u;

// Words of one superblock in the GPU layout: Q4_K and Q5_K as stored, Q6_K
// without its d (which sits with the scales).
const Q4_K_WORDS: u32 = 36u;
const Q5_K_WORDS: u32 = 44u;
const Q6_K_WORDS: u32 = 52u;

// Which format this pipeline reads: one of the FORMAT_ codes (src/quant.rs).
override WEIGHT_FORMAT: u32 = FORMAT_F32;

struct WeightChunk {
    rows: u32,         // rows in this chunk
    cols: u32,         // elements per row, a multiple of 32 (of 256 for k-quants)
    row0: u32,         // the chunk's first row within the whole tensor
    scale_offset: u32, // in words: where the scales start
    bias_offset: u32,  // in words: where one f32 per row starts, added to the
                       // row's sums (qwen2's Q, K and V biases); NO_BIAS without
}

// No chunk's biases start at word 0, where its quants do. (An index that is
// never read but out of bounds, such as u32::MAX, crashes lavapipe 22.3.)
const NO_BIAS: u32 = 0u;

@group(1) @binding(0) var<uniform> chunk: WeightChunk;
@group(1) @binding(1) var<storage, read> weights: array<u32>;
// The same words four at a time: one load for four words where they are
// 16-byte aligned (the quants of a Q4_0/Q4_1 block, half a Q8_0 block).
@group(1) @binding(2) var<storage, read> quads: array<vec4<u32>>;

// Eight consecutive weights of a row.
struct Eight {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The f16 scale of `block` where two scales share a word (Q8_0, Q4_0, Q5_0; for
// Q6_K, `block` is a superblock).
fn half_scale(block: u32) -> f32 {
    let pair = unpack2x16float(weights[chunk.scale_offset + block / 2u]);
    return select(pair.x, pair.y, (block & 1u) == 1u);
}

// The four bytes of a word as signed integers.
fn signed_bytes(word: u32) -> vec4<f32> {
    let w = bitcast<i32>(word);
    return vec4<f32>(
        f32(extractBits(w, 0u, 8u)),
        f32(extractBits(w, 8u, 8u)),
        f32(extractBits(w, 16u, 8u)),
        f32(extractBits(w, 24u, 8u)),
    );
}

// The bits `mask << shift` of each byte of a word, shifted down.
fn byte_fields(word: u32, shift: u32, mask: u32) -> vec4<f32> {
    let w = word >> shift;
    return vec4<f32>(
        f32(w & mask),
        f32((w >> 8u) & mask),
        f32((w >> 16u) & mask),
        f32((w >> 24u) & mask),
    );
}

// One nibble of each byte of a word: the low ones (shift 0) or the high ones (4).
fn nibbles(word: u32, shift: u32) -> vec4<f32> {
    return byte_fields(word, shift, 15u);
}

// Bits `first` .. `first + 3` of a word, as 0 or 1: the fifth bits of four
// consecutive Q5_0/Q5_1 elements.
fn four_bits(word: u32, first: u32) -> vec4<f32> {
    let w = word >> first;
    return vec4<f32>(f32(w & 1u), f32((w >> 1u) & 1u), f32((w >> 2u) & 1u), f32((w >> 3u) & 1u));
}

// Byte `k` (0..12) of the packed scales of a Q4_K/Q5_K superblock starting at
// word `at`.
fn k_scale_byte(at: u32, k: u32) -> u32 {
    return (weights[at + 1u + k / 4u] >> (8u * (k % 4u))) & 0xffu;
}

// The 6-bit (scale, min) of sub-block `j` of the Q4_K/Q5_K superblock at word
// `at`: sub-blocks 0-3 in the low 6 bits of bytes j and j + 4; sub-blocks 4-7 in
// the nibbles of byte j + 4, with their top two bits in bytes j - 4 and j.
// Not yet: decoding them once per superblock; every block of 32 re-reads up to
// three scale words and (d, dmin), loads that bound CPU adapters like lavapipe.
fn k_scale_min(at: u32, j: u32) -> vec2<f32> {
    if j < 4u {
        return vec2<f32>(f32(k_scale_byte(at, j) & 63u), f32(k_scale_byte(at, j + 4u) & 63u));
    }
    let packed = k_scale_byte(at, j + 4u);
    let scale = (packed & 15u) | ((k_scale_byte(at, j - 4u) >> 6u) << 4u);
    let m = (packed >> 4u) | ((k_scale_byte(at, j) >> 6u) << 4u);
    return vec2<f32>(f32(scale), f32(m));
}

// Where a 32-element block of a Q4_K/Q5_K superblock lives, in words.
struct KBlock {
    start: u32,  // the superblock: (d, dmin), then 3 words of scales
    qs: u32,     // the block's 8 words of nibbles
    shift: u32,  // 0: its elements are the low nibbles; 4: the high ones
    qh: u32,     // Q5_K: the superblock's 8 words of fifth bits
    sub: u32,    // the block within its superblock, 0..8, and its bit in qh bytes
}

// Each 64 elements of a superblock share 32 bytes of qs: low nibbles first.
fn k_block(b: u32) -> KBlock {
    let sub = b % 8u;
    var k: KBlock;
    k.sub = sub;
    k.shift = 4u * (sub % 2u);
    if WEIGHT_FORMAT == FORMAT_Q5_K {
        k.start = (b / 8u) * Q5_K_WORDS;
        k.qh = k.start + 4u;
        k.qs = k.start + 12u + 8u * (sub / 2u);
    } else {
        k.start = (b / 8u) * Q4_K_WORDS;
        k.qh = 0u;
        k.qs = k.start + 4u + 8u * (sub / 2u);
    }
    return k;
}

// Four consecutive Q4_K/Q5_K quants of block `k`: word `i` (0..8) of its nibbles.
fn k_quants(k: KBlock, i: u32) -> vec4<f32> {
    var q = nibbles(weights[k.qs + i], k.shift);
    if WEIGHT_FORMAT == FORMAT_Q5_K {
        q += 16.0 * byte_fields(weights[k.qh + i], k.sub, 1u);
    }
    return q;
}

// Where a 32-element block of a Q6_K superblock lives, in words. A superblock
// is two halves of 128 elements; quarter q of a half takes nibble q / 2 of ql
// bytes 32 * (q % 2) .. + 32 of the half, and bits 2q, 2q + 1 of its qh bytes.
struct Q6Block {
    ql: u32,           // the block's 8 words of low bits
    ql_shift: u32,     // 0 or 4
    qh: u32,           // the block's 8 words of top bits
    qh_shift: u32,     // 0, 2, 4 or 6
    scales: vec2<f32>, // the int8 scales of its two 16-element halves
}

fn q6_block(b: u32) -> Q6Block {
    let start = (b / 8u) * Q6_K_WORDS;
    let sub = b % 8u;
    let half = sub / 4u;
    let quarter = sub % 4u;
    var q: Q6Block;
    q.ql = start + 16u * half + 8u * (quarter % 2u);
    q.ql_shift = 4u * (quarter / 2u);
    q.qh = start + 32u + 8u * half;
    q.qh_shift = 2u * quarter;
    // scales 2 * sub and 2 * sub + 1: half of one of the 4 words after qh
    let scales = signed_bytes(weights[start + 48u + sub / 2u]);
    q.scales = select(scales.xy, scales.zw, (sub & 1u) == 1u);
    return q;
}

// Four consecutive Q6_K quants of block `q`, centred: word `i` (0..8).
fn q6_quants(q: Q6Block, i: u32) -> vec4<f32> {
    let low = nibbles(weights[q.ql + i], q.ql_shift);
    return low + 16.0 * byte_fields(weights[q.qh + i], q.qh_shift, 3u) - 32.0;
}

fn f16_pair(word: u32) -> vec2<f32> {
    return unpack2x16float(word);
}

// Thirty-two consecutive activations: one block's worth, in registers.
alias Block = array<vec4<f32>, 8>;

// dot(W[row, 32 * block ..], x) for one block of the chunk's row `row`, where
// `x_sum` is the sum of the block's x (the Q4 formats fold their offset into it).
fn dot_block(row: u32, block: u32, x: ptr<function, Block>, x_sum: f32) -> f32 {
    let b = row * (chunk.cols / 32u) + block;
    switch WEIGHT_FORMAT {
        case FORMAT_F16: {
            let at = b * 16u;
            var sum = 0.0;
            for (var i = 0u; i < 8u; i++) {
                let j = at + 2u * i;
                let w = vec4<f32>(f16_pair(weights[j]), f16_pair(weights[j + 1u]));
                sum += dot(w, (*x)[i]);
            }
            return sum;
        }
        case FORMAT_Q8_0: {
            let lo = quads[2u * b];
            let hi = quads[2u * b + 1u];
            var sum = 0.0;
            for (var i = 0u; i < 4u; i++) {
                sum += dot(signed_bytes(lo[i]), (*x)[i]) + dot(signed_bytes(hi[i]), (*x)[i + 4u]);
            }
            return half_scale(b) * sum;
        }
        case FORMAT_Q4_0, FORMAT_Q4_1: {
            // words 0-3 hold bytes 0-15; element i < 16 is the low nibble of byte
            // i, element i + 16 the high nibble of the same byte
            let words = quads[b];
            var sum = 0.0;
            for (var i = 0u; i < 4u; i++) {
                let w = words[i];
                sum += dot(nibbles(w, 0u), (*x)[i]) + dot(nibbles(w, 4u), (*x)[i + 4u]);
            }
            if WEIGHT_FORMAT == FORMAT_Q4_0 {
                let d = half_scale(b);
                return d * sum - 8.0 * d * x_sum;
            }
            let dm = unpack2x16float(weights[chunk.scale_offset + b]);
            return dm.x * sum + dm.y * x_sum;
        }
        case FORMAT_Q5_0, FORMAT_Q5_1: {
            // word 0 is qh, words 1-4 qs as in Q4: element i < 16 is the low nibble
            // of byte i, element i + 16 the high one; bit i of qh is element i's fifth
            let at = b * 5u;
            let qh = weights[at];
            var sum = 0.0;
            for (var i = 0u; i < 4u; i++) {
                let w = weights[at + 1u + i];
                let lo = nibbles(w, 0u) + 16.0 * four_bits(qh, 4u * i);
                let hi = nibbles(w, 4u) + 16.0 * four_bits(qh, 16u + 4u * i);
                sum += dot(lo, (*x)[i]) + dot(hi, (*x)[i + 4u]);
            }
            if WEIGHT_FORMAT == FORMAT_Q5_0 {
                let d = half_scale(b);
                return d * sum - 16.0 * d * x_sum;
            }
            let dm = unpack2x16float(weights[chunk.scale_offset + b]);
            return dm.x * sum + dm.y * x_sum;
        }
        case FORMAT_Q4_K, FORMAT_Q5_K: {
            let k = k_block(b);
            var sum = 0.0;
            for (var i = 0u; i < 8u; i++) {
                sum += dot(k_quants(k, i), (*x)[i]);
            }
            let dm = unpack2x16float(weights[k.start]);
            let sm = k_scale_min(k.start, k.sub);
            return (dm.x * sm.x) * sum - (dm.y * sm.y) * x_sum;
        }
        case FORMAT_Q6_K: {
            let q = q6_block(b);
            var first = 0.0;
            var second = 0.0;
            for (var i = 0u; i < 4u; i++) {
                first += dot(q6_quants(q, i), (*x)[i]);
                second += dot(q6_quants(q, i + 4u), (*x)[i + 4u]);
            }
            return half_scale(b / 8u) * (q.scales.x * first + q.scales.y * second);
        }
        default: {
            let at = b * 32u;
            var sum = 0.0;
            for (var i = 0u; i < 8u; i++) {
                let j = at + 4u * i;
                let w = vec4<u32>(weights[j], weights[j + 1u], weights[j + 2u], weights[j + 3u]);
                sum += dot(bitcast<vec4<f32>>(w), (*x)[i]);
            }
            return sum;
        }
    }
}

// Weights of row `row` of the chunk, columns 8 * group .. 8 * group + 7.
fn load8(row: u32, group: u32) -> Eight {
    let block = row * (chunk.cols / 32u) + group / 4u;
    let quarter = group % 4u;
    switch WEIGHT_FORMAT {
        case FORMAT_F16: {
            let at = (row * chunk.cols + group * 8u) / 2u;
            let a = f16_pair(weights[at]);
            let b = f16_pair(weights[at + 1u]);
            let c = f16_pair(weights[at + 2u]);
            let d = f16_pair(weights[at + 3u]);
            return Eight(vec4<f32>(a, b), vec4<f32>(c, d));
        }
        case FORMAT_Q8_0: {
            let words = quads[block * 2u + quarter / 2u];
            let pair = select(words.xy, words.zw, (quarter & 1u) == 1u);
            let d = half_scale(block);
            return Eight(d * signed_bytes(pair.x), d * signed_bytes(pair.y));
        }
        case FORMAT_Q4_0, FORMAT_Q4_1: {
            // Element i < 16 of a block is the low nibble of its byte i, element
            // i + 16 the high nibble of the same byte.
            let words = quads[block];
            let pair = select(words.xy, words.zw, (quarter & 1u) == 1u);
            let shift = (quarter / 2u) * 4u;
            var d: f32;
            var m: f32;
            if WEIGHT_FORMAT == FORMAT_Q4_0 {
                d = half_scale(block);
                m = -8.0 * d;
            } else {
                let dm = unpack2x16float(weights[chunk.scale_offset + block]);
                d = dm.x;
                m = dm.y;
            }
            return Eight(d * nibbles(pair.x, shift) + m, d * nibbles(pair.y, shift) + m);
        }
        case FORMAT_Q5_0, FORMAT_Q5_1: {
            // as Q4, with element i's fifth bit at bit i of the word before qs
            let qs = block * 5u + 1u + (quarter % 2u) * 2u;
            let shift = (quarter / 2u) * 4u;
            let qh = weights[block * 5u];
            var d: f32;
            var m: f32;
            if WEIGHT_FORMAT == FORMAT_Q5_0 {
                d = half_scale(block);
                m = -16.0 * d;
            } else {
                let dm = unpack2x16float(weights[chunk.scale_offset + block]);
                d = dm.x;
                m = dm.y;
            }
            return Eight(
                d * (nibbles(weights[qs], shift) + 16.0 * four_bits(qh, 8u * quarter)) + m,
                d * (nibbles(weights[qs + 1u], shift) + 16.0 * four_bits(qh, 8u * quarter + 4u))
                    + m,
            );
        }
        case FORMAT_Q4_K, FORMAT_Q5_K: {
            let k = k_block(block);
            let dm = unpack2x16float(weights[k.start]);
            let sm = k_scale_min(k.start, k.sub);
            let d = dm.x * sm.x;
            let m = dm.y * sm.y;
            return Eight(
                d * k_quants(k, 2u * quarter) - m,
                d * k_quants(k, 2u * quarter + 1u) - m,
            );
        }
        case FORMAT_Q6_K: {
            // elements 0-15 of a block take its first scale, 16-31 its second
            let q = q6_block(block);
            let d = half_scale(block / 8u) * select(q.scales.x, q.scales.y, quarter >= 2u);
            return Eight(d * q6_quants(q, 2u * quarter), d * q6_quants(q, 2u * quarter + 1u));
        }
        default: {
            let at = row * chunk.cols + group * 8u;
            return Eight(
                bitcast<vec4<f32>>(vec4<u32>(
                    weights[at], weights[at + 1u], weights[at + 2u], weights[at + 3u],
                )),
                bitcast<vec4<f32>>(vec4<u32>(
                    weights[at + 4u], weights[at + 5u], weights[at + 6u], weights[at + 7u],
                )),
            );
        }
    }
}

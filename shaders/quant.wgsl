// Weights of one chunk of rows, in the GPU layout of src/quant.rs, and how to
// dequantize them. This file is prepended to every kernel that reads weights
// (embed, matvec, matmul); those kernels bind a chunk at group 1.
//
// Layout: [the quants of every block][the scales of every block], as u32 words.
// A block is 32 consecutive elements of a row, as in ggml.

const FORMAT_F32: u32 = 0u;
const FORMAT_F16: u32 = 1u;
const FORMAT_Q8_0: u32 = 2u;
const FORMAT_Q4_0: u32 = 3u;
const FORMAT_Q4_1: u32 = 4u;

// Which format this pipeline reads: one of the FORMAT_ codes (src/quant.rs).
override WEIGHT_FORMAT: u32 = FORMAT_F32;

struct WeightChunk {
    rows: u32,         // rows in this chunk
    cols: u32,         // elements per row, a multiple of 32
    row0: u32,         // the chunk's first row within the whole tensor
    scale_offset: u32, // in words: where the scales start
}

@group(1) @binding(0) var<uniform> chunk: WeightChunk;
@group(1) @binding(1) var<storage, read> weights: array<u32>;

// Eight consecutive weights of a row.
struct Eight {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The f16 scale of `block` where two scales share a word (Q8_0, Q4_0).
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

// One nibble of each byte of a word: the low ones (shift 0) or the high ones (4).
fn nibbles(word: u32, shift: u32) -> vec4<f32> {
    let w = word >> shift;
    return vec4<f32>(
        f32(w & 15u),
        f32((w >> 8u) & 15u),
        f32((w >> 16u) & 15u),
        f32((w >> 24u) & 15u),
    );
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
                let w = vec4<f32>(f16_pair(weights[at + 2u * i]), f16_pair(weights[at + 2u * i + 1u]));
                sum += dot(w, (*x)[i]);
            }
            return sum;
        }
        case FORMAT_Q8_0: {
            let at = b * 8u;
            var sum = 0.0;
            for (var i = 0u; i < 8u; i++) {
                sum += dot(signed_bytes(weights[at + i]), (*x)[i]);
            }
            return half_scale(b) * sum;
        }
        case FORMAT_Q4_0, FORMAT_Q4_1: {
            // words 0-3 hold bytes 0-15; element i < 16 is the low nibble of byte
            // i, element i + 16 the high nibble of the same byte
            let at = b * 4u;
            var sum = 0.0;
            for (var i = 0u; i < 4u; i++) {
                let w = weights[at + i];
                sum += dot(nibbles(w, 0u), (*x)[i]) + dot(nibbles(w, 4u), (*x)[i + 4u]);
            }
            if WEIGHT_FORMAT == FORMAT_Q4_0 {
                let d = half_scale(b);
                return d * sum - 8.0 * d * x_sum;
            }
            let dm = unpack2x16float(weights[chunk.scale_offset + b]);
            return dm.x * sum + dm.y * x_sum;
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
            let at = block * 8u + quarter * 2u;
            let d = half_scale(block);
            return Eight(d * signed_bytes(weights[at]), d * signed_bytes(weights[at + 1u]));
        }
        case FORMAT_Q4_0, FORMAT_Q4_1: {
            // Element i < 16 of a block is the low nibble of its byte i, element
            // i + 16 the high nibble of the same byte.
            let at = block * 4u + (quarter % 2u) * 2u;
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
            return Eight(
                d * nibbles(weights[at], shift) + m,
                d * nibbles(weights[at + 1u], shift) + m,
            );
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

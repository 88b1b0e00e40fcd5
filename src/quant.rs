//! The weight formats the GPU kernels read, on the CPU: dequantization (for the
//! reference), quantization (for tests and synthetic models), and the repack of
//! GGUF's blocks into the layout the shaders read.
//!
//! ggml stores quantized rows as arrays of 32-element blocks, each a scale
//! (and for Q4_1 a minimum) in f16 followed by the packed quants. Q8_0 blocks are
//! 34 bytes and Q4_0 blocks 18, so in GGUF's own layout most blocks do not start
//! on a 4-byte boundary, and WGSL can only load whole `u32`s. We therefore split
//! every chunk of rows into two arrays of words: first all the quants, block after
//! block, then all the scales. The bytes are the same; only their order changes.

use half::f16;

use crate::gguf::GgmlType;

/// Elements in one quantization block (every format here uses 32).
pub const BLOCK: usize = 32;

/// A weight format the kernels can read. The discriminant is the code the
/// shaders' `WEIGHT_FORMAT` override constant takes (see `shaders/quant.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32 = 0,
    F16 = 1,
    Q8_0 = 2,
    Q4_0 = 3,
    Q4_1 = 4,
}

impl WeightFormat {
    /// Every format, in shader-code order.
    pub const ALL: [WeightFormat; 5] = [Self::F32, Self::F16, Self::Q8_0, Self::Q4_0, Self::Q4_1];

    /// The format of a GGUF tensor type, if a kernel exists for it.
    pub fn from_ggml(t: GgmlType) -> Option<Self> {
        match t {
            GgmlType::F32 => Some(Self::F32),
            GgmlType::F16 => Some(Self::F16),
            GgmlType::Q8_0 => Some(Self::Q8_0),
            GgmlType::Q4_0 => Some(Self::Q4_0),
            GgmlType::Q4_1 => Some(Self::Q4_1),
            _ => None,
        }
    }

    pub fn ggml_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_1 => GgmlType::Q4_1,
        }
    }

    pub fn name(self) -> &'static str {
        self.ggml_type().name()
    }

    /// Bytes of one 32-element block in GGUF.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4 * BLOCK,
            Self::F16 => 2 * BLOCK,
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
        }
    }

    /// Words of quants per block in the GPU layout.
    fn quant_words(self) -> usize {
        match self {
            Self::F32 => BLOCK,
            Self::F16 => BLOCK / 2,
            Self::Q8_0 => BLOCK / 4,
            Self::Q4_0 | Self::Q4_1 => BLOCK / 8,
        }
    }

    /// Words of scales for `blocks` blocks in the GPU layout.
    fn scale_words(self, blocks: usize) -> usize {
        match self {
            Self::F32 | Self::F16 => 0,
            // one f16 scale per block, two to a word
            Self::Q8_0 | Self::Q4_0 => blocks.div_ceil(2),
            // the (d, m) pair of f16 is one word
            Self::Q4_1 => blocks,
        }
    }

    /// Words a chunk of `rows` rows of `cols` columns takes in the GPU layout, and
    /// the word offset where its scales start.
    pub fn gpu_words(self, rows: usize, cols: usize) -> (usize, usize) {
        let blocks = rows * (cols / BLOCK);
        let quants = blocks * self.quant_words();
        (quants + self.scale_words(blocks), quants)
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantizes GGUF bytes holding whole blocks of `format` into `out`
/// (`out.len()` elements, a multiple of 32).
pub fn dequantize(format: WeightFormat, bytes: &[u8], out: &mut [f32]) {
    for (b, block) in out.chunks_exact_mut(BLOCK).enumerate() {
        let src = &bytes[b * format.block_bytes()..(b + 1) * format.block_bytes()];
        match format {
            WeightFormat::F32 => {
                for (o, w) in block.iter_mut().zip(src.chunks_exact(4)) {
                    *o = f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                }
            }
            WeightFormat::F16 => {
                for (i, o) in block.iter_mut().enumerate() {
                    *o = f16_at(src, 2 * i);
                }
            }
            WeightFormat::Q8_0 => {
                let d = f16_at(src, 0);
                for (i, o) in block.iter_mut().enumerate() {
                    *o = d * f32::from(src[2 + i] as i8);
                }
            }
            WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
                let d = f16_at(src, 0);
                let (offset, qs) = match format {
                    WeightFormat::Q4_0 => (-8.0 * d, &src[2..18]),
                    _ => (f16_at(src, 2), &src[4..20]),
                };
                // element i is the low nibble of byte i, element i + 16 its high nibble
                for (i, q) in qs.iter().enumerate() {
                    block[i] = d * f32::from(q & 0x0f) + offset;
                    block[i + 16] = d * f32::from(q >> 4) + offset;
                }
            }
        }
    }
}

/// Quantizes `values` (a multiple of 32) into GGUF bytes of `format`, the way
/// ggml's reference quantizers do (round to nearest).
pub fn quantize(format: WeightFormat, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / BLOCK * format.block_bytes());
    for block in values.chunks_exact(BLOCK) {
        match format {
            WeightFormat::F32 => block.iter().for_each(|v| out.extend(v.to_le_bytes())),
            WeightFormat::F16 => block
                .iter()
                .for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
            WeightFormat::Q8_0 => {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(block.iter().map(|v| (v * inv).round() as i8 as u8));
            }
            WeightFormat::Q4_0 => {
                // the value of largest magnitude, sign kept, maps to -8
                let max = block
                    .iter()
                    .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let d = max / -8.0;
                let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q = |v: f32| ((v * inv + 8.5) as i32).clamp(0, 15) as u8;
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend((0..16).map(|i| q(block[i]) | (q(block[i + 16]) << 4)));
            }
            WeightFormat::Q4_1 => {
                let min = block.iter().copied().fold(f32::INFINITY, f32::min);
                let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                let q = |v: f32| (((v - min) * inv + 0.5) as i32).clamp(0, 15) as u8;
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                out.extend((0..16).map(|i| q(block[i]) | (q(block[i + 16]) << 4)));
            }
        }
    }
    out
}

/// Repacks GGUF bytes of `rows` rows of `cols` columns into the GPU layout:
/// `[quants of every block][scales of every block]`, as little-endian words.
pub fn repack_for_gpu(format: WeightFormat, bytes: &[u8], rows: usize, cols: usize) -> Vec<u32> {
    let (total, scale_at) = format.gpu_words(rows, cols);
    let mut words = vec![0u32; total];
    let block_bytes = format.block_bytes();
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let blocks = rows * (cols / BLOCK);
    for b in 0..blocks {
        let src = &bytes[b * block_bytes..(b + 1) * block_bytes];
        let qw = format.quant_words();
        let quants = &mut words[b * qw..(b + 1) * qw];
        let (scale_bytes, quant_bytes) = match format {
            WeightFormat::F32 | WeightFormat::F16 => (&src[..0], src),
            WeightFormat::Q8_0 | WeightFormat::Q4_0 => src.split_at(2),
            WeightFormat::Q4_1 => src.split_at(4),
        };
        for (q, chunk) in quants.iter_mut().zip(quant_bytes.chunks_exact(4)) {
            *q = word(chunk);
        }
        match format {
            WeightFormat::F32 | WeightFormat::F16 => {}
            WeightFormat::Q8_0 | WeightFormat::Q4_0 => {
                let half = u32::from(u16::from_le_bytes([scale_bytes[0], scale_bytes[1]]));
                words[scale_at + b / 2] |= half << (16 * (b % 2));
            }
            WeightFormat::Q4_1 => words[scale_at + b] = word(scale_bytes),
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect()
    }

    #[test]
    fn quantize_then_dequantize_stays_within_the_format_s_step() {
        let values = ramp(4 * BLOCK);
        for format in WeightFormat::ALL {
            let bytes = quantize(format, &values);
            assert_eq!(bytes.len(), 4 * format.block_bytes());
            let mut back = vec![0.0; values.len()];
            dequantize(format, &bytes, &mut back);
            // values span about ±3.85; Q4_0's largest magnitude maps to -8, so its
            // positive end stops at +7 steps and may lose a whole step
            let tolerance = match format {
                WeightFormat::F32 => 0.0,
                WeightFormat::F16 => 0.005,
                WeightFormat::Q8_0 => 4.0 / 127.0 / 2.0,
                WeightFormat::Q4_0 => 4.0 / 8.0,
                WeightFormat::Q4_1 => 8.0 / 15.0 / 2.0,
            };
            for (v, b) in values.iter().zip(&back) {
                assert!(
                    (v - b).abs() <= tolerance + 1e-6,
                    "{format:?}: {v} came back as {b}"
                );
            }
        }
    }

    #[test]
    fn repack_keeps_every_byte() {
        let values = ramp(3 * 2 * BLOCK);
        for format in WeightFormat::ALL {
            let bytes = quantize(format, &values);
            let words = repack_for_gpu(format, &bytes, 3, 2 * BLOCK);
            assert_eq!(words.len(), format.gpu_words(3, 2 * BLOCK).0);
            let mut gguf_sorted: Vec<u8> = bytes.clone();
            // six blocks: an even count, so no f16 scale needs a padding half-word
            let mut gpu_sorted: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            gguf_sorted.sort_unstable();
            gpu_sorted.sort_unstable();
            assert_eq!(gguf_sorted, gpu_sorted, "{format:?}");
        }
    }
}

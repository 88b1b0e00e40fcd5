//! The weight formats the GPU kernels read, on the CPU: dequantization (for the
//! reference), quantization (for tests and synthetic models), and the repack of
//! GGUF's blocks into the layout the shaders read.
//!
//! ggml stores quantized rows as arrays of blocks: 32 elements for Q8_0, Q4_0,
//! Q4_1, Q5_0 and Q5_1, 256 for the k-quants Q4_K, Q5_K and Q6_K (superblocks of
//! 8 sub-blocks of 32, or 16 of 16 for Q6_K, each with its own scale). Q8_0 blocks
//! are 34 bytes, Q4_0 18, Q5_0 22 and Q6_K 210, so in GGUF's own layout most
//! blocks do not start on a 4-byte boundary, and WGSL can only load whole `u32`s.
//! We therefore split every chunk of rows into two arrays of words: first all the
//! quants, block after block, then all the scales. The bytes are the same; only
//! their order changes. Per block, in words:
//!
//! | format | quants of one block                      | scales                     |
//! |--------|------------------------------------------|----------------------------|
//! | F32    | 32 values                                | none                       |
//! | F16    | 16 pairs                                 | none                       |
//! | Q8_0   | 8: the int8 quants                       | f16 d, two blocks a word   |
//! | Q4_0   | 4: qs                                    | f16 d, two blocks a word   |
//! | Q4_1   | 4: qs                                    | (f16 d, f16 m), one word   |
//! | Q5_0   | 5: qh, then qs                           | f16 d, two blocks a word   |
//! | Q5_1   | 5: qh, then qs                           | (f16 d, f16 m), one word   |
//! | Q4_K   | 36: the superblock as stored             | none                       |
//! | Q5_K   | 44: the superblock as stored             | none                       |
//! | Q6_K   | 52: ql, qh, the 16 int8 scales           | f16 d, two blocks a word   |
//!
//! Q4_K (d, dmin, 12 scale bytes, 128 qs) and Q5_K (the same with 32 qh bytes
//! before qs) are 144 and 176 bytes: whole words with every field on a word
//! boundary, so they are copied as they are. Only Q6_K's d, at the end of its
//! 210 bytes, moves out to the scales.
//!
//! The kernels walk rows in 32-element blocks whatever the format; a k-quant
//! superblock is read as 8 of those (`shaders/quant.wgsl`), which is why a
//! k-quant row must be a whole number of superblocks.

use half::f16;

use crate::gguf::GgmlType;

/// Elements in one block as the kernels walk a row: a ggml block, or one
/// sub-block of 32 of a k-quant superblock.
pub const BLOCK: usize = 32;

/// Elements in one k-quant superblock.
pub const SUPER_BLOCK: usize = 256;

/// A weight format the kernels can read. The discriminant is the code the
/// shaders' `WEIGHT_FORMAT` override constant takes (see `shaders/quant.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32 = 0,
    F16 = 1,
    Q8_0 = 2,
    Q4_0 = 3,
    Q4_1 = 4,
    Q5_0 = 5,
    Q5_1 = 6,
    Q4K = 7,
    Q5K = 8,
    Q6K = 9,
}

impl WeightFormat {
    /// Every format, in shader-code order.
    pub const ALL: [WeightFormat; 10] = [
        Self::F32,
        Self::F16,
        Self::Q8_0,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
    ];

    /// The format of a GGUF tensor type, if a kernel exists for it.
    pub fn from_ggml(t: GgmlType) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.ggml_type() == t)
    }

    pub fn ggml_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_1 => GgmlType::Q4_1,
            Self::Q5_0 => GgmlType::Q5_0,
            Self::Q5_1 => GgmlType::Q5_1,
            Self::Q4K => GgmlType::Q4K,
            Self::Q5K => GgmlType::Q5K,
            Self::Q6K => GgmlType::Q6K,
        }
    }

    pub fn name(self) -> &'static str {
        self.ggml_type().name()
    }

    /// Whether this is a k-quant, stored in 256-element superblocks.
    pub fn is_k_quant(self) -> bool {
        matches!(self, Self::Q4K | Self::Q5K | Self::Q6K)
    }

    /// Elements of one block in GGUF: 256 for the k-quants, 32 for the others.
    /// A row of the format must be a whole number of them.
    pub fn block_elements(self) -> usize {
        if self.is_k_quant() {
            SUPER_BLOCK
        } else {
            BLOCK
        }
    }

    /// Bytes of one block (of [`Self::block_elements`] elements) in GGUF.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4 * BLOCK,
            Self::F16 => 2 * BLOCK,
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// Bytes of one row of `cols` elements in GGUF (`cols` a multiple of the block).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_elements() * self.block_bytes()
    }

    /// A GGUF block as (the bytes that go to the quants, those that go to the scales).
    fn split(self, block: &[u8]) -> (&[u8], &[u8]) {
        match self {
            Self::F32 | Self::F16 | Self::Q4K | Self::Q5K => (block, &[]),
            // d leads the block
            Self::Q8_0 | Self::Q4_0 | Self::Q5_0 => (&block[2..], &block[..2]),
            // d and m lead the block
            Self::Q4_1 | Self::Q5_1 => (&block[4..], &block[..4]),
            // d ends it
            Self::Q6K => (&block[..208], &block[208..]),
        }
    }

    /// Words of quants per block in the GPU layout.
    fn quant_words(self) -> usize {
        let scale_bytes = match self {
            Self::F32 | Self::F16 | Self::Q4K | Self::Q5K => 0,
            Self::Q8_0 | Self::Q4_0 | Self::Q5_0 | Self::Q6K => 2,
            Self::Q4_1 | Self::Q5_1 => 4,
        };
        (self.block_bytes() - scale_bytes) / 4
    }

    /// Words of scales for `blocks` blocks in the GPU layout.
    fn scale_words(self, blocks: usize) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::Q4K | Self::Q5K => 0,
            // one f16 scale per block, two to a word
            Self::Q8_0 | Self::Q4_0 | Self::Q5_0 | Self::Q6K => blocks.div_ceil(2),
            // the (d, m) pair of f16 is one word
            Self::Q4_1 | Self::Q5_1 => blocks,
        }
    }

    /// Words a chunk of `rows` rows of `cols` columns (a multiple of the block)
    /// takes in the GPU layout, and the word offset where its scales start.
    pub fn gpu_words(self, rows: usize, cols: usize) -> (usize, usize) {
        let blocks = rows * (cols / self.block_elements());
        let quants = blocks * self.quant_words();
        (quants + self.scale_words(blocks), quants)
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K or Q5_K superblock,
/// from its 12 packed bytes: sub-blocks 0-3 in the low 6 bits of bytes 0-3
/// (scales) and 4-7 (mins); sub-blocks 4-7 in the nibbles of bytes 8-11, with
/// their top two bits in the spare top bits of bytes 0-3 and 4-7.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let scale = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        let min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (scale, min)
    }
}

/// Packs eight 6-bit (scale, min) pairs the way [`scale_min_k4`] reads them.
fn pack_scale_min_k4(scales: &[u8; 8], mins: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for k in 0..4 {
        q[k] = (scales[k] & 63) | ((scales[k + 4] >> 4) << 6);
        q[k + 4] = (mins[k] & 63) | ((mins[k + 4] >> 4) << 6);
        q[k + 8] = (scales[k + 4] & 0x0f) | ((mins[k + 4] & 0x0f) << 4);
    }
    q
}

/// Dequantizes GGUF bytes holding whole blocks of `format` into `out`
/// (`out.len()` elements, a multiple of the format's block).
pub fn dequantize(format: WeightFormat, bytes: &[u8], out: &mut [f32]) {
    let n = format.block_elements();
    for (b, block) in out.chunks_exact_mut(n).enumerate() {
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
            WeightFormat::Q5_0 | WeightFormat::Q5_1 => dequantize_q5(format, src, block),
            WeightFormat::Q4K | WeightFormat::Q5K => dequantize_q45k(format, src, block),
            WeightFormat::Q6K => dequantize_q6k(src, block),
        }
    }
}

/// One Q5_0 block (d, qh, qs) or Q5_1 block (d, m, qh, qs) of 32 elements.
fn dequantize_q5(format: WeightFormat, src: &[u8], block: &mut [f32]) {
    let d = f16_at(src, 0);
    let at = if format == WeightFormat::Q5_0 { 2 } else { 4 };
    let qh = u32::from_le_bytes([src[at], src[at + 1], src[at + 2], src[at + 3]]);
    let qs = &src[at + 4..at + 20];
    // like Q4: element i is the low nibble of byte i, element i + 16 its high
    // nibble; bit i of qh is the fifth bit of element i
    let q = |i: usize| {
        let nibble = if i < 16 {
            qs[i] & 0x0f
        } else {
            qs[i - 16] >> 4
        };
        nibble | ((((qh >> i) & 1) as u8) << 4)
    };
    for (i, o) in block.iter_mut().enumerate() {
        *o = match format {
            WeightFormat::Q5_0 => f32::from(q(i) as i8 - 16) * d,
            _ => f32::from(q(i)) * d + f16_at(src, 2),
        };
    }
}

/// One Q4_K superblock (d, dmin, scales[12], qs[128]) or Q5_K superblock
/// (d, dmin, scales[12], qh[32], qs[128]) of 256 elements.
fn dequantize_q45k(format: WeightFormat, src: &[u8], block: &mut [f32]) {
    let d = f16_at(src, 0);
    let dmin = f16_at(src, 2);
    let scales = &src[4..16];
    let (qh, qs) = match format {
        WeightFormat::Q5K => (&src[16..48], &src[48..176]),
        _ => (&src[..0], &src[16..144]),
    };
    // each 64 elements read 32 bytes of qs: the low nibbles give sub-block 2c,
    // the high nibbles sub-block 2c + 1; bit j of qh[l] is the fifth bit of
    // element l of sub-block j
    for (j, sub) in block.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let d1 = d * f32::from(sc);
        let m1 = dmin * f32::from(m);
        let bytes = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for (l, o) in sub.iter_mut().enumerate() {
            let mut q = (bytes[l] >> (4 * (j % 2))) & 0x0f;
            if format == WeightFormat::Q5K {
                q |= ((qh[l] >> j) & 1) << 4;
            }
            *o = d1 * f32::from(q) - m1;
        }
    }
}

/// One Q6_K superblock (ql[128], qh[64], scales[16] int8, d) of 256 elements.
fn dequantize_q6k(src: &[u8], block: &mut [f32]) {
    let (ql, qh, scales) = (&src[..128], &src[128..192], &src[192..208]);
    let d = f16_at(src, 208);
    // each half of 128 elements reads 64 bytes of ql and 32 of qh: its four
    // quarters are the low nibbles of ql[0..32], of ql[32..64], then the high
    // nibbles of the same, with bits 0-1, 2-3, 4-5, 6-7 of qh[l] on top
    for (half, y) in block.chunks_exact_mut(128).enumerate() {
        let ql = &ql[64 * half..64 * half + 64];
        let qh = &qh[32 * half..32 * half + 32];
        let sc = &scales[8 * half..8 * half + 8];
        for l in 0..32 {
            let is = l / 16;
            let q = |low: u8, quarter: usize| {
                let six = low | (((qh[l] >> (2 * quarter)) & 3) << 4);
                f32::from(six as i8 - 32)
            };
            let q1 = q(ql[l] & 0x0f, 0);
            let q2 = q(ql[l + 32] & 0x0f, 1);
            let q3 = q(ql[l] >> 4, 2);
            let q4 = q(ql[l + 32] >> 4, 3);
            let scale = |k: usize| d * f32::from(sc[k] as i8);
            y[l] = scale(is) * q1;
            y[l + 32] = scale(is + 2) * q2;
            y[l + 64] = scale(is + 4) * q3;
            y[l + 96] = scale(is + 6) * q4;
        }
    }
}

/// An f16 at least as large as `v` (>= 0), so a scale derived from it covers `v`.
fn f16_up(v: f32) -> f16 {
    // f16 rounds to within 2^-11 relative; raising by 2^-9 first stays above
    let h = f16::from_f32(v * (1.0 + 1.0 / 512.0));
    if h.to_f32() < v {
        f16::from_f32(v * (1.0 + 1.0 / 256.0))
    } else {
        h
    }
}

/// Quantizes `values` (a multiple of the format's block) into GGUF bytes of
/// `format`, rounding to nearest: ggml's reference quantizers for the 32-element
/// formats; for the k-quants, a plain round-to-nearest with scales chosen to
/// cover each sub-block (ggml searches for better scales; any valid block reads
/// the same way).
pub fn quantize(format: WeightFormat, values: &[f32]) -> Vec<u8> {
    let n = format.block_elements();
    let mut out = Vec::with_capacity(values.len() / n * format.block_bytes());
    for block in values.chunks_exact(n) {
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
            WeightFormat::Q4_0 | WeightFormat::Q5_0 => {
                // the value of largest magnitude, sign kept, maps to the lowest quant
                let half = if format == WeightFormat::Q4_0 { 8 } else { 16 };
                let max = block
                    .iter()
                    .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let d = max / -(half as f32);
                let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q = |v: f32| ((v * inv + half as f32 + 0.5) as i32).clamp(0, 2 * half - 1);
                out.extend(f16::from_f32(d).to_le_bytes());
                pack_low_bits(format, block.iter().map(|&v| q(v) as u8), &mut out);
            }
            WeightFormat::Q4_1 | WeightFormat::Q5_1 => {
                let top = if format == WeightFormat::Q4_1 { 15 } else { 31 };
                let min = block.iter().copied().fold(f32::INFINITY, f32::min);
                let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / top as f32;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                let q = |v: f32| (((v - min) * inv + 0.5) as i32).clamp(0, top);
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                pack_low_bits(format, block.iter().map(|&v| q(v) as u8), &mut out);
            }
            WeightFormat::Q4K | WeightFormat::Q5K => quantize_q45k(format, block, &mut out),
            WeightFormat::Q6K => quantize_q6k(block, &mut out),
        }
    }
    out
}

/// Appends the 32 quants of a Q4_0/Q4_1 block as qs, or of a Q5_0/Q5_1 block as
/// qh then qs.
fn pack_low_bits(format: WeightFormat, quants: impl Iterator<Item = u8>, out: &mut Vec<u8>) {
    let q: Vec<u8> = quants.collect();
    if matches!(format, WeightFormat::Q5_0 | WeightFormat::Q5_1) {
        let qh = (0..32).fold(0u32, |h, i| h | (u32::from(q[i] >> 4) << i));
        out.extend(qh.to_le_bytes());
    }
    out.extend((0..16).map(|i| (q[i] & 0x0f) | ((q[i + 16] & 0x0f) << 4)));
}

/// One Q4_K or Q5_K superblock: per sub-block of 32, a 6-bit min (read as
/// `-dmin * m`) at or below its smallest value and 0, and a 6-bit scale whose
/// 15 (31) steps reach its largest.
fn quantize_q45k(format: WeightFormat, block: &[f32], out: &mut Vec<u8>) {
    let top = if format == WeightFormat::Q4K {
        15u8
    } else {
        31
    };
    let subs: Vec<&[f32]> = block.chunks_exact(32).collect();
    let lows: Vec<f32> = subs
        .iter()
        .map(|s| s.iter().fold(0f32, |m, &v| m.min(v)))
        .collect();
    let highs: Vec<f32> = subs
        .iter()
        .map(|s| s.iter().copied().fold(f32::MIN, f32::max))
        .collect();

    let dmin = f16_up(lows.iter().fold(0f32, |m, &v| m.max(-v)) / 63.0);
    let dmin_f = dmin.to_f32();
    let mut mins = [0u8; 8];
    for (m, &low) in mins.iter_mut().zip(&lows) {
        if dmin_f > 0.0 {
            *m = (-low / dmin_f).ceil().min(63.0) as u8;
        }
    }
    let need: Vec<f32> = (0..8)
        .map(|j| (highs[j] + dmin_f * f32::from(mins[j])) / f32::from(top))
        .collect();
    let d = f16_up(need.iter().fold(0f32, |m, &v| m.max(v)) / 63.0);
    let d_f = d.to_f32();
    let mut scales = [0u8; 8];
    for (s, &need) in scales.iter_mut().zip(&need) {
        if d_f > 0.0 {
            *s = (need / d_f).ceil().clamp(0.0, 63.0) as u8;
        }
    }

    let mut quants = [0u8; SUPER_BLOCK];
    for (j, sub) in subs.iter().enumerate() {
        let step = d_f * f32::from(scales[j]);
        let offset = dmin_f * f32::from(mins[j]);
        let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
        for (l, &v) in sub.iter().enumerate() {
            let q = ((v + offset) * inv).round().clamp(0.0, f32::from(top));
            quants[32 * j + l] = q as u8;
        }
    }

    out.extend(d.to_le_bytes());
    out.extend(dmin.to_le_bytes());
    out.extend(pack_scale_min_k4(&scales, &mins));
    if format == WeightFormat::Q5K {
        // bit j of qh[l]: the fifth bit of element l of sub-block j
        out.extend((0..32).map(|l| (0..8).fold(0u8, |h, j| h | ((quants[32 * j + l] >> 4) << j))));
    }
    // sub-blocks 2c and 2c + 1 share 32 bytes: low nibbles, then high
    for c in 0..4 {
        let (lo, hi) = (
            &quants[64 * c..64 * c + 32],
            &quants[64 * c + 32..64 * c + 64],
        );
        out.extend((0..32).map(|l| (lo[l] & 0x0f) | ((hi[l] & 0x0f) << 4)));
    }
}

/// One Q6_K superblock: per sub-block of 16, a signed 8-bit scale under which
/// the value of largest magnitude maps to -31.5 steps (so both signs occur).
fn quantize_q6k(block: &[f32], out: &mut Vec<u8>) {
    let steps: Vec<f32> = block
        .chunks_exact(16)
        .map(|s| {
            s.iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
                / -31.5
        })
        .collect();
    let d = f16_up(steps.iter().fold(0f32, |m, &v| m.max(v.abs())) / 127.0);
    let d_f = d.to_f32();
    let scales: Vec<i8> = steps
        .iter()
        .map(|&s| {
            let magnitude = if d_f > 0.0 {
                (s.abs() / d_f).ceil().min(127.0)
            } else {
                0.0
            };
            (magnitude.copysign(s)) as i8
        })
        .collect();

    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for (e, &v) in block.iter().enumerate() {
        let step = d_f * f32::from(scales[e / 16]);
        let q = if step != 0.0 {
            (v / step).round().clamp(-32.0, 31.0) as i32
        } else {
            0
        };
        let q = (q + 32) as u8;
        // element e is in half e / 128, quarter (e % 128) / 32, at l = e % 32
        let (half, quarter, l) = (e / 128, e % 128 / 32, e % 32);
        ql[64 * half + 32 * (quarter % 2) + l] |= (q & 0x0f) << (4 * (quarter / 2));
        qh[32 * half + l] |= (q >> 4) << (2 * quarter);
    }
    out.extend(ql);
    out.extend(qh);
    out.extend(scales.iter().map(|&s| s as u8));
    out.extend(d.to_le_bytes());
}

/// Repacks GGUF bytes of `rows` rows of `cols` columns into the GPU layout:
/// `[quants of every block][scales of every block]`, as little-endian words.
pub fn repack_for_gpu(format: WeightFormat, bytes: &[u8], rows: usize, cols: usize) -> Vec<u32> {
    let (total, scale_at) = format.gpu_words(rows, cols);
    let mut words = vec![0u32; total];
    let block_bytes = format.block_bytes();
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let blocks = rows * (cols / format.block_elements());
    let qw = format.quant_words();
    for b in 0..blocks {
        let (quant_bytes, scale_bytes) =
            format.split(&bytes[b * block_bytes..(b + 1) * block_bytes]);
        let quants = &mut words[b * qw..(b + 1) * qw];
        for (q, chunk) in quants.iter_mut().zip(quant_bytes.chunks_exact(4)) {
            *q = word(chunk);
        }
        match scale_bytes.len() {
            2 => {
                let half = u32::from(u16::from_le_bytes([scale_bytes[0], scale_bytes[1]]));
                words[scale_at + b / 2] |= half << (16 * (b % 2));
            }
            4 => words[scale_at + b] = word(scale_bytes),
            _ => {}
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect()
    }

    /// Eight superblocks of values whose spread and offset change from one
    /// 32-element sub-block to the next, so that the k-quants' scales and mins
    /// take many values; in superblock `t`, sub-block `t % 8` is the widest.
    fn varied() -> Vec<f32> {
        let unit = ramp(8 * SUPER_BLOCK);
        unit.iter()
            .enumerate()
            .map(|(i, u)| {
                let (t, j) = (i / SUPER_BLOCK, i % SUPER_BLOCK / 32);
                let (a, c) = if j == t % 8 {
                    (2.0, 0.0)
                } else {
                    let k = (3 * j + t) % 7;
                    (0.1 + 0.2 * k as f32, 0.3 * (k as f32 - 3.0) / 1.5)
                };
                c + a * u / 3.85
            })
            .collect()
    }

    /// How far a value of `group` (the 32 elements of a block or sub-block, 16
    /// for Q6_K) may move through `format`, from the group's own range: half a
    /// step (a whole one where ggml maps the largest magnitude to the lowest
    /// quant), plus what rounding the scales to f16 and 6 or 8 bits may add.
    /// `amax` is the largest magnitude of the group's whole ggml block.
    fn tolerance(format: WeightFormat, group: &[f32], amax: f32) -> f32 {
        let lo = group.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = group.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let gmax = group.iter().fold(0f32, |m, v| m.max(v.abs()));
        let f16_slack = amax / 1024.0;
        match format {
            WeightFormat::F32 => 0.0,
            WeightFormat::F16 => f16_slack,
            WeightFormat::Q8_0 => gmax / 127.0 / 2.0 + f16_slack,
            WeightFormat::Q4_0 => gmax / 8.0 + f16_slack,
            WeightFormat::Q5_0 => gmax / 16.0 + f16_slack,
            WeightFormat::Q4_1 => (hi - lo) / 15.0 / 2.0 + f16_slack,
            WeightFormat::Q5_1 => (hi - lo) / 31.0 / 2.0 + f16_slack,
            // the min covers the sub-block's lowest value and 0
            WeightFormat::Q4K => (hi - lo.min(0.0)) / 15.0 / 2.0 + amax / 100.0,
            WeightFormat::Q5K => (hi - lo.min(0.0)) / 31.0 / 2.0 + amax / 100.0,
            WeightFormat::Q6K => gmax / 31.5 / 2.0 + amax / 1000.0,
        }
    }

    #[test]
    fn quantize_then_dequantize_stays_within_the_format_s_step() {
        for (format, values) in WeightFormat::ALL
            .into_iter()
            .flat_map(|f| [(f, varied()), (f, random_varied())])
        {
            let bytes = quantize(format, &values);
            let n = format.block_elements();
            assert_eq!(bytes.len(), values.len() / n * format.block_bytes());
            let mut back = vec![0.0; values.len()];
            dequantize(format, &bytes, &mut back);

            let group = if format == WeightFormat::Q6K { 16 } else { 32 };
            let mut worst = 0f32;
            for (b, (block, got)) in values.chunks(n).zip(back.chunks(n)).enumerate() {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (g, (want, got)) in block.chunks(group).zip(got.chunks(group)).enumerate() {
                    let tol = tolerance(format, want, amax) + 1e-6;
                    for (i, (v, q)) in want.iter().zip(got).enumerate() {
                        let at = b * n + g * group + i;
                        assert!(
                            (v - q).abs() <= tol,
                            "{format:?} [{at}]: {v} came back as {q}, tolerance {tol}"
                        );
                        worst = worst.max((v - q).abs() / tol.max(1e-12));
                    }
                }
            }
            eprintln!("{format:?}: largest error {worst:.3} of its tolerance");
        }
    }

    /// Bits that are set in at least one of `blocks` of `format`, at `range` of
    /// each block's bytes.
    fn bits_ever_set(format: WeightFormat, bytes: &[u8], range: Range<usize>) -> Vec<u8> {
        let mut seen = vec![0u8; range.len()];
        for block in bytes.chunks(format.block_bytes()) {
            for (s, b) in seen.iter_mut().zip(&block[range.clone()]) {
                *s |= b;
            }
        }
        seen
    }

    /// 64 superblocks of random values, each sub-block of 32 with its own random
    /// spread and offset: enough blocks for every bit of every field to occur.
    fn random_varied() -> Vec<f32> {
        let mut rng = crate::synthetic::Rng(0x5eed);
        let mut values = Vec::new();
        for _ in 0..64 * 8 {
            let (a, c) = (rng.uniform(0.05, 2.0), rng.uniform(-1.0, 1.0));
            values.extend((0..32).map(|_| c + a * rng.uniform(-1.0, 1.0)));
        }
        values
    }

    #[test]
    fn quantizers_set_every_bit_of_scales_mins_and_high_bits() {
        let values = random_varied();
        // (format, a byte range of its qh bits or of its packed 6-bit scales and mins)
        let fields: [(WeightFormat, Range<usize>); 6] = [
            (WeightFormat::Q5_0, 2..6),
            (WeightFormat::Q5_1, 4..8),
            (WeightFormat::Q4K, 4..16),
            (WeightFormat::Q5K, 4..16),
            (WeightFormat::Q5K, 16..48),
            (WeightFormat::Q6K, 128..192),
        ];
        for (format, range) in fields {
            let bytes = quantize(format, &values);
            let seen = bits_ever_set(format, &bytes, range.clone());
            assert!(
                seen.iter().all(|&b| b == 0xff),
                "{format:?} bytes {range:?}: {seen:x?}"
            );
        }
        // Q6_K's scales are signed: both signs occur, and every magnitude bit
        let bytes = quantize(WeightFormat::Q6K, &values);
        let scales: Vec<i8> = bytes
            .chunks(210)
            .flat_map(|b| b[192..208].to_vec())
            .map(|s| s as i8)
            .collect();
        assert!(scales.iter().any(|&s| s < 0) && scales.iter().any(|&s| s > 0));
        let magnitudes = scales.iter().fold(0u8, |m, s| m | s.unsigned_abs());
        assert_eq!(magnitudes, 0x7f, "Q6_K scale magnitudes use all seven bits");
    }

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    fn dequantized(format: WeightFormat, block: &[u8]) -> Vec<f32> {
        let mut out = vec![f32::NAN; format.block_elements()];
        dequantize(format, block, &mut out);
        out
    }

    #[test]
    fn hand_built_q5_blocks_dequantize_to_ggml_s_values() {
        // Q5_0: d = 0.5; qh bits 0 and 31; element i = ((qs nibble | qh bit << 4) - 16) * d
        let mut q5_0 = vec![0u8; 22];
        q5_0[..2].copy_from_slice(&f16_bytes(0.5));
        q5_0[2..6].copy_from_slice(&0x8000_0001u32.to_le_bytes());
        q5_0[6] = 0x2f; // element 0: low nibble 15; element 16: 2
        q5_0[6 + 15] = 0x70; // element 15: 0; element 31: 7
        let y = dequantized(WeightFormat::Q5_0, &q5_0);
        // (15 | 16) - 16 = 15; 2 - 16 = -14; 0 - 16; (7 | 16) - 16 = 7; zeros read -16
        assert_eq!(
            [y[0], y[16], y[15], y[31], y[1]],
            [7.5, -7.0, -8.0, 3.5, -8.0]
        );

        // Q5_1: d = 0.25, m = -1; qh bit 17; element i = (nibble | bit << 4) * d + m
        let mut q5_1 = vec![0u8; 24];
        q5_1[..2].copy_from_slice(&f16_bytes(0.25));
        q5_1[2..4].copy_from_slice(&f16_bytes(-1.0));
        q5_1[4..8].copy_from_slice(&(1u32 << 17).to_le_bytes());
        q5_1[8 + 1] = 0x3a; // element 1: 10; element 17: 3 | 16 = 19
        let y = dequantized(WeightFormat::Q5_1, &q5_1);
        assert_eq!([y[1], y[17], y[0], y[16]], [1.5, 3.75, -1.0, -1.0]);
    }

    /// d = 0.5, dmin = 0.25, and the 12 scale bytes packing the 6-bit scales
    /// [1, 2, 3, 63, 40, 17, 33, 5] and mins [0, 4, 7, 62, 21, 48, 3, 63], packed
    /// by hand: bytes 0-3 hold scales 0-3 and the top two bits of scales 4-7,
    /// bytes 4-7 mins 0-3 and the top two bits of mins 4-7, bytes 8-11 the low
    /// nibbles of scale j (low) and min j (high) for j = 4..8.
    fn k_header() -> Vec<u8> {
        let mut h = Vec::new();
        h.extend(f16_bytes(0.5));
        h.extend(f16_bytes(0.25));
        h.extend([
            0x81, 0x42, 0x83, 0x3f, 0x40, 0xc4, 0x07, 0xfe, 0x58, 0x01, 0x31, 0xf5,
        ]);
        h
    }

    /// Element `e` (sub-block e / 32, index l = e % 32) is a nibble of qs byte
    /// 32 * (e / 64) + l: the low one for even sub-blocks, the high for odd.
    fn k_qs() -> [u8; 128] {
        let mut qs = [0u8; 128];
        qs[0] = 0xc9; // element 0: 9; element 32: 12
        qs[32 + 5] = 0x70; // element 69: 0; element 101: 7
        qs[64 + 31] = 0xf2; // element 159: 2; element 191: 15
        qs[96 + 10] = 0x1e; // element 202: 14; element 234: 1
        qs
    }

    #[test]
    fn hand_built_q4_k_superblock_dequantizes_to_ggml_s_values() {
        let mut block = k_header();
        block.extend(k_qs());
        let y = dequantized(WeightFormat::Q4K, &block);
        // y = d * scale * q - dmin * min, each from the element's sub-block
        let expected = [
            (0, 0.5 * 1.0 * 9.0 - 0.0),
            (1, 0.0),
            (32, 0.5 * 2.0 * 12.0 - 0.25 * 4.0),
            (69, -0.25 * 7.0),
            (101, 0.5 * 63.0 * 7.0 - 0.25 * 62.0),
            (159, 0.5 * 40.0 * 2.0 - 0.25 * 21.0),
            (191, 0.5 * 17.0 * 15.0 - 0.25 * 48.0),
            (202, 0.5 * 33.0 * 14.0 - 0.25 * 3.0),
            (234, 0.5 * 5.0 * 1.0 - 0.25 * 63.0),
            (255, -0.25 * 63.0),
        ];
        for (e, want) in expected {
            assert_eq!(y[e], want, "Q4_K element {e}");
        }
        assert_eq!([y[101], y[202], y[234]], [205.0, 230.25, -13.25]);
    }

    #[test]
    fn hand_built_q5_k_superblock_dequantizes_to_ggml_s_values() {
        let mut block = k_header();
        // bit j of qh[l] is the fifth bit of element l of sub-block j
        let mut qh = [0u8; 32];
        qh[0] = 0b0000_0001; // element 0
        qh[5] = 0b0000_1000; // element 3 * 32 + 5 = 101
        qh[31] = 0b0010_0000; // element 5 * 32 + 31 = 191
        block.extend(qh);
        block.extend(k_qs());
        let y = dequantized(WeightFormat::Q5K, &block);
        let expected = [
            (0, 0.5 * 1.0 * 25.0),
            (32, 0.5 * 2.0 * 12.0 - 0.25 * 4.0),
            (69, -0.25 * 7.0),
            (101, 0.5 * 63.0 * 23.0 - 0.25 * 62.0),
            (191, 0.5 * 17.0 * 31.0 - 0.25 * 48.0),
            (202, 0.5 * 33.0 * 14.0 - 0.25 * 3.0),
            (255, -0.25 * 63.0),
        ];
        for (e, want) in expected {
            assert_eq!(y[e], want, "Q5_K element {e}");
        }
        assert_eq!([y[0], y[101], y[191]], [12.5, 709.0, 251.5]);
    }

    #[test]
    fn hand_built_q6_k_superblock_dequantizes_to_ggml_s_values() {
        // ql[128], qh[64], 16 int8 scales (one per 16 elements), d = 0.5.
        // Element e: half h = e / 128, quarter k = e % 128 / 32, l = e % 32; its
        // low bits are nibble k / 2 of ql[64h + 32(k % 2) + l], its top two bits
        // 2k..2k+1 of qh[32h + l]; value d * scale[e / 16] * (six bits - 32).
        let mut block = vec![0u8; 210];
        block[0] = 0x05; // element 0: 5
        block[16] = 0xa0; // element 80 (h 0, k 2, l 16): 10
        block[127] = 0xf0; // element 255 (h 1, k 3, l 31): 15
        let qh = 128;
        block[qh] = 0b10; // element 0: + 2 << 4
        block[qh + 16] = 0b01_0000; // element 80: + 1 << 4
        block[qh + 63] = 0b1100_0000; // element 255: + 3 << 4
        let scales = 192;
        block[scales] = 3;
        block[scales + 5] = -2i8 as u8;
        block[scales + 10] = 127;
        block[scales + 15] = -128i8 as u8;
        block[208..].copy_from_slice(&f16_bytes(0.5));
        let y = dequantized(WeightFormat::Q6K, &block);
        let expected = [
            (0, 0.5 * 3.0 * (37.0 - 32.0)),
            (1, 0.5 * 3.0 * -32.0),
            (80, 0.5 * -2.0 * (26.0 - 32.0)),
            (175, 0.5 * 127.0 * -32.0), // h 1, k 1, l 15: all bits clear
            (255, 0.5 * -128.0 * (63.0 - 32.0)),
        ];
        for (e, want) in expected {
            assert_eq!(y[e], want, "Q6_K element {e}");
        }
        assert_eq!([y[0], y[80], y[175], y[255]], [7.5, 6.0, -2032.0, -1984.0]);
    }

    #[test]
    fn the_refusal_of_other_types_lists_every_format() {
        let refusal = crate::model::ModelError::TensorType {
            name: "t".into(),
            ggml_type: "Q3_K",
        }
        .to_string();
        for format in WeightFormat::ALL {
            assert!(
                refusal.contains(format.name()),
                "{refusal} names {format:?}"
            );
        }
    }

    #[test]
    fn repack_keeps_every_byte() {
        for format in WeightFormat::ALL {
            let cols = 2 * format.block_elements();
            let values = ramp(3 * cols);
            let bytes = quantize(format, &values);
            let words = repack_for_gpu(format, &bytes, 3, cols);
            assert_eq!(words.len(), format.gpu_words(3, cols).0);
            let mut gguf_sorted: Vec<u8> = bytes.clone();
            // six blocks: an even count, so no f16 scale needs a padding half-word
            let mut gpu_sorted: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            gguf_sorted.sort_unstable();
            gpu_sorted.sort_unstable();
            assert_eq!(gguf_sorted, gpu_sorted, "{format:?}");
        }
    }

    #[test]
    fn k_quant_superblocks_keep_their_bytes_in_place_but_q6_k_moves_d() {
        let values = ramp(2 * SUPER_BLOCK);
        for format in [WeightFormat::Q4K, WeightFormat::Q5K] {
            let bytes = quantize(format, &values);
            let words = repack_for_gpu(format, &bytes, 1, 2 * SUPER_BLOCK);
            let gpu: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(gpu, bytes, "{format:?}");
        }
        let bytes = quantize(WeightFormat::Q6K, &values);
        let words = repack_for_gpu(WeightFormat::Q6K, &bytes, 1, 2 * SUPER_BLOCK);
        let gpu: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(gpu[..208], bytes[..208]);
        assert_eq!(gpu[208..416], bytes[210..418]);
        // the scales: both blocks' d, in one word
        assert_eq!(gpu[416..], [&bytes[208..210], &bytes[418..420]].concat());
    }
}

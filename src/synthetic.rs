//! Random models of any shape, written as GGUF files: the tests' tiny models and
//! the benchmark's stand-ins for real weights of a model's exact shapes.

use crate::gguf::{GgufWriter, Value};
use crate::quant::{quantize, WeightFormat};

/// The shape and formats of a random `llama`-architecture model.
#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_ff: usize,
    pub vocab: usize,
    pub context: usize,
    pub rope_base: f32,
    /// Format of the layers' matrices.
    pub format: WeightFormat,
    /// Format of `token_embd` (and of `output` when untied).
    pub embd_format: WeightFormat,
    /// Whether the output matrix is `token_embd` (no `output.weight`).
    pub tied: bool,
    /// Whether to write a tokenizer and a chat template ([`BYTE_VOCAB`] tokens).
    pub tokenizer: bool,
    pub seed: u64,
}

/// What a model family's files carry beyond [`SyntheticSpec`]'s shapes: the
/// architecture (and so the key prefix), a head size of its own, Q/K/V biases, RoPE
/// frequency factors, and the family's other keys as its GGUF files hold them.
#[derive(Clone, Debug)]
pub struct Family {
    /// `general.architecture`, the prefix of the model's keys.
    pub arch: &'static str,
    /// Elements per head; `None`: `n_embd / n_head`. Written as `attention.key_length`
    /// and `value_length` when it differs from that.
    pub head_dim: Option<usize>,
    /// Whether the blocks hold `attn_{q,k,v}.bias` (F32).
    pub qkv_bias: bool,
    /// The values of `rope_freqs.weight` (F32, `head_dim / 2`); empty: no such tensor.
    pub rope_freqs: Vec<f32>,
    pub rms_eps: f32,
    /// More keys, named without the architecture prefix (`"rope.dimension_count"`).
    pub keys: Vec<(String, Value)>,
}

impl Family {
    /// The `llama` layout the tests' models have always had.
    pub fn llama(spec: &SyntheticSpec) -> Self {
        let head_dim = spec.n_embd / spec.n_head.max(1);
        Self {
            arch: "llama",
            head_dim: None,
            qkv_bias: false,
            rope_freqs: Vec::new(),
            rms_eps: 1e-5,
            keys: vec![("rope.dimension_count".into(), Value::U32(head_dim as u32))],
        }
    }
}

/// The vocabulary of a synthetic model with a tokenizer: three ChatML control
/// tokens, then one token per byte, GPT-2 style, with no merges.
pub const BYTE_VOCAB: usize = 3 + 256;

/// ChatML, the template SmolLM2 uses (without its default system prompt).
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' \
    + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
    {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// GPT-2's byte-level alphabet: byte `b` is written as this character.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

impl SyntheticSpec {
    /// A tiny model with `n_head` query heads over `n_kv_head` KV heads.
    pub fn tiny(n_head: usize, n_kv_head: usize, format: WeightFormat) -> Self {
        Self {
            n_layer: 2,
            n_embd: 32 * n_head.max(2),
            n_head,
            n_kv_head,
            n_ff: 96,
            vocab: 160,
            context: 256,
            rope_base: 10_000.0,
            format,
            embd_format: WeightFormat::Q8_0,
            tied: true,
            tokenizer: false,
            seed: 1,
        }
    }

    /// A tiny 9/3-head model with a byte-level tokenizer and a chat template, for
    /// tests that go from text to text.
    pub fn tiny_with_tokenizer() -> Self {
        Self {
            vocab: BYTE_VOCAB,
            tokenizer: true,
            ..Self::tiny(9, 3, WeightFormat::Q4_1)
        }
    }

    /// SmolLM2-135M's shapes and formats (the engine's default model).
    pub fn smollm2_135m() -> Self {
        Self {
            n_layer: 30,
            n_embd: 576,
            n_head: 9,
            n_kv_head: 3,
            n_ff: 1536,
            vocab: 49152,
            context: 8192,
            rope_base: 100_000.0,
            format: WeightFormat::Q4_1,
            embd_format: WeightFormat::Q8_0,
            tied: true,
            tokenizer: false,
            seed: 1,
        }
    }

    /// The model as GGUF bytes, in the `llama` layout.
    pub fn to_gguf(&self) -> Vec<u8> {
        self.to_gguf_as(&Family::llama(self))
    }

    /// The model as GGUF bytes in a family's layout.
    pub fn to_gguf_as(&self, family: &Family) -> Vec<u8> {
        self.writer(family, true).to_bytes()
    }

    /// The header alone of [`SyntheticSpec::to_gguf_as`]'s file, and the length the whole
    /// file would have; no weights are made, so models of billions of parameters can be
    /// planned. `None` when a matrix is no whole number of its format's blocks.
    pub fn header_as(&self, family: &Family) -> Option<(Vec<u8>, u64)> {
        self.writer(family, false).header_for_sizes()
    }

    /// The file's writer; without `weights`, the matrices are declared but hold no data.
    fn writer(&self, family: &Family, weights: bool) -> GgufWriter {
        let mut rng = Rng(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let head_dim = family.head_dim.unwrap_or(self.n_embd / self.n_head);
        let (q_dim, kv_dim) = (self.n_head * head_dim, self.n_kv_head * head_dim);
        let mut w = GgufWriter::new();
        let arch = family.arch;
        w.add("general.architecture", Value::String(arch.into()));
        w.add("general.name", Value::String("synthetic".into()));
        let u32v = |v: usize| Value::U32(v as u32);
        let key = |w: &mut GgufWriter, name: &str, value: Value| {
            w.add(&format!("{arch}.{name}"), value);
        };
        key(&mut w, "block_count", u32v(self.n_layer));
        key(&mut w, "context_length", u32v(self.context));
        key(&mut w, "embedding_length", u32v(self.n_embd));
        key(&mut w, "feed_forward_length", u32v(self.n_ff));
        key(&mut w, "attention.head_count", u32v(self.n_head));
        key(&mut w, "attention.head_count_kv", u32v(self.n_kv_head));
        key(&mut w, "rope.freq_base", Value::F32(self.rope_base));
        let eps = Value::F32(family.rms_eps);
        key(&mut w, "attention.layer_norm_rms_epsilon", eps);
        if head_dim != self.n_embd / self.n_head {
            key(&mut w, "attention.key_length", u32v(head_dim));
            key(&mut w, "attention.value_length", u32v(head_dim));
        }
        for (name, value) in &family.keys {
            key(&mut w, name, value.clone());
        }
        if self.tokenizer {
            let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
            let tokens = specials
                .iter()
                .map(|s| s.to_string())
                .chain((0..=255u8).map(|b| byte_char(b).to_string()))
                .take(self.vocab)
                .map(Value::String)
                .collect();
            let types = (0..self.vocab)
                .map(|i| Value::I32(if i < 3 { 3 } else { 1 }))
                .collect();
            w.add("tokenizer.ggml.model", Value::String("gpt2".into()));
            w.add("tokenizer.ggml.pre", Value::String("smollm".into()));
            w.add("tokenizer.ggml.tokens", Value::Array(tokens));
            w.add("tokenizer.ggml.token_type", Value::Array(types));
            w.add("tokenizer.ggml.merges", Value::Array(Vec::new()));
            w.add("tokenizer.ggml.bos_token_id", Value::U32(1));
            w.add("tokenizer.ggml.eos_token_id", Value::U32(2));
            w.add("tokenizer.ggml.add_bos_token", Value::Bool(false));
            w.add("tokenizer.chat_template", Value::String(CHATML.into()));
        }

        let mut matrix =
            |w: &mut GgufWriter, name: &str, rows: usize, cols: usize, f: WeightFormat| {
                let dims = [cols as u64, rows as u64];
                if !weights {
                    w.add_tensor(name, &dims, f.ggml_type(), Vec::new());
                    return;
                }
                // uniform in ±sqrt(3 / cols): unit variance in, unit variance out
                let a = (3.0 / cols as f32).sqrt();
                let values: Vec<f32> = (0..rows * cols).map(|_| rng.uniform(-a, a)).collect();
                w.add_tensor(name, &dims, f.ggml_type(), quantize(f, &values));
            };
        let norm = |w: &mut GgufWriter, name: &str, rng: &mut Rng, n: usize| {
            let values: Vec<f32> = (0..n).map(|_| rng.uniform(0.8, 1.2)).collect();
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(name, &[n as u64], crate::gguf::GgmlType::F32, bytes);
        };

        let vector = |w: &mut GgufWriter, name: &str, values: &[f32]| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let dims = [values.len() as u64];
            w.add_tensor(name, &dims, crate::gguf::GgmlType::F32, bytes);
        };
        if !family.rope_freqs.is_empty() {
            vector(&mut w, "rope_freqs.weight", &family.rope_freqs);
        }
        let mut bias_rng = Rng(self.seed.wrapping_add(29) | 1);
        let mut bias = |w: &mut GgufWriter, name: &str, n: usize| {
            let values: Vec<f32> = (0..n).map(|_| bias_rng.uniform(-1.0, 1.0)).collect();
            vector(w, name, &values);
        };

        let mut embd_rng = Rng(self.seed.wrapping_add(7) | 1);
        let embd_data = match weights {
            true => {
                let embd: Vec<f32> = (0..self.vocab * self.n_embd)
                    .map(|_| embd_rng.uniform(-1.0, 1.0))
                    .collect();
                quantize(self.embd_format, &embd)
            }
            false => Vec::new(),
        };
        let dims = [self.n_embd as u64, self.vocab as u64];
        let embd_type = self.embd_format.ggml_type();
        w.add_tensor("token_embd.weight", &dims, embd_type, embd_data);
        let mut norm_rng = Rng(self.seed.wrapping_add(13) | 1);
        for l in 0..self.n_layer {
            let name = |t: &str| format!("blk.{l}.{t}.weight");
            let f = self.format;
            norm(&mut w, &name("attn_norm"), &mut norm_rng, self.n_embd);
            matrix(&mut w, &name("attn_q"), q_dim, self.n_embd, f);
            matrix(&mut w, &name("attn_k"), kv_dim, self.n_embd, f);
            matrix(&mut w, &name("attn_v"), kv_dim, self.n_embd, f);
            if family.qkv_bias {
                let bias_name = |t: &str| format!("blk.{l}.{t}.bias");
                bias(&mut w, &bias_name("attn_q"), q_dim);
                bias(&mut w, &bias_name("attn_k"), kv_dim);
                bias(&mut w, &bias_name("attn_v"), kv_dim);
            }
            matrix(&mut w, &name("attn_output"), self.n_embd, q_dim, f);
            norm(&mut w, &name("ffn_norm"), &mut norm_rng, self.n_embd);
            matrix(&mut w, &name("ffn_gate"), self.n_ff, self.n_embd, f);
            matrix(&mut w, &name("ffn_up"), self.n_ff, self.n_embd, f);
            matrix(&mut w, &name("ffn_down"), self.n_embd, self.n_ff, f);
        }
        norm(&mut w, "output_norm.weight", &mut norm_rng, self.n_embd);
        if !self.tied {
            matrix(
                &mut w,
                "output.weight",
                self.vocab,
                self.n_embd,
                self.embd_format,
            );
        }
        w
    }
}

/// xorshift64*: deterministic, seedable, and enough for random weights.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }
}

//! The engine: a model with its tokenizer and chat template, turning prompts
//! into streamed tokens. It remembers which tokens its KV cache holds, so a
//! prompt that extends the previous one (the next turn of a chat) runs only its
//! new tokens.

use crate::chat::{ChatError, ChatTemplate, Message};
use crate::clock;
use crate::forward::{ForwardError, LoadOptions, LoadPhase, Model, Output};
use crate::gguf::{GgufError, GgufFile};
use crate::gpu::GpuContext;
use crate::model::{ModelConfig, ModelError};
use crate::perplexity::{self, ChunkDone, Perplexity, PerplexityError, PerplexityOptions};
use crate::sampler::{Sampler, SamplerError, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};

/// Why the engine could not load or generate.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("chat template: {0}")]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error(
        "the prompt has {tokens} tokens, but the context holds {capacity} (one must stay free)"
    )]
    PromptTooLong { tokens: usize, capacity: usize },
    #[error("the model file has no chat template (tokenizer.chat_template)")]
    NoChatTemplate,
}

/// How a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    Stop,
    /// The token limit or the end of the context was reached.
    Length,
    /// The caller stopped it.
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Keep, for each step, this many of the highest `(id, logit)` pairs.
    pub top_logits: usize,
    /// Go on past end-of-generation tokens (for benchmarks and soak tests).
    pub ignore_eos: bool,
    /// Capture the attention weights of each step (see [`Engine::generate_observed`]).
    pub attention: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            top_logits: 0,
            ignore_eos: false,
            attention: false,
        }
    }
}

/// The attention of one step: how the newest token of the context weighed every
/// token of it, in every layer and query head. These are the weights whose output
/// chose the token generated next.
#[derive(Clone, Copy)]
pub struct AttentionStep<'a> {
    /// The ids of the context, position by position; the last is the newest.
    pub context: &'a [u32],
    /// `[n_layer, n_head, context.len()]`: each head's softmax weights, summing to 1.
    pub weights: &'a [f32],
    tokenizer: &'a Tokenizer,
}

impl AttentionStep<'_> {
    /// The text of the token at `position` of the context, on its own: bytes of
    /// a character split across tokens show as U+FFFD.
    pub fn token_text(&self, position: usize) -> String {
        let id = self.context.get(position).copied().unwrap_or(u32::MAX);
        String::from_utf8_lossy(self.tokenizer.token_bytes(id)).into_owned()
    }
}

/// One generation's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub prompt_tokens: Vec<u32>,
    /// Generated ids, an end-of-generation id included.
    pub tokens: Vec<u32>,
    /// The generated text, without the end-of-generation token's text.
    pub text: String,
    pub finish_reason: FinishReason,
    /// Prompt tokens run (those not already cached) per second.
    pub prefill_tokens_per_s: f64,
    /// Generated tokens per second after the first.
    pub decode_tokens_per_s: f64,
    /// For each step, the highest `(id, logit)` pairs of the logits that chose it.
    pub top_logits: Vec<Vec<(u32, f32)>>,
}

/// A loaded model ready to generate.
pub struct Engine {
    model: Model,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    /// The ids whose keys and values the cache holds, position by position.
    cached: Vec<u32>,
}

impl Engine {
    /// Loads a GGUF file (all of its bytes) onto the GPU.
    pub fn load(
        ctx: &GpuContext,
        bytes: &[u8],
        options: &LoadOptions,
    ) -> Result<Self, EngineError> {
        Self::load_with_progress(ctx, bytes, options, &mut |_, _, _| {})
    }

    /// [`Engine::load`], calling `progress(phase, done, total)` as it goes.
    pub fn load_with_progress(
        ctx: &GpuContext,
        bytes: &[u8],
        options: &LoadOptions,
        progress: &mut dyn FnMut(LoadPhase, u64, u64),
    ) -> Result<Self, EngineError> {
        let file = GgufFile::parse(bytes, bytes.len() as u64)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let template = ChatTemplate::from_gguf(&file)?;
        let model = Model::load_with_progress(ctx, &file, bytes, options, progress)?;
        Ok(Self {
            model,
            tokenizer,
            template,
            cached: Vec::new(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Positions of the context in use.
    pub fn context_used(&self) -> usize {
        self.cached.len()
    }

    /// Renders `messages` with the model's chat template and the assistant's
    /// generation prompt.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<String, EngineError> {
        let template = self.template.as_ref().ok_or(EngineError::NoChatTemplate)?;
        Ok(template.render(messages, true)?)
    }

    /// Token ids of raw text (`special`: control-token text becomes control tokens).
    pub fn encode(&self, text: &str, special: bool) -> Vec<u32> {
        let mut ids = Vec::new();
        if self.tokenizer.add_bos() {
            ids.extend(self.tokenizer.bos_id());
        }
        ids.extend(self.tokenizer.encode(text, special));
        ids
    }

    /// Forgets the conversation: the next prompt runs from position 0.
    pub fn reset(&mut self) {
        self.cached.clear();
        self.model.clear();
    }

    /// The perplexity of `text` as [`perplexity::perplexity`] measures it, in
    /// chunks of `context` tokens (at most `max_chunks` of them), calling
    /// `progress` after each. The chunks run through this engine's KV cache, so
    /// the conversation is forgotten.
    pub async fn perplexity(
        &mut self,
        text: &str,
        context: usize,
        max_chunks: Option<usize>,
        progress: &mut dyn FnMut(ChunkDone),
    ) -> Result<Perplexity, PerplexityError> {
        let tokens = self.tokenizer.encode(text, false);
        let options = PerplexityOptions {
            max_chunks,
            ..PerplexityOptions::for_tokenizer(&self.tokenizer, context)
        };
        self.reset();
        let result = perplexity::perplexity(&mut self.model, &tokens, &options, progress).await;
        self.reset();
        result
    }

    /// Generates from `prompt`, calling `on_token(id, text)` for each new token
    /// (`text` is only whole UTF-8 characters, so it can be empty); generation
    /// stops early, as [`FinishReason::Abort`], when it returns false.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<Generation, EngineError> {
        self.generate_observed(prompt, options, on_token, |_| {})
            .await
    }

    /// [`Engine::generate`], and with [`GenerateOptions::attention`], calls
    /// `on_attention` after each forward step, before `on_token` for the token
    /// that step chose.
    pub async fn generate_observed(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        mut on_token: impl FnMut(u32, &str) -> bool,
        mut on_attention: impl FnMut(&AttentionStep),
    ) -> Result<Generation, EngineError> {
        options.sampling.validate()?;
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let capacity = self.model.capacity();
        if prompt.len() >= capacity {
            return Err(EngineError::PromptTooLong {
                tokens: prompt.len(),
                capacity,
            });
        }

        // reuse the cached positions this prompt shares, keeping one to run
        let shared = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let shared = shared.min(prompt.len() - 1);
        self.model.truncate(shared);
        self.cached.truncate(shared);
        self.model.set_attention_capture(options.attention)?;

        let output = if options.sampling.is_plain_greedy() && options.top_logits == 0 {
            Output::Argmax
        } else {
            Output::TopK(options.sampling.candidates().max(options.top_logits))
        };
        let mut sampler = Sampler::new(options.sampling.clone());
        let mut history: Vec<u32> = prompt.to_vec();
        let mut decoder = StreamDecoder::new();
        let mut generation = Generation {
            prompt_tokens: prompt.to_vec(),
            tokens: Vec::new(),
            text: String::new(),
            finish_reason: FinishReason::Length,
            prefill_tokens_per_s: 0.0,
            decode_tokens_per_s: 0.0,
            top_logits: Vec::new(),
        };

        let start = clock::now();
        let mut out = self.run(&prompt[shared..], output).await?;
        let prefill_seconds = clock::now() - start;
        generation.prefill_tokens_per_s =
            (prompt.len() - shared) as f64 / prefill_seconds.max(1e-9);

        let decode_start = clock::now();
        let mut decode_steps = 0;
        while generation.tokens.len() < options.max_tokens {
            if options.attention {
                on_attention(&AttentionStep {
                    context: &self.cached,
                    weights: &out.attention,
                    tokenizer: &self.tokenizer,
                });
            }
            let id = match out.token {
                Some(id) => id,
                None => sampler.sample(&out.candidates, &history)?,
            };
            if options.top_logits > 0 {
                let k = options.top_logits.min(out.candidates.len());
                generation.top_logits.push(out.candidates[..k].to_vec());
            }
            generation.tokens.push(id);
            history.push(id);
            if self.tokenizer.is_eog(id) && !options.ignore_eos {
                generation.finish_reason = FinishReason::Stop;
                break;
            }
            let piece = decoder.push(&self.tokenizer, id);
            generation.text.push_str(&piece);
            if !on_token(id, &piece) {
                generation.finish_reason = FinishReason::Abort;
                break;
            }
            if generation.tokens.len() == options.max_tokens || self.model.len() == capacity {
                break;
            }
            out = self.run(&[id], output).await?;
            decode_steps += 1;
        }
        // bytes of an unfinished character, if generation stopped inside one
        let rest = decoder.finish();
        if let (false, Some(&last)) = (rest.is_empty(), generation.tokens.last()) {
            on_token(last, &rest);
            generation.text.push_str(&rest);
        }
        let decode_seconds = clock::now() - decode_start;
        if decode_steps > 0 {
            generation.decode_tokens_per_s = decode_steps as f64 / decode_seconds.max(1e-9);
        }
        Ok(generation)
    }

    /// Runs `ids` at the next positions and records them as cached. After a
    /// failure the cache's contents are unknown, so the engine starts over.
    async fn run(&mut self, ids: &[u32], output: Output) -> Result<crate::StepOutput, EngineError> {
        match self.model.forward(ids, output).await {
            Ok(out) => {
                self.cached.extend_from_slice(ids);
                Ok(out)
            }
            Err(e) => {
                self.reset();
                Err(e.into())
            }
        }
    }
}

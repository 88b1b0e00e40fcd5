//! The native command line: generate text, or tokenize it, with a GGUF model on
//! the machine's GPU (Vulkan; lavapipe on machines without one).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gqa_webgpu::chat::Message;
use gqa_webgpu::sampler::SamplingParams;
use gqa_webgpu::tokenizer::Tokenizer;
use gqa_webgpu::{
    gguf::GgufFile, ContextOptions, Engine, GenerateOptions, GpuContext, LoadOptions,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "gqa-webgpu",
    version,
    about = "Grouped-query-attention LLMs on WebGPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a raw prompt or a chat message.
    Generate(GenerateArgs),
    /// Print the token ids of a text as a JSON array.
    Tokenize(TokenizeArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// The GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Raw text to continue.
    #[arg(long, required_unless_present = "chat", conflicts_with = "chat")]
    prompt: Option<String>,
    /// A user message, wrapped in the model's chat template with its default system prompt.
    #[arg(long)]
    chat: Option<String>,
    /// Most tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    n: usize,
    /// 0 chooses the most likely token every time (greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the most likely tokens until their probability reaches P (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalise tokens seen in the last 64 (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Makes sampled runs repeatable on one adapter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --format json: the K highest [id, logit] pairs of each step.
    #[arg(long, default_value_t = 0)]
    top_logits: usize,
    /// Positions of the KV cache (default: the model's, at most 4096).
    #[arg(long)]
    context: Option<usize>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(clap::Args)]
struct TokenizeArgs {
    /// The GGUF model file.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    text: String,
    /// Read control-token text such as <|im_start|> as control tokens.
    #[arg(long)]
    special: bool,
}

/// An error for the user: one line, no backtrace.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Cli::parse().command {
        Command::Generate(args) => generate(args),
        Command::Tokenize(args) => tokenize(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {}", message.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Reads a model file, with a progress bar when stderr is a terminal.
fn read_model(path: &Path) -> Result<Vec<u8>, Failure> {
    let open_error = |e: std::io::Error| Failure(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(open_error)?;
    let len = file.metadata().map_err(open_error)?.len();
    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("reading model");
    let mut bytes = Vec::with_capacity(len as usize);
    let mut chunk = vec![0u8; 8 << 20];
    loop {
        let n = file.read(&mut chunk).map_err(open_error)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        bar.set_position(bytes.len() as u64);
    }
    bar.finish_and_clear();
    Ok(bytes)
}

fn generate(args: GenerateArgs) -> Result<(), Failure> {
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
        ..SamplingParams::default()
    };
    sampling.validate()?;
    if args.top_logits > gqa_webgpu::MAX_CANDIDATES {
        let max = gqa_webgpu::MAX_CANDIDATES;
        return Err(Failure(format!(
            "--top-logits {} is over the maximum of {max}",
            args.top_logits
        )));
    }
    let bytes = read_model(&args.model)?;

    let spinner = ProgressBar::new_spinner().with_message("loading the model onto the GPU");
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let ctx = pollster::block_on(GpuContext::new(ContextOptions::default()))?;
    let options = LoadOptions {
        max_seq: args.context,
        ..LoadOptions::default()
    };
    let mut engine = Engine::load(&ctx, &bytes, &options)?;
    drop(bytes);
    spinner.finish_and_clear();

    let prompt = match (&args.prompt, &args.chat) {
        (Some(text), _) => engine.encode(text, false),
        (None, Some(text)) => {
            let messages = [Message {
                role: "user".into(),
                content: text.clone(),
            }];
            let rendered = engine.chat_prompt(&messages)?;
            engine.encode(&rendered, true)
        }
        (None, None) => return Err(Failure("give --prompt or --chat".into())),
    };
    let options = GenerateOptions {
        max_tokens: args.n,
        sampling,
        top_logits: args.top_logits,
    };

    let mut stdout = std::io::stdout().lock();
    let streaming = args.format == Format::Text;
    let generation = pollster::block_on(engine.generate(&prompt, &options, |_, text| {
        if streaming {
            // a closed pipe ends generation instead of failing it
            return stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .is_ok();
        }
        true
    }))?;

    match args.format {
        Format::Text => {
            let _ = writeln!(stdout);
            eprintln!(
                "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s; finish: {}",
                generation.prompt_tokens.len(),
                generation.prefill_tokens_per_s,
                generation.tokens.len(),
                generation.decode_tokens_per_s,
                generation.finish_reason.as_str(),
            );
        }
        Format::Json => {
            let mut json = serde_json::json!({
                "prompt_tokens": generation.prompt_tokens,
                "tokens": generation.tokens,
                "text": generation.text,
                "finish_reason": generation.finish_reason.as_str(),
                "prefill_tokens_per_s": generation.prefill_tokens_per_s,
                "decode_tokens_per_s": generation.decode_tokens_per_s,
            });
            if args.top_logits > 0 {
                json["top_logits"] = serde_json::json!(generation.top_logits);
            }
            writeln!(stdout, "{json}")?;
        }
    }
    Ok(())
}

fn tokenize(args: TokenizeArgs) -> Result<(), Failure> {
    let bytes = read_model(&args.model)?;
    let file = GgufFile::parse(&bytes, bytes.len() as u64)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let ids = tokenizer.encode(&args.text, args.special);
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

//! The native command line: generate text, or tokenize it, with a GGUF model on
//! the machine's GPU (Vulkan; lavapipe on machines without one).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gqa_webgpu::bench::{self, BenchOptions, Report};
use gqa_webgpu::chat::Message;
use gqa_webgpu::compare::{self, CompareOptions, Stage};
use gqa_webgpu::perplexity::{self, ChunkDone, PerplexityOptions, DEFAULT_CONTEXT};
use gqa_webgpu::sampler::SamplingParams;
use gqa_webgpu::synthetic::SyntheticSpec;
use gqa_webgpu::tokenizer::Tokenizer;
use gqa_webgpu::{
    gguf::GgufFile, ContextOptions, Engine, GenerateOptions, GpuContext, LoadOptions, Model,
    ModelConfig,
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
    /// Measure perplexity on a text file, as llama.cpp's perplexity tool does.
    Perplexity(PerplexityArgs),
    /// Run the model with every KV-head count it allows (MHA, GQA, MQA, ...) and
    /// compare KV-cache memory, decode speed and perplexity.
    Variants(VariantsArgs),
    /// Measure the adapter's read bandwidth, then decode, prefill and attention
    /// against it, GPU memory, load time, and where decode time goes.
    Bench(BenchArgs),
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
    /// Go on past end-of-generation tokens until -n tokens are generated.
    #[arg(long)]
    ignore_eos: bool,
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

/// What `perplexity` and `variants` both read: a model, a text, and its chunks.
#[derive(clap::Args)]
struct TextArgs {
    /// The GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// A UTF-8 text file (e.g. data/kjv-genesis.txt).
    #[arg(long)]
    text: PathBuf,
    /// Tokens per chunk; each chunk is scored on its second half.
    #[arg(long, default_value_t = DEFAULT_CONTEXT)]
    context: usize,
    /// Most chunks to score (default: every whole chunk of the text).
    #[arg(long)]
    chunks: Option<usize>,
}

#[derive(clap::Args)]
struct PerplexityArgs {
    #[command(flatten)]
    input: TextArgs,
    /// Run with this many KV heads (default: as trained).
    #[arg(long)]
    kv_heads: Option<usize>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(clap::Args)]
struct VariantsArgs {
    #[command(flatten)]
    input: TextArgs,
    /// Positions in the cache when decode speed is measured.
    #[arg(long, default_value_t = 2048)]
    decode_context: usize,
    /// Decode steps timed at that context.
    #[arg(long, default_value_t = 8)]
    decode_steps: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The random models `bench --synthetic` can make in memory.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SyntheticModel {
    /// SmolLM2-135M's exact shapes and formats.
    #[value(name = "smollm2-135m")]
    Smollm2,
    /// A 2-layer model with 9 query heads over 3 KV heads, for quick checks.
    Tiny,
}

impl SyntheticModel {
    fn spec(self) -> SyntheticSpec {
        match self {
            Self::Smollm2 => SyntheticSpec::smollm2_135m(),
            Self::Tiny => bench::tiny_synthetic_spec(),
        }
    }
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The GGUF model file.
    #[arg(
        long,
        required_unless_present = "synthetic",
        conflicts_with = "synthetic"
    )]
    model: Option<PathBuf>,
    /// Random weights of a model's exact shapes and formats, made in memory
    /// (default: smollm2-135m), instead of a file.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "smollm2-135m")]
    synthetic: Option<SyntheticModel>,
    /// Cache positions at which a decode step is timed.
    #[arg(long, value_delimiter = ',', default_value = "0,512,2048")]
    contexts: Vec<usize>,
    /// Prompt lengths whose prefill is timed.
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    prompts: Vec<usize>,
    /// Keys read when grouped attention is timed alone.
    #[arg(long, value_delimiter = ',', default_value = "512,2048,8192")]
    attention_contexts: Vec<usize>,
    /// Keys read when GQA is timed against MHA.
    #[arg(long, default_value_t = 2048)]
    gqa_mha_context: usize,
    /// MiB each bandwidth probe reads (capped by the adapter's limits).
    #[arg(long, default_value_t = 256)]
    probe_mib: u64,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs; each figure is their median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip timing every dispatch of a decode step.
    #[arg(long)]
    no_profile: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
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
        Command::Perplexity(args) => perplexity(args),
        Command::Variants(args) => variants(args),
        Command::Bench(args) => bench(args),
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
        ignore_eos: args.ignore_eos,
        attention: false,
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

/// A text file's tokens, without BOS, and the perplexity options that go with them.
fn text_tokens(
    file: &GgufFile,
    path: &Path,
    context: usize,
    chunks: Option<usize>,
) -> Result<(Vec<u32>, PerplexityOptions), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
    let tokenizer = Tokenizer::from_gguf(file)?;
    let tokens = tokenizer.encode(&text, false);
    let options = PerplexityOptions {
        max_chunks: chunks,
        ..PerplexityOptions::for_tokenizer(&tokenizer, context)
    };
    // refuse a short text or a bad context before the slow load
    perplexity::chunk_count(tokens.len(), &options)?;
    Ok((tokens, options))
}

/// Runs perplexity, reporting each chunk on stderr.
fn measure_perplexity(
    model: &mut Model,
    tokens: &[u32],
    options: &PerplexityOptions,
    what: &str,
) -> Result<perplexity::Perplexity, Failure> {
    let mut report = |c: ChunkDone| {
        eprintln!(
            "{what}chunk {}/{}: {:.1} s, perplexity so far {:.4}",
            c.done, c.chunks, c.seconds, c.perplexity
        );
    };
    Ok(pollster::block_on(perplexity::perplexity(
        model,
        tokens,
        options,
        &mut report,
    ))?)
}

fn perplexity(args: PerplexityArgs) -> Result<(), Failure> {
    let bytes = read_model(&args.input.model)?;
    let file = GgufFile::parse(&bytes, bytes.len() as u64)?;
    let (tokens, options) = text_tokens(
        &file,
        &args.input.text,
        args.input.context,
        args.input.chunks,
    )?;

    let ctx = pollster::block_on(GpuContext::new(ContextOptions::default()))?;
    let load = LoadOptions {
        max_seq: Some(args.input.context),
        kv_heads: args.kv_heads,
        ..LoadOptions::default()
    };
    let mut model = Model::load(&ctx, &file, &bytes, &load)?;
    let kv_heads = model.config.n_kv_head;
    let result = measure_perplexity(&mut model, &tokens, &options, "")?;

    match args.format {
        Format::Text => println!("perplexity: {:.4}", result.perplexity),
        Format::Json => {
            let json = serde_json::json!({
                "perplexity": result.perplexity,
                "chunks": result.chunks,
                "tokens_scored": result.tokens_scored,
                "context": result.context,
                "kv_heads": kv_heads,
            });
            println!("{json}");
        }
    }
    Ok(())
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn variants(args: VariantsArgs) -> Result<(), Failure> {
    let bytes = read_model(&args.input.model)?;
    let file = GgufFile::parse(&bytes, bytes.len() as u64)?;
    let (tokens, perplexity) = text_tokens(
        &file,
        &args.input.text,
        args.input.context,
        args.input.chunks,
    )?;
    let trained = ModelConfig::from_gguf(&file, None)?;
    let options = CompareOptions {
        perplexity,
        decode_context: args.decode_context,
        decode_steps: args.decode_steps,
    };

    let ctx = pollster::block_on(GpuContext::new(ContextOptions::default()))?;
    let mut rows = Vec::new();
    for n in compare::variant_counts(&trained) {
        let what = format!("{n} KV heads: ");
        let mut report = |stage: Stage| match stage {
            Stage::Load => eprintln!("{what}loading"),
            Stage::Chunk(c) => eprintln!(
                "{what}chunk {}/{}: {:.1} s, perplexity so far {:.4}",
                c.done, c.chunks, c.seconds, c.perplexity
            ),
            Stage::Decode => eprintln!(
                "{what}timing decode at {} positions",
                options.decode_context
            ),
        };
        let row = pollster::block_on(compare::measure_variant(
            &ctx,
            &file,
            &bytes,
            n,
            &tokens,
            &options,
            &mut report,
        ))?;
        eprintln!(
            "{}: {:.2} tokens/s at {} positions",
            row.variant, row.decode_tokens_per_s, row.decode_context
        );
        rows.push(row);
    }

    if args.format == Format::Json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    if let Some(first) = rows.first() {
        println!(
            "{} query heads, {} KV heads trained; perplexity over {} chunk(s) of {} tokens \
             ({} scored) of {}",
            trained.n_head,
            trained.trained_kv_head,
            first.chunks,
            first.context,
            first.tokens_scored,
            args.input.text.display(),
        );
    }
    let at_max = format!("KV @ {}", trained.train_ctx);
    let speed = format!("tok/s @ {}", args.decode_context);
    let w = rows
        .iter()
        .map(|r| r.variant.len())
        .fold("variant".len(), usize::max);
    println!(
        "{:<w$} {:>8} {:>12} {:>12} {:>14} {:>12}",
        "variant", "KV heads", "KV/token", at_max, speed, "perplexity"
    );
    for r in &rows {
        println!(
            "{:<w$} {:>8} {:>12} {:>12} {:>14.2} {:>12.4}",
            r.variant,
            r.kv_heads,
            human_bytes(r.kv_bytes_per_token),
            human_bytes(r.kv_bytes_at_max_context),
            r.decode_tokens_per_s,
            r.perplexity,
        );
    }
    Ok(())
}

fn bench(args: BenchArgs) -> Result<(), Failure> {
    let options = BenchOptions {
        contexts: args.contexts,
        prompts: args.prompts,
        attention_contexts: args.attention_contexts,
        gqa_mha_context: args.gqa_mha_context,
        probe_bytes: args.probe_mib.saturating_mul(1 << 20),
        warmup: args.warmup,
        runs: args.runs,
        profile: !args.no_profile,
    };
    let start = gqa_webgpu::clock::now();
    let (bytes, name) = match (&args.model, args.synthetic) {
        (Some(path), _) => (read_model(path)?, path.display().to_string()),
        (None, Some(kind)) => {
            let spec = kind.spec();
            let name = format!(
                "synthetic: {} layers, {} heads over {} KV heads, {} and {}",
                spec.n_layer,
                spec.n_head,
                spec.n_kv_head,
                spec.format.name(),
                spec.embd_format.name()
            );
            (spec.to_gguf(), name)
        }
        (None, None) => return Err(Failure("give --model or --synthetic".into())),
    };
    let read_seconds = gqa_webgpu::clock::now() - start;
    let ctx = pollster::block_on(GpuContext::new(ContextOptions::default()))?;
    let report = pollster::block_on(bench::run(&ctx, &bytes, read_seconds, &name, &options))?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_bench(&report),
    }
    Ok(())
}

fn print_bench(r: &Report) {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "adapter: {} ({}, {})",
        r.adapter.name, r.adapter.backend, r.adapter.driver
    );
    println!("model: {}", r.model);
    println!(
        "timing: {}, median of {} runs after {} warm-up",
        r.timing, r.runs, r.warmup
    );
    for p in &r.bandwidth {
        println!(
            "read bandwidth, {}: {:.2} GB/s ({:.0} MiB)",
            p.layout,
            p.gb_per_s,
            mib(p.bytes)
        );
    }
    println!(
        "roofline: {:.2} GB/s ({})",
        r.roofline_gb_per_s, r.roofline_layout
    );
    for d in &r.decode {
        println!(
            "decode @ {:>5}: {:8.2} ms/token {:7.2} tokens/s (wall {:.2} ms); roofline {:.2} ms, \
             ratio {:.3}",
            d.context,
            d.ms_per_token,
            d.tokens_per_s,
            d.wall_ms_per_token,
            d.roofline_ms,
            d.roofline_ratio
        );
    }
    for p in &r.prefill {
        println!(
            "prefill {:>4} tokens: {:9.1} ms, {:7.1} tokens/s (wall {:.1} ms)",
            p.prompt_tokens, p.ms, p.tokens_per_s, p.wall_ms
        );
    }
    let attention = r
        .attention
        .iter()
        .chain([&r.attention_gqa, &r.attention_mha]);
    for a in attention {
        println!(
            "attention {}/{} heads @ {:>5}: {:.3} ms, {:.2} GB/s, {:.3} of the roofline",
            a.query_heads, a.kv_heads, a.context, a.ms, a.gb_per_s, a.roofline_ratio
        );
    }
    println!("attention GQA / MHA time: {:.3}", r.attention_gqa_over_mha);
    println!(
        "decode step: {} dispatches, {} submission(s), {} bytes read back",
        r.step.dispatches, r.step.submissions, r.step.readback_bytes_per_token
    );
    let m = &r.memory;
    println!(
        "GPU memory (MiB): weights {:.1}, KV cache {:.1} ({} positions), scratch {:.1}; \
         planned {:.1}, {:.1}, {:.1}",
        mib(m.weights),
        mib(m.kv_cache),
        m.max_seq,
        mib(m.scratch),
        mib(m.planned_weights),
        mib(m.planned_kv_cache),
        mib(m.planned_scratch)
    );
    let l = &r.load_seconds;
    println!(
        "load: read {:.3} s, parse {:.3} s, compile {:.3} s, upload {:.3} s",
        l.read, l.parse, l.compile, l.upload
    );
    if let Some(p) = &r.profile {
        println!(
            "decode profile @ {}: {:.2} ms in dispatches, {:.2} ms as one pass",
            p.context, p.dispatch_ms, p.pass_ms
        );
        for k in &p.kernels {
            println!(
                "  {:<14} {:>4} dispatches {:8.3} ms {:5.1}%",
                k.kernel,
                k.dispatches,
                k.ms_per_step,
                k.share * 100.0
            );
        }
    }
}

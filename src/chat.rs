//! Chat templates: the Jinja template a GGUF file carries in `tokenizer.chat_template`,
//! rendered with minijinja set up the way Hugging Face's `apply_chat_template` sets up Jinja2.
//!
//! Those settings: `trim_blocks` and `lstrip_blocks` on, the final newline dropped, Python's
//! string methods (`.strip()`, `.startswith()`, ...), a `raise_exception(msg)` function, and
//! the variables `messages`, `add_generation_prompt`, `bos_token` and `eos_token`. Hugging
//! Face also turns on Jinja2's loop controls (`{% break %}`, `{% continue %}`); minijinja's
//! `loop_controls` and `macros` features give those and `{% macro %}`.
//!
//! Not yet: Hugging Face's `tojson` and `strftime_now`. Messages here carry only text, so
//! `tojson` (used for tool definitions) is not reached; templates that check
//! `strftime_now is defined` fall back to their fixed date, which keeps renders reproducible.

use minijinja::{context, Environment, Error, ErrorKind, Value};

use crate::gguf::{GgufError, GgufFile};

/// The GGUF key holding the template text.
pub const TEMPLATE_KEY: &str = "tokenizer.chat_template";

// name of the one template in the environment; minijinja prints it in its own messages
const TEMPLATE_NAME: &str = "chat_template";

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Who speaks: "system", "user" or "assistant" in most templates.
    pub role: String,
    /// What they say.
    pub content: String,
}

impl Message {
    /// A message from `role` saying `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What went wrong compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template does not compile.
    #[error("the chat template does not compile{}: {detail}", on_line(*line))]
    Syntax {
        /// 1-based line of the error, when minijinja knows it.
        line: Option<usize>,
        /// What the parser found.
        detail: String,
    },
    /// The template called `raise_exception`, usually to reject the conversation (a role it
    /// does not know, roles that do not alternate).
    #[error("the chat template rejected the conversation: {message}")]
    Raised {
        /// The text the template passed to `raise_exception`.
        message: String,
    },
    /// Rendering failed for any other reason (an undefined variable's attribute, a bad filter).
    #[error("chat template failed{}: {detail}", on_line(*line))]
    Render {
        /// 1-based line of the error, when minijinja knows it.
        line: Option<usize>,
        /// What went wrong.
        detail: String,
    },
    /// A GGUF key the template or its tokens come from has the wrong type.
    #[error("reading the chat template from the GGUF file: {0}")]
    Gguf(#[from] GgufError),
}

fn on_line(line: Option<usize>) -> String {
    line.map(|n| format!(" on line {n}")).unwrap_or_default()
}

// Carried as the source of the minijinja error `raise_exception` returns, so that `render`
// can tell the template's own message from minijinja's errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Raised(String);

/// A compiled chat template with the bos / eos token texts it renders with.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// `source`: the template text; `bos`/`eos`: token texts made available as `bos_token` /
    /// `eos_token`. A template that does not compile is [`ChatError::Syntax`], with its line.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ChatError::Syntax {
                line: e.line(),
                detail: describe(&e),
            })?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// From a GGUF file: `None` when the file has no `tokenizer.chat_template`.
    ///
    /// `bos_token` / `eos_token` are the texts in `tokenizer.ggml.tokens` of the ids in
    /// `tokenizer.ggml.bos_token_id` / `eos_token_id`; an empty string when the id or the
    /// token list is absent, or the id is past the end of the list.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<Self>, ChatError> {
        if file.get(TEMPLATE_KEY).is_none() {
            return Ok(None);
        }
        let source = file.get_str(TEMPLATE_KEY)?;
        let tokens = match file.get("tokenizer.ggml.tokens") {
            Some(_) => file.get_str_array("tokenizer.ggml.tokens")?,
            None => Vec::new(),
        };
        let token_text = |key: &str| -> Result<&str, ChatError> {
            if file.get(key).is_none() {
                return Ok("");
            }
            let id = file.get_u32(key)?;
            match tokens.get(id as usize) {
                Some(text) => Ok(*text),
                None => {
                    log::warn!(
                        "{key} = {id} is past the {} tokens; using \"\"",
                        tokens.len()
                    );
                    Ok("")
                }
            }
        };
        let bos = token_text("tokenizer.ggml.bos_token_id")?;
        let eos = token_text("tokenizer.ggml.eos_token_id")?;
        Self::new(source, bos, eos).map(Some)
    }

    /// The conversation as the model expects to read it; `add_generation_prompt` appends the
    /// opening of the assistant's turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| render_error(&e))?;
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        };
        template.render(ctx).map_err(|e| render_error(&e))
    }
}

// `raise_exception(msg)` as Hugging Face defines it: fail the render with `msg`.
fn raise_exception(message: Value) -> Result<Value, Error> {
    let message = match message.as_str() {
        Some(text) => text.to_string(),
        None => message.to_string(),
    };
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

fn render_error(e: &Error) -> ChatError {
    // the template's own message may sit under errors minijinja wrapped it in
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(Raised(message)) = err.downcast_ref::<Raised>() {
            return ChatError::Raised {
                message: message.clone(),
            };
        }
        source = err.source();
    }
    ChatError::Render {
        line: e.line(),
        detail: describe(e),
    }
}

// The kind and detail of a minijinja error, without its "(in name:line)" suffix.
fn describe(e: &Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

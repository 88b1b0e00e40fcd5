//! The tokenizers of GGUF files, encoding as llama.cpp does: GPT-2-style byte-level BPE
//! (`tokenizer.ggml.model = "gpt2"`, below) and SentencePiece-style vocabularies
//! (`"llama"`, see [`Tokenizer::encode`] and `encode_spm`).
//!
//! `encode` follows llama.cpp's `llama_vocab::tokenize` for a `tokenizer.ggml.model = "gpt2"`
//! vocabulary, in four steps:
//! 1. special tokens are cut out of the text first (user-defined ones always, control ones only
//!    when `parse_special`), longest token text first;
//! 2. each remaining text fragment is split into words by the pre-tokenizer's regexes, applied
//!    one after the other, each splitting every piece the previous one left; text between two
//!    matches stays a piece of its own;
//! 3. each word's bytes are spelled in GPT-2's byte-to-character alphabet (`Ġ` for a space);
//! 4. BPE merges the word's symbols, always the lowest-ranked adjacent pair first, the leftmost
//!    of equal pairs first.
//!
//! Written from a reading of llama.cpp's `src/llama-vocab.cpp` and `src/unicode.cpp`. The
//! regexes are llama.cpp's, run here by `fancy-regex` instead of llama.cpp's own matchers and
//! category tables; `\p{..}` classes are limited to the Unicode version of those tables (see
//! `pin_unicode_age`), so that characters assigned since are classified as llama.cpp does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use fancy_regex::Regex;

use crate::gguf::GgufFile;

/// Why a tokenizer could not be built. Messages name the GGUF key or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(
        "tokenizer.ggml.model is {0:?}; supported: \"gpt2\" (byte-level BPE) and \"llama\" \
         (SentencePiece)"
    )]
    UnsupportedModel(String),
    #[error("tokenizer.ggml.scores has {got} entries for {n_vocab} tokens")]
    ScoreCount { got: usize, n_vocab: usize },
    #[error("tokenizer.ggml.pre is {name:?}, a pre-tokenizer this engine does not know; known: {}",
        known_pre_tokenizers().join(", "))]
    UnknownPreTokenizer { name: String },
    #[error("GGUF key {key}: {message}")]
    Gguf { key: &'static str, message: String },
    #[error("tokenizer.ggml.tokens is empty")]
    EmptyVocabulary,
    #[error("tokenizer.ggml.tokens has {0} entries, more than token ids can number (u32)")]
    VocabularyTooLarge(usize),
    #[error("tokenizer.ggml.token_type has {got} entries for {n_vocab} tokens")]
    TokenTypeCount { got: usize, n_vocab: usize },
    #[error("pre-tokenizer {pre:?}: regex {pattern:?} does not compile: {message}")]
    Regex {
        pre: String,
        pattern: &'static str,
        message: String,
    },
}

/// Token ids with a special role, as GGUF's `tokenizer.ggml.*_token_id` keys give them.
/// `None` where the file has no such key: then, as llama.cpp does, `eot`, `eom` and the
/// `fim_*` tokens are looked for by their usual texts (`<|im_end|>`, `<reponame>`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// Everything a tokenizer is built from; `Tokenizer::from_gguf` fills it from a file.
#[derive(Debug, Clone, Default)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`: "gpt2" (also when empty) or "llama" (SentencePiece)
    pub model: String,
    /// token texts, indexed by id: in GPT-2's byte alphabet (`Ġ` for a space) for "gpt2",
    /// with `▁` for a space and `<0xAB>` byte tokens for "llama"
    pub tokens: Vec<String>,
    /// "llama": `tokenizer.ggml.scores`, the higher merged first; empty means all 0
    pub scores: Vec<f32>,
    /// "llama": `tokenizer.ggml.add_space_prefix` (default true, as llama.cpp)
    pub add_space_prefix: Option<bool>,
    /// "llama": `tokenizer.ggml.unknown_token_id`, the fallback for a byte without a token
    pub unk: Option<u32>,
    /// BPE merges, highest priority first, each "left right"
    pub merges: Vec<String>,
    /// GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte;
    /// empty means all normal
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.pre`: which pre-tokenizer splits text into words ("" means "default")
    pub pre: String,
    pub special: SpecialIds,
    /// `tokenizer.ggml.add_bos_token`; `None` takes the pre-tokenizer's default, as llama.cpp
    pub add_bos: Option<bool>,
}

/// A byte-level BPE tokenizer; see the module comment for what `encode` does.
pub struct Tokenizer {
    // as the file names it; "default" when it names none
    pre_name: String,
    pre: PreTokenizer,
    // [n_regex] compiled pre-tokenizer regexes, applied in order
    regexes: Vec<Regex>,
    token_to_id: HashMap<String, u32>,
    // [n_vocab] ATTR_* bits
    attrs: Vec<u8>,
    // tokens cut out of the text before BPE, longest text first
    specials: Vec<SpecialToken>,
    // (left piece, right piece) -> (rank, merged piece); pieces below n_vocab are token ids,
    // the others name merge operands or results that are not tokens
    merges: MergeTable,
    // [256] piece of each raw byte's GPT-2 character
    byte_piece: Vec<u32>,
    // [128] token spelled by one printable ASCII byte, the last resort for an unknown piece
    ascii_token: Vec<Option<u32>>,
    // all tokens' decoded bytes back to back; token i is piece_bytes[offsets[i]..offsets[i+1]]
    piece_bytes: Vec<u8>,
    // [n_vocab + 1] offsets into piece_bytes
    piece_offsets: Vec<u32>,
    // sorted
    eog: Vec<u32>,
    bos: Option<u32>,
    add_bos: bool,
    /// `Some` for a SentencePiece vocabulary, which encodes by `encode_spm`.
    spm: Option<Spm>,
}

/// What a SentencePiece (`"llama"`) vocabulary adds.
struct Spm {
    // [n_vocab] merge priority of each token: the highest first
    scores: Vec<f32>,
    // [256] the token of each byte: "<0xAB>", or the byte itself where it is an ASCII token,
    // else the unknown token (llama.cpp would stop with an error there)
    byte_token: Vec<Option<u32>>,
    // a space before the text of the start and of each piece after a special token
    add_space_prefix: bool,
}

// Token attributes, as llama.cpp derives them from GGUF token types.
const ATTR_NORMAL: u8 = 1 << 0;
const ATTR_UNKNOWN: u8 = 1 << 1;
const ATTR_CONTROL: u8 = 1 << 2;
const ATTR_USER_DEFINED: u8 = 1 << 3;
const ATTR_UNUSED: u8 = 1 << 4;
const ATTR_BYTE: u8 = 1 << 5;

struct SpecialToken {
    id: u32,
    text: String,
    // control and unknown tokens are only recognised when the caller asks for it
    needs_parse_special: bool,
    // drop ASCII whitespace before / after the token, when it is cut out of the text
    lstrip: bool,
    rstrip: bool,
}

impl Tokenizer {
    /// Reads the `tokenizer.ggml.*` keys of a GGUF file, as llama.cpp's vocabulary loader.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model = file
            .get_str("tokenizer.ggml.model")
            .map_err(|e| gguf_error("tokenizer.ggml.model", e))?;
        if model != "gpt2" && model != "llama" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let spm = model == "llama";

        let pre = match file.get("tokenizer.ggml.pre") {
            // a SentencePiece vocabulary splits no words: the key means nothing there
            _ if spm => String::new(),
            Some(_) => file
                .get_str("tokenizer.ggml.pre")
                .map_err(|e| gguf_error("tokenizer.ggml.pre", e))?
                .to_string(),
            None => {
                log::warn!(
                    "tokenizer.ggml.pre is missing; using the 'default' pre-tokenizer, which \
                     may split text differently from the model's own tokenizer"
                );
                String::new()
            }
        };
        let tokens: Vec<String> = file
            .get_str_array("tokenizer.ggml.tokens")
            .map_err(|e| gguf_error("tokenizer.ggml.tokens", e))?
            .into_iter()
            .map(str::to_string)
            .collect();
        let merges: Vec<String> = match spm {
            true => Vec::new(),
            false => file
                .get_str_array("tokenizer.ggml.merges")
                .map_err(|e| gguf_error("tokenizer.ggml.merges", e))?
                .into_iter()
                .map(str::to_string)
                .collect(),
        };
        let scores = match file.get("tokenizer.ggml.scores") {
            Some(_) if spm => file
                .get_array("tokenizer.ggml.scores")
                .map_err(|e| gguf_error("tokenizer.ggml.scores", e))?
                .iter()
                .map(|v| match v {
                    crate::gguf::Value::F32(f) => Ok(*f),
                    other => Err(TokenizerError::Gguf {
                        key: "tokenizer.ggml.scores",
                        message: format!("expected an array of f32, found {other}"),
                    }),
                })
                .collect::<Result<Vec<f32>, _>>()?,
            _ => Vec::new(),
        };
        let add_space_prefix = match file.get("tokenizer.ggml.add_space_prefix") {
            None => None,
            Some(value) => Some(value.as_bool().ok_or_else(|| TokenizerError::Gguf {
                key: "tokenizer.ggml.add_space_prefix",
                message: format!("expected a bool, found {value}"),
            })?),
        };
        let token_types = match file.get("tokenizer.ggml.token_type") {
            Some(_) => file
                .get_i32_array("tokenizer.ggml.token_type")
                .map_err(|e| gguf_error("tokenizer.ggml.token_type", e))?,
            None => Vec::new(),
        };

        let id = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            match file.get(key) {
                None => Ok(None),
                Some(value) => match value.as_u64() {
                    Some(v) => Ok(Some(u32::try_from(v).unwrap_or(u32::MAX))),
                    None => Err(TokenizerError::Gguf {
                        key,
                        message: "expected an unsigned integer token id".to_string(),
                    }),
                },
            }
        };
        // llama.cpp gives a "gpt2" vocabulary bos = eos = 11 when the keys are missing, a
        // "llama" one bos 1, eos 2 and unknown 0
        let default_id = |gpt2: u32, llama: u32| {
            let id = if spm { llama } else { gpt2 };
            (tokens.len() > id as usize).then_some(id)
        };
        let unk = match spm {
            true => id("tokenizer.ggml.unknown_token_id")?.or(default_id(0, 0)),
            false => None,
        };
        let special = SpecialIds {
            bos: id("tokenizer.ggml.bos_token_id")?.or(default_id(11, 1)),
            eos: id("tokenizer.ggml.eos_token_id")?.or(default_id(11, 2)),
            eot: id("tokenizer.ggml.eot_token_id")?,
            eom: id("tokenizer.ggml.eom_token_id")?,
            // the deprecated prefix / suffix / middle keys win, as llama.cpp reads them last
            fim_pre: id("tokenizer.ggml.prefix_token_id")?
                .or(id("tokenizer.ggml.fim_pre_token_id")?),
            fim_suf: id("tokenizer.ggml.suffix_token_id")?
                .or(id("tokenizer.ggml.fim_suf_token_id")?),
            fim_mid: id("tokenizer.ggml.middle_token_id")?
                .or(id("tokenizer.ggml.fim_mid_token_id")?),
            fim_pad: id("tokenizer.ggml.fim_pad_token_id")?,
            fim_rep: id("tokenizer.ggml.fim_rep_token_id")?,
            fim_sep: id("tokenizer.ggml.fim_sep_token_id")?,
        };
        let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
            None => None,
            Some(value) => Some(value.as_bool().ok_or_else(|| TokenizerError::Gguf {
                key: "tokenizer.ggml.add_bos_token",
                message: format!("expected a bool, found {value}"),
            })?),
        };

        Tokenizer::new(TokenizerSpec {
            model: model.to_string(),
            tokens,
            scores,
            add_space_prefix,
            unk,
            merges,
            token_types,
            pre,
            special,
            add_bos,
        })
    }

    /// Builds a tokenizer from its parts; special ids outside the vocabulary are ignored with
    /// a warning, as llama.cpp ignores them.
    pub fn new(spec: TokenizerSpec) -> Result<Tokenizer, TokenizerError> {
        let is_spm = match spec.model.as_str() {
            "" | "gpt2" => false,
            "llama" => true,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        // a SentencePiece vocabulary splits no words: the default's regexes go unused
        let pre_name = if is_spm { "" } else { spec.pre.as_str() };
        let pre =
            PreTokenizer::by_name(pre_name).ok_or_else(|| TokenizerError::UnknownPreTokenizer {
                name: spec.pre.clone(),
            })?;
        let regexes = pre
            .patterns
            .iter()
            .map(|&pattern| {
                Regex::new(&pin_unicode_age(pattern)).map_err(|e| TokenizerError::Regex {
                    pre: pre_name.to_string(),
                    pattern,
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let n_vocab = spec.tokens.len();
        if n_vocab == 0 {
            return Err(TokenizerError::EmptyVocabulary);
        }
        if u32::try_from(n_vocab).is_err() {
            return Err(TokenizerError::VocabularyTooLarge(n_vocab));
        }
        if !spec.token_types.is_empty() && spec.token_types.len() < n_vocab {
            return Err(TokenizerError::TokenTypeCount {
                got: spec.token_types.len(),
                n_vocab,
            });
        }
        if is_spm && !spec.scores.is_empty() && spec.scores.len() < n_vocab {
            return Err(TokenizerError::ScoreCount {
                got: spec.scores.len(),
                n_vocab,
            });
        }

        // llama.cpp renames empty tokens, so that no special token matches everywhere
        let texts: Vec<String> = spec
            .tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t
                }
            })
            .collect();
        let mut attrs: Vec<u8> = (0..n_vocab)
            .map(|i| {
                spec.token_types
                    .get(i)
                    .map_or(ATTR_NORMAL, |&t| attr_of_type(t))
            })
            .collect();
        let mut token_to_id: HashMap<String, u32> = HashMap::with_capacity(n_vocab);
        for (i, text) in texts.iter().enumerate() {
            // a repeated text maps to its last id, as in llama.cpp
            token_to_id.insert(text.clone(), i as u32);
        }

        let mut special = spec.special;
        for (key, slot) in special_slots(&mut special) {
            if let Some(id) = *slot {
                if id as usize >= n_vocab {
                    log::warn!(
                        "{key} = {id} is outside the {n_vocab}-token vocabulary; ignoring it"
                    );
                    *slot = None;
                }
            }
        }
        let eog = find_eog_tokens(&texts, &token_to_id, &mut attrs, &mut special);

        let specials = special_tokens(&texts, &attrs, &spec.pre);
        let (merges, byte_piece) = build_merges(&spec.merges, &token_to_id, n_vocab);
        // only the bytes GPT-2 spells as themselves can be found alone (see encode_word)
        let ascii_token: Vec<Option<u32>> = (0u8..128)
            .map(|b| {
                let c = char::from(b);
                if BYTE_CHARS[b as usize] == c {
                    token_to_id.get(&c.to_string()).copied()
                } else {
                    None
                }
            })
            .collect();
        let (piece_bytes, piece_offsets) = decoded_pieces(&texts, &attrs, is_spm);
        let spm = is_spm.then(|| {
            let unk = spec.unk.filter(|&id| (id as usize) < n_vocab);
            let byte_token = (0..=255u8)
                .map(|b| {
                    let hex = token_to_id.get(&format!("<0x{b:02X}>"));
                    let ascii = b
                        .is_ascii()
                        .then(|| token_to_id.get(&char::from(b).to_string()));
                    hex.or(ascii.flatten()).copied().or(unk)
                })
                .collect();
            let mut scores = spec.scores;
            scores.resize(n_vocab, 0.0);
            Spm {
                scores,
                byte_token,
                add_space_prefix: spec.add_space_prefix.unwrap_or(true),
            }
        });

        Ok(Tokenizer {
            regexes,
            token_to_id,
            attrs,
            specials,
            merges,
            byte_piece,
            ascii_token,
            piece_bytes,
            piece_offsets,
            eog,
            bos: special.bos,
            // llama.cpp's SentencePiece vocabularies add BOS unless the file says not to
            add_bos: spec.add_bos.unwrap_or(is_spm || pre.add_bos),
            spm,
            pre_name: if is_spm {
                "none (SentencePiece)".to_string()
            } else if spec.pre.is_empty() {
                "default".to_string()
            } else {
                spec.pre
            },
            pre,
        })
    }

    /// Token ids of `text`, without BOS. With `parse_special`, the text of a control token
    /// such as "<|im_start|>" becomes that token (llama.cpp's `special = true`); without it,
    /// that text is tokenized as ordinary text. User-defined tokens are always recognised.
    ///
    /// A SentencePiece vocabulary, as llama.cpp's `llm_tokenizer_spm`: each text fragment
    /// left between special tokens has its spaces written `▁`, and a `▁` put before it
    /// when it starts the text or follows a special token (with `add_space_prefix`), then
    /// is encoded whole by [`Tokenizer::encode_spm`].
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        if let Some(spm) = &self.spm {
            let mut after_special = true;
            for fragment in self.partition_specials(text, parse_special) {
                match fragment {
                    Fragment::Token(id) => {
                        ids.push(id);
                        after_special = true;
                    }
                    Fragment::Text(range) => {
                        let prefix = if spm.add_space_prefix && after_special {
                            SPM_SPACE
                        } else {
                            ""
                        };
                        let escaped = format!("{prefix}{}", text[range].replace(' ', SPM_SPACE));
                        self.encode_spm(spm, &escaped, &mut ids);
                        after_special = false;
                    }
                }
            }
            return ids;
        }
        for fragment in self.partition_specials(text, parse_special) {
            match fragment {
                Fragment::Token(id) => ids.push(id),
                Fragment::Text(range) => {
                    for word in self.split_words(&text[range]) {
                        self.encode_word(word.as_bytes(), &mut ids);
                    }
                }
            }
        }
        ids
    }

    /// The bytes a token stands for: a normal token's text mapped back from GPT-2's byte
    /// alphabet; the text itself for control, unknown and user-defined tokens; nothing for
    /// unused tokens and ids outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i + 1 >= self.piece_offsets.len() {
            return &[];
        }
        &self.piece_bytes[self.piece_offsets[i] as usize..self.piece_offsets[i + 1] as usize]
    }

    /// The tokens' bytes, concatenated, as UTF-8 with invalid sequences replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn vocab_size(&self) -> usize {
        self.attrs.len()
    }

    /// The id of the token spelled `text` (in GPT-2's byte alphabet, e.g. "<|im_start|>").
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// Whether generation ends at this token (llama.cpp's `llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether the token is a control token (never part of ordinary text).
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & ATTR_CONTROL != 0)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Whether a prompt should start with BOS (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The pre-tokenizer's name, as the file gives it ("smollm", "llama-bpe", ...).
    pub fn pre_tokenizer(&self) -> &str {
        &self.pre_name
    }

    /// Cuts special tokens out of `text`, as llama.cpp's `tokenizer_st_partition`: for each
    /// special token, longest first, every occurrence in every fragment still raw is cut out.
    fn partition_specials(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut fragments = Vec::new();
        if !text.is_empty() {
            fragments.push(Fragment::Text(0..text.len()));
        }
        for special in &self.specials {
            if special.needs_parse_special && !parse_special {
                continue;
            }
            let pattern = special.text.as_str();
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut range) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(found) = text[range.clone()].find(pattern) {
                    let start = range.start + found;
                    let mut left_end = start;
                    if special.lstrip {
                        while left_end > range.start && is_c_space(text.as_bytes()[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > range.start {
                        next.push(Fragment::Text(range.start..left_end));
                    }
                    next.push(Fragment::Token(special.id));
                    range.start = start + pattern.len();
                    if special.rstrip {
                        while range.start < range.end && is_c_space(text.as_bytes()[range.start]) {
                            range.start += 1;
                        }
                    }
                }
                if !range.is_empty() {
                    next.push(Fragment::Text(range));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// Splits text into words: each regex splits every piece the previous regexes left, and
    /// the text between two matches stays a piece too, as llama.cpp's `unicode_regex_split`.
    fn split_words<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = vec![text];
        for regex in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut done = 0;
                for found in regex.find_iter(piece) {
                    let found = match found {
                        Ok(m) => m,
                        Err(e) => {
                            // The rest of the piece stays one word; BPE still encodes all of it.
                            log::warn!(
                                "pre-tokenizer regex gave up on a {}-byte piece: {e}",
                                piece.len()
                            );
                            break;
                        }
                    };
                    if found.start() > done {
                        next.push(&piece[done..found.start()]);
                    }
                    if found.end() > found.start() {
                        next.push(found.as_str());
                    }
                    done = found.end();
                }
                if done < piece.len() {
                    next.push(&piece[done..]);
                }
            }
            pieces = next;
        }
        pieces
    }

    /// Byte-level BPE of one word, appending its token ids.
    fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        if self.pre.ignore_merges {
            // llama3-style vocabularies take a whole word that is a token as it is
            let spelled: String = word.iter().map(|&b| BYTE_CHARS[b as usize]).collect();
            if let Some(&id) = self.token_to_id.get(&spelled) {
                out.push(id);
                return;
            }
        }

        // Symbol i starts at byte i of the word and only ever grows to the right, by taking
        // in its right neighbour; a symbol taken in has len 0.
        let mut symbols: Vec<Symbol> = word
            .iter()
            .enumerate()
            .map(|(i, &b)| Symbol {
                len: 1,
                piece: self.byte_piece[b as usize],
                prev: i.wrapping_sub(1),
                next: i + 1,
            })
            .collect();
        let mut queue = BinaryHeap::new();
        for left in 1..symbols.len() {
            self.queue_pair(&symbols, left - 1, left, &mut queue);
        }

        while let Some(Reverse(pair)) = queue.pop() {
            let (left, right) = (pair.left as usize, pair.right as usize);
            // a pair whose symbols changed since it was queued is stale
            if symbols[left].len != pair.left_len || symbols[right].len != pair.right_len {
                continue;
            }
            let after = symbols[right].next;
            symbols[left].len += symbols[right].len;
            symbols[left].piece = pair.merged;
            symbols[left].next = after;
            symbols[right].len = 0;
            if after < symbols.len() {
                symbols[after].prev = left;
            }
            let before = symbols[left].prev;
            if before < symbols.len() {
                self.queue_pair(&symbols, before, left, &mut queue);
            }
            if after < symbols.len() {
                self.queue_pair(&symbols, left, after, &mut queue);
            }
        }

        let mut i = 0;
        while i < symbols.len() {
            let symbol = &symbols[i];
            if (symbol.piece as usize) < self.attrs.len() {
                out.push(symbol.piece);
            } else {
                // Not a token: llama.cpp looks each byte of its GPT-2 spelling up alone, which
                // finds only printable ASCII; other bytes are dropped.
                for &b in &word[i..i + symbol.len as usize] {
                    if let Some(Some(id)) = self.ascii_token.get(b as usize) {
                        out.push(*id);
                    }
                }
            }
            i = symbol.next;
        }
    }

    /// SentencePiece merging of one escaped fragment: its characters start as symbols;
    /// the adjacent pair whose joined text is the token of the highest score merges first,
    /// the leftmost among equal scores, until no pair is a token. A symbol left that is not
    /// a token (a single character) becomes the tokens of its UTF-8 bytes.
    fn encode_spm(&self, spm: &Spm, text: &str, out: &mut Vec<u32>) {
        // Symbol i starts at character i and grows rightwards, as in `encode_word`; `piece`
        // is unused here, the text is looked up instead.
        let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let mut symbols: Vec<Symbol> = starts
            .iter()
            .enumerate()
            .map(|(i, &start)| Symbol {
                len: (starts.get(i + 1).copied().unwrap_or(text.len()) - start) as u32,
                piece: start as u32,
                prev: i.wrapping_sub(1),
                next: i + 1,
            })
            .collect();
        let mut queue = BinaryHeap::new();
        let push = |symbols: &[Symbol], left: usize, right: usize, queue: &mut BinaryHeap<_>| {
            let start = symbols[left].piece as usize;
            let len = (symbols[left].len + symbols[right].len) as usize;
            if let Some(&id) = self.token_to_id.get(&text[start..start + len]) {
                queue.push(SpmPair {
                    score: spm.scores[id as usize],
                    left: Reverse(left),
                    right,
                    len: len as u32,
                });
            }
        };
        for right in 1..symbols.len() {
            push(&symbols, right - 1, right, &mut queue);
        }

        while let Some(pair) = queue.pop() {
            let (Reverse(left), right) = (pair.left, pair.right);
            // stale when either side merged since: their lengths no longer add up
            let (l, r) = (symbols[left].len, symbols[right].len);
            if l == 0 || r == 0 || l + r != pair.len {
                continue;
            }
            let after = symbols[right].next;
            symbols[left].len += r;
            symbols[left].next = after;
            symbols[right].len = 0;
            if after < symbols.len() {
                symbols[after].prev = left;
                push(&symbols, left, after, &mut queue);
            }
            let before = symbols[left].prev;
            if before < symbols.len() {
                push(&symbols, before, left, &mut queue);
            }
        }

        let mut i = 0;
        while i < symbols.len() {
            let (start, len) = (symbols[i].piece as usize, symbols[i].len as usize);
            let piece = &text[start..start + len];
            match self.token_to_id.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| spm.byte_token[b as usize])),
            }
            i = symbols[i].next;
        }
    }

    fn queue_pair(
        &self,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Reverse<Pair>>,
    ) {
        let key = pair_key(symbols[left].piece, symbols[right].piece);
        if let Some(&(rank, merged)) = self.merges.get(&key) {
            queue.push(Reverse(Pair {
                rank,
                left: left as u32,
                right: right as u32,
                left_len: symbols[left].len,
                right_len: symbols[right].len,
                merged,
            }));
        }
    }
}

/// Streaming detokenizer: push ids one at a time and get back only complete UTF-8 text. An
/// incomplete multi-byte sequence is held back until it completes; an invalid sequence becomes
/// one U+FFFD, so the pieces joined equal `decode` of all the ids.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    // bytes of an incomplete UTF-8 sequence at the end of what was pushed
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the text it completes (often empty mid-character).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tok.token_bytes(id));
        self.take_text(false)
    }

    /// Ends the stream: an incomplete sequence still held back becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        self.take_text(true)
    }

    fn take_text(&mut self, at_end: bool) -> String {
        let mut text = String::new();
        let mut used = 0;
        while used < self.pending.len() {
            match std::str::from_utf8(&self.pending[used..]) {
                Ok(valid) => {
                    text.push_str(valid);
                    used = self.pending.len();
                }
                Err(e) => {
                    let valid_end = used + e.valid_up_to();
                    text.push_str(&String::from_utf8_lossy(&self.pending[used..valid_end]));
                    match e.error_len() {
                        Some(n) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            used = valid_end + n;
                        }
                        None if at_end => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            used = self.pending.len();
                        }
                        None => {
                            used = valid_end;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..used);
        text
    }
}

/// The pre-tokenizer names `Tokenizer::new` accepts.
pub fn known_pre_tokenizers() -> Vec<&'static str> {
    PRE_TOKENIZERS
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect()
}

enum Fragment {
    Text(std::ops::Range<usize>),
    Token(u32),
}

struct Symbol {
    // in bytes of the word
    len: u32,
    piece: u32,
    // neighbour symbol indices; out of range (usize::MAX or len) when there is none
    prev: usize,
    next: usize,
}

/// A mergeable adjacent pair; ordered by rank, then leftmost first, as llama.cpp's queue.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    rank: u32,
    left: u32,
    right: u32,
    left_len: u32,
    right_len: u32,
    merged: u32,
}

/// SentencePiece's stand-in for a space, U+2581.
const SPM_SPACE: &str = "\u{2581}";

/// A SentencePiece pair that would merge into a token; ordered as llama.cpp's queue pops:
/// the highest score first, then the leftmost.
struct SpmPair {
    score: f32,
    left: Reverse<usize>,
    right: usize,
    // bytes of the two symbols together when queued
    len: u32,
}

impl PartialEq for SpmPair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for SpmPair {}

impl PartialOrd for SpmPair {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SpmPair {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.left.cmp(&other.left))
    }
}

/// One of llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`, reduced to what encoding needs.
#[derive(Clone, Copy)]
struct PreTokenizer {
    patterns: &'static [&'static str],
    // a word that is itself a token is not merged (llama.cpp's `ignore_merges`)
    ignore_merges: bool,
    // add_bos when the file does not say
    add_bos: bool,
}

impl PreTokenizer {
    fn by_name(name: &str) -> Option<PreTokenizer> {
        let name = if name.is_empty() { "default" } else { name };
        PRE_TOKENIZERS
            .iter()
            .find(|(names, _)| names.contains(&name))
            .map(|&(_, pre)| pre)
    }
}

// GPT-2's word regex. llama.cpp runs it by a hand-written matcher (`..._custom_gpt2`) that
// behaves as this regex does; text between matches (a lone "\n" before a letter) becomes a
// word of its own there too.
const GPT2_WORDS: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
// Case-insensitive contractions spelled out, as llama.cpp adapts the tokenizer.json regex.
const LLAMA3_WORDS: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const QWEN2_WORDS: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const fn pre(
    patterns: &'static [&'static str],
    ignore_merges: bool,
    add_bos: bool,
) -> PreTokenizer {
    PreTokenizer {
        patterns,
        ignore_merges,
        add_bos,
    }
}

// Names as in llama.cpp's `llama_vocab::impl::load`, grouped by the regexes they use.
// "gpt2" is this engine's alias: llama.cpp spells the pre-tokenizer "gpt-2".
static PRE_TOKENIZERS: &[(&[&str], PreTokenizer)] = &[
    (
        &["default"],
        pre(
            &[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_WORDS,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ],
            false,
            false,
        ),
    ),
    (
        &[
            "gpt-2",
            "gpt2",
            "phi-2",
            "mpt",
            "olmo",
            "jais",
            "exaone4",
            "a.x-4.0",
            "mellum",
            "gigachat",
            "trillion",
            "granite-docling",
            "jina-v2-de",
            "jina-v2-es",
            "jina-v2-code",
            "roberta-bpe",
        ],
        pre(&[GPT2_WORDS], false, false),
    ),
    // digits one by one, then GPT-2's words
    (
        &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        pre(&[r"\p{N}", GPT2_WORDS], false, false),
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
        ],
        pre(&[LLAMA3_WORDS], true, true),
    ),
    (&["dbrx", "smaug-bpe"], pre(&[LLAMA3_WORDS], false, false)),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
        ],
        pre(&[QWEN2_WORDS], false, false),
    ),
];

/// The Unicode version of llama.cpp's category tables (`src/unicode-data.cpp`), which treat
/// characters assigned later as unassigned: neither letters nor numbers nor punctuation.
const LLAMA_CPP_UNICODE_AGE: &str = "15.1";

/// Limits each `\p{..}` class of a pattern to characters assigned by `LLAMA_CPP_UNICODE_AGE`,
/// so that fancy-regex (whose tables may be newer) classifies characters as llama.cpp does.
/// The result nests classes, which the regex syntax allows inside `[...]` too.
fn pin_unicode_age(pattern: &str) -> String {
    let mut pinned = String::with_capacity(pattern.len() * 2);
    let mut rest = pattern;
    while let Some(start) = rest.find(r"\p{") {
        let Some(len) = rest[start..].find('}').map(|end| end + 1) else {
            break;
        };
        pinned.push_str(&rest[..start]);
        pinned.push('[');
        pinned.push_str(&rest[start..start + len]);
        pinned.push_str(&format!(r"&&\p{{Age={LLAMA_CPP_UNICODE_AGE}}}]"));
        rest = &rest[start + len..];
    }
    pinned.push_str(rest);
    pinned
}

/// GPT-2's printable stand-in for each byte: printable Latin-1 stands for itself, the other
/// 68 bytes (controls, space, 0x7F-0xA0, 0xAD) take U+0100 onwards in byte order.
static BYTE_CHARS: [char; 256] = byte_chars();

const fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_spare = 0x100u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        let code = if printable {
            b as u32
        } else {
            next_spare += 1;
            next_spare - 1
        };
        table[b] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// The byte a GPT-2 alphabet character stands for.
fn byte_of_char(c: char) -> Option<u8> {
    let byte = *CHAR_BYTES.get(c as usize)?;
    u8::try_from(byte).ok()
}

// [0x144] inverse of BYTE_CHARS; -1 where a character stands for no byte
static CHAR_BYTES: [i16; 0x144] = char_bytes();

const fn char_bytes() -> [i16; 0x144] {
    let mut table = [-1i16; 0x144];
    let mut b = 0usize;
    while b < 256 {
        table[BYTE_CHARS[b] as usize] = b as i16;
        b += 1;
    }
    table
}

fn attr_of_type(token_type: i32) -> u8 {
    match token_type {
        1 => ATTR_NORMAL,
        2 => ATTR_UNKNOWN,
        3 => ATTR_CONTROL,
        4 => ATTR_USER_DEFINED,
        5 => ATTR_UNUSED,
        6 => ATTR_BYTE,
        // llama.cpp's "undefined": neither encoded specially nor decoded
        _ => 0,
    }
}

fn special_slots(ids: &mut SpecialIds) -> [(&'static str, &mut Option<u32>); 10] {
    [
        ("tokenizer.ggml.bos_token_id", &mut ids.bos),
        ("tokenizer.ggml.eos_token_id", &mut ids.eos),
        ("tokenizer.ggml.eot_token_id", &mut ids.eot),
        ("tokenizer.ggml.eom_token_id", &mut ids.eom),
        ("tokenizer.ggml.fim_pre_token_id", &mut ids.fim_pre),
        ("tokenizer.ggml.fim_suf_token_id", &mut ids.fim_suf),
        ("tokenizer.ggml.fim_mid_token_id", &mut ids.fim_mid),
        ("tokenizer.ggml.fim_pad_token_id", &mut ids.fim_pad),
        ("tokenizer.ggml.fim_rep_token_id", &mut ids.fim_rep),
        ("tokenizer.ggml.fim_sep_token_id", &mut ids.fim_sep),
    ]
}

// Texts llama.cpp recognises a role by when the file gives no id for it.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
// Every token with one of these texts ends generation, whatever its role.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// llama.cpp's end-of-generation set: the fim pad/repo/sep tokens, every token whose text is
/// in `EOG_TEXTS`, and the eos, eot and eom tokens. Fills in eot, eom and fim ids the file
/// lacks by their texts, and marks tokens found by text as control, as llama.cpp does.
fn find_eog_tokens(
    texts: &[String],
    token_to_id: &HashMap<String, u32>,
    attrs: &mut [u8],
    special: &mut SpecialIds,
) -> Vec<u32> {
    // llama.cpp takes the first match in hash-map order; the lowest id is our stable choice
    let mut by_text = |slot: &mut Option<u32>, candidates: &[&str]| {
        if slot.is_some() {
            return;
        }
        let found = candidates
            .iter()
            .filter_map(|t| token_to_id.get(*t).copied())
            .min();
        if let Some(id) = found {
            attrs[id as usize] |= ATTR_CONTROL;
            *slot = Some(id);
        }
    };
    by_text(&mut special.eot, EOT_TEXTS);
    by_text(&mut special.eom, EOM_TEXTS);
    by_text(&mut special.fim_pre, FIM_PRE_TEXTS);
    by_text(&mut special.fim_suf, FIM_SUF_TEXTS);
    by_text(&mut special.fim_mid, FIM_MID_TEXTS);
    by_text(&mut special.fim_pad, FIM_PAD_TEXTS);
    by_text(&mut special.fim_rep, FIM_REP_TEXTS);
    by_text(&mut special.fim_sep, FIM_SEP_TEXTS);

    let mut eog: Vec<u32> = [special.fim_pad, special.fim_rep, special.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for (i, text) in texts.iter().enumerate() {
        // only the id a text maps to counts, as llama.cpp walks its text -> id map
        if EOG_TEXTS.contains(&text.as_str()) && token_to_id.get(text) == Some(&(i as u32)) {
            attrs[i] |= ATTR_CONTROL;
            eog.push(i as u32);
        }
    }
    eog.extend(
        [special.eos, special.eot, special.eom]
            .into_iter()
            .flatten(),
    );
    eog.sort_unstable();
    eog.dedup();

    let find = |eog: &[u32], text: &str| eog.iter().copied().find(|&id| texts[id as usize] == text);
    // gpt-oss and solar-open end a turn with "<|end|>" but go on generating after it
    let has_call = find(&eog, "<|call|>").or(find(&eog, "<|calls|>")).is_some();
    let has_return_or_flush = find(&eog, "<|return|>")
        .or(find(&eog, "<|flush|>"))
        .is_some();
    if let Some(end) = find(&eog, "<|end|>") {
        if has_call && has_return_or_flush {
            eog.retain(|&id| id != end);
            attrs[end as usize] = ATTR_USER_DEFINED;
        }
    }
    // in gemma4 and plamo "</s>" is an ordinary token
    let normal_s = find(&eog, "<|tool_response>")
        .or(find(&eog, "<|plamo:eos|>"))
        .is_some();
    if let (true, Some(s)) = (normal_s, find(&eog, "</s>")) {
        eog.retain(|&id| id != s);
        attrs[s as usize] = ATTR_NORMAL;
    }
    eog
}

/// The tokens cut out of text before BPE: control, user-defined and unknown ones, longest
/// text first.
fn special_tokens(texts: &[String], attrs: &[u8], pre: &str) -> Vec<SpecialToken> {
    let mut specials: Vec<SpecialToken> = texts
        .iter()
        .zip(attrs)
        .enumerate()
        .filter(|(_, (_, &a))| a & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0)
        .map(|(id, (text, &a))| SpecialToken {
            id: id as u32,
            text: text.clone(),
            needs_parse_special: a & (ATTR_CONTROL | ATTR_UNKNOWN) != 0,
            // jina's v2 tokenizers eat the whitespace before "<mask>", by llama.cpp's rule
            lstrip: text == "<mask>" && matches!(pre, "jina-v2-de" | "jina-v2-es" | "jina-v2-code"),
            rstrip: false,
        })
        .collect();
    specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
    specials
}

/// Numbers the merge operands (token ids where they are tokens, fresh numbers beyond the
/// vocabulary where not) and returns the merge table and the piece of each raw byte.
fn build_merges(
    merges: &[String],
    token_to_id: &HashMap<String, u32>,
    n_vocab: usize,
) -> (MergeTable, Vec<u32>) {
    let mut extra: HashMap<String, u32> = HashMap::new();
    let mut piece_of = |text: &str| -> u32 {
        if let Some(&id) = token_to_id.get(text) {
            return id;
        }
        let next = (n_vocab + extra.len()) as u32;
        *extra.entry(text.to_string()).or_insert(next)
    };

    let byte_piece: Vec<u32> = BYTE_CHARS
        .iter()
        .map(|c| piece_of(&c.to_string()))
        .collect();
    let mut table = HashMap::with_capacity_and_hasher(merges.len(), Default::default());
    for (rank, merge) in merges.iter().enumerate() {
        // llama.cpp splits at the first space after the first byte and skips merges without
        let Some(split) = merge.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            log::warn!("tokenizer.ggml.merges[{rank}] = {merge:?} has no space; skipping it");
            continue;
        };
        let (left, right) = (&merge[..split], &merge[split + 1..]);
        let key = pair_key(piece_of(left), piece_of(right));
        let merged = piece_of(&format!("{left}{right}"));
        // the first of repeated merges wins, as in llama.cpp
        table.entry(key).or_insert((rank as u32, merged));
    }
    (table, byte_piece)
}

/// Every token's bytes back to back, with offsets (see `Tokenizer::token_bytes`).
fn decoded_pieces(texts: &[String], attrs: &[u8], spm: bool) -> (Vec<u8>, Vec<u32>) {
    let mut bytes = Vec::new();
    let mut offsets = Vec::with_capacity(texts.len() + 1);
    offsets.push(0);
    for (text, &attr) in texts.iter().zip(attrs) {
        if spm && attr & (ATTR_NORMAL | ATTR_USER_DEFINED) != 0 {
            // SentencePiece writes a space as U+2581; the rest is the text itself
            bytes.extend_from_slice(text.replace(SPM_SPACE, " ").as_bytes());
        } else if attr & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED) != 0 {
            bytes.extend_from_slice(text.as_bytes());
        } else if attr & ATTR_NORMAL != 0 {
            for c in text.chars() {
                match byte_of_char(c) {
                    Some(b) => bytes.push(b),
                    // Not a GPT-2 alphabet character: kept as it is (llama.cpp writes an
                    // "[UNK_BYTE_0x..]" marker instead).
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        } else if attr & ATTR_BYTE != 0 {
            // byte tokens are spelled "<0xAB>"
            match text
                .get(3..5)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(b) => bytes.push(b),
                None => bytes.extend_from_slice(text.as_bytes()),
            }
        }
        // Rounded down only past 4 GiB of token text, which no u32-sized vocabulary reaches.
        offsets.push(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    }
    (bytes, offsets)
}

fn gguf_error(key: &'static str, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Gguf {
        key,
        message: e.to_string(),
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp's lstrip / rstrip use.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// (left piece, right piece) packed by `pair_key` -> (rank, merged piece)
type MergeTable = HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>;

/// The merge table's keys are two packed u32 ids; one multiply spreads them well enough and
/// is far cheaper than SipHash in the BPE inner loop.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_classes_are_pinned_to_llama_cpp_tables() {
        let pinned = pin_unicode_age(r" ?[^\s\p{L}\p{N}]+|\p{N}{1,3}");

        assert_eq!(
            pinned,
            r" ?[^\s[\p{L}&&\p{Age=15.1}][\p{N}&&\p{Age=15.1}]]+|[\p{N}&&\p{Age=15.1}]{1,3}"
        );
    }

    #[test]
    fn byte_alphabet_matches_gpt2() {
        assert_eq!(BYTE_CHARS[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_CHARS[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_CHARS[b'!' as usize], '!');
        assert_eq!(BYTE_CHARS[0xAD], 'Ń');
        for b in 0..=255u8 {
            assert_eq!(byte_of_char(BYTE_CHARS[b as usize]), Some(b));
        }
    }
}

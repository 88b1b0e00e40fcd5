//! The tokenizer against llama.cpp: every string of tests/data/tokenizer_corpus.json must encode
//! to the ids llama.cpp gave it (see tests/data/make_tokenizer_corpus.py for how they were made).
//!
//! Needs models/SmolLM2-135M-Instruct.Q4_1.gguf; without it the model tests print a note and
//! pass. With LLAMA_CPP_VOCAB_DIR pointing at llama.cpp's models/ folder, the corpus is also
//! checked on llama.cpp's ggml-vocab-*.gguf files (other pre-tokenizers), and so are the
//! test vectors llama.cpp keeps beside them (*.gguf.inp / *.gguf.out).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gqa_webgpu::gguf::{GgufFile, GgufWriter, Value};
use gqa_webgpu::tokenizer::{StreamDecoder, Tokenizer, TokenizerError, TokenizerSpec};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const CORPUS: &str = "tests/data/tokenizer_corpus.json";
// the corpus key of the model above; other keys name llama.cpp vocab files
const MAIN_VOCAB: &str = "smollm2";
const VOCAB_DIR_VAR: &str = "LLAMA_CPP_VOCAB_DIR";
// Corpus strings with bytes SmolLM2 has no token for (0x04; 0xF2, which starts U+80000..):
// llama.cpp drops such bytes, so these cannot decode back to themselves.
const UNSPELLABLE: &[&str] = &["ctrl\u{4}d", "\u{80000} plane 8"];
// failures printed in full before the summary
const MAX_PRINTED_FAILURES: usize = 20;

#[derive(serde::Deserialize)]
struct Corpus {
    llama_cpp_python: String,
    vocabs: BTreeMap<String, String>,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    // vocabulary key -> ids with special = false
    ids: BTreeMap<String, Vec<u32>>,
    // vocabulary key -> ids with special = true, for some strings
    #[serde(default)]
    ids_special: BTreeMap<String, Vec<u32>>,
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn load_corpus() -> Corpus {
    let path = repo_path(CORPUS);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid: {e}", path.display()))
}

fn tokenizer_from_file(path: &Path) -> Tokenizer {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = GgufFile::parse(&bytes, bytes.len() as u64)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The model's tokenizer, or None (with a note) when the model file is absent.
fn model_tokenizer() -> Option<Tokenizer> {
    let path = repo_path(MODEL);
    if !path.exists() {
        eprintln!("note: {} is absent; skipping this test", path.display());
        return None;
    }
    Some(tokenizer_from_file(&path))
}

/// Compares our ids with llama.cpp's for every case that has them; returns the failures.
fn check_vocab(tok: &Tokenizer, corpus: &Corpus, vocab: &str) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in &corpus.cases {
        let expected = [
            (false, case.ids.get(vocab)),
            (true, case.ids_special.get(vocab)),
        ];
        for (parse_special, want) in expected {
            let Some(want) = want else { continue };
            checked += 1;
            let got = tok.encode(&case.text, parse_special);
            if &got != want {
                let first_diff = got.iter().zip(want).take_while(|(a, b)| a == b).count();
                failures.push(format!(
                    "[{vocab}, special={parse_special}] {:?}\n  llama.cpp: {want:?}\n  \
                     ours:      {got:?}\n  first difference at index {first_diff}",
                    case.text
                ));
            }
        }
    }
    (checked, failures)
}

fn report(checked: usize, failures: &[String]) {
    for failure in failures.iter().take(MAX_PRINTED_FAILURES) {
        eprintln!("{failure}");
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} encodings differ from llama.cpp's",
        failures.len()
    );
}

#[test]
fn every_corpus_string_encodes_to_llama_cpp_ids() {
    let Some(tok) = model_tokenizer() else { return };
    let corpus = load_corpus();

    let (checked, failures) = check_vocab(&tok, &corpus, MAIN_VOCAB);

    eprintln!(
        "{checked} encodings checked against llama-cpp-python {}, {} differ",
        corpus.llama_cpp_python,
        failures.len()
    );
    assert!(
        checked >= 250,
        "the corpus should hold at least 250 strings, has {checked}"
    );
    report(checked, &failures);
}

#[test]
fn corpus_encodes_to_llama_cpp_ids_with_other_vocabularies() {
    let Some(dir) = std::env::var_os(VOCAB_DIR_VAR) else {
        eprintln!("note: {VOCAB_DIR_VAR} is not set; skipping the other vocabularies");
        return;
    };
    let corpus = load_corpus();
    let mut checked = 0;
    let mut failures = Vec::new();

    for (key, file) in corpus.vocabs.iter().filter(|(key, _)| *key != MAIN_VOCAB) {
        let path = Path::new(&dir).join(file);
        if !path.exists() {
            eprintln!("note: {} is absent; skipping it", path.display());
            continue;
        }
        let tok = tokenizer_from_file(&path);
        let (n, mut failed) = check_vocab(&tok, &corpus, key);
        eprintln!(
            "{file} ({}): {n} encodings, {} differ",
            tok.pre_tokenizer(),
            failed.len()
        );
        checked += n;
        failures.append(&mut failed);
    }

    assert!(
        checked > 0,
        "{VOCAB_DIR_VAR} holds none of the corpus's vocabularies"
    );
    report(checked, &failures);
}

#[test]
fn llama_cpp_test_vectors_encode_as_llama_cpp_does() {
    let Some(dir) = std::env::var_os(VOCAB_DIR_VAR) else {
        eprintln!("note: {VOCAB_DIR_VAR} is not set; skipping llama.cpp's test vectors");
        return;
    };
    let mut checked = 0;
    let mut failures = Vec::new();

    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{VOCAB_DIR_VAR}: {e}"))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "gguf"))
        .collect();
    entries.sort();
    for vocab in entries {
        let (inp, out) = (
            vocab.with_extension("gguf.inp"),
            vocab.with_extension("gguf.out"),
        );
        let (Ok(inputs), Ok(outputs)) =
            (std::fs::read_to_string(&inp), std::fs::read_to_string(&out))
        else {
            continue;
        };
        let bytes = std::fs::read(&vocab).unwrap_or_else(|e| panic!("{}: {e}", vocab.display()));
        let Ok(file) = GgufFile::parse(&bytes, bytes.len() as u64) else {
            continue;
        };
        // other tokenizer models (SentencePiece, WordPiece) and pre-tokenizers are not ours
        let tok = match Tokenizer::from_gguf(&file) {
            Ok(tok) => tok,
            Err(e) => {
                eprintln!("note: {}: {e}; skipping it", vocab.display());
                continue;
            }
        };

        // inputs are separated by this line, and end with it
        let texts: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
        let expected: Vec<Vec<u32>> = outputs
            .lines()
            .map(|line| {
                line.split_whitespace()
                    .map(|id| id.parse().unwrap())
                    .collect()
            })
            .collect();
        for (text, want) in texts.iter().zip(&expected) {
            checked += 1;
            let got = tok.encode(text, false);
            if &got != want {
                failures.push(format!(
                    "[{}] {text:?}\n  llama.cpp: {want:?}\n  ours:      {got:?}",
                    vocab.display()
                ));
            }
        }
    }

    eprintln!(
        "{checked} llama.cpp test vectors checked, {} differ",
        failures.len()
    );
    assert!(
        checked > 0,
        "{VOCAB_DIR_VAR} holds none of llama.cpp's test vectors"
    );
    report(checked, &failures);
}

#[test]
fn decode_gives_back_every_corpus_string() {
    let Some(tok) = model_tokenizer() else { return };
    let corpus = load_corpus();

    for case in corpus
        .cases
        .iter()
        .filter(|c| !UNSPELLABLE.contains(&c.text.as_str()))
    {
        let ids = tok.encode(&case.text, false);

        assert_eq!(tok.decode(&ids), case.text, "ids {ids:?}");
    }
}

#[test]
fn bytes_without_a_token_are_dropped_as_llama_cpp_drops_them() {
    let Some(tok) = model_tokenizer() else { return };

    let ids = tok.encode(UNSPELLABLE[0], false);

    assert_eq!(tok.decode(&ids), "ctrld");
}

#[test]
fn control_tokens_become_ids_only_when_special_text_is_parsed() {
    let Some(tok) = model_tokenizer() else { return };
    let text = "<|im_start|>user\nhi<|im_end|>";

    let parsed = tok.encode(text, true);
    let plain = tok.encode(text, false);

    assert_eq!(parsed.first(), Some(&1));
    assert_eq!(parsed.last(), Some(&2));
    assert!(plain.iter().all(|&id| !tok.is_control(id)), "{plain:?}");
    assert_eq!(tok.decode(&parsed), text);
}

#[test]
fn end_of_generation_set_is_endoftext_im_end_and_reponame() {
    let Some(tok) = model_tokenizer() else { return };

    assert_eq!(tok.eog_ids(), &[0, 2, 4]);
    assert!(tok.is_eog(2) && !tok.is_eog(1) && !tok.is_eog(3));
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert!(!tok.add_bos());
    assert_eq!(tok.pre_tokenizer(), "smollm");
    assert_eq!(tok.token_bytes(1), b"<|im_start|>");
}

#[test]
fn stream_decoder_gives_back_every_corpus_string_without_broken_characters() {
    let Some(tok) = model_tokenizer() else { return };
    let corpus = load_corpus();

    for case in corpus
        .cases
        .iter()
        .filter(|c| !UNSPELLABLE.contains(&c.text.as_str()))
    {
        let mut stream = StreamDecoder::new();
        let mut text = String::new();
        for id in tok.encode(&case.text, false) {
            let piece = stream.push(&tok, id);
            // valid input never makes a replacement character appear
            assert!(
                !piece.contains('\u{FFFD}') || case.text.contains('\u{FFFD}'),
                "{:?}: piece {piece:?}",
                case.text
            );
            text.push_str(&piece);
        }
        text.push_str(&stream.finish());

        assert_eq!(text, case.text);
    }
}

#[test]
fn stream_decoder_holds_back_an_emoji_until_its_last_byte() {
    let Some(tok) = model_tokenizer() else { return };
    let ids = tok.encode("🦙", false);
    // this vocabulary has no token for the llama, so it comes as several byte tokens
    assert!(ids.len() > 1, "{ids:?}");

    let mut stream = StreamDecoder::new();
    let pieces: Vec<String> = ids.iter().map(|&id| stream.push(&tok, id)).collect();

    let (last, before) = pieces.split_last().unwrap();
    assert!(before.iter().all(String::is_empty), "{pieces:?}");
    assert_eq!(last, "🦙");
    assert_eq!(stream.finish(), "");
}

// ---- tiny hand-made vocabularies ----

/// GPT-2's byte alphabet: printable Latin-1 stands for itself, other bytes from U+0100 on.
fn byte_char(b: u8) -> char {
    let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable {
        return char::from(b);
    }
    let spare = (0..b)
        .filter(|&x| !((0x21..=0x7E).contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE))
        .count();
    char::from_u32(0x100 + spare as u32).unwrap()
}

/// 256 byte tokens (ids 0..256), then `extra` tokens with their GGUF types.
fn tiny_spec(pre: &str, extra: &[(&str, i32)], merges: &[&str]) -> TokenizerSpec {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut token_types = vec![1; 256];
    for &(text, token_type) in extra {
        tokens.push(text.to_string());
        token_types.push(token_type);
    }
    TokenizerSpec {
        tokens,
        merges: merges.iter().map(|m| m.to_string()).collect(),
        token_types,
        pre: pre.to_string(),
        ..Default::default()
    }
}

fn tiny_gguf(pre: &str) -> Vec<u8> {
    let spec = tiny_spec(pre, &[("<|endoftext|>", 3), ("hi", 1)], &[]);
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", Value::String("gpt2".into()))
        .add("tokenizer.ggml.pre", Value::String(pre.into()))
        .add("tokenizer.ggml.tokens", strings(spec.tokens))
        .add("tokenizer.ggml.merges", strings(vec!["h i".into()]))
        .add(
            "tokenizer.ggml.token_type",
            Value::Array(spec.token_types.into_iter().map(Value::I32).collect()),
        )
        .add("tokenizer.ggml.eos_token_id", Value::U32(256));
    w.to_bytes()
}

#[test]
fn unknown_pre_tokenizer_is_an_error_that_names_it() {
    let bytes = tiny_gguf("no-such-pre");
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();

    let err = Tokenizer::from_gguf(&file)
        .err()
        .expect("an unknown pre-tokenizer must fail");

    assert!(
        matches!(err, TokenizerError::UnknownPreTokenizer { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("no-such-pre") && message.contains("smollm"),
        "{message}"
    );
}

#[test]
fn every_named_pre_tokenizer_builds() {
    for pre in [
        "smollm",
        "gpt2",
        "gpt-2",
        "default",
        "",
        "llama3",
        "llama-bpe",
        "qwen2",
    ] {
        let tok = Tokenizer::new(tiny_spec(pre, &[], &["h i"]));

        assert!(tok.is_ok(), "{pre:?}: {:?}", tok.err());
    }
}

#[test]
fn tiny_gguf_vocabulary_loads_and_encodes() {
    let bytes = tiny_gguf("gpt-2");
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();

    let tok = Tokenizer::from_gguf(&file).unwrap();

    assert_eq!(tok.vocab_size(), 258);
    assert_eq!(tok.encode("hi", false), vec![257]);
    assert_eq!(tok.eog_ids(), &[256]);
    // a gpt2 vocabulary without a bos key gets llama.cpp's default, 11
    assert_eq!(tok.bos_id(), Some(11));
}

#[test]
fn missing_merges_key_is_an_error_that_names_it() {
    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", Value::String("gpt2".into()))
        .add(
            "tokenizer.ggml.tokens",
            Value::Array(vec![Value::String("a".into())]),
        );
    let bytes = w.to_bytes();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();

    let err = Tokenizer::from_gguf(&file)
        .err()
        .expect("merges are required");

    assert!(err.to_string().contains("tokenizer.ggml.merges"), "{err}");
}

#[test]
fn other_tokenizer_models_are_refused_by_name() {
    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", Value::String("t5".into()));
    let bytes = w.to_bytes();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();

    let err = Tokenizer::from_gguf(&file)
        .err()
        .expect("only gpt2 and llama vocabularies are supported");

    assert!(
        matches!(err, TokenizerError::UnsupportedModel(ref m) if m == "t5"),
        "{err:?}"
    );
}

// ---- SentencePiece ("llama") vocabularies ----

/// A tiny SentencePiece vocabulary as TinyLlama's file lays it out: `<unk>`, `<s>`, `</s>`,
/// byte tokens (here only three of the 256), then pieces with scores, `▁` for a space.
/// (id, text, score, GGUF token type)
const SPM_VOCAB: &[(&str, f32, i32)] = &[
    ("<unk>", 0.0, 2),      // 0
    ("<s>", 0.0, 3),        // 1
    ("</s>", 0.0, 3),       // 2
    ("<0x0A>", 0.0, 6),     // 3
    ("<0xC3>", 0.0, 6),     // 4
    ("<0xA9>", 0.0, 6),     // 5
    ("\u{2581}", -1.0, 1),  // 6 ▁
    ("h", -2.0, 1),         // 7
    ("e", -3.0, 1),         // 8
    ("l", -4.0, 1),         // 9
    ("o", -5.0, 1),         // 10
    ("w", -6.0, 1),         // 11
    ("r", -7.0, 1),         // 12
    ("d", -8.0, 1),         // 13
    ("ll", -0.5, 1),        // 14
    ("he", -1.0, 1),        // 15
    ("hell", -1.5, 1),      // 16
    ("lo", -0.2, 1),        // 17
    ("\u{2581}w", -0.1, 1), // 18 ▁w
];

fn spm_gguf(extra: &[(&str, Value)]) -> Vec<u8> {
    let mut w = GgufWriter::new();
    let strings = SPM_VOCAB
        .iter()
        .map(|t| Value::String(t.0.into()))
        .collect();
    w.add("tokenizer.ggml.model", Value::String("llama".into()))
        .add("tokenizer.ggml.tokens", Value::Array(strings))
        .add(
            "tokenizer.ggml.scores",
            Value::Array(SPM_VOCAB.iter().map(|t| Value::F32(t.1)).collect()),
        )
        .add(
            "tokenizer.ggml.token_type",
            Value::Array(SPM_VOCAB.iter().map(|t| Value::I32(t.2)).collect()),
        )
        .add("tokenizer.ggml.bos_token_id", Value::U32(1))
        .add("tokenizer.ggml.eos_token_id", Value::U32(2))
        .add("tokenizer.ggml.unknown_token_id", Value::U32(0));
    for (key, value) in extra {
        w.add(key, value.clone());
    }
    w.to_bytes()
}

fn spm(extra: &[(&str, Value)]) -> Tokenizer {
    let bytes = spm_gguf(extra);
    Tokenizer::from_gguf(&GgufFile::parse(&bytes, bytes.len() as u64).unwrap()).unwrap()
}

#[test]
fn sentencepiece_merges_the_highest_score_first() {
    let tok = spm(&[]);

    // "hello" gets the space prefix: ▁ h e l l o. The pairs that are tokens: he (-1.0),
    // ll (-0.5), lo (-0.2). lo scores highest and merges first although ll is further
    // left; that makes ll stale (its right symbol grew), and "llo" is no token. Then he
    // merges; "▁he" and "hel" are no tokens. So ▁ he l lo, and never "hell".
    assert_eq!(tok.encode("hello", false), vec![6, 15, 9, 17]);
    // "lll": ▁ l l l, two ll pairs of equal score: the leftmost merges, then "lll" is no
    // token and "▁l" neither: ▁ ll l
    assert_eq!(tok.encode("lll", false), vec![6, 14, 9]);
    // spaces become ▁ inside the text too: ▁ h e l l o ▁ w o r l d. ▁w (-0.1) merges
    // first, then lo (-0.2), then he (-1.0); "o▁w", "▁wo", "wo", "or", "rl", "ld" are no
    // tokens.
    assert_eq!(
        tok.encode("hello world", false),
        vec![6, 15, 9, 17, 18, 10, 12, 9, 13]
    );
}

#[test]
fn sentencepiece_spells_unknown_characters_as_byte_tokens() {
    let tok = spm(&[]);

    // é is no token: its UTF-8 bytes C3 A9 become <0xC3> <0xA9>; "\n" is <0x0A>
    assert_eq!(tok.encode("hé", false), vec![6, 7, 4, 5]);
    assert_eq!(tok.encode("h\n", false), vec![6, 7, 3]);
    // "z" has neither a token nor a byte token: llama.cpp stops with an error there, this
    // engine gives the unknown token
    assert_eq!(tok.encode("z", false), vec![6, 0]);
    // decoding gives the text back with ▁ as a space (the prefix's space included)
    assert_eq!(
        tok.decode(&[6, 15, 9, 17, 18, 10, 12, 9, 13]),
        " hello world"
    );
    assert_eq!(tok.decode(&[6, 7, 4, 5, 3]), " hé\n");
}

#[test]
fn sentencepiece_space_prefix_follows_special_tokens_and_the_key() {
    let tok = spm(&[]);

    // <s> is cut out with parse_special; the text after a special token gets the prefix
    // again: <s> then ▁ he l lo
    assert_eq!(tok.encode("<s>hello", true), vec![1, 6, 15, 9, 17]);
    // text after text does not: "hello" then </s> then "he" -> ... </s> ▁ he
    assert_eq!(
        tok.encode("hello</s>he", true),
        vec![6, 15, 9, 17, 2, 6, 15]
    );
    // SentencePiece vocabularies add BOS when the file does not say otherwise
    assert!(tok.add_bos());
    assert_eq!((tok.bos_id(), tok.eog_ids()), (Some(1), &[2][..]));

    let bare = spm(&[
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ]);
    // no ▁ before "hello": h e l l o -> lo, then he: he l lo
    assert_eq!(bare.encode("hello", false), vec![15, 9, 17]);
    assert!(!bare.add_bos());
}

#[test]
fn sentencepiece_scores_of_the_wrong_length_are_refused() {
    let bytes = spm_gguf(&[]);
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in &file.metadata {
        match key.as_str() {
            "tokenizer.ggml.scores" => w.add(key, Value::Array(vec![Value::F32(0.0); 3])),
            _ => w.add(key, value.clone()),
        };
    }
    let bytes = w.to_bytes();

    let err = Tokenizer::from_gguf(&GgufFile::parse(&bytes, bytes.len() as u64).unwrap());

    let err = err.err().expect("3 scores for 19 tokens");
    assert!(err.to_string().contains("tokenizer.ggml.scores"), "{err}");
}

#[test]
fn lowest_ranked_merge_applies_first() {
    // "a b" outranks "b c", so "abc" becomes "ab" + "c" although "bc" is also a token
    let spec = tiny_spec(
        "gpt-2",
        &[("ab", 1), ("bc", 1), ("abc", 1)],
        &["a b", "b c", "ab c"],
    );
    let tok = Tokenizer::new(spec).unwrap();

    assert_eq!(tok.encode("abc", false), vec![258]);
    assert_eq!(tok.encode("bc", false), vec![257]);
    assert_eq!(tok.encode("ab", false), vec![256]);
    assert_eq!(tok.encode("cab", false), vec![u32::from(b'c'), 256]);
}

#[test]
fn user_defined_tokens_are_cut_out_even_without_parse_special() {
    let spec = tiny_spec("gpt-2", &[("<ctl>", 3), ("@@", 4)], &[]);
    let tok = Tokenizer::new(spec).unwrap();

    assert_eq!(tok.encode("a@@b", false), vec![97, 257, 98]);
    assert_eq!(tok.encode("<ctl>", true), vec![256]);
    assert_eq!(tok.encode("<ctl>", false).len(), 5);
}

#[test]
fn jina_mask_token_takes_the_whitespace_before_it() {
    let spec = tiny_spec("jina-v2-de", &[("<mask>", 4)], &[]);
    let tok = Tokenizer::new(spec).unwrap();

    // the ids of single bytes are the byte values here
    assert_eq!(tok.encode("a  <mask> b", false), vec![97, 256, 32, 98]);
}

#[test]
fn stream_decoder_replaces_each_invalid_sequence_once() {
    let tok = Tokenizer::new(tiny_spec("gpt-2", &[], &[])).unwrap();
    let mut stream = StreamDecoder::new();

    // 0xF0 0x9F starts a four-byte sequence that 'a' breaks off
    assert_eq!(stream.push(&tok, 0xF0), "");
    assert_eq!(stream.push(&tok, 0x9F), "");
    assert_eq!(stream.push(&tok, u32::from(b'a')), "\u{FFFD}a");
    // a lone continuation byte is invalid at once
    assert_eq!(stream.push(&tok, 0x80), "\u{FFFD}");
    // "€" is E2 82 AC; cut short, the stream's end turns it into one replacement character
    assert_eq!(stream.push(&tok, 0xE2), "");
    assert_eq!(stream.push(&tok, 0x82), "");
    assert_eq!(stream.finish(), "\u{FFFD}");
    assert_eq!(stream.finish(), "");
}

// ---- the pre-tokenizers of Llama 3 and Qwen2 on a tiny vocabulary ----

#[test]
fn llama_bpe_groups_digits_by_three_and_takes_whole_word_tokens() {
    // 256 byte tokens (id = byte: digits are 48..), then "12" (256), "123" (257), "ab"
    // (258); merges build "12" and "123", none builds "ab"
    let extra = [("12", 1), ("123", 1), ("ab", 1)];
    let tok = Tokenizer::new(tiny_spec("llama-bpe", &extra, &["1 2", "12 3"])).unwrap();

    // Llama 3's regex takes digits in runs of at most three: "123" "45". "123" is itself
    // a token (llama.cpp's ignore_merges takes it whole); "45" has no merge: 4, 5
    assert_eq!(tok.encode("12345", false), vec![257, 52, 53]);
    // "ab" is a token no merge reaches: taken whole, as a word that is a token
    assert_eq!(tok.encode("ab", false), vec![258]);
    // Llama 3 files start prompts with BOS unless they say otherwise
    assert!(tok.add_bos());
}

#[test]
fn qwen2_splits_every_digit_and_merges_words() {
    let extra = [("12", 1), ("123", 1), ("ab", 1)];
    let tok = Tokenizer::new(tiny_spec("qwen2", &extra, &["1 2", "12 3"])).unwrap();

    // Qwen2's regex makes each digit a word of its own, so "12" never forms
    assert_eq!(tok.encode("12345", false), vec![49, 50, 51, 52, 53]);
    // no ignore_merges: "ab" without a merge stays two bytes
    assert_eq!(tok.encode("ab", false), vec![97, 98]);
    assert!(!tok.add_bos());
}

/// Vocabularies of Qwen2's size (152064 tokens) build and encode: the tiny vocabularies
/// above padded with filler tokens no text here can form, the same ids out.
#[test]
fn vocabularies_of_152k_tokens_build_and_encode() {
    const QWEN2_VOCAB: usize = 152_064;
    let filler = |from: usize| (from..QWEN2_VOCAB).map(|i| format!("x{i}"));

    let mut bpe = tiny_spec("qwen2", &[("12", 1)], &["1 2"]);
    bpe.tokens.extend(filler(bpe.tokens.len()));
    bpe.token_types.resize(QWEN2_VOCAB, 1);
    let bpe = Tokenizer::new(bpe).unwrap();
    assert_eq!(bpe.vocab_size(), QWEN2_VOCAB);
    assert_eq!(bpe.encode("ab12", false), vec![97, 98, 49, 50]);

    let mut spm = TokenizerSpec {
        model: "llama".into(),
        tokens: SPM_VOCAB.iter().map(|t| t.0.to_string()).collect(),
        scores: SPM_VOCAB.iter().map(|t| t.1).collect(),
        token_types: SPM_VOCAB.iter().map(|t| t.2).collect(),
        unk: Some(0),
        ..Default::default()
    };
    spm.tokens.extend(filler(spm.tokens.len()));
    spm.scores.resize(QWEN2_VOCAB, -10.0);
    spm.token_types.resize(QWEN2_VOCAB, 1);
    let spm = Tokenizer::new(spm).unwrap();
    assert_eq!(spm.vocab_size(), QWEN2_VOCAB);
    // as in sentencepiece_merges_the_highest_score_first
    assert_eq!(
        spm.encode("hello world", false),
        vec![6, 15, 9, 17, 18, 10, 12, 9, 13]
    );
}

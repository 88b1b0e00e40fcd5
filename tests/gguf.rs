//! GGUF reader and writer: round trips, every malformed input the parser must name, prefixes
//! and random corruption (no panics), and the real SmolLM2 file when it is present.

use gqa_webgpu::gguf::*;

const MODEL_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

/// Parses a whole file.
fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    GgufFile::parse(bytes, bytes.len() as u64)
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A small valid file: a few keys (one of each kind the model loader reads) and two tensors.
fn small_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()))
        .add("llama.block_count", Value::U32(2))
        .add("llama.rope.freq_base", Value::F32(10000.0))
        .add("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .add(
            "tokenizer.ggml.tokens",
            Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]),
        )
        .add(
            "tokenizer.ggml.token_type",
            Value::Array(vec![Value::I32(1), Value::I32(3)]),
        )
        .add_tensor("token_embd.weight", &[32, 2], GgmlType::Q8_0, noise(68, 1))
        .add_tensor("output_norm.weight", &[8], GgmlType::F32, noise(32, 2));
    w
}

fn small_file() -> Vec<u8> {
    small_writer().to_bytes()
}

/// Index of the first occurrence of `needle`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

/// Overwrites bytes at the first occurrence of `from` with `to` (same length or shorter).
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    let at = find(bytes, from);
    bytes[at..at + to.len()].copy_from_slice(to);
}

/// Position of a tensor info's `offset` field, found through the tensor's name.
fn offset_field(bytes: &[u8], name: &str) -> usize {
    let after_name = find(bytes, name.as_bytes()) + name.len();
    let n_dims = u32::from_le_bytes(bytes[after_name..after_name + 4].try_into().unwrap());
    after_name + 4 + 8 * n_dims as usize + 4
}

fn set_tensor_offset(bytes: &mut [u8], name: &str, offset: u64) {
    let at = offset_field(bytes, name);
    bytes[at..at + 8].copy_from_slice(&offset.to_le_bytes());
}

/// Hand-built header bytes, for what the writer cannot express.
struct Raw(Vec<u8>);

impl Raw {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw(b"GGUF".to_vec()).u32(version).u64(n_tensors).u64(n_kv)
    }
    fn u32(mut self, v: u32) -> Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(mut self, bytes: &[u8]) -> Raw {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(self, s: &[u8]) -> Raw {
        self.u64(s.len() as u64).raw(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn every_value_type_round_trips() {
    let mut nested = Value::Array(vec![Value::U8(7)]);
    for _ in 1..MAX_ARRAY_DEPTH {
        nested = Value::Array(vec![nested]);
    }
    let metadata = vec![
        ("u8".to_string(), Value::U8(255)),
        ("i8".to_string(), Value::I8(-128)),
        ("u16".to_string(), Value::U16(65535)),
        ("i16".to_string(), Value::I16(-32768)),
        ("u32".to_string(), Value::U32(u32::MAX)),
        ("i32".to_string(), Value::I32(i32::MIN)),
        ("u64".to_string(), Value::U64(u64::MAX)),
        ("i64".to_string(), Value::I64(i64::MIN)),
        ("f32".to_string(), Value::F32(-1.5e-7)),
        ("f32.inf".to_string(), Value::F32(f32::INFINITY)),
        ("f64".to_string(), Value::F64(std::f64::consts::PI)),
        ("bool.true".to_string(), Value::Bool(true)),
        ("bool.false".to_string(), Value::Bool(false)),
        (
            "string".to_string(),
            Value::String("héllo ▁wörld 🦀".into()),
        ),
        ("string.empty".to_string(), Value::String(String::new())),
        ("array.empty".to_string(), Value::Array(vec![])),
        (
            "array.u8".to_string(),
            Value::Array(vec![Value::U8(1), Value::U8(2)]),
        ),
        (
            "array.i16".to_string(),
            Value::Array(vec![Value::I16(-1), Value::I16(2)]),
        ),
        (
            "array.f64".to_string(),
            Value::Array(vec![Value::F64(0.25), Value::F64(-8.0)]),
        ),
        (
            "array.bool".to_string(),
            Value::Array(vec![Value::Bool(true), Value::Bool(false)]),
        ),
        (
            "array.string".to_string(),
            Value::Array(vec![
                Value::String("x".into()),
                Value::String(String::new()),
            ]),
        ),
        (
            "array.of.arrays".to_string(),
            Value::Array(vec![
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
                Value::Array(vec![]),
                Value::Array(vec![Value::String("c".into())]),
            ]),
        ),
        ("array.deepest".to_string(), nested),
    ];
    let mut w = GgufWriter::new();
    for (key, value) in &metadata {
        w.add(key, value.clone());
    }

    let file = parse(&w.to_bytes()).unwrap();

    assert_eq!(file.version, 3);
    assert_eq!(file.metadata, metadata);
    assert!(file.tensors.is_empty());
    assert_eq!(file.alignment, 32);
    assert_eq!(file.data_offset % 32, 0);
}

#[test]
fn nan_round_trips_bit_for_bit() {
    let nan = f32::from_bits(0x7fc0_1234);
    let mut w = GgufWriter::new();
    w.add("nan", Value::F32(nan));

    let file = parse(&w.to_bytes()).unwrap();

    match file.get("nan") {
        Some(Value::F32(v)) => assert_eq!(v.to_bits(), nan.to_bits()),
        other => panic!("expected an f32, got {other:?}"),
    }
}

#[test]
fn every_known_tensor_type_round_trips() {
    let mut w = GgufWriter::new();
    let mut expected = Vec::new();
    for (i, ty) in GgmlType::KNOWN.into_iter().enumerate() {
        let dims = [ty.block_size().unwrap() * 2, 3];
        let n_bytes = ty.tensor_bytes(dims[0] * dims[1]).unwrap();
        let data = noise(n_bytes as usize, i as u64);
        let name = format!("t.{}", ty.name());
        w.add_tensor(&name, &dims, ty, data.clone());
        expected.push((name, dims, ty, n_bytes, data));
    }
    let bytes = w.to_bytes();

    let file = parse(&bytes).unwrap();

    assert_eq!(file.tensors.len(), GgmlType::KNOWN.len());
    assert_eq!(file.data_offset % 32, 0);
    for (t, (name, dims, ty, n_bytes, data)) in file.tensors.iter().zip(&expected) {
        assert_eq!(&t.name, name);
        assert_eq!(t.dims, dims.to_vec());
        assert_eq!(t.ggml_type, *ty);
        assert_eq!(t.n_bytes, *n_bytes);
        assert_eq!(t.offset % 32, 0, "{name}");
        assert_eq!(file.tensor_data(&bytes, t).unwrap(), &data[..], "{name}");
        assert_eq!(file.tensor(name), Some(t));
    }
}

#[test]
fn version_2_is_accepted() {
    let mut w = small_writer();
    w.set_version(2);
    let bytes = w.to_bytes();

    let file = parse(&bytes).unwrap();

    assert_eq!(file.version, 2);
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.tensors.len(), 2);
}

#[test]
fn explicit_alignment_is_used_for_header_and_tensors() {
    let mut w = GgufWriter::new();
    w.add(ALIGNMENT_KEY, Value::U32(256))
        .add_tensor("a", &[3], GgmlType::F32, noise(12, 1))
        .add_tensor("b", &[5], GgmlType::F16, noise(10, 2));
    let bytes = w.to_bytes();

    let file = parse(&bytes).unwrap();

    assert_eq!(file.alignment, 256);
    assert_eq!(file.data_offset % 256, 0);
    assert_eq!(file.tensor("b").unwrap().offset, 256);
    assert_eq!(bytes.len() as u64, file.data_offset + 512);
}

#[test]
fn default_alignment_is_not_written_as_a_key() {
    let file = parse(&small_file()).unwrap();

    assert_eq!(file.alignment, DEFAULT_ALIGNMENT);
    assert!(file.get(ALIGNMENT_KEY).is_none());
}

#[test]
fn unknown_tensor_type_parses_but_its_data_is_refused() {
    let mut w = small_writer();
    w.add_tensor("mystery", &[16, 4], GgmlType::Unknown(99), noise(40, 3));
    let bytes = w.to_bytes();

    let file = parse(&bytes).unwrap();
    let t = file.tensor("mystery").unwrap();

    assert_eq!(t.ggml_type, GgmlType::Unknown(99));
    assert_eq!(t.n_bytes, 0);
    assert!(matches!(
        file.tensor_data(&bytes, t),
        Err(GgufError::UnknownTensorType { ref tensor, type_id: 99 }) if tensor == "mystery"
    ));
}

// ---------------------------------------------------------------------------------------------
// Types and accessors

#[test]
fn ggml_type_numbers_names_and_sizes() {
    for n in 0..64 {
        assert_eq!(GgmlType::from_u32(n).to_u32(), n);
    }
    assert_eq!(GgmlType::from_u32(3), GgmlType::Q4_1);
    assert_eq!(GgmlType::from_u32(30), GgmlType::BF16);
    assert_eq!(GgmlType::from_u32(4), GgmlType::Unknown(4));
    assert_eq!(GgmlType::Q4_1.name(), "Q4_1");
    assert_eq!(GgmlType::Q6K.name(), "Q6_K");
    assert_eq!(GgmlType::Unknown(42).to_string(), "unknown type 42");

    assert_eq!(GgmlType::Q4_1.tensor_bytes(64), Some(40));
    assert_eq!(GgmlType::Q8K.tensor_bytes(512), Some(584));
    assert_eq!(GgmlType::F32.tensor_bytes(5), Some(20));
    assert_eq!(GgmlType::Q4_0.tensor_bytes(33), None);
    assert_eq!(GgmlType::F32.tensor_bytes(u64::MAX), None);
    assert_eq!(GgmlType::Unknown(77).tensor_bytes(32), None);
    assert_eq!(GgmlType::Unknown(77).block_size(), None);
}

#[test]
fn tensor_info_shape_follows_ggml_order() {
    let t = TensorInfo {
        name: "w".into(),
        dims: vec![576, 1536],
        ggml_type: GgmlType::Q4_1,
        offset: 0,
        n_bytes: 0,
    };
    let v = TensorInfo {
        dims: vec![576],
        ..t.clone()
    };

    assert_eq!(t.n_elements(), 576 * 1536);
    assert_eq!(t.rows_cols(), (1536, 576));
    assert_eq!(v.rows_cols(), (1, 576));
}

#[test]
fn value_conversions() {
    assert_eq!(Value::I8(5).as_u64(), Some(5));
    assert_eq!(Value::I64(-1).as_u64(), None);
    assert_eq!(Value::Bool(true).as_u64(), None);
    assert_eq!(Value::U16(3).as_f64(), Some(3.0));
    assert_eq!(Value::F32(0.5).as_f64(), Some(0.5));
    assert_eq!(Value::String("s".into()).as_f64(), None);
    assert_eq!(Value::String("s".into()).as_str(), Some("s"));
    assert_eq!(Value::U8(0).as_str(), None);
    assert_eq!(Value::Array(vec![]).type_name(), "array");
    assert_eq!(Value::F64(1.0).type_name(), "f64");
}

#[test]
fn typed_getters_convert_or_name_the_key() {
    let mut w = GgufWriter::new();
    w.add("small", Value::U8(7))
        .add("big", Value::U64(1 << 40))
        .add("negative", Value::I32(-3))
        .add("float", Value::F64(0.125))
        .add("huge.float", Value::F64(1e300))
        .add("name", Value::String("n".into()))
        .add("strings", Value::Array(vec![Value::String("x".into())]))
        .add("ints", Value::Array(vec![Value::U8(1), Value::U8(200)]))
        .add("wide.ints", Value::Array(vec![Value::I64(1 << 40)]));
    let file = parse(&w.to_bytes()).unwrap();

    assert_eq!(file.get_u32("small").unwrap(), 7);
    assert_eq!(file.get_u64("big").unwrap(), 1 << 40);
    assert_eq!(file.get_f32("small").unwrap(), 7.0);
    assert_eq!(file.get_f32("float").unwrap(), 0.125);
    assert_eq!(file.get_str("name").unwrap(), "n");
    assert_eq!(file.get_array("strings").unwrap().len(), 1);
    assert_eq!(file.get_str_array("strings").unwrap(), vec!["x"]);
    assert_eq!(file.get_i32_array("ints").unwrap(), vec![1, 200]);

    assert!(matches!(
        file.get_u32("absent"),
        Err(GgufError::MissingKey { ref key }) if key == "absent"
    ));
    assert!(matches!(
        file.get_u32("big"),
        Err(GgufError::OutOfRange { ref key, target: "u32", .. }) if key == "big"
    ));
    assert!(matches!(
        file.get_u64("negative"),
        Err(GgufError::OutOfRange { .. })
    ));
    assert!(matches!(
        file.get_f32("huge.float"),
        Err(GgufError::OutOfRange { .. })
    ));
    assert!(matches!(
        file.get_u64("name"),
        Err(GgufError::WrongType { ref key, found: "string", .. }) if key == "name"
    ));
    assert!(matches!(
        file.get_str("small"),
        Err(GgufError::WrongType { found: "u8", .. })
    ));
    assert!(matches!(
        file.get_array("small"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        file.get_str_array("ints"),
        Err(GgufError::WrongType {
            found: "array of u8",
            ..
        })
    ));
    assert!(matches!(
        file.get_i32_array("strings"),
        Err(GgufError::WrongType {
            found: "array of string",
            ..
        })
    ));
    assert!(matches!(
        file.get_i32_array("wide.ints"),
        Err(GgufError::OutOfRange { .. })
    ));
}

#[test]
fn tensor_data_out_of_the_given_bytes_is_an_error() {
    let bytes = small_file();
    let file = parse(&bytes).unwrap();
    let t = file.tensor("output_norm.weight").unwrap();

    let result = file.tensor_data(&bytes[..bytes.len() - 1], t);

    assert!(
        matches!(result, Err(GgufError::DataOutOfRange { ref tensor, .. })
        if tensor == "output_norm.weight")
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed files: each gives its own error

#[test]
fn wrong_magic_is_rejected() {
    let mut bytes = small_file();
    bytes[..4].copy_from_slice(b"GGML");

    assert!(matches!(parse(&bytes), Err(GgufError::BadMagic { found }) if &found == b"GGML"));
}

#[test]
fn versions_other_than_2_and_3_are_rejected() {
    for version in [0, 1, 4, 3 << 24] {
        let mut w = small_writer();
        w.set_version(version);

        let err = parse(&w.to_bytes()).unwrap_err();

        assert!(
            matches!(err, GgufError::UnsupportedVersion { version: v } if v == version),
            "{err}"
        );
    }
    let v1 = GgufError::UnsupportedVersion { version: 1 }.to_string();
    assert!(v1.contains("version 1") && v1.contains("32-bit"), "{v1}");
    let big_endian = GgufError::UnsupportedVersion { version: 3 << 24 }.to_string();
    assert!(big_endian.contains("big-endian"), "{big_endian}");
}

#[test]
fn dimension_counts_outside_1_to_4_are_rejected() {
    for dims in [vec![], vec![2u64; 5]] {
        let mut w = GgufWriter::new();
        w.add_tensor("t", &dims, GgmlType::F32, vec![0; 128]);

        let err = parse(&w.to_bytes()).unwrap_err();

        assert!(
            matches!(err, GgufError::BadDimCount { ref tensor, n_dims }
                if tensor == "t" && n_dims as usize == dims.len()),
            "{err}"
        );
    }
}

#[test]
fn zero_dimension_is_rejected() {
    let mut w = GgufWriter::new();
    w.add_tensor("t", &[4, 0], GgmlType::F32, vec![]);

    let err = parse(&w.to_bytes()).unwrap_err();

    assert!(matches!(err, GgufError::ZeroDim { ref tensor, ref dims }
        if tensor == "t" && dims == &[4, 0]));
}

#[test]
fn element_count_overflow_is_rejected() {
    let mut w = GgufWriter::new();
    w.add_tensor("t", &[u64::MAX / 2, 3], GgmlType::F32, vec![]);
    let mut bytes = w.to_bytes();

    assert!(
        matches!(parse(&bytes), Err(GgufError::SizeOverflow { ref tensor, .. }) if tensor == "t")
    );

    // the count fits but its bytes do not
    let dims_at = offset_field(&bytes, "t") - 4 - 16;
    bytes[dims_at..dims_at + 8].copy_from_slice(&(u64::MAX / 4).to_le_bytes());
    bytes[dims_at + 8..dims_at + 16].copy_from_slice(&2u64.to_le_bytes());

    assert!(matches!(parse(&bytes), Err(GgufError::SizeOverflow { .. })));
}

#[test]
fn partial_quant_block_is_rejected() {
    let mut w = GgufWriter::new();
    w.add_tensor("q", &[33], GgmlType::Q4_0, vec![0; 64]);

    let err = parse(&w.to_bytes()).unwrap_err();

    assert!(matches!(
        err,
        GgufError::PartialBlock {
            n_elements: 33,
            block_size: 32,
            ..
        }
    ));
}

#[test]
fn non_utf8_strings_are_rejected_naming_their_owner() {
    // a key's name
    let mut bytes = small_file();
    patch(&mut bytes, b"llama.block_count", b"\xff");
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(err, GgufError::InvalidUtf8 { ref what, .. } if what.contains("#1")),
        "{err}"
    );

    // a string value
    let mut bytes = small_file();
    patch(&mut bytes, b"llama", b"\xc0\xaf");
    let err = parse(&bytes).unwrap_err();
    let names_key = matches!(err, GgufError::InvalidUtf8 { ref what, .. }
        if what.contains("general.architecture"));
    assert!(names_key, "{err}");

    // an array element
    let mut bytes = small_file();
    let at = find(&bytes, b"bc") - 8;
    bytes[at + 8] = 0xfe;
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(err, GgufError::InvalidUtf8 { ref what, offset }
            if what.contains("tokenizer.ggml.tokens") && offset == at as u64),
        "{err}"
    );

    // a tensor name
    let mut bytes = small_file();
    patch(&mut bytes, b"output_norm", b"\xed\xa0\x80");
    let err = parse(&bytes).unwrap_err();
    assert!(matches!(err, GgufError::InvalidUtf8 { ref what, .. } if what.contains("tensor #1")));
}

#[test]
fn duplicate_key_is_rejected() {
    let mut w = small_writer();
    w.add("llama.block_count", Value::U32(3));

    let err = parse(&w.to_bytes()).unwrap_err();

    assert!(matches!(err, GgufError::DuplicateKey { ref key } if key == "llama.block_count"));
}

#[test]
fn duplicate_tensor_name_is_rejected() {
    let mut w = small_writer();
    w.add_tensor("output_norm.weight", &[8], GgmlType::F32, vec![0; 32]);

    let err = parse(&w.to_bytes()).unwrap_err();

    assert!(matches!(err, GgufError::DuplicateTensor { ref tensor }
        if tensor == "output_norm.weight"));
}

#[test]
fn misaligned_tensor_offset_is_rejected() {
    let mut bytes = small_file();
    set_tensor_offset(&mut bytes, "output_norm.weight", 72);

    let err = parse(&bytes).unwrap_err();

    assert!(
        matches!(err, GgufError::MisalignedOffset { ref tensor, offset: 72, alignment: 32 }
        if tensor == "output_norm.weight")
    );
}

#[test]
fn tensor_data_past_the_end_of_the_file_is_rejected() {
    let bytes = small_file();
    let cut = &bytes[..bytes.len() - 1];

    let err = parse(cut).unwrap_err();

    match &err {
        GgufError::DataOutOfFile {
            tensor,
            start,
            end,
            file_len,
        } => {
            assert_eq!(tensor, "output_norm.weight");
            assert_eq!(end - start, 32);
            assert_eq!(*file_len, cut.len() as u64);
        }
        other => panic!("expected DataOutOfFile, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("'output_norm.weight'") && message.contains("ends past"),
        "{message}"
    );
}

#[test]
fn tensor_offset_overflow_is_rejected() {
    let mut bytes = small_file();
    set_tensor_offset(&mut bytes, "output_norm.weight", u64::MAX - 31);

    let err = parse(&bytes).unwrap_err();

    assert!(matches!(err, GgufError::OffsetOverflow { ref tensor, .. }
        if tensor == "output_norm.weight"));
}

#[test]
fn overlapping_tensors_are_rejected() {
    // token_embd.weight is 68 bytes at offset 0; moving the other tensor to 32 overlaps it
    let mut bytes = small_file();
    set_tensor_offset(&mut bytes, "output_norm.weight", 32);

    let err = parse(&bytes).unwrap_err();

    assert!(
        matches!(err, GgufError::OverlappingTensors { ref first, ref second, .. }
        if first == "token_embd.weight" && second == "output_norm.weight"),
        "{err}"
    );
}

#[test]
fn bad_alignment_is_rejected() {
    for alignment in [0, 48] {
        let mut w = small_writer();
        w.add(ALIGNMENT_KEY, Value::U32(alignment));

        let err = parse(&w.to_bytes()).unwrap_err();

        assert!(matches!(err, GgufError::BadAlignment { alignment: a } if a == alignment));
    }

    let mut w = small_writer();
    w.add(ALIGNMENT_KEY, Value::U64(32));

    let err = parse(&w.to_bytes()).unwrap_err();

    assert!(
        matches!(err, GgufError::WrongType { ref key, expected: "u32", found: "u64" }
        if key == ALIGNMENT_KEY)
    );
}

#[test]
fn unknown_value_types_are_rejected() {
    let scalar = Raw::new(3, 0, 1).str(b"odd").u32(13).u32(0).0;
    let err = parse(&scalar).unwrap_err();
    assert!(
        matches!(err, GgufError::UnknownValueType { ref what, value_type: 13, offset: 35 }
        if what.contains("'odd'")),
        "{err}"
    );

    let element = Raw::new(3, 0, 1).str(b"odd").u32(9).u32(99).u64(0).0;
    let err = parse(&element).unwrap_err();
    assert!(
        matches!(err, GgufError::UnknownValueType { value_type: 99, .. }),
        "{err}"
    );
}

#[test]
fn invalid_bool_is_rejected() {
    let bytes = Raw::new(3, 0, 1).str(b"flag").u32(7).raw(&[2]).0;

    let err = parse(&bytes).unwrap_err();

    assert!(
        matches!(err, GgufError::InvalidBool { byte: 2, .. }),
        "{err}"
    );
}

#[test]
fn arrays_nested_too_deep_are_rejected() {
    let mut raw = Raw::new(3, 0, 1).str(b"deep").u32(9);
    for _ in 0..MAX_ARRAY_DEPTH {
        raw = raw.u32(9).u64(1);
    }
    let bytes = raw.u32(0).u64(0).0;

    let err = parse(&bytes).unwrap_err();

    assert!(
        matches!(err, GgufError::NestingTooDeep { ref what, limit: MAX_ARRAY_DEPTH, .. }
        if what.contains("'deep'")),
        "{err}"
    );
}

#[test]
fn counts_larger_than_the_file_are_rejected_before_allocating() {
    let huge = u64::MAX / 2;
    // each file has 32 spare bytes at the end, enough for the key count but not the claim
    let cases = [
        ("tensor count", Raw::new(3, huge, 0)),
        ("metadata key count", Raw::new(3, 0, huge)),
        ("string length", Raw::new(3, 0, 1).u64(huge)),
        (
            "array length",
            Raw::new(3, 0, 1).str(b"k").u32(9).u32(8).u64(huge),
        ),
        (
            "array length",
            Raw::new(3, 0, 1).str(b"k").u32(9).u32(0).u64(33),
        ),
    ]
    .map(|(what, raw)| (what, raw.raw(&[0; 32]).0));
    for (what, bytes) in cases {
        let err = parse(&bytes).unwrap_err();

        assert!(
            matches!(err, GgufError::TooLarge { what: ref w, .. } if w.contains(what)),
            "{err}"
        );
    }
}

#[test]
fn plausible_counts_in_a_short_prefix_do_not_allocate_for_the_whole_file() {
    // a terabyte file whose header claims a trillion keys: only the bytes given are used
    let bytes = Raw::new(3, 0, 1 << 40)
        .str(b"k")
        .u32(9)
        .u32(8)
        .u64(1 << 36)
        .0;

    let err = GgufFile::parse(&bytes, 1 << 50).unwrap_err();

    assert!(matches!(err, GgufError::Truncated { needed_at_least } if needed_at_least > 50));
}

// ---------------------------------------------------------------------------------------------
// Prefixes and corruption

#[test]
fn a_prefix_of_a_valid_file_is_truncated() {
    let bytes = small_file();
    let file_len = bytes.len() as u64;

    let err = GgufFile::parse(&bytes[..100], file_len).unwrap_err();

    assert!(matches!(err, GgufError::Truncated { needed_at_least } if needed_at_least > 100));
}

#[test]
fn streaming_by_needed_at_least_reaches_the_header() {
    let bytes = small_file();
    let file_len = bytes.len() as u64;
    let mut have = 0usize;
    let mut tries = 0;

    let file = loop {
        tries += 1;
        match GgufFile::parse(&bytes[..have], file_len) {
            Ok(file) => break file,
            Err(GgufError::Truncated { needed_at_least }) => {
                assert!(needed_at_least > have as u64 && needed_at_least <= file_len);
                have = needed_at_least as usize;
            }
            Err(e) => panic!("after {have} bytes: {e}"),
        }
    };

    assert_eq!(file, parse(&bytes).unwrap());
    assert!(have as u64 <= file.data_offset);
    assert!(tries > 5);
}

#[test]
fn every_prefix_parses_or_errors_without_panicking() {
    let bytes = small_file();
    let file_len = bytes.len() as u64;
    let header_end = parse(&bytes).unwrap().data_offset as usize;

    for n in 0..=bytes.len() {
        // a prefix of a longer file: only Truncated until the header is complete
        match GgufFile::parse(&bytes[..n], file_len) {
            Ok(_) => assert!(n >= header_end - 32, "parsed from {n} bytes"),
            Err(GgufError::Truncated { .. }) => assert!(n < header_end),
            Err(e) => panic!("prefix of {n} bytes: {e}"),
        }
        // a file cut short: any error, but no panic
        let _ = parse(&bytes[..n]);
    }
}

#[test]
fn random_corruption_never_panics() {
    let mut w = small_writer();
    w.add(
        "nested",
        Value::Array(vec![Value::Array(vec![Value::U16(1), Value::U16(2)])]),
    )
    .add_tensor("q", &[256], GgmlType::Q4K, noise(144, 9))
    .add_tensor("u", &[7], GgmlType::Unknown(40), noise(8, 10));
    let original = w.to_bytes();
    let header_end = parse(&original).unwrap().data_offset as usize;
    let mut ok = 0;

    for round in 0..3000u64 {
        let mut bytes = original.clone();
        // overwrite 1 to 4 header bytes at random places with random values
        let r = noise(13, round);
        for k in 0..=(r[0] % 4) as usize {
            let at = u16::from_le_bytes([r[1 + 3 * k], r[2 + 3 * k]]) as usize;
            bytes[at % header_end] = r[3 + 3 * k];
        }

        if let Ok(file) = parse(&bytes) {
            ok += 1;
            for t in &file.tensors {
                let _ = file.tensor_data(&bytes, t);
                let _ = (t.n_elements(), t.rows_cols());
            }
        }
        let _ = GgufFile::parse(&bytes, u64::MAX);
    }

    assert!(
        ok > 0,
        "corrupting padding or a float value should still parse"
    );
}

#[test]
fn random_bytes_after_a_valid_start_never_panic() {
    for seed in 0..500u64 {
        let tail = noise(64 + (seed as usize % 200), seed);
        let bytes = Raw::new(3, seed % 3, seed % 4).raw(&tail).0;

        let _ = parse(&bytes);
        let _ = GgufFile::parse(&bytes, u64::MAX);
    }
}

// ---------------------------------------------------------------------------------------------
// The real model

#[test]
fn smollm2_q4_1_header_matches_the_reference_reader() {
    let Ok(bytes) = std::fs::read(MODEL_PATH) else {
        println!("skipped: {MODEL_PATH} is absent (scripts/fetch-model downloads it)");
        return;
    };

    let file = parse(&bytes).unwrap();

    // values cross-checked with python's gguf.GGUFReader
    assert_eq!(file.version, 3);
    assert_eq!(file.tensors.len(), 272);
    let count = |ty| file.tensors.iter().filter(|t| t.ggml_type == ty).count();
    assert_eq!(count(GgmlType::Q4_1), 210);
    assert_eq!(count(GgmlType::F32), 61);
    assert_eq!(count(GgmlType::Q8_0), 1);
    assert_eq!(file.data_offset, 1_785_664);
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(file.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100_000.0);
    assert_eq!(
        file.get_f32("llama.attention.layer_norm_rms_epsilon")
            .unwrap(),
        1e-5
    );
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!((tokens[0], tokens[49151]), ("<|endoftext|>", "ectable"));
    let token_types = file.get_i32_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(token_types.len(), 49152);
    assert_eq!(&token_types[16..19], &[3, 1, 1]);
    assert_eq!(
        file.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );

    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.dims, vec![576, 49152]);
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.rows_cols(), (49152, 576));
    assert_eq!(embd.n_bytes, 30_081_024);

    let norm = file.tensor("blk.0.attn_norm.weight").unwrap();
    let data = file.tensor_data(&bytes, norm).unwrap();
    assert_eq!(file.data_offset + norm.offset, 31_866_688);
    let first = f32::from_le_bytes(data[..4].try_into().unwrap());
    assert!((first - 0.013_977_05).abs() < 1e-7, "{first}");

    let last = file.tensors.last().unwrap();
    assert_eq!(
        file.data_offset + last.offset + last.n_bytes,
        bytes.len() as u64
    );
}

//! GGUF (versions 2 and 3) reader and writer.
//!
//! Layout, all little-endian:
//!
//! ```text
//! "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//! kv_count × (string key, u32 value type, value)
//! tensor_count × (string name, u32 n_dims, n_dims × u64 dims, u32 ggml type, u64 offset)
//! zero padding up to the alignment
//! data section: each tensor at `offset` (relative to the section), aligned
//! ```
//!
//! A string is a u64 byte length followed by UTF-8 bytes without a NUL.
//!
//! The parser reads files from anywhere (also in a browser), so it trusts no count: every
//! length is checked against the bytes the file can still hold before anything is allocated,
//! every size and offset is computed with checked arithmetic, and array nesting is bounded.
//! Memory use stays within a small multiple of the bytes given (a `Value` is 32 bytes, so an
//! array of one-byte elements is the worst case, at about 32 times its size in the file).

use std::collections::HashSet;
use std::fmt;

/// Alignment of the data section and of each tensor's data when the file has no
/// `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment (a u32, a non-zero power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Deepest array nesting accepted: an array of scalars has depth 1.
pub const MAX_ARRAY_DEPTH: u32 = 8;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

const MAGIC: [u8; 4] = *b"GGUF";

// Value type numbers as written in the file.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

// Smallest possible encodings, used to bound counts before allocating.
/// key length (8) + value type (4) + the smallest value (1).
const MIN_KV_BYTES: u64 = 13;
/// name length (8) + n_dims (4) + one dim (8) + ggml type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 32;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 6.
    F32(f32),
    /// Type 12.
    F64(f64),
    /// Type 7, one byte that must be 0 or 1.
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9. In a file every element has the same type; arrays of arrays are allowed.
    Array(Vec<Value>),
}

impl Value {
    /// The type's name as used in error messages: "u8", "i32", "f32", "string", "array", ...
    pub fn type_name(&self) -> &'static str {
        value_type_name(self.gguf_type())
    }

    /// The value type number written in a file (0 for U8 ... 12 for F64).
    pub fn gguf_type(&self) -> u32 {
        match self {
            Value::U8(_) => T_U8,
            Value::I8(_) => T_I8,
            Value::U16(_) => T_U16,
            Value::I16(_) => T_I16,
            Value::U32(_) => T_U32,
            Value::I32(_) => T_I32,
            Value::U64(_) => T_U64,
            Value::I64(_) => T_I64,
            Value::F32(_) => T_F32,
            Value::F64(_) => T_F64,
            Value::Bool(_) => T_BOOL,
            Value::String(_) => T_STRING,
            Value::Array(_) => T_ARRAY,
        }
    }

    /// Any non-negative integer, whatever its width; `None` for negative integers and for
    /// non-integers (bools included).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer that fits in an i64; `None` for non-integers (bools included).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Any number, integer or float (64-bit integers may round); `None` otherwise.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    fn is_integer(&self) -> bool {
        matches!(
            self,
            Value::U8(_)
                | Value::I8(_)
                | Value::U16(_)
                | Value::I16(_)
                | Value::U32(_)
                | Value::I32(_)
                | Value::U64(_)
                | Value::I64(_)
        )
    }
}

/// Scalars print their value, strings are quoted, arrays print their length and element type.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(items) => {
                write!(f, "{} ({} elements)", array_type_name(items), items.len())
            }
        }
    }
}

fn value_type_name(value_type: u32) -> &'static str {
    match value_type {
        T_U8 => "u8",
        T_I8 => "i8",
        T_U16 => "u16",
        T_I16 => "i16",
        T_U32 => "u32",
        T_I32 => "i32",
        T_F32 => "f32",
        T_BOOL => "bool",
        T_STRING => "string",
        T_ARRAY => "array",
        T_U64 => "u64",
        T_I64 => "i64",
        T_F64 => "f64",
        _ => "unknown",
    }
}

/// "array of u32" etc., from the first element (all elements share a type in a file).
fn array_type_name(items: &[Value]) -> &'static str {
    match items.first().map(Value::gguf_type) {
        None => "empty array",
        Some(T_U8) => "array of u8",
        Some(T_I8) => "array of i8",
        Some(T_U16) => "array of u16",
        Some(T_I16) => "array of i16",
        Some(T_U32) => "array of u32",
        Some(T_I32) => "array of i32",
        Some(T_F32) => "array of f32",
        Some(T_BOOL) => "array of bool",
        Some(T_STRING) => "array of string",
        Some(T_U64) => "array of u64",
        Some(T_I64) => "array of i64",
        Some(T_F64) => "array of f64",
        Some(_) => "array of array",
    }
}

/// Smallest encoding of a value of this type; `None` for an unknown type.
fn min_value_bytes(value_type: u32) -> Option<u64> {
    match value_type {
        T_U8 | T_I8 | T_BOOL => Some(1),
        T_U16 | T_I16 => Some(2),
        T_U32 | T_I32 | T_F32 => Some(4),
        T_U64 | T_I64 | T_F64 | T_STRING => Some(8),
        // element type (4) + count (8)
        T_ARRAY => Some(12),
        _ => None,
    }
}

/// A ggml tensor element type, by its number in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 0: f32.
    F32,
    /// 1: IEEE half.
    F16,
    /// 2: 32 elements in 18 bytes.
    Q4_0,
    /// 3: 32 elements in 20 bytes.
    Q4_1,
    /// 6: 32 elements in 22 bytes.
    Q5_0,
    /// 7: 32 elements in 24 bytes.
    Q5_1,
    /// 8: 32 elements in 34 bytes.
    Q8_0,
    /// 9: 32 elements in 36 bytes.
    Q8_1,
    /// 10: 256 elements in 84 bytes.
    Q2K,
    /// 11: 256 elements in 110 bytes.
    Q3K,
    /// 12: 256 elements in 144 bytes.
    Q4K,
    /// 13: 256 elements in 176 bytes.
    Q5K,
    /// 14: 256 elements in 210 bytes.
    Q6K,
    /// 15: 256 elements in 292 bytes.
    Q8K,
    /// 30: bfloat16.
    BF16,
    /// Any other number. Files with such tensors still parse; their size is unknown.
    Unknown(u32),
}

impl GgmlType {
    /// Every type this module knows the size of.
    pub const KNOWN: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
        GgmlType::BF16,
    ];

    /// The type with this number; numbers not listed in [`GgmlType::KNOWN`] give `Unknown`.
    pub fn from_u32(n: u32) -> Self {
        match n {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            15 => GgmlType::Q8K,
            30 => GgmlType::BF16,
            other => GgmlType::Unknown(other),
        }
    }

    /// The number written in the file.
    pub fn to_u32(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Q8K => 15,
            GgmlType::BF16 => 30,
            GgmlType::Unknown(n) => n,
        }
    }

    /// ggml's name: "F32", "Q4_1", "Q6_K", ...; "unknown" for `Unknown`.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
            GgmlType::BF16 => "BF16",
            GgmlType::Unknown(_) => "unknown",
        }
    }

    /// Elements per block (1 for the float types); `None` for `Unknown`.
    pub fn block_size(self) -> Option<u64> {
        self.block().map(|(elements, _)| elements)
    }

    /// Bytes per block; `None` for `Unknown`.
    pub fn block_bytes(self) -> Option<u64> {
        self.block().map(|(_, bytes)| bytes)
    }

    /// Bytes of a tensor of `n_elements`, None if unknown type or n not a multiple of the block
    /// size or overflow.
    pub fn tensor_bytes(self, n_elements: u64) -> Option<u64> {
        let (size, bytes) = self.block()?;
        if n_elements % size != 0 {
            return None;
        }
        (n_elements / size).checked_mul(bytes)
    }

    /// (elements, bytes) of one block.
    fn block(self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            GgmlType::Q2K => (256, 84),
            GgmlType::Q3K => (256, 110),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Q8K => (256, 292),
            GgmlType::Unknown(_) => return None,
        })
    }
}

/// The name, with the number for unknown types: "Q4_1", "unknown type 42".
impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlType::Unknown(n) => write!(f, "unknown type {n}"),
            known => f.write_str(known.name()),
        }
    }
}

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Its name, e.g. "blk.0.attn_q.weight".
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (the columns of a row), so a matrix `W [out, in]`
    /// has `dims == [in, out]`. 1 to 4 entries, none zero.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Start of the data, in bytes from the start of the data section (a multiple of the
    /// alignment).
    pub offset: u64,
    /// Size of the data in bytes; 0 when `ggml_type` is `Unknown`, whose size cannot be known.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Product of the dims (saturating at `u64::MAX`; a parsed tensor never overflows).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// (rows, cols) of a 1- or 2-d tensor: cols = dims[0], rows = product of the rest
    /// (a vector is one row). Saturates like [`TensorInfo::n_elements`].
    pub fn rows_cols(&self) -> (u64, u64) {
        let cols = self.dims.first().copied().unwrap_or(1);
        let rows = self
            .dims
            .iter()
            .skip(1)
            .fold(1u64, |n, &d| n.saturating_mul(d));
        (rows, cols)
    }
}

/// Everything before the tensor data: metadata and tensor infos.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    /// 2 or 3 (the layouts are the same).
    pub version: u32,
    /// Keys in file order; keys are unique.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order; names are unique and data ranges do not overlap.
    pub tensors: Vec<TensorInfo>,
    /// From `general.alignment`, else [`DEFAULT_ALIGNMENT`].
    pub alignment: u64,
    /// Absolute byte offset of the data section: the end of the tensor infos rounded up to
    /// the alignment.
    pub data_offset: u64,
}

/// What went wrong, naming the key, tensor, value or offset involved.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The bytes given end inside the header. A caller streaming the file can fetch at least
    /// this many bytes and retry; if it exceeds the file's length, the file is cut short.
    #[error("the bytes end inside the GGUF header: need at least {needed_at_least} bytes")]
    Truncated {
        /// Bytes from the start of the file needed to get further.
        needed_at_least: u64,
    },
    /// The file does not start with "GGUF".
    #[error("not a GGUF file: it starts with bytes {found:02x?}, not \"GGUF\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A version other than 2 or 3.
    #[error("{}", version_message(*version))]
    UnsupportedVersion {
        /// The version read (as little-endian).
        version: u32,
    },
    /// A count or length that cannot fit in what is left of the file.
    #[error(
        "{what}: {count} at offset {offset} cannot fit in the {remaining} bytes left in the file"
    )]
    TooLarge {
        /// What the count counts, e.g. "metadata key 'x': array length".
        what: String,
        /// Absolute offset of the count.
        offset: u64,
        /// The count read.
        count: u64,
        /// Bytes of the file after the count.
        remaining: u64,
    },
    /// A string that is not UTF-8.
    #[error("{what}: the string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Whose string, e.g. "name of tensor #3" or "metadata key 'x'".
        what: String,
        /// Absolute offset of the string's length.
        offset: u64,
    },
    /// A value type number outside 0..=12.
    #[error("{what}: unknown value type {value_type} at offset {offset}")]
    UnknownValueType {
        /// Whose value.
        what: String,
        /// The type number read.
        value_type: u32,
        /// Absolute offset of the type number.
        offset: u64,
    },
    /// A bool byte other than 0 or 1.
    #[error("{what}: the bool at offset {offset} is {byte}, not 0 or 1")]
    InvalidBool {
        /// Whose value.
        what: String,
        /// The byte read.
        byte: u8,
        /// Absolute offset of the byte.
        offset: u64,
    },
    /// Arrays of arrays nested deeper than [`MAX_ARRAY_DEPTH`].
    #[error("{what}: arrays nested deeper than {limit} levels at offset {offset}")]
    NestingTooDeep {
        /// Whose value.
        what: String,
        /// The limit.
        limit: u32,
        /// Absolute offset of the array that goes too deep.
        offset: u64,
    },
    /// The same metadata key twice.
    #[error("metadata key '{key}' appears more than once")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("{ALIGNMENT_KEY} is {alignment}, not a non-zero power of two")]
    BadAlignment {
        /// The value read.
        alignment: u32,
    },
    /// n_dims of 0 or more than [`MAX_DIMS`].
    #[error("tensor '{tensor}' has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}")]
    BadDimCount {
        /// The tensor's name.
        tensor: String,
        /// The count read.
        n_dims: u32,
    },
    /// A dimension of size zero.
    #[error("tensor '{tensor}' has a zero dimension: dims {dims:?}")]
    ZeroDim {
        /// The tensor's name.
        tensor: String,
        /// Its dims, in ggml order.
        dims: Vec<u64>,
    },
    /// The element count or byte size does not fit in a u64.
    #[error(
        "tensor '{tensor}': {ggml_type} data of dims {dims:?} has more bytes than a u64 holds"
    )]
    SizeOverflow {
        /// The tensor's name.
        tensor: String,
        /// Its dims, in ggml order.
        dims: Vec<u64>,
        /// Its type.
        ggml_type: GgmlType,
    },
    /// The element count is not a whole number of blocks of the tensor's type.
    #[error(
        "tensor '{tensor}': {n_elements} elements (dims {dims:?}) are not a whole number \
         of {ggml_type} blocks of {block_size}"
    )]
    PartialBlock {
        /// The tensor's name.
        tensor: String,
        /// Its dims, in ggml order.
        dims: Vec<u64>,
        /// Its element count.
        n_elements: u64,
        /// Its type.
        ggml_type: GgmlType,
        /// Elements per block of that type.
        block_size: u64,
    },
    /// The same tensor name twice.
    #[error("tensor '{tensor}' appears more than once")]
    DuplicateTensor {
        /// The name.
        tensor: String,
    },
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor '{tensor}': offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        /// The tensor's name.
        tensor: String,
        /// Its offset, relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// Data offset plus size does not fit in a u64.
    #[error("tensor '{tensor}': data at offset {offset} of {n_bytes} bytes overflows a u64")]
    OffsetOverflow {
        /// The tensor's name.
        tensor: String,
        /// Its offset, relative to the data section.
        offset: u64,
        /// Its size in bytes.
        n_bytes: u64,
    },
    /// A tensor's data ends past the end of the file.
    #[error(
        "tensor '{tensor}': data [{start}, {end}) ends past the end of the file ({file_len} bytes)"
    )]
    DataOutOfFile {
        /// The tensor's name.
        tensor: String,
        /// Absolute start of its data.
        start: u64,
        /// Absolute end of its data (exclusive).
        end: u64,
        /// The file's length.
        file_len: u64,
    },
    /// Two tensors share bytes.
    #[error(
        "tensors '{first}' [{first_start}, {first_end}) and \
         '{second}' [{second_start}, {second_end}) overlap"
    )]
    OverlappingTensors {
        /// The tensor that starts first.
        first: String,
        /// Its absolute start.
        first_start: u64,
        /// Its absolute end (exclusive).
        first_end: u64,
        /// The tensor that starts inside the first.
        second: String,
        /// Its absolute start.
        second_start: u64,
        /// Its absolute end (exclusive).
        second_end: u64,
    },
    /// Rounding the end of the header up to the alignment overflows.
    #[error("the header ends at {header_end}; rounding up to the alignment {alignment} overflows")]
    DataOffsetOverflow {
        /// Absolute end of the tensor infos.
        header_end: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A key asked for is not in the metadata.
    #[error("metadata key '{key}' is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A key's value has another type than asked for.
    #[error("metadata key '{key}': expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What was asked for.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// A key's value is of the right kind but does not fit in the type asked for.
    #[error("metadata key '{key}': {value} does not fit in {target}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The value, printed.
        value: String,
        /// The type asked for.
        target: &'static str,
    },
    /// Data asked for of a tensor whose type (and so size) is unknown.
    #[error(
        "tensor '{tensor}' has ggml type {type_id}, unknown to this reader, so its size is unknown"
    )]
    UnknownTensorType {
        /// The tensor's name.
        tensor: String,
        /// Its type number.
        type_id: u32,
    },
    /// Data asked for lies outside the bytes given.
    #[error("tensor '{tensor}': data [{start}, {end}) is outside the {len} bytes given")]
    DataOutOfRange {
        /// The tensor's name.
        tensor: String,
        /// Absolute start of its data.
        start: u64,
        /// Absolute end of its data (exclusive).
        end: u64,
        /// Length of the bytes given.
        len: u64,
    },
}

fn version_message(version: u32) -> String {
    match version {
        1 => "GGUF version 1 is not supported (it used 32-bit counts); \
              convert the model again with a recent llama.cpp"
            .to_string(),
        v if matches!(v.swap_bytes(), 2 | 3) => format!(
            "GGUF version {v} is not supported; this looks like a big-endian file \
             (version {}), and only little-endian files are read",
            v.swap_bytes()
        ),
        v => format!("GGUF version {v} is not supported (only versions 2 and 3 are)"),
    }
}

/// Where in the header a value is read, for error messages. Formatted only on error.
#[derive(Clone, Copy)]
enum Place<'a> {
    KeyName(u64),
    Key(&'a str),
    TensorName(u64),
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::KeyName(i) => write!(f, "name of metadata key #{i}"),
            Place::Key(key) => write!(f, "metadata key '{key}'"),
            Place::TensorName(i) => write!(f, "name of tensor #{i}"),
        }
    }
}

/// A cursor over the bytes available, which may be a prefix of a file of `file_len` bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file_len: u64,
}

impl<'a> Reader<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        let end = self.offset().saturating_add(n);
        let slice = usize::try_from(end)
            .ok()
            .and_then(|end| self.buf.get(self.pos..end));
        match slice {
            Some(s) => {
                self.pos += s.len();
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                needed_at_least: end,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        self.array().map(u64::from_le_bytes)
    }

    /// Checks that `count` items of at least `min_bytes` each fit in the rest of the file
    /// (the count itself was read at `at`). Returns a capacity to reserve: no more items than
    /// the bytes actually given can hold, since `file_len` may be far beyond them.
    fn check_count(
        &self,
        count: u64,
        min_bytes: u64,
        at: u64,
        what: impl FnOnce() -> String,
    ) -> Result<usize, GgufError> {
        let remaining = self.file_len.saturating_sub(self.offset());
        match count.checked_mul(min_bytes) {
            Some(needed) if needed <= remaining => {
                let given = self.buf.len().saturating_sub(self.pos) as u64;
                Ok(count.min(given / min_bytes) as usize)
            }
            _ => Err(GgufError::TooLarge {
                what: what(),
                offset: at,
                count,
                remaining,
            }),
        }
    }

    fn string(&mut self, place: Place<'_>) -> Result<String, GgufError> {
        let at = self.offset();
        let len = self.u64()?;
        self.check_count(len, 1, at, || format!("{place}: string length"))?;
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: place.to_string(),
                offset: at,
            }),
        }
    }

    /// A value of type `value_type` (read at `type_at`) at array depth `depth`.
    fn value(
        &mut self,
        value_type: u32,
        type_at: u64,
        depth: u32,
        place: Place<'_>,
    ) -> Result<Value, GgufError> {
        Ok(match value_type {
            T_U8 => Value::U8(self.u8()?),
            T_I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            T_U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            T_I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            T_U32 => Value::U32(self.u32()?),
            T_I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            T_F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            T_U64 => Value::U64(self.u64()?),
            T_I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            T_F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            T_BOOL => {
                let at = self.offset();
                match self.u8()? {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    byte => {
                        let what = place.to_string();
                        return Err(GgufError::InvalidBool {
                            what,
                            byte,
                            offset: at,
                        });
                    }
                }
            }
            T_STRING => Value::String(self.string(place)?),
            T_ARRAY => self.array_value(depth + 1, place)?,
            _ => {
                let what = place.to_string();
                return Err(GgufError::UnknownValueType {
                    what,
                    value_type,
                    offset: type_at,
                });
            }
        })
    }

    /// An array's element type, count and elements; `depth` is 1 for a top-level array.
    fn array_value(&mut self, depth: u32, place: Place<'_>) -> Result<Value, GgufError> {
        let type_at = self.offset();
        if depth > MAX_ARRAY_DEPTH {
            let what = place.to_string();
            return Err(GgufError::NestingTooDeep {
                what,
                limit: MAX_ARRAY_DEPTH,
                offset: type_at,
            });
        }
        let elem_type = self.u32()?;
        let Some(min_bytes) = min_value_bytes(elem_type) else {
            let what = place.to_string();
            return Err(GgufError::UnknownValueType {
                what,
                value_type: elem_type,
                offset: type_at,
            });
        };
        let count_at = self.offset();
        let count = self.u64()?;
        let capacity = self.check_count(count, min_bytes, count_at, || {
            format!("{place}: array length")
        })?;
        let mut items = Vec::with_capacity(capacity);
        for _ in 0..count {
            items.push(self.value(elem_type, type_at, depth, place)?);
        }
        Ok(Value::Array(items))
    }
}

impl GgufFile {
    /// Parses the header (metadata + tensor infos) from the start of a file. `bytes` may be the
    /// whole file or just a prefix: if it ends inside the header → `Err(GgufError::Truncated {
    /// needed_at_least })` so a caller streaming a download can fetch more and retry (if
    /// `needed_at_least > file_len`, the file itself is cut short). Tensor data ranges are
    /// checked against `file_len` (the whole file's size, which may exceed `bytes.len()`);
    /// bytes past `file_len` are ignored.
    ///
    /// Tensors of an unknown ggml type are accepted with `n_bytes == 0`; their offset must be
    /// aligned, but their data range cannot be checked, so [`GgufFile::tensor_data`] refuses
    /// them with [`GgufError::UnknownTensorType`].
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<GgufFile, GgufError> {
        let given = usize::try_from(file_len).map_or(bytes.len(), |n| n.min(bytes.len()));
        let mut r = Reader {
            buf: bytes.get(..given).unwrap_or(bytes),
            pos: 0,
            file_len,
        };

        let found: [u8; 4] = r.array()?;
        if found != MAGIC {
            return Err(GgufError::BadMagic { found });
        }
        let version = r.u32()?;
        if !matches!(version, 2 | 3) {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let tensor_count_at = r.offset();
        let tensor_count = r.u64()?;
        let kv_count_at = r.offset();
        let kv_count = r.u64()?;
        let kv_capacity = r.check_count(kv_count, MIN_KV_BYTES, kv_count_at, || {
            "metadata key count".into()
        })?;
        let tensor_capacity =
            r.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, tensor_count_at, || {
                "tensor count".into()
            })?;

        let metadata = read_metadata(&mut r, kv_count, kv_capacity)?;
        let alignment = alignment_of(&metadata)?;
        let tensors = read_tensor_infos(&mut r, tensor_count, tensor_capacity, alignment)?;

        // The data section starts at the first aligned offset after the tensor infos.
        let header_end = r.offset();
        let data_offset = header_end.checked_next_multiple_of(alignment).ok_or(
            GgufError::DataOffsetOverflow {
                header_end,
                alignment,
            },
        )?;
        check_data_ranges(&tensors, data_offset, file_len)?;

        Ok(GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    /// The value of a key (linear search; files have a few dozen keys).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of a key; `MissingKey` if absent.
    pub fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    /// Any non-negative integer value; `OutOfRange` for a negative one, `WrongType` for
    /// anything but an integer.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_unsigned(key, "u64")
    }

    /// Like [`GgufFile::get_u64`], and `OutOfRange` when the value does not fit in a u32.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.get_unsigned(key, "u32")?;
        u32::try_from(v).map_err(|_| GgufError::OutOfRange {
            key: key.to_string(),
            value: v.to_string(),
            target: "u32",
        })
    }

    fn get_unsigned(&self, key: &str, target: &'static str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        match v.as_u64() {
            Some(n) => Ok(n),
            None if v.is_integer() => Err(out_of_range(key, v, target)),
            None => Err(wrong_type(key, "an unsigned integer", v)),
        }
    }

    /// Any number (integers included) as f32; `OutOfRange` for a finite f64 beyond f32's range.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        let n = v.as_f64().ok_or_else(|| wrong_type(key, "a number", v))?;
        let narrow = n as f32;
        if n.is_finite() && !narrow.is_finite() {
            return Err(out_of_range(key, v, "f32"));
        }
        Ok(narrow)
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| wrong_type(key, "bool", v))
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "string", v))
    }

    /// The elements of an array value.
    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| wrong_type(key, "array", v))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let items = self.get_array(key)?;
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| wrong_array_type(key, "array of string", items))
            })
            .collect()
    }

    /// An array of integers that all fit in an i32 (whatever their stored width).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let items = self.get_array(key)?;
        items
            .iter()
            .map(|item| {
                if !item.is_integer() {
                    return Err(wrong_array_type(key, "array of integers", items));
                }
                let narrow = item.as_i64().and_then(|v| i32::try_from(v).ok());
                narrow.ok_or_else(|| out_of_range(key, item, "i32"))
            })
            .collect()
    }

    /// The tensor of this name (linear search).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor's bytes out of the whole file's bytes; errors if out of range or if the
    /// tensor's type is unknown.
    pub fn tensor_data<'a>(&self, file: &'a [u8], t: &TensorInfo) -> Result<&'a [u8], GgufError> {
        if let GgmlType::Unknown(type_id) = t.ggml_type {
            return Err(GgufError::UnknownTensorType {
                tensor: t.name.clone(),
                type_id,
            });
        }
        let (start, end) = data_range(t, self.data_offset)?;
        let slice = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| file.get(s..e));
        slice.ok_or_else(|| GgufError::DataOutOfRange {
            tensor: t.name.clone(),
            start,
            end,
            len: file.len() as u64,
        })
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected,
        found: found.type_name(),
    }
}

fn wrong_array_type(key: &str, expected: &'static str, items: &[Value]) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected,
        found: array_type_name(items),
    }
}

fn out_of_range(key: &str, value: &Value, target: &'static str) -> GgufError {
    GgufError::OutOfRange {
        key: key.to_string(),
        value: value.to_string(),
        target,
    }
}

fn read_metadata(
    r: &mut Reader<'_>,
    kv_count: u64,
    capacity: usize,
) -> Result<Vec<(String, Value)>, GgufError> {
    let mut metadata = Vec::with_capacity(capacity);
    let mut seen = HashSet::with_capacity(capacity);
    for i in 0..kv_count {
        let key = r.string(Place::KeyName(i))?;
        if !seen.insert(key.clone()) {
            return Err(GgufError::DuplicateKey { key });
        }
        let type_at = r.offset();
        let value_type = r.u32()?;
        let value = r.value(value_type, type_at, 0, Place::Key(&key))?;
        metadata.push((key, value));
    }
    Ok(metadata)
}

fn alignment_of(metadata: &[(String, Value)]) -> Result<u64, GgufError> {
    match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some((_, Value::U32(a))) => Err(GgufError::BadAlignment { alignment: *a }),
        Some((key, v)) => Err(wrong_type(key, "u32", v)),
    }
}

fn read_tensor_infos(
    r: &mut Reader<'_>,
    tensor_count: u64,
    capacity: usize,
    alignment: u64,
) -> Result<Vec<TensorInfo>, GgufError> {
    let mut tensors = Vec::with_capacity(capacity);
    let mut seen = HashSet::with_capacity(capacity);
    for i in 0..tensor_count {
        let name = r.string(Place::TensorName(i))?;
        if !seen.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { tensor: name });
        }
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                tensor: name,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64()?);
        }
        let ggml_type = GgmlType::from_u32(r.u32()?);
        let offset = r.u64()?;

        if dims.contains(&0) {
            return Err(GgufError::ZeroDim { tensor: name, dims });
        }
        let n_elements = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        let n_bytes = match (n_elements, ggml_type.block()) {
            (_, None) => 0,
            (None, Some(_)) => {
                return Err(GgufError::SizeOverflow {
                    tensor: name,
                    dims,
                    ggml_type,
                })
            }
            (Some(n), Some((block_size, _))) if n % block_size != 0 => {
                return Err(GgufError::PartialBlock {
                    tensor: name,
                    dims,
                    n_elements: n,
                    ggml_type,
                    block_size,
                });
            }
            (Some(n), Some(_)) => match ggml_type.tensor_bytes(n) {
                Some(bytes) => bytes,
                None => {
                    return Err(GgufError::SizeOverflow {
                        tensor: name,
                        dims,
                        ggml_type,
                    })
                }
            },
        };
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedOffset {
                tensor: name,
                offset,
                alignment,
            });
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }
    Ok(tensors)
}

/// Absolute [start, end) of a tensor's data.
fn data_range(t: &TensorInfo, data_offset: u64) -> Result<(u64, u64), GgufError> {
    data_offset
        .checked_add(t.offset)
        .and_then(|start| Some((start, start.checked_add(t.n_bytes)?)))
        .ok_or_else(|| GgufError::OffsetOverflow {
            tensor: t.name.clone(),
            offset: t.offset,
            n_bytes: t.n_bytes,
        })
}

/// Every known-size tensor lies inside the file and no two share a byte.
fn check_data_ranges(
    tensors: &[TensorInfo],
    data_offset: u64,
    file_len: u64,
) -> Result<(), GgufError> {
    let mut ranges = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if matches!(t.ggml_type, GgmlType::Unknown(_)) {
            continue;
        }
        let (start, end) = data_range(t, data_offset)?;
        if end > file_len {
            return Err(GgufError::DataOutOfFile {
                tensor: t.name.clone(),
                start,
                end,
                file_len,
            });
        }
        ranges.push((start, end, i));
    }

    // Sorted by start, a range overlaps an earlier one iff it starts before the furthest end
    // seen so far.
    ranges.sort_unstable();
    let mut furthest: Option<(u64, u64, usize)> = None;
    for &(start, end, i) in &ranges {
        if let Some((f_start, f_end, f)) = furthest {
            if start < f_end {
                return Err(GgufError::OverlappingTensors {
                    first: tensors[f].name.clone(),
                    first_start: f_start,
                    first_end: f_end,
                    second: tensors[i].name.clone(),
                    second_start: start,
                    second_end: end,
                });
            }
            if end <= f_end {
                continue;
            }
        }
        furthest = Some((start, end, i));
    }
    Ok(())
}

/// Builds GGUF files, for tests and synthetic models.
///
/// It writes what it is given without checking it, so tests can also make malformed files:
/// duplicate keys, any dims, data of any length. Each array must hold elements of a single
/// variant (a file stores one element type per array); an empty array is written as an array
/// of u8.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Clone, Debug)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file with alignment 32.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets the version number written (any number, so tests can write unsupported ones).
    pub fn set_version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Appends a metadata key (a key added twice is written twice).
    pub fn add(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Appends a tensor. `dims` are in ggml order (`[in, out]` for `W [out, in]`); `data` should
    /// hold `ggml_type.tensor_bytes(product of dims)` bytes and is written as given.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> &mut Self {
        let name = name.to_string();
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        self
    }

    /// The alignment used: `general.alignment` if it was added as a valid u32, else 32.
    pub fn alignment(&self) -> u64 {
        match self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// The file's bytes. `general.alignment` is written only if it was added explicitly; the
    /// header and each tensor's data are padded with zeros to the alignment.
    pub fn to_bytes(&self) -> Vec<u8> {
        let alignment = self.alignment() as usize;
        let lengths: Vec<u64> = self.tensors.iter().map(|t| t.data.len() as u64).collect();
        let mut out = self.header(&lengths);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            out.resize(out.len().next_multiple_of(alignment), 0);
        }
        out
    }

    /// The header alone of the file the tensors would make at the sizes their types and
    /// dims give (the data given to `add_tensor` is not read), and the length of that whole
    /// file: what a browser reads before it downloads the weights. For models too large to
    /// write out. `None` when a tensor's size does not follow from its type and dims.
    pub fn header_for_sizes(&self) -> Option<(Vec<u8>, u64)> {
        let lengths = self
            .tensors
            .iter()
            .map(|t| t.ggml_type.tensor_bytes(t.dims.iter().product()))
            .collect::<Option<Vec<u64>>>()?;
        let header = self.header(&lengths);
        let alignment = self.alignment();
        let data: u64 = lengths.iter().map(|n| n.next_multiple_of(alignment)).sum();
        let file_len = header.len() as u64 + data;
        Some((header, file_len))
    }

    /// Everything before the data section, for tensors of `lengths` bytes.
    fn header(&self, lengths: &[u64]) -> Vec<u8> {
        let alignment = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_str(&mut out, key);
            out.extend_from_slice(&value.gguf_type().to_le_bytes());
            write_value(&mut out, value);
        }

        let mut offset = 0u64;
        for (t, &len) in self.tensors.iter().zip(lengths) {
            write_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_u32().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + len).next_multiple_of(alignment);
        }

        out.resize(out.len().next_multiple_of(alignment as usize), 0);
        out
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The value's payload, without its type number.
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            let elem_type = items.first().map_or(T_U8, Value::gguf_type);
            out.extend_from_slice(&elem_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
    }
}

//! Weight matrices on the GPU in their stored formats, split by rows into as many
//! bindings as the adapter's binding limit needs. Every use of a matrix (embedding
//! lookup, matrix-vector and matrix-matrix products) goes through here, so the
//! splitting is invisible to the rest of the engine.

use super::kernels::{Epilogue, Grid, Kernels, MATVEC_MAX_COLS};
use super::uniforms::{WeightChunk, NO_BIAS};
use super::{GpuBuffer, GpuContext};
use crate::quant::{repack_for_gpu, WeightFormat};

/// Why a matrix cannot be placed on the GPU.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("tensor '{name}': {cols} columns is not a multiple of {block}, the {format} block")]
    Columns {
        name: String,
        cols: usize,
        format: &'static str,
        block: usize,
    },
    #[error(
        "tensor '{name}': rows of {cols} columns are wider than the {MATVEC_MAX_COLS} \
             a matrix-vector product reads"
    )]
    TooWide { name: String, cols: usize },
    #[error(
        "tensor '{name}': one row of {row_bytes} bytes exceeds the {limit}-byte binding limit"
    )]
    RowTooLarge {
        name: String,
        row_bytes: u64,
        limit: u64,
    },
    #[error("tensor '{name}': {rows} rows but a different number of biases")]
    Bias { name: String, rows: usize },
    #[error("tensor '{name}': {bytes} bytes of {format} data, expected {expected}")]
    Size {
        name: String,
        format: &'static str,
        bytes: usize,
        expected: usize,
    },
}

/// Refuses rows that are not a whole number of the format's blocks: the kernels
/// read whole 32-element blocks, and the k-quants whole 256-element superblocks.
pub fn check_columns(name: &str, format: WeightFormat, cols: usize) -> Result<(), MatrixError> {
    let block = format.block_elements();
    if cols % block != 0 {
        return Err(MatrixError::Columns {
            name: name.into(),
            cols,
            format: format.name(),
            block,
        });
    }
    Ok(())
}

/// One binding's worth of rows, all of one format.
pub struct Chunk {
    pub row0: u32,
    pub rows: u32,
    pub format: WeightFormat,
    pub buffer: GpuBuffer,
    /// The chunk's shape (a `WeightChunk` uniform), kept so the registry counts it.
    pub shape: GpuBuffer,
    /// Group 1 of the weight-reading kernels: this chunk's shape and words.
    pub bind_group: wgpu::BindGroup,
}

/// Rows of one format: a whole matrix, or one of the matrices stacked into one.
pub struct MatrixPart<'a> {
    pub name: &'a str,
    pub format: WeightFormat,
    pub rows: usize,
    /// GGUF bytes of the rows.
    pub bytes: &'a [u8],
    /// One f32 a row, added to its sums (qwen2's Q, K and V biases).
    pub bias: Option<&'a [f32]>,
}

/// A matrix `[rows, cols]` (GGUF dims `[cols, rows]`) in its stored format, or
/// several matrices of the same width stacked by rows, each in its own format.
pub struct GpuMatrix {
    pub name: String,
    pub rows: u32,
    pub cols: u32,
    pub chunks: Vec<Chunk>,
}

impl GpuMatrix {
    /// Rows per chunk so that each chunk's words (and a bias a row, with
    /// `bias`) fit one binding: a multiple of 4, the rows an invocation of the
    /// products serves, where 4 fit.
    pub fn rows_per_chunk(
        name: &str,
        format: WeightFormat,
        cols: usize,
        limit: u64,
        bias: bool,
    ) -> Result<usize, MatrixError> {
        // A lone row rounds its scales up to whole words, so n rows take at most
        // n times what one row takes.
        let row_bytes = 4 * format.gpu_words(1, cols).0 as u64 + if bias { 4 } else { 0 };
        if row_bytes > limit {
            return Err(MatrixError::RowTooLarge {
                name: name.into(),
                row_bytes,
                limit,
            });
        }
        let rows = (limit / row_bytes) as usize;
        Ok(if rows >= 4 { rows - rows % 4 } else { rows })
    }

    /// Uploads GGUF bytes of a `[rows, cols]` matrix.
    pub fn upload(
        ctx: &GpuContext,
        kernels: &Kernels,
        name: &str,
        format: WeightFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self, MatrixError> {
        let part = MatrixPart {
            name,
            format,
            rows,
            bytes,
            bias: None,
        };
        Self::upload_stacked(ctx, kernels, name, cols, &[part])
    }

    /// Uploads `parts`, rows of `cols` columns each, as one matrix: their rows
    /// one after another. Consecutive parts of one format share chunks, so
    /// parts all of one format take as few dispatches as one matrix.
    pub fn upload_stacked(
        ctx: &GpuContext,
        kernels: &Kernels,
        name: &str,
        cols: usize,
        parts: &[MatrixPart],
    ) -> Result<Self, MatrixError> {
        for part in parts {
            check_columns(part.name, part.format, cols)?;
            if cols > MATVEC_MAX_COLS as usize {
                return Err(MatrixError::TooWide {
                    name: part.name.into(),
                    cols,
                });
            }
            let expected = part.rows * part.format.row_bytes(cols);
            if part.bytes.len() != expected {
                return Err(MatrixError::Size {
                    name: part.name.into(),
                    format: part.format.name(),
                    bytes: part.bytes.len(),
                    expected,
                });
            }
            if part.bias.is_some_and(|bias| bias.len() != part.rows) {
                return Err(MatrixError::Bias {
                    name: part.name.into(),
                    rows: part.rows,
                });
            }
        }
        let mut chunks = Vec::new();
        let mut row0 = 0;
        let mut rest = parts;
        while let Some(first) = rest.first() {
            // the run of parts that share `first`'s format and bias or lack of one
            let same = rest
                .iter()
                .take_while(|p| {
                    p.format == first.format && p.bias.is_some() == first.bias.is_some()
                })
                .count();
            let (run, after) = rest.split_at(same);
            rest = after;
            let bytes: Vec<u8> = run.iter().flat_map(|p| p.bytes.iter().copied()).collect();
            let bias: Option<Vec<f32>> = first.bias.map(|_| {
                run.iter()
                    .flat_map(|p| p.bias.unwrap_or_default().iter().copied())
                    .collect()
            });
            let rows: usize = run.iter().map(|p| p.rows).sum();
            let format = first.format;
            let per_chunk = Self::rows_per_chunk(
                first.name,
                format,
                cols,
                ctx.max_binding_bytes(),
                bias.is_some(),
            )?;
            let row_bytes = format.row_bytes(cols);
            let mut done = 0;
            while done < rows {
                let n = per_chunk.min(rows - done);
                let label = format!("{name} rows {}..{}", row0 + done, row0 + done + n);
                let at = done * row_bytes;
                let words = repack_for_gpu(format, &bytes[at..at + n * row_bytes], n, cols);
                let rows_bias = bias.as_ref().map(|b| &b[done..done + n]);
                chunks.push(Chunk::upload(
                    ctx,
                    kernels,
                    &label,
                    format,
                    (row0 + done, n, cols),
                    words,
                    rows_bias,
                ));
                done += n;
            }
            row0 += rows;
        }
        Ok(Self {
            name: name.into(),
            rows: row0 as u32,
            cols: cols as u32,
            chunks,
        })
    }

    /// Bytes the matrix takes on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.buffer.size()).sum()
    }

    /// Records `y = W x` for `n_tokens` token rows, stored as `epilogue` says:
    /// matvec for one token (row 0 of x), matmul for more. `io` is from
    /// [`Kernels::bind_product`].
    pub fn encode_product(
        &self,
        kernels: &Kernels,
        pass: &mut wgpu::ComputePass,
        io: &wgpu::BindGroup,
        n_tokens: u32,
        epilogue: Epilogue,
    ) {
        let products = &kernels.products;
        for chunk in &self.chunks {
            let (by_format, grid) = match n_tokens {
                1 => (
                    products.matvec(epilogue, false),
                    kernels.matvec_grid(chunk.rows),
                ),
                _ => (
                    products.matmul(epilogue),
                    kernels.matmul_grid(chunk.rows, n_tokens),
                ),
            };
            by_format
                .get(chunk.format)
                .dispatch(pass, &[io, &chunk.bind_group], grid);
        }
    }

    /// Records `y = W rmsnorm(x)` for one token, stored as `epilogue` says: the
    /// norm taken as the product reads x, with the weights and epsilon that `io`
    /// binds ([`Kernels::bind_product`] with a norm).
    pub fn encode_normed_product(
        &self,
        kernels: &Kernels,
        pass: &mut wgpu::ComputePass,
        io: &wgpu::BindGroup,
        epilogue: Epilogue,
    ) {
        let products = kernels.products.matvec(epilogue, true);
        for chunk in &self.chunks {
            let grid = kernels.matvec_grid(chunk.rows);
            let kernel = products.get(chunk.format);
            kernel.dispatch(pass, &[io, &chunk.bind_group], grid);
        }
    }

    /// Records the embedding lookup of `n_tokens` ids. `io` binds (step, ids, out).
    pub fn encode_embed(
        &self,
        kernels: &Kernels,
        pass: &mut wgpu::ComputePass,
        io: &wgpu::BindGroup,
        n_tokens: u32,
    ) {
        let grid: Grid = kernels.elementwise_grid(n_tokens * self.cols / 8);
        for chunk in &self.chunks {
            kernels
                .embed
                .get(chunk.format)
                .dispatch(pass, &[io, &chunk.bind_group], grid);
        }
    }
}

impl Chunk {
    /// A chunk of `rows` rows from `row0` of `cols` columns: `words` in the GPU
    /// layout, then the rows' biases, if any, as f32 bits.
    fn upload(
        ctx: &GpuContext,
        kernels: &Kernels,
        label: &str,
        format: WeightFormat,
        (row0, rows, cols): (usize, usize, usize),
        mut words: Vec<u32>,
        bias: Option<&[f32]>,
    ) -> Self {
        // biases from a whole 16-byte word, in whole 16-byte words: the products
        // read four at a time (shaders/product.wgsl)
        let bias_offset = match bias {
            Some(bias) => {
                words.resize(words.len().next_multiple_of(4), 0);
                let offset = words.len() as u32;
                words.extend(bias.iter().map(|b| b.to_bits()));
                words.resize(words.len().next_multiple_of(4), 0);
                offset
            }
            None => NO_BIAS,
        };
        let buffer = ctx.storage_with(label, bytemuck::cast_slice(&words));
        let shape = WeightChunk {
            rows: rows as u32,
            cols: cols as u32,
            row0: row0 as u32,
            scale_offset: format.gpu_words(rows, cols).1 as u32,
            bias_offset,
            _pad: [0; 3],
        };
        let uniform = ctx.uniform_with(label, bytemuck::bytes_of(&shape));
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &kernels.weight_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniform.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &buffer,
                        offset: 0,
                        size: wgpu::BufferSize::new(vec4_view_bytes(words.len())),
                    }),
                },
            ],
        });
        Chunk {
            row0: row0 as u32,
            rows: rows as u32,
            format,
            buffer,
            shape: uniform,
            bind_group,
        }
    }
}

/// Bytes of a chunk that its `array<vec4<u32>>` view (quant.wgsl's `quads`)
/// covers: the whole 16-byte words of its `words` words.
fn vec4_view_bytes(words: usize) -> u64 {
    (words as u64 * 4) / 16 * 16
}

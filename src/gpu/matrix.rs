//! Weight matrices on the GPU in their stored formats, split by rows into as many
//! bindings as the adapter's binding limit needs. Every use of a matrix (embedding
//! lookup, matrix-vector and matrix-matrix products) goes through here, so the
//! splitting is invisible to the rest of the engine.

use super::kernels::{Grid, Kernels, MATVEC_MAX_COLS};
use super::uniforms::WeightChunk;
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

/// One binding's worth of rows.
pub struct Chunk {
    pub row0: u32,
    pub rows: u32,
    pub buffer: GpuBuffer,
    /// The chunk's shape (a `WeightChunk` uniform), kept so the registry counts it.
    pub shape: GpuBuffer,
    /// Group 1 of the weight-reading kernels: this chunk's shape and words.
    pub bind_group: wgpu::BindGroup,
}

/// A matrix `[rows, cols]` (GGUF dims `[cols, rows]`) in its stored format.
pub struct GpuMatrix {
    pub name: String,
    pub format: WeightFormat,
    pub rows: u32,
    pub cols: u32,
    pub chunks: Vec<Chunk>,
}

impl GpuMatrix {
    /// Rows per chunk so that each chunk's words fit one binding.
    pub fn rows_per_chunk(
        name: &str,
        format: WeightFormat,
        cols: usize,
        limit: u64,
    ) -> Result<usize, MatrixError> {
        // A lone row rounds its scales up to whole words, so n rows take at most
        // n times what one row takes.
        let row_bytes = 4 * format.gpu_words(1, cols).0 as u64;
        if row_bytes > limit {
            return Err(MatrixError::RowTooLarge {
                name: name.into(),
                row_bytes,
                limit,
            });
        }
        Ok((limit / row_bytes) as usize)
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
        check_columns(name, format, cols)?;
        if cols > MATVEC_MAX_COLS as usize {
            return Err(MatrixError::TooWide {
                name: name.into(),
                cols,
            });
        }
        let row_bytes = format.row_bytes(cols);
        if bytes.len() != rows * row_bytes {
            let expected = rows * row_bytes;
            let format = format.name();
            return Err(MatrixError::Size {
                name: name.into(),
                format,
                bytes: bytes.len(),
                expected,
            });
        }
        let per_chunk = Self::rows_per_chunk(name, format, cols, ctx.max_binding_bytes())?;
        let mut chunks = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = per_chunk.min(rows - row0);
            let words = repack_for_gpu(
                format,
                &bytes[row0 * row_bytes..(row0 + n) * row_bytes],
                n,
                cols,
            );
            let label = format!("{name} rows {row0}..{}", row0 + n);
            let buffer = ctx.storage_with(&label, bytemuck::cast_slice(&words));
            let shape = WeightChunk {
                rows: n as u32,
                cols: cols as u32,
                row0: row0 as u32,
                scale_offset: format.gpu_words(n, cols).1 as u32,
            };
            let uniform = ctx.uniform_with(&label, bytemuck::bytes_of(&shape));
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&label),
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
            chunks.push(Chunk {
                row0: row0 as u32,
                rows: n as u32,
                buffer,
                shape: uniform,
                bind_group,
            });
            row0 += n;
        }
        Ok(Self {
            name: name.into(),
            format,
            rows: rows as u32,
            cols: cols as u32,
            chunks,
        })
    }

    /// Bytes the matrix takes on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.buffer.size()).sum()
    }

    /// Records `y = W x` for `n_tokens` token rows: matvec for one token (row 0 of
    /// x), matmul for more. `io` is from [`Kernels::bind_product`].
    pub fn encode_product(
        &self,
        kernels: &Kernels,
        pass: &mut wgpu::ComputePass,
        io: &wgpu::BindGroup,
        n_tokens: u32,
    ) {
        self.encode_products(kernels, pass, io, n_tokens, false);
    }

    /// Records `y = silu(y) * (W x)` for `n_tokens` tokens: with this matrix the up
    /// projection and y holding the gate projection, SwiGLU in the same pass.
    /// `io` binds as for [`GpuMatrix::encode_product`].
    pub fn encode_swiglu_product(
        &self,
        kernels: &Kernels,
        pass: &mut wgpu::ComputePass,
        io: &wgpu::BindGroup,
        n_tokens: u32,
    ) {
        self.encode_products(kernels, pass, io, n_tokens, true);
    }

    fn encode_products(
        &self,
        kernels: &Kernels,
        pass: &mut wgpu::ComputePass,
        io: &wgpu::BindGroup,
        n_tokens: u32,
        swiglu: bool,
    ) {
        for chunk in &self.chunks {
            let (kernels_by_format, grid) = match (n_tokens, swiglu) {
                (1, false) => (&kernels.matvec, kernels.matvec_grid(chunk.rows)),
                (1, true) => (&kernels.matvec_swiglu, kernels.matvec_grid(chunk.rows)),
                (_, false) => (&kernels.matmul, kernels.matmul_grid(chunk.rows, n_tokens)),
                (_, true) => (
                    &kernels.matmul_swiglu,
                    kernels.matmul_grid(chunk.rows, n_tokens),
                ),
            };
            kernels_by_format
                .get(self.format)
                .dispatch(pass, &[io, &chunk.bind_group], grid);
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
                .get(self.format)
                .dispatch(pass, &[io, &chunk.bind_group], grid);
        }
    }
}

/// Bytes of a chunk that its `array<vec4<u32>>` view (quant.wgsl's `quads`)
/// covers: the whole 16-byte words of its `words` words.
fn vec4_view_bytes(words: usize) -> u64 {
    (words as u64 * 4) / 16 * 16
}

//! Every kernel against its CPU twin (src/reference.rs) on fresh random inputs,
//! for every weight format, with outputs poisoned with NaN before each run.

mod common;

use bytemuck::bytes_of;
use common::{assert_close, gpu, gpu_with, poison, random, read_f32, run};
use gqa_webgpu::forward::rope_table;
use gqa_webgpu::gpu::kernels::{
    DecodeAttention, Epilogue, Grid, KernelShapes, Kernels, QkvCache, X_UNIFORM_BYTES,
};
use gqa_webgpu::gpu::matrix::{GpuMatrix, MatrixPart};
use gqa_webgpu::gpu::uniforms::{self, Step};
use gqa_webgpu::gpu::{ContextOptions, GpuBuffer, GpuContext};
use gqa_webgpu::model::weights::rope_pair_order;
use gqa_webgpu::quant::{quantize, WeightFormat};
use gqa_webgpu::reference::{self, AttentionShape, Matrix};
use gqa_webgpu::synthetic::Rng;

/// Exact operations (lookups, copies) must match to the last bit.
const EXACT: f32 = 0.0;
/// Dot products of a few hundred f32 terms of magnitude about one.
const PRODUCT_ATOL: f32 = 2e-5;
const PRODUCT_RTOL: f32 = 1e-5;
/// Element-wise maths (exp, sqrt, sin, cos) in f32 against f64.
const ELEMENT_ATOL: f32 = 1e-6;
const ELEMENT_RTOL: f32 = 1e-5;
/// Attention: products, an exponential and a normalisation.
const ATTENTION_ATOL: f32 = 1e-5;
const ATTENTION_RTOL: f32 = 1e-4;

fn step(ctx: &GpuContext, pos0: u32, n_tokens: u32) -> GpuBuffer {
    ctx.uniform_with(
        "step",
        bytes_of(&Step {
            pos0,
            n_tokens,
            _pad: [0; 2],
        }),
    )
}

/// A random matrix in `format`: its GGUF bytes and the values they decode to.
/// Each 32 elements get their own spread and offset, so that the k-quants'
/// 6-bit scales and mins take many values, and some blocks are all of one sign.
fn random_matrix(
    rng: &mut Rng,
    format: WeightFormat,
    rows: usize,
    cols: usize,
) -> (Vec<u8>, Matrix) {
    let mut values = random(rng, rows * cols, 1.0);
    for block in values.chunks_mut(32) {
        let (spread, offset) = (rng.uniform(0.05, 1.0), rng.uniform(-0.5, 0.5));
        block.iter_mut().for_each(|v| *v = offset + spread * *v);
    }
    let bytes = quantize(format, &values);
    let matrix = Matrix::from_gguf_bytes(format, &bytes, rows, cols);
    (bytes, matrix)
}

/// Contexts that place matrices whole, and split into chunks of a few rows.
fn contexts() -> Vec<(&'static str, GpuContext)> {
    let small = ContextOptions {
        max_binding_bytes: Some(2048),
    };
    vec![("whole", gpu()), ("split", gpu_with(small))]
}

#[test]
fn embed_matches_reference_for_every_format() {
    let mut rng = Rng(11);
    for (how, ctx) in contexts() {
        for format in WeightFormat::ALL {
            let kernels = Kernels::new(&ctx, &[format], false);
            // two k-quant superblocks per row
            let (vocab, cols) = (70, if format.is_k_quant() { 512 } else { 96 });
            let (bytes, table) = random_matrix(&mut rng, format, vocab, cols);
            let m =
                GpuMatrix::upload(&ctx, &kernels, "table", format, vocab, cols, &bytes).unwrap();
            assert_eq!(m.chunks.len() > 1, how == "split", "{format:?} {how}");
            let ids: Vec<u32> = vec![0, 69, 5, 33, 34, 0];
            let id_buffer = ctx.storage_with("ids", bytemuck::cast_slice(&ids));
            let out = ctx.storage_with("out", &poison(ids.len() * cols));
            let step = step(&ctx, 0, ids.len() as u32);
            let kernel = kernels.embed.get(format);
            let io = kernel.bind(&ctx, "test", &[&step, &id_buffer, &out]);

            run(&ctx, |pass| {
                m.encode_embed(&kernels, pass, &io, ids.len() as u32)
            });

            let got = read_f32(&ctx, &out, ids.len() * cols);
            let what = format!("embed {format:?} ({how})");
            assert_close(&what, &got, &reference::embed(&table, &ids), EXACT, EXACT);
        }
    }
}

/// `n` random values of x for a product, in a buffer that is also bound as its
/// uniform window: poisoned past x, so a product that reads beyond its row fails.
fn product_x(ctx: &GpuContext, rng: &mut Rng, n: usize) -> (Vec<f32>, GpuBuffer) {
    let x = random(rng, n, 1.0);
    let bytes = X_UNIFORM_BYTES.max(4 * n as u64 + 256);
    let buffer = ctx.storage_uniform("x", bytes);
    ctx.queue
        .write_buffer(&buffer, 0, &poison(bytes as usize / 4));
    ctx.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&x));
    (x, buffer)
}

/// Runs a weight product for `tokens` rows of x (matvec for one, matmul for
/// more) with kernels in `shapes`, storing as `epilogue` says over a random y,
/// and checks it against the reference. With `normed` (one token), the product
/// is of x's RMSNorm ([`GpuMatrix::encode_normed_product`]).
fn check_product(
    ctx: &GpuContext,
    how: &str,
    format: WeightFormat,
    tokens: usize,
    shapes: KernelShapes,
    epilogue: Epilogue,
    normed: bool,
) {
    let mut rng = Rng(100 + tokens as u64);
    let kernels = Kernels::with_shapes(ctx, &[format], false, shapes);
    let (rows, cols) = (100, if format.is_k_quant() { 512 } else { 256 });
    let (bytes, w) = random_matrix(&mut rng, format, rows, cols);
    let m = GpuMatrix::upload(ctx, &kernels, "w", format, rows, cols, &bytes).unwrap();
    let (x, x_buffer) = product_x(ctx, &mut rng, tokens * cols);
    let norm_weight = random(&mut rng, cols, 1.0);
    let norm_buffer = ctx.storage_with("norm", bytemuck::cast_slice(&norm_weight));
    let eps = 1e-5;
    // what y held before: a gate for SwiGLU, a residual stream to add to, or
    // poison for a plain store
    let before = random(&mut rng, tokens * rows, 4.0);
    let y = match epilogue {
        Epilogue::Store => ctx.storage_with("y", &poison(tokens * rows)),
        _ => ctx.storage_with("y", bytemuck::cast_slice(&before)),
    };
    let params = uniforms::Product {
        y_stride: rows as u32,
        eps,
        ..Default::default()
    };
    let params = ctx.uniform_with("params", bytes_of(&params));
    let step = step(ctx, 0, tokens as u32);
    let norm = normed.then_some(&*norm_buffer);
    let io = kernels.bind_product(ctx, "test", [&step, &params, &x_buffer, &y], norm, None);

    run(ctx, |pass| {
        if normed {
            m.encode_normed_product(&kernels, pass, &io, epilogue)
        } else {
            m.encode_product(&kernels, pass, &io, tokens as u32, epilogue)
        }
    });

    let got = read_f32(ctx, &y, tokens * rows);
    let what = format!(
        "{}{} {epilogue:?} {format:?} ({how}, {tokens} tokens, {shapes:?})",
        if normed { "rmsnorm+" } else { "" },
        if tokens == 1 { "matvec" } else { "matmul" },
    );
    let x_used = if normed {
        reference::rmsnorm(&x, &norm_weight, eps)
    } else {
        x
    };
    let product = reference::matmul(&w, &x_used);
    let expected = match epilogue {
        Epilogue::Store => product,
        Epilogue::Add => reference::add(&before, &product),
        Epilogue::Swiglu => reference::swiglu(&before, &product),
        Epilogue::Qkv => unreachable!("check_qkv tests the QKV epilogue"),
    };
    assert_close(&what, &got, &expected, PRODUCT_ATOL, PRODUCT_RTOL);
}

#[test]
fn decode_attention_splits_keep_a_cpu_adapters_threads_equally_busy() {
    let cpu = |threads| KernelShapes {
        cpu_threads: threads,
        ..KernelShapes::for_adapter(wgpu::DeviceType::Cpu)
    };
    // (threads, workgroups a split, splits): 3 KV heads on 2 threads run in 2
    // rounds unsplit, in 3 of half the keys split in 2 (1.5); 9 heads in 5
    // rounds, or 9 of half the keys; 4 KV heads on 2 threads, or 16 on 16,
    // already fill them; 3 on 16 threads take 5 splits (15 workgroups, one round).
    for (threads, workgroups, splits) in [
        (2, 3, 2),
        (2, 9, 2),
        (2, 4, 1),
        (16, 16, 1),
        (16, 3, 5),
        (1, 3, 1),
    ] {
        assert_eq!(
            cpu(threads).decode_max_splits(workgroups),
            splits,
            "{workgroups} workgroups on {threads} threads"
        );
    }
    let gpu = KernelShapes::for_adapter(wgpu::DeviceType::DiscreteGpu);
    assert_eq!(
        gpu.decode_max_splits(3),
        u32::MAX,
        "a GPU's splits are not capped"
    );
}

/// The shapes of a GPU and of a CPU adapter, whichever adapter runs the test.
fn every_adapters_shapes() -> [KernelShapes; 2] {
    [
        KernelShapes::for_adapter(wgpu::DeviceType::DiscreteGpu),
        KernelShapes::for_adapter(wgpu::DeviceType::Cpu),
    ]
}

#[test]
fn matvec_in_every_epilogue_normed_or_not_matches_reference_for_every_format() {
    for (how, ctx) in contexts() {
        for format in WeightFormat::ALL {
            for shapes in every_adapters_shapes() {
                for epilogue in [Epilogue::Store, Epilogue::Add, Epilogue::Swiglu] {
                    for normed in [false, true] {
                        check_product(&ctx, how, format, 1, shapes, epilogue, normed);
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_in_every_epilogue_matches_reference_for_every_format() {
    for (how, ctx) in contexts() {
        for format in WeightFormat::ALL {
            // a GPU's 8 tokens an invocation: 11 is one full tile and a partial
            // one; a CPU adapter's 32: 40 is one full tile and a partial one
            for shapes in every_adapters_shapes() {
                for tokens in [11, 40] {
                    for epilogue in [Epilogue::Store, Epilogue::Add, Epilogue::Swiglu] {
                        check_product(&ctx, how, format, tokens, shapes, epilogue, false);
                    }
                }
            }
        }
    }
}

#[test]
fn rmsnorm_matches_reference_for_every_row_and_for_the_last_alone() {
    let ctx = gpu();
    let kernels = Kernels::new(&ctx, &[], false);
    let mut rng = Rng(3);
    let (tokens, n, eps) = (3, 200, 1e-5);
    let x = random(&mut rng, tokens * n, 2.0);
    let w = random(&mut rng, n, 1.0);
    let expected = reference::rmsnorm(&x, &w, eps);
    for last_only in [false, true] {
        let x_buffer = ctx.storage_with("x", bytemuck::cast_slice(&x));
        let w_buffer = ctx.storage_with("w", bytemuck::cast_slice(&w));
        let out = ctx.storage_with("out", &poison(tokens * n));
        let params = uniforms::Norm {
            n: n as u32,
            eps,
            last_only: last_only as u32,
            _pad: 0,
        };
        let params = ctx.uniform_with("params", bytes_of(&params));
        let step = step(&ctx, 0, tokens as u32);
        let io = kernels
            .rmsnorm
            .bind(&ctx, "test", &[&step, &params, &x_buffer, &w_buffer, &out]);
        let workgroups = if last_only { 1 } else { tokens as u32 };

        run(&ctx, |pass| {
            kernels
                .rmsnorm
                .dispatch(pass, &[&io], Grid::new(workgroups, 1))
        });

        // the last token alone lands in row 0, and nothing else is written
        let got = read_f32(&ctx, &out, tokens * n);
        if last_only {
            let last = &expected[(tokens - 1) * n..];
            assert_close(
                "rmsnorm, last row",
                &got[..n],
                last,
                ELEMENT_ATOL,
                ELEMENT_RTOL,
            );
            assert!(
                got[n..].iter().all(|v| v.is_nan()),
                "rows past 0 were written"
            );
        } else {
            assert_close("rmsnorm", &got, &expected, ELEMENT_ATOL, ELEMENT_RTOL);
        }
    }
}

/// Both rotations, plain and with what Llama 3 adds: linear position scaling and a
/// frequency divisor per pair (`rope_freqs.weight`), which enter through the table.
/// The frequencies llama.cpp's rope uses: `scale * base^(-2i/d) / factor[i]`, checked on
/// values worked by hand rather than by the same formula.
#[test]
fn rope_frequencies_follow_base_scale_and_factors() {
    // head 4, base 100: theta_0 = 1, theta_1 = 100^(-2/4) = 0.1
    let plain = reference::rope_freqs(4, 100.0, 1.0, &[]);
    // linear factor 4 (scale 1/4), factors 2 and 8: 1 / 4 / 2 and 0.1 / 4 / 8
    let llama3 = reference::rope_freqs(4, 100.0, 0.25, &[2.0, 8.0]);

    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(plain[0], 1.0) && close(plain[1], 0.1), "{plain:?}");
    assert!(
        close(llama3[0], 0.125) && close(llama3[1], 0.003125),
        "{llama3:?}"
    );
    // the table holds (cos, sin) of pos * freq: position 3, pair 1 turns by 0.3 radians
    let table = rope_table(4, &plain);
    let [cos, sin] = table[3 * 2 + 1];
    assert!((cos - 0.3f32.cos()).abs() < 1e-7 && (sin - 0.3f32.sin()).abs() < 1e-7);
}

/// GGUF rows of `format` reordered: row `i` of the result is row `order[i]`.
fn reorder_rows(bytes: &[u8], format: WeightFormat, cols: usize, order: &[usize]) -> Vec<u8> {
    let row = format.row_bytes(cols);
    order
        .iter()
        .flat_map(|&r| &bytes[r * row..(r + 1) * row])
        .copied()
        .collect()
}

/// The stacked Q, K and V product (`Epilogue::Qkv`) for `tokens` tokens at
/// `pos0`: q rotated into y, k rotated and v copied into the caches at the
/// step's positions and nowhere else, against the reference's products, biases
/// and RoPE. The parts are in `formats` (one matrix, or three), their Q and K
/// rows ordered for `neox` as the loader orders them.
#[allow(clippy::too_many_arguments)]
fn check_qkv(
    ctx: &GpuContext,
    how: &str,
    shapes: KernelShapes,
    formats: [WeightFormat; 3],
    neox: bool,
    bias: bool,
    tokens: usize,
    normed: bool,
) {
    let mut rng = Rng(300 + tokens as u64);
    let (n_head, n_kv, hd, cols, max_seq, pos0) = (4, 2, 16, 64, 12, 5);
    let (q_rows, kv_rows) = (n_head * hd, n_kv * hd);
    let mut unique = formats.to_vec();
    unique.dedup();
    let kernels = Kernels::with_shapes(ctx, &unique, neox, shapes);
    let factors: Vec<f32> = (0..hd / 2).map(|i| 1.0 + i as f32 * 0.5).collect();
    let freqs = reference::rope_freqs(hd, 10_000.0, 0.5, &factors);
    let table = ctx.storage_with("table", bytemuck::cast_slice(&rope_table(max_seq, &freqs)));

    let names = ["q", "k", "v"];
    let rows = [q_rows, kv_rows, kv_rows];
    let mats: Vec<(Vec<u8>, Matrix)> = (0..3)
        .map(|i| random_matrix(&mut rng, formats[i], rows[i], cols))
        .collect();
    let biases: Vec<Vec<f32>> = rows.iter().map(|&n| random(&mut rng, n, 0.5)).collect();
    // the loader's order: NEOX pairs on adjacent rows, for q and k
    let orders: Vec<Vec<usize>> = (0..3)
        .map(|i| match i {
            2 => (0..rows[i]).collect(),
            _ => rope_pair_order(rows[i], hd, neox),
        })
        .collect();
    let stored: Vec<Vec<u8>> = (0..3)
        .map(|i| reorder_rows(&mats[i].0, formats[i], cols, &orders[i]))
        .collect();
    let stored_bias: Vec<Vec<f32>> = (0..3)
        .map(|i| orders[i].iter().map(|&r| biases[i][r]).collect())
        .collect();
    let parts: Vec<MatrixPart> = (0..3)
        .map(|i| MatrixPart {
            name: names[i],
            format: formats[i],
            rows: rows[i],
            bytes: &stored[i],
            bias: bias.then_some(&stored_bias[i][..]),
        })
        .collect();
    let m = GpuMatrix::upload_stacked(ctx, &kernels, "qkv", cols, &parts).unwrap();

    let (x, x_buffer) = product_x(ctx, &mut rng, tokens * cols);
    let norm_weight = random(&mut rng, cols, 1.0);
    let norm_buffer = ctx.storage_with("norm", bytemuck::cast_slice(&norm_weight));
    let q_out = ctx.storage_with("q", &poison(tokens * q_rows));
    let k_old = random(&mut rng, n_kv * max_seq * hd, 1.0);
    let v_old = random(&mut rng, n_kv * max_seq * hd, 1.0);
    let k_cache = ctx.storage_with("k cache", bytemuck::cast_slice(&k_old));
    let v_cache = ctx.storage_with("v cache", bytemuck::cast_slice(&v_old));
    let eps = 1e-5;
    let params = uniforms::Product {
        y_stride: q_rows as u32,
        eps,
        head_dim: hd as u32,
        q_rows: q_rows as u32,
        kv_rows: kv_rows as u32,
        max_seq: max_seq as u32,
        _pad: [0; 2],
    };
    let params = ctx.uniform_with("params", bytes_of(&params));
    let step = step(ctx, pos0 as u32, tokens as u32);
    let cache = QkvCache {
        rope_table: &table,
        k: &k_cache,
        v: &v_cache,
    };
    let norm = normed.then_some(&*norm_buffer);
    let io = kernels.bind_product(
        ctx,
        "test",
        [&step, &params, &x_buffer, &q_out],
        norm,
        Some(cache),
    );

    run(ctx, |pass| {
        if normed {
            m.encode_normed_product(&kernels, pass, &io, Epilogue::Qkv)
        } else {
            m.encode_product(&kernels, pass, &io, tokens as u32, Epilogue::Qkv)
        }
    });

    let x_used = if normed {
        reference::rmsnorm(&x, &norm_weight, eps)
    } else {
        x
    };
    let [mut q, mut k, v] = [0, 1, 2].map(|i| {
        let product = reference::matmul(&mats[i].1, &x_used);
        match bias {
            true => reference::bias_add(&product, &biases[i]),
            false => product,
        }
    });
    reference::rope(&mut q, hd, pos0, &freqs, neox, n_head);
    reference::rope(&mut k, hd, pos0, &freqs, neox, n_kv);
    let what = format!(
        "QKV {formats:?} neox {neox} bias {bias} {}{} ({how}, {tokens} tokens, {shapes:?})",
        if normed { "rmsnorm+" } else { "" },
        if tokens == 1 { "matvec" } else { "matmul" },
    );
    let got = read_f32(ctx, &q_out, q.len());
    assert_close(&format!("{what}: q"), &got, &q, PRODUCT_ATOL, PRODUCT_RTOL);
    for (name, new, old, buffer) in [("K", &k, &k_old, &k_cache), ("V", &v, &v_old, &v_cache)] {
        let mut expected = old.clone();
        for t in 0..tokens {
            for h in 0..n_kv {
                let to = (h * max_seq + pos0 + t) * hd;
                let from = (t * n_kv + h) * hd;
                expected[to..to + hd].copy_from_slice(&new[from..from + hd]);
            }
        }
        let got = read_f32(ctx, buffer, expected.len());
        assert_close(
            &format!("{what}: {name} cache"),
            &got,
            &expected,
            PRODUCT_ATOL,
            PRODUCT_RTOL,
        );
    }
}

/// In the adapter's own kernel shapes only: lavapipe 22.3 aborts ("stack
/// smashing detected" in its queue thread) running the QKV variants in a GPU's
/// shapes, which every other epilogue is tested in above; the code after the
/// sums is the same `finish` in both shapes.
#[test]
fn qkv_product_rotates_q_and_k_and_appends_k_and_v_in_both_conventions() {
    use WeightFormat::{Q4_0, Q4_1, Q5_0, Q8_0};
    for (how, ctx) in contexts() {
        let shapes = KernelShapes::for_adapter(ctx.info.device_type);
        // one format, so one chunk holds all three parts; and three formats
        for formats in [[Q4_0; 3], [Q4_1, Q8_0, Q5_0]] {
            // qwen2-style: NEOX pairs and biases; llama-style: neither
            for neox in [false, true] {
                // (tokens, normed): a decode token with its norm taken in the
                // product, and a prompt block over xn
                for (tokens, normed) in [(1, true), (3, false)] {
                    let bias = neox;
                    check_qkv(&ctx, how, shapes, formats, neox, bias, tokens, normed);
                }
            }
        }
    }
}

fn check_attention(
    ctx: &GpuContext,
    kernels: &Kernels,
    shape: AttentionShape,
    pos0: usize,
    tokens: usize,
) {
    let mut rng = Rng((shape.n_head * 1000 + shape.n_kv_head * 10 + tokens) as u64);
    let hd = shape.head_dim;
    let q = random(&mut rng, tokens * shape.n_head * hd, 1.0);
    let k_cache = random(&mut rng, shape.n_kv_head * shape.max_seq * hd, 1.0);
    let v_cache = random(&mut rng, shape.n_kv_head * shape.max_seq * hd, 1.0);
    let group = (shape.n_head / shape.n_kv_head) as u32;
    let (heads_per_workgroup, splits) = Kernels::attention_split(group, hd as u32).unwrap();
    let params = uniforms::Attention {
        n_head: shape.n_head as u32,
        n_kv_head: shape.n_kv_head as u32,
        head_dim: hd as u32,
        max_seq: shape.max_seq as u32,
        heads_per_workgroup,
        splits,
        scale: 1.0 / (hd as f32).sqrt(),
        _pad: 0,
    };
    let params = ctx.uniform_with("params", bytes_of(&params));
    let step = step(ctx, pos0 as u32, tokens as u32);
    let q_buffer = ctx.storage_with("q", bytemuck::cast_slice(&q));
    let k_buffer = ctx.storage_with("k", bytemuck::cast_slice(&k_cache));
    let v_buffer = ctx.storage_with("v", bytemuck::cast_slice(&v_cache));
    let out = ctx.storage_with("out", &poison(q.len()));
    let io = kernels.attention.bind(
        ctx,
        "test",
        &[&step, &params, &q_buffer, &k_buffer, &v_buffer, &out],
    );

    let grid = Grid::new(shape.n_kv_head as u32 * splits, tokens as u32);
    run(ctx, |pass| kernels.attention.dispatch(pass, &[&io], grid));

    let got = read_f32(ctx, &out, q.len());
    let expected = reference::attention(&q, &k_cache, &v_cache, shape, pos0);
    let what = format!(
        "attention {}/{} heads, head size {hd}, {tokens} tokens from position {pos0} \
         ({splits} split)",
        shape.n_head, shape.n_kv_head
    );
    assert_close(&what, &got, &expected, ATTENTION_ATOL, ATTENTION_RTOL);
}

#[test]
fn attention_matches_reference_for_decode_and_prefill() {
    let ctx = gpu();
    let kernels = Kernels::new(&ctx, &[], false);
    for (n_head, n_kv_head, head_dim) in [
        (4, 4, 64),
        (8, 2, 32),
        (8, 1, 16),
        (9, 3, 64),
        (32, 1, 64),
        (6, 3, 128),
    ] {
        let shape = AttentionShape {
            n_head,
            n_kv_head,
            head_dim,
            max_seq: 160,
        };
        // decode: one token seeing 1, 64 (a full tile) and 150 keys
        for pos0 in [0, 63, 149] {
            check_attention(&ctx, &kernels, shape, pos0, 1);
        }
        // prefill: a causal block at the start and after earlier positions
        check_attention(&ctx, &kernels, shape, 0, 9);
        check_attention(&ctx, &kernels, shape, 70, 5);
    }
}

/// Attention by attention_decode.wgsl, against the reference: for one token at
/// `pos0`, split along the keys every `split_keys` keys up to `max_splits`
/// splits (merged by attention_combine.wgsl); for more tokens, the causal block
/// from `pos0` that its PREFILL pipeline takes unsplit.
fn check_decode_attention(
    ctx: &GpuContext,
    kernels: &Kernels,
    shape: AttentionShape,
    (split_keys, max_splits): (u32, u32),
    pos0: usize,
    tokens: usize,
) {
    let mut rng = Rng((shape.n_head * 1000 + shape.n_kv_head * 10 + pos0 + tokens) as u64);
    let hd = shape.head_dim;
    let (n_head, n_kv_head) = (shape.n_head as u32, shape.n_kv_head as u32);
    let group = n_head / n_kv_head;
    let decode = kernels
        .decode_attention_split(ctx, group, hd as u32, n_head, (split_keys, max_splits))
        .unwrap_or_else(|| panic!("decode attention refuses {shape:?}"));
    let q = random(&mut rng, tokens * shape.n_head * hd, 1.0);
    let k_cache = random(&mut rng, shape.n_kv_head * shape.max_seq * hd, 1.0);
    let v_cache = random(&mut rng, shape.n_kv_head * shape.max_seq * hd, 1.0);
    let max_seq = shape.max_seq as u32;
    let params = uniforms::DecodeAttention {
        n_head,
        n_kv_head,
        max_seq,
        max_splits: decode.splits(max_seq),
        scale: 1.0 / (hd as f32).sqrt(),
        _pad: [0; 3],
    };
    let params = ctx.uniform_with("params", bytes_of(&params));
    let step = step(ctx, pos0 as u32, tokens as u32);
    let q_bytes = DecodeAttention::Q_BINDING_BYTES.max(4 * q.len() as u64);
    let q_buffer = ctx.storage_uniform("q", q_bytes);
    ctx.queue
        .write_buffer(&q_buffer, 0, bytemuck::cast_slice(&q));
    let k_buffer = ctx.storage_with("k", bytemuck::cast_slice(&k_cache));
    let v_buffer = ctx.storage_with("v", bytemuck::cast_slice(&v_cache));
    let out = ctx.storage_with("out", &poison(q.len()));
    let partial_bytes = decode.partial_bytes(n_head, hd as u32, max_seq) as usize;
    let partial = ctx.storage_with("partial", &poison(partial_bytes / 4));
    // the uniform binding holds one token's queries; the storage one all of them
    let q_uniform = wgpu::BufferBinding {
        buffer: &q_buffer,
        offset: 0,
        size: wgpu::BufferSize::new(DecodeAttention::Q_BINDING_BYTES),
    };
    let split = decode.split.bind_resources(
        ctx,
        "test",
        vec![
            step.as_entire_binding(),
            params.as_entire_binding(),
            wgpu::BindingResource::Buffer(q_uniform),
            k_buffer.as_entire_binding(),
            v_buffer.as_entire_binding(),
            out.as_entire_binding(),
            partial.as_entire_binding(),
            q_buffer.as_entire_binding(),
        ],
    );
    let combine = decode
        .combine
        .bind(ctx, "test", &[&step, &params, &partial, &out]);

    run(ctx, |pass| {
        if tokens == 1 {
            let heads = (group, n_kv_head, n_head);
            decode.encode(pass, &split, &combine, heads, pos0 as u32 + 1)
        } else {
            decode.encode_prefill(pass, &split, (group, n_kv_head), tokens as u32)
        }
    });

    let got = read_f32(ctx, &out, q.len());
    let expected = reference::attention(&q, &k_cache, &v_cache, shape, pos0);
    let what = format!(
        "decode attention {n_head}/{n_kv_head} heads, head size {hd}, {tokens} tokens \
         from position {pos0} ({} heads a workgroup, {} splits, a split per {split_keys} \
         keys up to {max_splits})",
        decode.heads,
        decode.splits(pos0 as u32 + 1)
    );
    assert_close(&what, &got, &expected, ATTENTION_ATOL, ATTENTION_RTOL);
}

#[test]
fn decode_attention_matches_reference_across_splits_and_for_prefill() {
    let ctx = gpu();
    let kernels = Kernels::new(&ctx, &[], false);
    for (n_head, n_kv_head, head_dim) in [
        (9, 3, 64),  // SmolLM2-135M
        (4, 4, 64),  // MHA: a head per workgroup
        (8, 1, 16),  // MQA: 8 heads a workgroup, 128 keys a split
        (14, 2, 32), // Qwen2.5-0.5B's 7 heads a group
        (12, 1, 48), // 6 heads a workgroup; a head of 12 vec4s leaves lanes idle
        (6, 3, 128),
        (2, 1, 256), // the largest head: one key lane
    ] {
        let shape = AttentionShape {
            n_head,
            n_kv_head,
            head_dim,
            max_seq: 600,
        };
        // Splits of 100 keys (a tile and a part), of 256 (a GPU's: 1 tile, or 2 for
        // 8 heads a workgroup), of every key (tiles in turn), and 2 or 3 splits of
        // however many keys there are (a CPU adapter's); 1 key, a tile's worth,
        // one more, several tiles or splits and a partial one.
        let unbounded = u32::MAX;
        for splits in [
            (100, unbounded),
            (256, unbounded),
            (1 << 16, 1),
            (64, 2),
            (1, 3),
        ] {
            for pos0 in [0, 127, 255, 256, 599] {
                check_decode_attention(&ctx, &kernels, shape, splits, pos0, 1);
            }
        }
        // prefill: a block at the start, and one crossing tiles after earlier keys
        for (pos0, tokens) in [(0, 9), (230, 40)] {
            check_decode_attention(&ctx, &kernels, shape, (1 << 16, 1), pos0, tokens);
        }
    }
}

#[test]
fn decode_attention_refuses_shapes_it_cannot_hold() {
    let ctx = gpu();
    let kernels = Kernels::new(&ctx, &[], false);
    // a head size that is not a multiple of 4, one over 256, queries over 4096
    for (group, head_dim, n_head) in [(3, 6, 9), (1, 512, 2), (4, 128, 40)] {
        assert!(
            kernels
                .decode_attention(&ctx, group, head_dim, n_head)
                .is_none(),
            "group {group}, head size {head_dim}, {n_head} heads"
        );
    }
    assert!(kernels.decode_attention(&ctx, 3, 64, 9).is_some());
}

#[test]
fn argmax_picks_the_first_of_equal_maxima() {
    let ctx = gpu();
    let kernels = Kernels::new(&ctx, &[], false);
    let mut rng = Rng(13);
    for n in [1, 255, 1000, 49152] {
        let mut logits = random(&mut rng, n, 10.0);
        let top = n / 3;
        logits[top] = 11.0;
        if n > 2 {
            logits[n - 1] = 11.0; // a later tie must lose
        }
        let params = uniforms::Count {
            n: n as u32,
            _pad: [0; 3],
        };
        let params = ctx.uniform_with("params", bytes_of(&params));
        let input = ctx.storage_with("logits", bytemuck::cast_slice(&logits));
        let chosen = ctx.storage_with("chosen", &[0xff; 4]);
        let io = kernels
            .argmax
            .bind(&ctx, "test", &[&params, &input, &chosen]);

        run(&ctx, |pass| {
            kernels.argmax.dispatch(pass, &[&io], Grid::new(1, 1))
        });

        let got = pollster::block_on(ctx.read_buffer(&chosen, 4)).unwrap();
        let got = u32::from_le_bytes([got[0], got[1], got[2], got[3]]) as usize;
        assert_eq!(got, reference::argmax(&logits), "argmax over {n}");
        assert_eq!(got, top, "argmax over {n}");
    }
}

#[test]
fn topk_returns_exactly_the_largest_logits() {
    let ctx = gpu();
    let kernels = Kernels::new(&ctx, &[], false);
    let mut rng = Rng(17);
    for (n, k) in [(1, 1), (300, 7), (49152, 256), (49152, 1024), (5000, 5000)] {
        let mut logits = random(&mut rng, n, 20.0);
        if n > 100 {
            // negative and positive zeros, a run of equal values across the cut
            logits[3] = -0.0;
            logits[4] = 0.0;
            logits[10..20].fill(25.0);
        }
        let params = uniforms::TopK {
            n: n as u32,
            k: k as u32,
            _pad: [0; 2],
        };
        let params = ctx.uniform_with("params", bytes_of(&params));
        let input = ctx.storage_with("logits", bytemuck::cast_slice(&logits));
        let out = ctx.storage_with("candidates", &vec![0xff; k * 8]);
        let io = kernels.topk.bind(&ctx, "test", &[&params, &input, &out]);

        run(&ctx, |pass| {
            kernels.topk.dispatch(pass, &[&io], Grid::new(1, 1))
        });

        let bytes = pollster::block_on(ctx.read_buffer(&out, (k * 8) as u64)).unwrap();
        let pairs: Vec<[u32; 2]> = bytemuck::pod_collect_to_vec(&bytes);
        let mut got: Vec<f32> = pairs.iter().map(|p| f32::from_bits(p[1])).collect();
        for p in &pairs {
            assert_eq!(
                logits[p[0] as usize].to_bits(),
                p[1],
                "id {} carries its own logit",
                p[0]
            );
        }
        let mut ids: Vec<u32> = pairs.iter().map(|p| p[0]).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), k, "{k} distinct ids out of {n}");
        let mut expected = logits.clone();
        expected.sort_by(|a, b| b.total_cmp(a));
        expected.truncate(k);
        got.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(got, expected, "the {k} largest of {n}");
    }
}

//! The KV cache on the GPU: for each layer, a key and a value buffer of
//! `[n_kv_head, max_seq, head_dim]` f32, allocated once. The QKV product writes
//! the step's keys and values in place (shaders/product.wgsl); truncating and
//! clearing only move the length, since attention never reads past the
//! positions of the current step.

use crate::gpu::{GpuBuffer, GpuContext};
use crate::model::{ModelConfig, ModelError};

pub struct KvCache {
    pub k: Vec<GpuBuffer>, // per layer: [n_kv_head, max_seq, head_dim] f32
    pub v: Vec<GpuBuffer>, // per layer: [n_kv_head, max_seq, head_dim] f32
    capacity: usize,
    len: usize,
}

impl KvCache {
    pub fn new(ctx: &GpuContext, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let bytes = cfg.kv_dim() as u64 * cfg.max_seq as u64 * 4;
        let limit = ctx.max_binding_bytes();
        if bytes > limit {
            return Err(ModelError::CacheTooLarge {
                bytes,
                max_seq: cfg.max_seq,
                limit,
            });
        }
        let layer = |kind: &str, l: usize| ctx.storage(&format!("{kind} cache, layer {l}"), bytes);
        Ok(Self {
            k: (0..cfg.n_layer).map(|l| layer("K", l)).collect(),
            v: (0..cfg.n_layer).map(|l| layer("V", l)).collect(),
            capacity: cfg.max_seq,
            len: 0,
        })
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// Forgets every position from `len` on (a retry, or a new turn that
    /// diverges from the cached one). Longer lengths are ignored.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Marks `n` more positions filled, after a step wrote them.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity);
    }

    /// Bytes of GPU memory the cache holds.
    pub fn gpu_bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|b| b.size()).sum()
    }
}

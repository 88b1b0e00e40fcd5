//! Picking the next token from the few candidates the GPU reads back.
//!
//! The GPU never hands over the whole vocabulary: it returns the top
//! [`SamplingParams::candidates`] `(id, logit)` pairs, in no particular order. Sampling treats
//! every token outside that set as having probability zero, so probabilities (and with them
//! top-p and min-p) are relative to the candidates' total mass; with a few hundred candidates
//! the tail left out is negligible.
//!
//! The chain follows llama.cpp's default order: repetition penalty, top-k, top-p, min-p,
//! temperature, then a draw. As in llama.cpp, top-p and min-p look at the probabilities before
//! temperature; temperature only reshapes what they kept.

use std::cmp::Ordering;
use std::collections::HashSet;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The most candidates [`SamplingParams::candidates`] ever asks the GPU for.
pub const CANDIDATES: usize = 256;

/// How the next token is chosen.
///
/// The defaults are greedy and neutral: `temperature` 0.0 (greedy), `top_k` 40, `top_p` 0.95,
/// `min_p` 0.05, `repeat_penalty` 1.0 (off), `repeat_last_n` 64, `seed` 0. The truncation
/// settings only matter once `temperature` is raised above zero.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the draw; 0 or below picks the most likely token (greedy).
    pub temperature: f32,
    /// Keeps only the `top_k` most likely candidates; 0 turns it off.
    pub top_k: usize,
    /// Keeps the smallest set of most likely candidates whose probabilities reach `top_p`;
    /// 1.0 turns it off.
    pub top_p: f32,
    /// Drops candidates whose probability is below `min_p` times the top one's; 0.0 turns it off.
    pub min_p: f32,
    /// Penalty on tokens seen recently, llama.cpp's rule: a positive logit is divided by it,
    /// a negative one multiplied. 1.0 turns it off; below 1.0 favours repeats.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalty looks at; 0 turns it off.
    pub repeat_last_n: usize,
    /// Seed of the random draws: the same seed, candidates and history give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

/// What sampling cannot do: a parameter out of range, or nothing to choose from.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// A parameter whose value cannot be used.
    #[error("sampling parameter {name} = {value} is invalid: expected {expected}")]
    InvalidParameter {
        /// The field of [`SamplingParams`], e.g. "top_p".
        name: &'static str,
        /// The value given, as text.
        value: String,
        /// What the value must be, e.g. "a number in (0, 1]".
        expected: &'static str,
    },
    /// [`Sampler::sample`] was given no candidates.
    #[error("no candidate tokens to sample from (the GPU returned none)")]
    NoCandidates,
}

impl SamplingParams {
    /// Checks every parameter's range; the error names the first one out of range.
    ///
    /// A negative temperature is accepted and means greedy.
    pub fn validate(&self) -> Result<(), SamplerError> {
        let invalid = |name: &'static str, value: f32, expected: &'static str| {
            Err(SamplerError::InvalidParameter {
                name,
                value: value.to_string(),
                expected,
            })
        };
        if !self.temperature.is_finite() {
            return invalid(
                "temperature",
                self.temperature,
                "a finite number (<= 0: greedy)",
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid("top_p", self.top_p, "a number in (0, 1] (1: off)");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return invalid("min_p", self.min_p, "a number in [0, 1] (0: off)");
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return invalid(
                "repeat_penalty",
                self.repeat_penalty,
                "a finite number > 0 (1: off)",
            );
        }
        Ok(())
    }

    /// Greedy without penalties: the engine can then read back just the argmax id.
    pub fn is_plain_greedy(&self) -> bool {
        !self.is_random() && !self.penalises()
    }

    /// How many candidates the GPU must return for these settings, in `1..=CANDIDATES`.
    ///
    /// Plain greedy needs one. Greedy with a penalty above 1 needs `repeat_last_n` more, so
    /// that the best unpenalised token is among them when the penalised ones drop. Sampling
    /// needs `top_k` (plus the same margin), or [`CANDIDATES`] when top-k is off. A penalty
    /// below 1 can lift any token, so it always asks for [`CANDIDATES`]. A `top_k` beyond
    /// [`CANDIDATES`] acts as [`CANDIDATES`].
    pub fn candidates(&self) -> usize {
        let kept = match (self.is_random(), self.top_k) {
            (false, _) => 1,
            (true, 0) => CANDIDATES,
            (true, k) => k,
        };
        let wanted = if !self.penalises() {
            kept
        } else if self.repeat_penalty > 1.0 {
            kept.saturating_add(self.repeat_last_n)
        } else {
            CANDIDATES
        };
        wanted.clamp(1, CANDIDATES)
    }

    fn is_random(&self) -> bool {
        self.temperature > 0.0
    }

    fn penalises(&self) -> bool {
        self.repeat_penalty != 1.0 && self.repeat_last_n > 0
    }
}

/// Chooses tokens with fixed [`SamplingParams`] and a seeded random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler whose random stream starts from `params.seed`.
    ///
    /// Call [`SamplingParams::validate`] first: out-of-range values never panic here, but the
    /// tokens they give are unspecified.
    pub fn new(params: SamplingParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Sampler { params, rng }
    }

    /// The parameters this sampler was made with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `candidates`, penalising ids in the last `repeat_last_n` of
    /// `history`; [`SamplerError::NoCandidates`] when `candidates` is empty.
    ///
    /// Order (llama.cpp's default chain): repetition penalty, top-k, top-p, min-p, temperature,
    /// then a draw. Greedy (temperature <= 0): the highest logit after the penalty, lowest id
    /// among equals. The input order of `candidates` does not matter; a repeated id counts
    /// once, with its highest logit. A NaN logit counts as -inf, and a -inf candidate is never
    /// chosen unless all are (then the draw is uniform among them).
    pub fn sample(
        &mut self,
        candidates: &[(u32, f32)],
        history: &[u32],
    ) -> Result<u32, SamplerError> {
        let mut ranked = self.penalised(candidates, history);
        sort_and_dedup(&mut ranked);
        let best = ranked.first().ok_or(SamplerError::NoCandidates)?.0;
        if !self.params.is_random() {
            return Ok(best);
        }

        // truncation, each stage keeping at least the top candidate
        if self.params.top_k > 0 {
            ranked.truncate(self.params.top_k);
        }
        let probs = softmax(&ranked, 1.0);
        let mut kept = ranked.len();
        if self.params.top_p < 1.0 {
            kept = top_p_len(&probs[..kept], f64::from(self.params.top_p));
        }
        if self.params.min_p > 0.0 {
            // probs are sorted descending, so the survivors are a prefix
            let floor = f64::from(self.params.min_p) * probs[0];
            kept = probs[..kept]
                .iter()
                .take_while(|&&p| p >= floor)
                .count()
                .max(1);
        }
        ranked.truncate(kept);

        let probs = softmax(&ranked, f64::from(self.params.temperature));
        Ok(ranked[self.draw(&probs)].0)
    }

    // Candidates as (id, logit in f64) with the repetition penalty applied.
    fn penalised(&self, candidates: &[(u32, f32)], history: &[u32]) -> Vec<(u32, f64)> {
        let p = &self.params;
        let recent: HashSet<u32> = if p.penalises() {
            let start = history.len().saturating_sub(p.repeat_last_n);
            history[start..].iter().copied().collect()
        } else {
            HashSet::new()
        };
        let penalty = f64::from(p.repeat_penalty);
        candidates
            .iter()
            .map(|&(id, logit)| {
                let logit = f64::from(logit);
                let logit = if !recent.contains(&id) {
                    logit
                } else if logit > 0.0 {
                    logit / penalty
                } else {
                    logit * penalty
                };
                // NaN has no place in the order (sorting needs a total one): it ranks last
                (
                    id,
                    if logit.is_nan() {
                        f64::NEG_INFINITY
                    } else {
                        logit
                    },
                )
            })
            .collect()
    }

    // Index into `probs` of a draw from that distribution.
    fn draw(&mut self, probs: &[f64]) -> usize {
        // 53 random bits: a uniform f64 in [0, 1)
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut cumulative = 0.0;
        for (i, &p) in probs.iter().enumerate() {
            cumulative += p;
            if u < cumulative {
                return i;
            }
        }
        // rounding left the sum just under u: the last token with any mass
        probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
    }
}

// Logit descending, then id ascending; a repeated id keeps its first (highest) entry.
fn sort_and_dedup(ranked: &mut Vec<(u32, f64)>) {
    ranked.sort_by(|a, b| {
        let by_logit = b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal);
        by_logit.then(a.0.cmp(&b.0))
    });
    let mut seen = HashSet::with_capacity(ranked.len());
    ranked.retain(|&(id, _)| seen.insert(id));
}

// Probabilities of `ranked` (sorted, non-empty) at `temperature` > 0, in f64.
fn softmax(ranked: &[(u32, f64)], temperature: f64) -> Vec<f64> {
    let max = ranked.first().map_or(0.0, |c| c.1);
    let weights: Vec<f64> = if max == f64::NEG_INFINITY {
        // all -inf: nothing to prefer
        vec![1.0; ranked.len()]
    } else if max == f64::INFINITY {
        // an infinite logit (given, or from a zero penalty) takes all the mass
        ranked
            .iter()
            .map(|c| if c.1 == max { 1.0 } else { 0.0 })
            .collect()
    } else {
        ranked
            .iter()
            .map(|c| ((c.1 - max) / temperature).exp())
            .collect()
    };
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

// Length of the smallest prefix of `probs` (sorted descending) whose mass reaches `top_p`.
fn top_p_len(probs: &[f64], top_p: f64) -> usize {
    let mut cumulative = 0.0;
    for (i, &p) in probs.iter().enumerate() {
        cumulative += p;
        if cumulative >= top_p {
            return i + 1;
        }
    }
    probs.len()
}

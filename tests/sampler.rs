//! Sampling from the bounded candidate set the GPU reads back: greedy choice, the repetition
//! penalty, top-k / top-p / min-p truncation, seeded draws and their frequencies, validation.

use gqa_webgpu::sampler::{Sampler, SamplerError, SamplingParams, CANDIDATES};

// draws for the frequency tests
const DRAWS: usize = 20_000;
// allowed |observed - expected| frequency; 4 standard deviations of a p = 0.5 draw is 0.014
const FREQ_ATOL: f64 = 0.015;

fn greedy() -> SamplingParams {
    SamplingParams::default()
}

// Temperature 1 with every truncation off: draws follow the softmax of the candidates.
fn untruncated(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed,
        ..SamplingParams::default()
    }
}

fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
    let weights: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

// Candidates 0..n with the log of the given probabilities as logits, shuffled a little.
fn candidates_with_probs(probs: &[f64]) -> Vec<(u32, f32)> {
    let mut c: Vec<(u32, f32)> = probs
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u32, p.ln() as f32))
        .collect();
    c.reverse();
    c
}

// How often each id in 0..n comes out of `draws` samples.
fn frequencies(sampler: &mut Sampler, candidates: &[(u32, f32)], n: usize) -> Vec<f64> {
    let mut counts = vec![0usize; n];
    for _ in 0..DRAWS {
        let id = sampler
            .sample(candidates, &[])
            .expect("candidates are not empty");
        counts[id as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / DRAWS as f64).collect()
}

fn assert_frequencies(observed: &[f64], expected: &[f64]) {
    for (id, (o, e)) in observed.iter().zip(expected).enumerate() {
        assert!(
            (o - e).abs() <= FREQ_ATOL,
            "id {id}: drawn {o:.4} of the time, expected {e:.4} (tolerance {FREQ_ATOL})"
        );
    }
}

#[test]
fn greedy_picks_the_highest_logit_whatever_the_input_order() {
    let candidates = [(7, 1.5), (3, 4.25), (9, -2.0), (1, 4.0)];
    let mut reversed = candidates;
    reversed.reverse();

    let mut sampler = Sampler::new(greedy());

    assert_eq!(sampler.sample(&candidates, &[]).unwrap(), 3);
    assert_eq!(sampler.sample(&reversed, &[]).unwrap(), 3);
}

#[test]
fn greedy_breaks_ties_by_lowest_id() {
    let candidates = [(12, 2.0), (5, 2.0), (8, 2.0), (2, 1.0)];

    let id = Sampler::new(greedy()).sample(&candidates, &[]).unwrap();

    assert_eq!(id, 5);
}

#[test]
fn repetition_penalty_can_demote_the_top_token() {
    let candidates = [(10, 3.0), (20, 2.0), (30, -1.0)];
    let params = SamplingParams {
        repeat_penalty: 2.0,
        ..greedy()
    };

    let unseen = Sampler::new(params.clone())
        .sample(&candidates, &[30, 40])
        .unwrap();
    let seen = Sampler::new(params)
        .sample(&candidates, &[30, 10, 40])
        .unwrap();

    assert_eq!(unseen, 10);
    // 3.0 / 2 = 1.5 < 2.0
    assert_eq!(seen, 20);
}

#[test]
fn repetition_penalty_multiplies_negative_logits() {
    // -1.0 * 1.5 = -1.5 falls below -1.2; dividing would have lifted it to -0.67
    let candidates = [(1, -1.0), (2, -1.2)];
    let params = SamplingParams {
        repeat_penalty: 1.5,
        ..greedy()
    };

    let id = Sampler::new(params).sample(&candidates, &[1]).unwrap();

    assert_eq!(id, 2);
}

#[test]
fn repetition_penalty_looks_only_at_the_last_n_tokens() {
    let candidates = [(10, 3.0), (20, 2.0)];
    let params = SamplingParams {
        repeat_penalty: 2.0,
        repeat_last_n: 2,
        ..greedy()
    };
    // 10 is three tokens back: outside the window
    let history = [10, 5, 6];

    let id = Sampler::new(params).sample(&candidates, &history).unwrap();

    assert_eq!(id, 10);
}

#[test]
fn top_k_of_one_is_greedy() {
    let candidates = [(4, 0.5), (2, 0.9), (6, 0.9), (8, 0.1)];
    let params = SamplingParams {
        temperature: 1.5,
        top_k: 1,
        seed: 3,
        ..untruncated(0)
    };
    let mut sampler = Sampler::new(params);

    for _ in 0..200 {
        assert_eq!(sampler.sample(&candidates, &[]).unwrap(), 2);
    }
}

#[test]
fn same_seed_gives_the_same_sequence_and_another_seed_a_different_one() {
    let candidates: Vec<(u32, f32)> = (0..50).map(|i| (i, (i % 7) as f32 * 0.3)).collect();
    let run = |seed| {
        let mut sampler = Sampler::new(untruncated(seed));
        (0..100)
            .map(|_| sampler.sample(&candidates, &[]).unwrap())
            .collect::<Vec<u32>>()
    };

    let first = run(42);
    let again = run(42);
    let other = run(43);

    assert_eq!(first, again);
    assert_ne!(first, other);
}

#[test]
fn draws_at_temperature_one_follow_the_softmax() {
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0];
    let candidates: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let mut sampler = Sampler::new(untruncated(7));

    let observed = frequencies(&mut sampler, &candidates, logits.len());

    assert_frequencies(&observed, &softmax(&logits));
}

#[test]
fn temperature_sharpens_the_distribution() {
    let logits = [1.0f32, 0.0];
    let candidates = [(0, 1.0), (1, 0.0)];
    let params = SamplingParams {
        temperature: 0.5,
        ..untruncated(11)
    };
    let mut sampler = Sampler::new(params);

    let observed = frequencies(&mut sampler, &candidates, 2);

    // logits / 0.5
    assert_frequencies(&observed, &softmax(&logits.map(|l| l / 0.5)));
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    // 0.5 alone is short of 0.75; 0.5 + 0.3 reaches it, so ids 2 and 3 are never drawn
    let candidates = candidates_with_probs(&[0.5, 0.3, 0.15, 0.05]);
    let params = SamplingParams {
        top_p: 0.75,
        ..untruncated(5)
    };
    let mut sampler = Sampler::new(params);

    let observed = frequencies(&mut sampler, &candidates, 4);

    assert_eq!(observed[2], 0.0, "id 2 lies outside the top-p set");
    assert_eq!(observed[3], 0.0, "id 3 lies outside the top-p set");
    assert_frequencies(&observed, &[0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]);
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_top_probability() {
    // floor 0.2 * 0.5 = 0.1: only id 3 (0.05) goes
    let candidates = candidates_with_probs(&[0.5, 0.3, 0.15, 0.05]);
    let params = SamplingParams {
        min_p: 0.2,
        ..untruncated(9)
    };
    let mut sampler = Sampler::new(params);

    let observed = frequencies(&mut sampler, &candidates, 4);

    assert_eq!(observed[3], 0.0, "id 3 lies below min_p * p_max");
    assert_frequencies(&observed, &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]);
}

#[test]
fn top_k_keeps_the_k_most_likely() {
    let candidates = candidates_with_probs(&[0.4, 0.3, 0.2, 0.1]);
    let params = SamplingParams {
        top_k: 2,
        ..untruncated(13)
    };
    let mut sampler = Sampler::new(params);

    let observed = frequencies(&mut sampler, &candidates, 4);

    assert_frequencies(&observed, &[0.4 / 0.7, 0.3 / 0.7, 0.0, 0.0]);
}

#[test]
fn a_single_candidate_is_always_chosen() {
    let mut sampler = Sampler::new(untruncated(1));

    for _ in 0..20 {
        assert_eq!(sampler.sample(&[(77, -3.0)], &[77]).unwrap(), 77);
    }
}

#[test]
fn equal_logits_are_drawn_uniformly() {
    let candidates: Vec<(u32, f32)> = (0..4).map(|i| (i, 0.25)).collect();
    let mut sampler = Sampler::new(untruncated(17));

    let observed = frequencies(&mut sampler, &candidates, 4);

    assert_frequencies(&observed, &[0.25; 4]);
}

#[test]
fn minus_infinity_is_never_drawn_unless_all_are() {
    let some = [(0, f32::NEG_INFINITY), (1, 0.0), (2, f32::NAN), (3, -50.0)];
    let all = [(5, f32::NEG_INFINITY), (6, f32::NEG_INFINITY)];
    let mut sampler = Sampler::new(untruncated(19));

    for _ in 0..1000 {
        let id = sampler.sample(&some, &[]).unwrap();
        assert!(id == 1 || id == 3, "drew {id}, whose logit is -inf or NaN");
        let id = sampler.sample(&all, &[]).unwrap();
        assert!(id == 5 || id == 6, "drew {id}, which is not a candidate");
    }
    assert_eq!(Sampler::new(greedy()).sample(&all, &[]).unwrap(), 5);
}

#[test]
fn no_candidates_is_an_error_not_a_token() {
    let result = Sampler::new(untruncated(0)).sample(&[], &[1, 2]);

    assert!(
        matches!(result, Err(SamplerError::NoCandidates)),
        "got {result:?}"
    );
}

#[test]
fn defaults_are_greedy_and_neutral() {
    let params = SamplingParams::default();

    assert_eq!(params.temperature, 0.0);
    assert_eq!((params.top_k, params.top_p, params.min_p), (40, 0.95, 0.05));
    assert_eq!(
        (params.repeat_penalty, params.repeat_last_n, params.seed),
        (1.0, 64, 0)
    );
    assert!(params.validate().is_ok());
    assert!(params.is_plain_greedy());
    assert_eq!(params.candidates(), 1);
}

#[test]
fn candidates_cover_what_the_settings_can_pick() {
    let penalised_greedy = SamplingParams {
        repeat_penalty: 1.3,
        repeat_last_n: 8,
        ..greedy()
    };
    let top_k = SamplingParams {
        top_k: 40,
        ..untruncated(0)
    };
    let boost = SamplingParams {
        repeat_penalty: 0.9,
        ..greedy()
    };
    let huge_k = SamplingParams {
        top_k: 100_000,
        ..untruncated(0)
    };

    assert!(!penalised_greedy.is_plain_greedy());
    // the best unpenalised token is within the top 8 + 1
    assert_eq!(penalised_greedy.candidates(), 9);
    assert_eq!(top_k.candidates(), 40);
    assert_eq!(untruncated(0).candidates(), CANDIDATES);
    assert_eq!(boost.candidates(), CANDIDATES);
    assert_eq!(huge_k.candidates(), CANDIDATES);
}

#[test]
fn validation_errors_name_the_parameter_and_value() {
    let cases = [
        (
            SamplingParams {
                temperature: f32::NAN,
                ..greedy()
            },
            "temperature",
            "NaN",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..greedy()
            },
            "top_p",
            "0",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..greedy()
            },
            "top_p",
            "1.5",
        ),
        (
            SamplingParams {
                min_p: -0.1,
                ..greedy()
            },
            "min_p",
            "-0.1",
        ),
        (
            SamplingParams {
                min_p: 2.0,
                ..greedy()
            },
            "min_p",
            "2",
        ),
        (
            SamplingParams {
                repeat_penalty: 0.0,
                ..greedy()
            },
            "repeat_penalty",
            "0",
        ),
        (
            SamplingParams {
                repeat_penalty: f32::INFINITY,
                ..greedy()
            },
            "repeat_penalty",
            "inf",
        ),
    ];

    for (params, name, value) in cases {
        let message = match params.validate() {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{name} = {value} was accepted"),
        };
        assert!(message.contains(name), "{message:?} does not name {name}");
        assert!(
            message.contains(&format!("= {value}")),
            "{message:?} does not give {value}"
        );
    }
    assert!(SamplingParams {
        temperature: -1.0,
        ..greedy()
    }
    .validate()
    .is_ok());
}

#[test]
fn invalid_parameters_do_not_panic() {
    let candidates = [(0, 1.0), (1, f32::NAN), (2, -1.0), (3, f32::INFINITY)];
    let odd = [
        SamplingParams {
            repeat_penalty: 0.0,
            ..untruncated(0)
        },
        SamplingParams {
            repeat_penalty: -1.0,
            ..untruncated(0)
        },
        SamplingParams {
            temperature: f32::INFINITY,
            ..untruncated(0)
        },
        SamplingParams {
            top_p: f32::NAN,
            min_p: f32::NAN,
            ..untruncated(0)
        },
        SamplingParams {
            top_p: -1.0,
            min_p: 5.0,
            ..untruncated(0)
        },
    ];

    for params in odd {
        let mut sampler = Sampler::new(params.clone());
        for _ in 0..10 {
            let id = sampler.sample(&candidates, &[0, 1, 2, 3]);
            assert!(matches!(id, Ok(0..=3)), "{params:?} gave {id:?}");
        }
    }
}

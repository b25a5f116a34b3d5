//! How many completion tokens to reserve when the client sets no `max_tokens`: a high percentile of the
//! deployment's recent real completions. The model's maximum would starve the pool; the mean would
//! overrun budgets on every long answer.

use std::sync::{Mutex, PoisonError};

/// Completions remembered per deployment.
const WINDOW: usize = 128;
/// Completions needed before the percentile is trusted over the default.
const MIN_SAMPLES: usize = 8;

/// Recent completion lengths of one deployment.
#[derive(Debug)]
pub struct CompletionEstimate {
    default: u64,
    samples: Mutex<Samples>,
}

#[derive(Debug)]
struct Samples {
    ring: Vec<u64>,
    next: usize,
}

impl CompletionEstimate {
    /// An estimate that answers `default` until it has seen enough completions.
    pub fn new(default: u64) -> Self {
        Self {
            default,
            samples: Mutex::new(Samples {
                ring: Vec::with_capacity(WINDOW),
                next: 0,
            }),
        }
    }

    /// Records a real completion length.
    pub fn record(&self, completion_tokens: u64) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.ring.len() < WINDOW {
            samples.ring.push(completion_tokens);
        } else {
            let at = samples.next;
            samples.ring[at] = completion_tokens;
        }
        samples.next = (samples.next + 1) % WINDOW;
    }

    /// The 95th percentile of recent completions, or the default before there are enough.
    pub fn tokens(&self) -> u64 {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.ring.len() < MIN_SAMPLES {
            return self.default;
        }
        let mut sorted = samples.ring.clone();
        drop(samples);
        sorted.sort_unstable();
        let rank = (sorted.len() * 95).div_ceil(100).saturating_sub(1);
        sorted[rank.min(sorted.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_until_enough_samples_then_the_95th_percentile() {
        let estimate = CompletionEstimate::new(256);
        for n in 1..MIN_SAMPLES as u64 {
            estimate.record(n);
        }
        assert_eq!(estimate.tokens(), 256);
        let estimate = CompletionEstimate::new(256);
        for n in 1..=100 {
            estimate.record(n);
        }
        assert_eq!(estimate.tokens(), 95);
        // Old completions leave the window.
        for _ in 0..WINDOW {
            estimate.record(10);
        }
        assert_eq!(estimate.tokens(), 10);
    }
}

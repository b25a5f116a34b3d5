//! How the simulated vendor behaves: its limits, pace, drawn errors and injected faults.

use std::str::FromStr;
use std::time::Duration;

/// How the simulated vendor behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Requests per minute each key may make; `None` for no limit.
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute each key may use; `None` for no limit.
    pub tpm: Option<u32>,
    /// Delay before the response head.
    pub latency: Duration,
    /// Streaming speed; `None` sends every chunk at once.
    pub tokens_per_sec: Option<f64>,
    /// Share of requests answered with a 500, from 0 to 1.
    pub error_rate: f64,
    /// Completion length in tokens when the client sets no smaller cap.
    pub reply_tokens: u32,
    /// A fault to inject into every request.
    pub fault: Option<Fault>,
    /// Seed of the error draw, so runs repeat.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            rpm: None,
            tpm: None,
            latency: Duration::ZERO,
            tokens_per_sec: None,
            error_rate: 0.0,
            reply_tokens: 16,
            fault: None,
            seed: 7,
        }
    }
}

/// A fault the simulated vendor injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Accept the request and never answer.
    Hang,
    /// Send this many chunks, then reset the connection.
    ResetAfter(u32),
    /// Send this many chunks, then go silent without closing.
    StallAfter(u32),
    /// Send this many chunks, then an event that is not JSON.
    MalformedAfter(u32),
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, count) = match text.split_once('=') {
            Some((name, count)) => (
                name,
                Some(
                    count
                        .parse::<u32>()
                        .map_err(|_| format!("`{count}` is not a chunk count in fault `{text}`"))?,
                ),
            ),
            None => (text, None),
        };
        match (name, count) {
            ("hang", None) => Ok(Fault::Hang),
            ("reset-after", Some(n)) => Ok(Fault::ResetAfter(n)),
            ("stall-after", Some(n)) => Ok(Fault::StallAfter(n)),
            ("malformed-after", Some(n)) => Ok(Fault::MalformedAfter(n)),
            _ => Err(format!(
                "unknown fault `{text}`: expected hang, reset-after=N, stall-after=N or malformed-after=N"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!("hang".parse::<Fault>(), Ok(Fault::Hang));
        assert_eq!("reset-after=3".parse::<Fault>(), Ok(Fault::ResetAfter(3)));
        assert!("reset-after=x".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().unwrap_err().contains("unknown fault"));
    }
}

//! The simulated vendor: deterministic OpenAI-format answers with settable latency, speed, rate limits,
//! errors and faults.
//!
//! One [`Simulator`] serves both the in-process provider (`kind = "simulated"`, through
//! [`SimulatedAdapter`]) and the standalone server of `sluice simulate`, which puts an HTTP face on it.
//! Like a real vendor it meters each API key: past its requests or tokens per minute it refuses with a
//! retry time, and it counts what it served per key so tests can check no key went over its limit.

mod adapter;
mod limiter;
mod text;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use sluice_api::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Choice, ChunkChoice, ChunkDelta,
    ResponseMessage, Role, Usage,
};

pub use adapter::SimulatedAdapter;
use limiter::KeyLimiter;

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

/// Why the simulated vendor refused a request.
#[derive(Debug, Clone, PartialEq)]
pub enum SimRejection {
    /// The key is over its requests or tokens per minute.
    RateLimited {
        /// Which limit: `requests` or `tokens`.
        limit: &'static str,
        /// When the request would be accepted.
        retry_after: Duration,
        /// The key's limit headers at the time.
        headers: Vec<(&'static str, String)>,
    },
    /// The drawn error.
    ServerError,
}

/// One accepted request: the answer the simulated vendor will give.
#[derive(Debug, Clone)]
pub struct SimAnswer {
    id: String,
    model: String,
    created: u64,
    words: Vec<&'static str>,
    prompt_tokens: u64,
    /// The key's limit headers after this request, in OpenAI's `x-ratelimit-*` format.
    pub headers: Vec<(&'static str, String)>,
}

impl SimAnswer {
    /// The token usage of the answer.
    pub fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, self.words.len() as u64)
    }

    /// The whole text of the answer.
    pub fn text(&self) -> String {
        self.words.concat()
    }

    fn finish_reason(&self, cap: Option<u32>) -> &'static str {
        match cap {
            Some(cap) if (cap as usize) <= self.words.len() => "length",
            _ => "stop",
        }
    }

    /// The answer as a non-streaming completion.
    pub fn completion(&self, request: &ChatCompletionRequest) -> ChatCompletionResponse {
        ChatCompletionResponse {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: Role::Assistant,
                    content: Some(self.text()),
                    tool_calls: None,
                    refusal: None,
                },
                finish_reason: Some(self.finish_reason(request.completion_cap()).to_owned()),
                logprobs: None,
            }],
            usage: Some(self.usage()),
            extra: Default::default(),
        }
    }

    /// The answer as stream chunks: the role, one chunk per token, the finish reason, and the usage chunk
    /// when `include_usage` is set.
    pub fn chunks(&self, request: &ChatCompletionRequest, include_usage: bool) -> Vec<ChatCompletionChunk> {
        let usage_field = |usage: Option<Usage>| if include_usage { usage } else { None };
        let chunk = |delta: ChunkDelta, finish: Option<&str>| ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(str::to_owned),
            }],
            usage: usage_field(None),
        };
        let mut chunks = Vec::with_capacity(self.words.len() + 3);
        chunks.push(chunk(
            ChunkDelta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                tool_calls: None,
            },
            None,
        ));
        for word in &self.words {
            chunks.push(chunk(
                ChunkDelta {
                    content: Some((*word).to_owned()),
                    ..ChunkDelta::default()
                },
                None,
            ));
        }
        chunks.push(chunk(
            ChunkDelta::default(),
            Some(self.finish_reason(request.completion_cap())),
        ));
        if include_usage {
            chunks.push(ChatCompletionChunk {
                choices: Vec::new(),
                usage: Some(self.usage()),
                ..chunk(ChunkDelta::default(), None)
            });
        }
        chunks
    }
}

/// One step of a simulated stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SimFrame {
    /// A chunk's JSON; `usage_only` for the final usage chunk.
    Chunk {
        /// The chunk's JSON.
        data: Bytes,
        /// The usage the chunk carries.
        usage: Option<Usage>,
        /// Whether this is the usage-only final chunk.
        usage_only: bool,
    },
    /// An event whose data is not JSON.
    Malformed,
    /// Reset the connection now.
    Reset,
}

/// Counters of what one key was served.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KeyStats {
    /// Requests accepted.
    pub requests: u64,
    /// Tokens (prompt + completion) accepted.
    pub tokens: u64,
    /// Requests refused for a rate limit.
    pub rate_limited: u64,
}

/// What the simulated vendor has done since it started.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SimStats {
    /// Requests received.
    pub requests: u64,
    /// Requests refused with a 429.
    pub rate_limited: u64,
    /// Requests answered with a drawn 500.
    pub server_errors: u64,
    /// Streams begun.
    pub streams_started: u64,
    /// Streams sent to the end.
    pub streams_completed: u64,
    /// Streams whose reader went away before the end.
    pub streams_cancelled: u64,
    /// Per key, by [`Simulator::key_label`].
    pub keys: HashMap<String, KeyStats>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
}

/// The simulated vendor.
pub struct Simulator {
    config: SimConfig,
    keys: Mutex<HashMap<String, (KeyLimiter, KeyStats)>>,
    rng: Mutex<fastrand::Rng>,
    counters: Counters,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A simulated vendor with `config`.
    pub fn new(config: SimConfig) -> Self {
        let rng = fastrand::Rng::with_seed(config.seed);
        Self {
            config,
            keys: Mutex::new(HashMap::new()),
            rng: Mutex::new(rng),
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// How it behaves.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// How a key is named in [`SimStats`]: a hash and the last four characters, never the whole key.
    pub fn key_label(key: &str) -> String {
        let tail: String = key
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{:08x}…{tail}", text::fnv1a(key.as_bytes()) as u32)
    }

    /// Decides whether `key` may make `request` now, and if so what the answer is.
    pub fn admit(&self, key: &str, request: &ChatCompletionRequest) -> Result<SimAnswer, SimRejection> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if self.config.error_rate > 0.0 {
            let draw = self.rng.lock().unwrap_or_else(PoisonError::into_inner).f64();
            if draw < self.config.error_rate {
                self.counters.server_errors.fetch_add(1, Ordering::Relaxed);
                return Err(SimRejection::ServerError);
            }
        }
        let prompt_tokens = estimate_prompt_tokens(&request.messages);
        let reply_tokens = request
            .completion_cap()
            .map_or(self.config.reply_tokens, |cap| cap.min(self.config.reply_tokens));
        let cost = prompt_tokens + u64::from(reply_tokens);
        let now = tokio::time::Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let (limiter, stats) = keys.entry(Self::key_label(key)).or_insert_with(|| {
            (
                KeyLimiter::new(self.config.rpm, self.config.tpm, now),
                KeyStats::default(),
            )
        });
        match limiter.try_take(cost, now) {
            Ok(headers) => {
                stats.requests += 1;
                stats.tokens += cost;
                drop(keys);
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                Ok(SimAnswer {
                    id: format!("chatcmpl-sim{id:08}"),
                    model: request.model.clone(),
                    created: unix_now(),
                    words: text::reply(&request.messages, &request.model, reply_tokens as usize),
                    prompt_tokens,
                    headers,
                })
            }
            Err((limit, retry_after, headers)) => {
                stats.rate_limited += 1;
                self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                Err(SimRejection::RateLimited {
                    limit,
                    retry_after,
                    headers,
                })
            }
        }
    }

    /// What it has done so far.
    pub fn stats(&self) -> SimStats {
        let c = &self.counters;
        SimStats {
            requests: c.requests.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            server_errors: c.server_errors.load(Ordering::Relaxed),
            streams_started: c.streams_started.load(Ordering::Relaxed),
            streams_completed: c.streams_completed.load(Ordering::Relaxed),
            streams_cancelled: c.streams_cancelled.load(Ordering::Relaxed),
            keys: self
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(label, (_, stats))| (label.clone(), stats.clone()))
                .collect(),
        }
    }

    /// The frames of a streamed answer, paced at the configured speed, with the configured fault. The
    /// stream counts itself as completed when it ends and as cancelled when dropped before its end.
    pub fn frames(
        self: &Arc<Self>,
        answer: &SimAnswer,
        request: &ChatCompletionRequest,
        include_usage: bool,
    ) -> impl Stream<Item = SimFrame> + Send + 'static {
        let frames: Vec<SimFrame> = answer
            .chunks(request, include_usage)
            .into_iter()
            .map(|chunk| SimFrame::Chunk {
                usage: chunk.usage,
                usage_only: chunk.choices.is_empty(),
                data: serde_json::to_vec(&chunk).map(Bytes::from).unwrap_or_default(),
            })
            .collect();
        self.counters.streams_started.fetch_add(1, Ordering::Relaxed);
        let guard = StreamGuard {
            sim: Arc::clone(self),
            completed: false,
        };
        let pace = self
            .config
            .tokens_per_sec
            .filter(|tps| *tps > 0.0)
            .map(|tps| Duration::from_secs_f64(1.0 / tps));
        let fault = self.config.fault;
        futures_util::stream::unfold(
            (frames.into_iter().enumerate(), guard),
            move |(mut frames, guard)| async move {
                let (index, frame) = match frames.next() {
                    Some(next) => next,
                    None => {
                        guard.finish();
                        return None;
                    }
                };
                let index = index as u32;
                if index > 0
                    && let Some(pace) = pace
                {
                    tokio::time::sleep(pace).await;
                }
                let frame = match fault {
                    Some(Fault::ResetAfter(n)) if index >= n => SimFrame::Reset,
                    Some(Fault::MalformedAfter(n)) if index >= n => SimFrame::Malformed,
                    Some(Fault::StallAfter(n)) if index >= n => std::future::pending().await,
                    _ => frame,
                };
                Some((frame, (frames, guard)))
            },
        )
    }
}

struct StreamGuard {
    sim: Arc<Simulator>,
    completed: bool,
}

impl StreamGuard {
    /// Marks the stream as sent to its end; the count is taken when the guard drops.
    fn finish(mut self) {
        self.completed = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.completed {
            &self.sim.counters.streams_completed
        } else {
            &self.sim.counters.streams_cancelled
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A rough prompt size: about four characters a token plus a few per message. The simulated vendor only
/// needs to be consistent, not exact.
fn estimate_prompt_tokens(messages: &[ChatMessage]) -> u64 {
    let chars: usize = messages
        .iter()
        .map(|m| m.content.as_ref().map_or(0, |c| c.text().chars().count()))
        .sum();
    (chars as u64).div_ceil(4) + 4 * messages.len() as u64 + 3
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(text: &str) -> ChatCompletionRequest {
        serde_json::from_value(json!({"model": "sim", "messages": [{"role": "user", "content": text}]})).unwrap()
    }

    #[test]
    fn answers_are_deterministic() {
        let sim = Simulator::new(SimConfig::default());
        let a = sim.admit("k", &request("hello")).unwrap();
        let b = sim.admit("k", &request("hello")).unwrap();
        let c = sim.admit("k", &request("something else")).unwrap();
        assert_eq!(a.text(), b.text());
        assert_ne!(a.text(), c.text());
        assert_eq!(a.usage().completion_tokens, 16);
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_limit_refuses_then_refills() {
        let sim = Simulator::new(SimConfig {
            rpm: Some(60),
            ..SimConfig::default()
        });
        for _ in 0..60 {
            sim.admit("k", &request("x")).unwrap();
        }
        match sim.admit("k", &request("x")) {
            Err(SimRejection::RateLimited { limit, retry_after, .. }) => {
                assert_eq!(limit, "requests");
                assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
            }
            other => panic!("{other:?}"),
        }
        // Another key has its own budget.
        sim.admit("other", &request("x")).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        sim.admit("k", &request("x")).unwrap();
        let stats = sim.stats();
        assert_eq!(stats.rate_limited, 1);
        assert_eq!(stats.keys[&Simulator::key_label("k")].requests, 61);
    }

    #[test]
    fn faults_parse() {
        assert_eq!("hang".parse::<Fault>(), Ok(Fault::Hang));
        assert_eq!("reset-after=3".parse::<Fault>(), Ok(Fault::ResetAfter(3)));
        assert!("reset-after=x".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().unwrap_err().contains("unknown fault"));
    }
}

//! The simulated vendor: deterministic answers with settable latency, speed, rate limits, errors and
//! faults.
//!
//! One [`Simulator`] serves both the in-process provider (`kind = "simulated"`, through
//! [`SimulatedAdapter`]) and the standalone servers of `sluice simulate`, which put a vendor's HTTP face on
//! it (OpenAI, Anthropic, Gemini). Like a real vendor it meters each API key: past its requests or tokens
//! per minute it refuses with a retry time, and it counts what it served per key so tests can check no
//! key went over its limit.
//!
//! The answer depends only on a vendor-neutral [`SimRequest`], so every face answers a conversation the
//! same way ([`reply`] has the rules): deterministic words, one call to a declared tool when the user spoke
//! last, `Tool said: ...` when a tool result comes back, `I see an image.` when the user sent one. The
//! OpenAI rendering of an answer is in `render.rs`; the other vendors' renderings live with their faces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sluice_api::{ChatCompletionRequest, TokenUsage};

use crate::bill::{self, PromptCache};
use crate::conversation::SimRequest;
use crate::limiter::{KeyLimiter, SimLimits};
use crate::reply::{self, SimFinish, SimReply};
use crate::stats::{Counters, KeyStats, SimStats};
use crate::{Fault, SimConfig, text};

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
    pub(crate) serial: u64,
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
    pub(crate) reply: SimReply,
    pub(crate) finish: SimFinish,
    /// The usage by category, output and reasoning included.
    pub(crate) usage: TokenUsage,
    /// The key's label, for billing what a stream sends.
    pub(crate) key: String,
    pub(crate) limits: SimLimits,
    /// The key's limit headers after this request, in OpenAI's `x-ratelimit-*` format.
    pub headers: Vec<(&'static str, String)>,
}

impl SimAnswer {
    /// The answer's usage by category, as the vendor reports it: the prompt split by cache status, the
    /// output with the reasoning in it.
    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    /// The whole text of the answer; empty when it is a tool call.
    pub fn text(&self) -> String {
        match &self.reply {
            SimReply::Text(pieces) => pieces.concat(),
            SimReply::ToolCall(_) => String::new(),
        }
    }

    /// What the answer says: text pieces (one per token) or a tool call.
    pub fn reply(&self) -> &SimReply {
        &self.reply
    }

    /// How the answer ends.
    pub fn finish(&self) -> SimFinish {
        self.finish
    }

    /// A number unique to this answer within the simulator, for vendor-style ids (`msg_sim00000001`).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The OpenAI-style completion id (`chatcmpl-sim00000001`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The model id the request named.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Unix seconds of the answer.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// The prompt's estimated size in tokens, whatever its cache status.
    pub fn prompt_tokens(&self) -> u64 {
        self.usage.prompt_tokens()
    }

    /// The visible tokens generated: the text or the tool call, without the reasoning.
    pub fn completion_tokens(&self) -> u64 {
        self.reply.completion_tokens()
    }

    /// The tokens spent reasoning before the answer (part of the output, never shown).
    pub fn reasoning_tokens(&self) -> u64 {
        self.usage.reasoning
    }

    /// Every generated token: the visible ones and the reasoning.
    pub fn output_tokens(&self) -> u64 {
        self.usage.output
    }

    /// The visible tokens generated once the stream has sent the answer's first `pieces` pieces (text
    /// pieces are one token each; a tool call's tokens are spread over its argument pieces), for the
    /// vendor's bill of a stream that stops early.
    pub fn tokens_through(&self, pieces: usize) -> u64 {
        let total = self.completion_tokens();
        match &self.reply {
            SimReply::Text(_) => (pieces as u64).min(total),
            SimReply::ToolCall(call) => {
                let count = call.argument_pieces().len().max(1) as u64;
                (total * (pieces as u64).min(count)).div_ceil(count)
            }
        }
    }

    /// The key's limits after this request, for faces that report them in their own headers.
    pub fn limits(&self) -> SimLimits {
        self.limits
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
        usage: Option<TokenUsage>,
        /// Whether this is the usage-only final chunk.
        usage_only: bool,
    },
    /// An event whose data is not JSON.
    Malformed,
    /// Reset the connection now.
    Reset,
}

/// What the simulator keeps per key.
struct KeyState {
    limiter: KeyLimiter,
    stats: KeyStats,
    cache: PromptCache,
}

/// The simulated vendor.
pub struct Simulator {
    config: SimConfig,
    keys: Mutex<HashMap<String, KeyState>>,
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
        self.admit_request(key, &SimRequest::from_openai(request))
    }

    /// Decides whether `key` may make `request`, read from any vendor's format, and if so what the answer
    /// is. The key's limits are charged the whole usage; its bill ([`KeyStats::bill`]) the input now, and
    /// the output now for a complete answer or as it is sent for a stream ([`crate::bill`]).
    pub fn admit_request(&self, key: &str, request: &SimRequest) -> Result<SimAnswer, SimRejection> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if self.config.error_rate > 0.0 {
            let draw = self.rng.lock().unwrap_or_else(PoisonError::into_inner).f64();
            if draw < self.config.error_rate {
                self.counters.server_errors.fetch_add(1, Ordering::Relaxed);
                return Err(SimRejection::ServerError);
            }
        }
        let (reply, finish) = reply::plan(request, self.config.reply_tokens);
        let visible = reply.completion_tokens();
        let reasoning = bill::reasoning(request, visible);
        let now = tokio::time::Instant::now();
        let label = Self::key_label(key);
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let state = keys.entry(label.clone()).or_insert_with(|| KeyState {
            limiter: KeyLimiter::new(self.config.rpm, self.config.tpm, now),
            stats: KeyStats::default(),
            cache: PromptCache::default(),
        });
        let prompt = state.cache.bill(request);
        let usage = TokenUsage {
            output: visible.saturating_add(reasoning),
            reasoning,
            ..prompt.input
        };
        let cost = usage.total();
        match state.limiter.try_take(cost, now) {
            Ok(headers) => {
                state.cache.accept(prompt);
                let stats = &mut state.stats;
                stats.requests += 1;
                stats.tokens = stats.tokens.saturating_add(cost);
                stats.prompt_tokens = stats.prompt_tokens.saturating_add(usage.prompt_tokens());
                stats.completion_tokens = stats.completion_tokens.saturating_add(usage.output);
                // The input is billed now; a complete answer's output too, a stream's as it is sent.
                let billed = if request.stream {
                    TokenUsage {
                        output: 0,
                        reasoning: 0,
                        ..usage
                    }
                } else {
                    usage
                };
                stats.bill = stats.bill.plus(&billed);
                let limits = state.limiter.limits();
                drop(keys);
                let serial = self.next_id.fetch_add(1, Ordering::Relaxed);
                Ok(SimAnswer {
                    serial,
                    id: format!("chatcmpl-sim{serial:08}"),
                    model: request.model.clone(),
                    created: unix_now(),
                    reply,
                    finish,
                    usage,
                    key: label,
                    limits,
                    headers,
                })
            }
            Err((limit, retry_after, headers)) => {
                state.stats.rate_limited += 1;
                self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                Err(SimRejection::RateLimited {
                    limit,
                    retry_after,
                    headers,
                })
            }
        }
    }

    /// The limits of `key` now, as a face reports them beside a refusal. A key never seen has full limits.
    pub fn limits(&self, key: &str) -> SimLimits {
        let now = tokio::time::Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        match keys.get_mut(&Self::key_label(key)) {
            Some(state) => state.limiter.snapshot(now),
            None => KeyLimiter::new(self.config.rpm, self.config.tpm, now).limits(),
        }
    }

    /// Counts a request a face refused as invalid (see [`SimStats::invalid_requests`]).
    pub fn record_invalid(&self) {
        self.counters.invalid_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// What it has done so far.
    pub fn stats(&self) -> SimStats {
        let c = &self.counters;
        SimStats {
            requests: c.requests.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            server_errors: c.server_errors.load(Ordering::Relaxed),
            invalid_requests: c.invalid_requests.load(Ordering::Relaxed),
            streams_started: c.streams_started.load(Ordering::Relaxed),
            streams_completed: c.streams_completed.load(Ordering::Relaxed),
            streams_cancelled: c.streams_cancelled.load(Ordering::Relaxed),
            keys: self
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(label, state)| (label.clone(), state.stats.clone()))
                .collect(),
        }
    }

    /// The frames of a streamed answer in OpenAI's format, paced at the configured speed, with the
    /// configured fault. The stream counts itself as completed when it ends and as cancelled when dropped
    /// before its end, and bills what it sent.
    pub fn frames(
        self: &Arc<Self>,
        answer: &SimAnswer,
        request: &ChatCompletionRequest,
        include_usage: bool,
    ) -> impl Stream<Item = SimFrame> + Send + 'static {
        let usage = answer.usage();
        let chunks = answer.stream_chunks(request, include_usage);
        self.paced(answer, chunks).map(move |step| match step {
            Paced::Event(chunk) => SimFrame::Chunk {
                usage: chunk.usage.map(|_| usage),
                usage_only: chunk.choices.is_empty(),
                data: serde_json::to_vec(&chunk).map(Bytes::from).unwrap_or_default(),
            },
            Paced::Malformed => SimFrame::Malformed,
            Paced::Reset => SimFrame::Reset,
        })
    }

    /// Any vendor's stream events for `answer`, paced at the configured speed (the first at once), with
    /// the configured fault applied by position: from event N on, a `reset-after=N` resets (and the stream
    /// ends), `malformed-after=N` sends a malformed event, `stall-after=N` goes silent. Each event comes
    /// with the visible tokens generated once it is sent ([`SimAnswer::tokens_through`]). The stream
    /// counts itself in [`SimStats`] as started, then completed at its end or cancelled when dropped
    /// before; either way the key's bill gets the answer's reasoning and the visible tokens sent
    /// (malformed events included: they replaced generated ones; the whole answer for a stream that
    /// ended).
    pub fn paced<T: Send + 'static>(
        self: &Arc<Self>,
        answer: &SimAnswer,
        events: Vec<(T, u64)>,
    ) -> impl Stream<Item = Paced<T>> + Send + 'static {
        self.counters.streams_started.fetch_add(1, Ordering::Relaxed);
        let guard = StreamGuard {
            sim: Arc::clone(self),
            key: answer.key.clone(),
            reasoning: answer.reasoning_tokens(),
            total: answer.completion_tokens(),
            sent: 0,
            completed: false,
        };
        let pace = self
            .config
            .tokens_per_sec
            .filter(|tps| *tps > 0.0)
            // A speed too slow for a `Duration` (`--tokens-per-sec 1e-300`) is an hour a token, not a panic.
            .map(|tps| {
                Duration::try_from_secs_f64(1.0 / tps)
                    .map_or(Duration::from_secs(3600), |d| d.min(Duration::from_secs(3600)))
            });
        let fault = self.config.fault;
        futures_util::stream::unfold(
            (events.into_iter().enumerate(), guard, false),
            move |(mut events, mut guard, reset)| async move {
                if reset {
                    // The connection is gone: nothing more is generated, and the guard bills what went out.
                    return None;
                }
                let (index, (event, tokens)) = match events.next() {
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
                let step = match fault {
                    Some(Fault::ResetAfter(n)) if index >= n => Paced::Reset,
                    Some(Fault::MalformedAfter(n)) if index >= n => Paced::Malformed,
                    Some(Fault::StallAfter(n)) if index >= n => std::future::pending().await,
                    _ => Paced::Event(event),
                };
                let reset = matches!(step, Paced::Reset);
                if !reset {
                    guard.sent = guard.sent.max(tokens);
                }
                Some((step, (events, guard, reset)))
            },
        )
    }

    /// Bills `key` for `output` tokens generated by a stream, `reasoning` of them reasoning.
    fn bill_output(&self, key: &str, output: u64, reasoning: u64) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = keys.get_mut(key) {
            let bill = &mut state.stats.bill;
            bill.output = bill.output.saturating_add(output);
            bill.reasoning = bill.reasoning.saturating_add(reasoning);
        }
    }
}

/// One step of a paced stream ([`Simulator::paced`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Paced<T> {
    /// The next event.
    Event(T),
    /// Send an event whose data is not JSON instead.
    Malformed,
    /// Reset the connection now.
    Reset,
}

/// Counts a stream's end and bills its output, when the stream is dropped.
struct StreamGuard {
    sim: Arc<Simulator>,
    key: String,
    reasoning: u64,
    /// The answer's visible tokens.
    total: u64,
    /// The visible tokens generated by the events sent so far.
    sent: u64,
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
        let counters = &self.sim.counters;
        let (counter, visible) = if self.completed {
            (&counters.streams_completed, self.total)
        } else {
            (&counters.streams_cancelled, self.sent.min(self.total))
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.sim
            .bill_output(&self.key, visible.saturating_add(self.reasoning), self.reasoning);
    }
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
    use crate::LimitState;
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
        assert_eq!(a.usage().output, 16);
    }

    fn streamed(model: &str, text: &str) -> ChatCompletionRequest {
        serde_json::from_value(json!({"model": model, "stream": true,
            "messages": [{"role": "user", "content": text}]}))
        .unwrap()
    }

    #[tokio::test]
    async fn the_bill_has_the_input_at_once_and_a_stream_s_output_as_it_is_sent() {
        let sim = Arc::new(Simulator::new(SimConfig::default()));
        let bill = |sim: &Simulator| sim.stats().keys[&Simulator::key_label("k")].bill;
        // A complete answer is billed whole when it is accepted.
        let whole = sim.admit("k", &request("hello")).unwrap();
        assert_eq!(bill(&sim), whole.usage());
        // A stream: its input at once, its output as it goes out.
        let ask = streamed("sim", "hello");
        let answer = sim.admit("k", &ask).unwrap();
        let input = TokenUsage {
            output: 0,
            ..answer.usage()
        };
        assert_eq!(bill(&sim), whole.usage().plus(&input));
        // The client leaves after the role chunk and four tokens.
        let mut frames = Box::pin(sim.frames(&answer, &ask, true));
        for _ in 0..5 {
            assert!(matches!(frames.next().await, Some(SimFrame::Chunk { .. })));
        }
        drop(frames);
        let sent = TokenUsage::new(0, 4);
        assert_eq!(bill(&sim), whole.usage().plus(&input).plus(&sent));
        assert_eq!(sim.stats().streams_cancelled, 1);
        // A stream read to its end is billed its whole output, the same as its usage chunk says.
        let answer = sim.admit("k", &ask).unwrap();
        let frames: Vec<SimFrame> = sim.frames(&answer, &ask, true).collect().await;
        let Some(SimFrame::Chunk { usage: Some(usage), .. }) = frames.last() else {
            panic!("{frames:?}")
        };
        assert_eq!(*usage, answer.usage());
        let stats = &sim.stats().keys[&Simulator::key_label("k")];
        assert_eq!(stats.bill, whole.usage().plus(&input).plus(&sent).plus(&answer.usage()));
        // What the limits were charged is the whole of every answer.
        assert_eq!(stats.tokens, 3 * whole.usage().total());
    }

    #[tokio::test]
    async fn reasoning_models_bill_their_reasoning_even_when_the_client_leaves() {
        let sim = Arc::new(Simulator::new(SimConfig::default()));
        let ask = streamed("o3-mini", "think first");
        let answer = sim.admit("k", &ask).unwrap();
        assert_eq!(answer.completion_tokens(), 16);
        assert_eq!((answer.usage().output, answer.usage().reasoning), (48, 32));
        let completion = serde_json::to_value(answer.completion(&ask)).unwrap();
        assert_eq!(completion["usage"]["completion_tokens"], 48);
        assert_eq!(completion["usage"]["completion_tokens_details"]["reasoning_tokens"], 32);
        let mut frames = Box::pin(sim.frames(&answer, &ask, true));
        frames.next().await;
        drop(frames);
        let bill = sim.stats().bill();
        assert_eq!(
            (bill.output, bill.reasoning),
            (32, 32),
            "the reasoning and no visible token"
        );
        assert_eq!(bill.input, answer.usage().input);
        // Not o-series: no reasoning.
        let plain = sim.admit("k", &request("think first")).unwrap();
        assert_eq!(plain.usage().reasoning, 0);
    }

    #[tokio::test]
    async fn cut_streams_bill_what_went_out_before_the_fault() {
        for (fault, sent) in [
            (Fault::ResetAfter(4), 3),
            (Fault::MalformedAfter(4), 16),
            (Fault::StallAfter(6), 5),
        ] {
            let sim = Arc::new(Simulator::new(SimConfig {
                fault: Some(fault),
                ..SimConfig::default()
            }));
            let ask = streamed("sim", "hello");
            let answer = sim.admit("k", &ask).unwrap();
            let mut frames = Box::pin(sim.frames(&answer, &ask, true));
            // Read until the fault shows, or the stall has held the stream up a while.
            loop {
                match tokio::time::timeout(Duration::from_millis(50), frames.next()).await {
                    Ok(Some(SimFrame::Reset)) | Ok(None) | Err(_) => break,
                    Ok(Some(_)) => {}
                }
            }
            drop(frames);
            assert_eq!(sim.stats().bill().output, sent, "{fault:?}");
        }
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
    fn tools_images_and_tool_results_in_openai_format() {
        let sim = Simulator::new(SimConfig::default());
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
        let ask: ChatCompletionRequest = serde_json::from_value(json!({"model": "sim", "tools": tools,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
        .unwrap();
        let answer = sim.admit("k", &ask).unwrap();
        let completion = serde_json::to_value(answer.completion(&ask)).unwrap();
        let choice = &completion["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], serde_json::Value::Null);
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        let arguments: serde_json::Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(arguments["city"].is_string(), "{arguments}");
        // The stream carries the same call, its arguments in pieces.
        let chunks = answer.chunks(&ask, true);
        let streamed: String = chunks
            .iter()
            .flat_map(|c| c.choices.iter())
            .flat_map(|c| c.delta.tool_calls.iter().flatten())
            .filter_map(|t| t["function"]["arguments"].as_str())
            .collect();
        assert_eq!(streamed, call["function"]["arguments"].as_str().unwrap());
        assert_eq!(
            chunks[chunks.len() - 2].choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );
        assert_eq!(chunks.last().unwrap().usage, Some(answer.usage().to_openai()));

        let round_trip: ChatCompletionRequest = serde_json::from_value(json!({"model": "sim", "tools": tools,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"}
        ]}))
        .unwrap();
        let answer = sim.admit("k", &round_trip).unwrap();
        assert_eq!(answer.text(), "Tool said: 18C and sunny");
        assert_eq!(answer.finish(), SimFinish::Stop);

        let image: ChatCompletionRequest = serde_json::from_value(json!({"model": "sim", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}))
        .unwrap();
        assert!(sim.admit("k", &image).unwrap().text().starts_with("I see an image. "));

        // The key was charged exactly the usage it was sent.
        let stats = &sim.stats().keys[&Simulator::key_label("k")];
        assert_eq!(stats.tokens, stats.prompt_tokens + stats.completion_tokens);
        assert_eq!(stats.requests, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn limits_are_reported_for_vendor_headers() {
        let sim = Simulator::new(SimConfig {
            rpm: Some(60),
            tpm: Some(6000),
            ..SimConfig::default()
        });
        assert_eq!(
            sim.limits("new").requests,
            Some(LimitState {
                limit: 60,
                remaining: 60,
                reset: Duration::ZERO
            })
        );
        let answer = sim.admit("k", &request("x")).unwrap();
        let limits = answer.limits();
        assert_eq!(limits.requests.map(|l| (l.limit, l.remaining)), Some((60, 59)));
        assert_eq!(limits.requests.unwrap().reset, Duration::from_secs(1));
        let tokens = limits.tokens.unwrap();
        assert_eq!(tokens.remaining, 6000 - answer.usage().total());
        assert_eq!(sim.limits("k"), limits);
        sim.record_invalid();
        assert_eq!(sim.stats().invalid_requests, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn paced_streams_apply_faults_and_count_themselves() {
        let sim = Arc::new(Simulator::new(SimConfig {
            fault: Some(Fault::MalformedAfter(2)),
            ..SimConfig::default()
        }));
        let answer = sim.admit("k", &request("x")).unwrap();
        let steps: Vec<Paced<u8>> = sim.paced(&answer, vec![(1, 0), (2, 1), (3, 2)]).collect().await;
        assert_eq!(steps, [Paced::Event(1), Paced::Event(2), Paced::Malformed]);
        let stats = sim.stats();
        assert_eq!((stats.streams_started, stats.streams_completed), (1, 1));
        drop(sim.paced(&answer, vec![(1, 0)]));
        assert_eq!(sim.stats().streams_cancelled, 1);
    }
}

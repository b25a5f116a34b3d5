//! OpenTelemetry spans of a request, built when its ledger entry is written (the one place that knows
//! everything about it): a server span for the request with the GenAI semantic conventions and Sluice's
//! own attributes, and a client span per upstream attempt under it.

use std::collections::HashMap;

use sluice_api::TokenUsage;
use sluice_router::{Attempt, AttemptOutcome};
use sluice_trace::{AttrValue, Exporter, RequestTrace, SpanData, SpanKind, unix_nanos};

/// Where spans go, and each provider's `gen_ai.system`.
#[derive(Debug, Clone)]
pub struct TraceSink {
    exporter: Exporter,
    /// `gen_ai.system` by provider name (`openai`, `anthropic`, `gcp.gemini`, `az.ai.openai`...).
    systems: HashMap<String, String>,
}

impl TraceSink {
    /// Spans to `exporter`, naming each provider's system from `systems`.
    pub fn new(exporter: Exporter, systems: HashMap<String, String>) -> Self {
        Self { exporter, systems }
    }

    /// The exporter, for its counts.
    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    fn system(&self, provider: &str) -> AttrValue {
        AttrValue::Str(
            self.systems
                .get(provider)
                .map_or_else(|| provider.to_owned(), Clone::clone),
        )
    }
}

/// What the ledger entry knows of a finished request.
pub(crate) struct Finished<'a> {
    pub(crate) model: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) key_id: Option<&'a str>,
    pub(crate) trail: &'a [Attempt],
    pub(crate) usage: &'a TokenUsage,
    pub(crate) cost_micros: Option<i64>,
    pub(crate) status: u16,
    pub(crate) failure: Option<&'static str>,
}

fn int(value: u64) -> AttrValue {
    AttrValue::Int(i64::try_from(value).unwrap_or(i64::MAX))
}

fn text(value: &str) -> AttrValue {
    AttrValue::Str(value.to_owned())
}

/// Exports the request's span and its attempts' spans.
pub(crate) fn export(sink: &TraceSink, trace: &RequestTrace, done: &Finished<'_>) {
    let now = unix_nanos();
    let operation = trace.operation;
    let answered = done.trail.iter().rev().find(|a| a.outcome == AttemptOutcome::Answered);
    let last = answered.or(done.trail.last());
    let usage = done.usage;
    let mut attributes = vec![
        ("gen_ai.operation.name", text(operation)),
        ("gen_ai.request.model", text(done.model)),
        ("gen_ai.usage.input_tokens", int(usage.prompt_tokens())),
        ("gen_ai.usage.output_tokens", int(usage.output)),
        ("gen_ai.usage.cache_read.input_tokens", int(usage.cache_read)),
        (
            "gen_ai.usage.cache_creation.input_tokens",
            int(usage.cache_write_5m.saturating_add(usage.cache_write_1h)),
        ),
        ("gen_ai.usage.reasoning.output_tokens", int(usage.reasoning)),
        ("http.response.status_code", int(u64::from(done.status))),
        ("sluice.tenant", text(done.tenant)),
        ("sluice.attempts", int(done.trail.len() as u64)),
    ];
    if let Some(attempt) = last {
        attributes.push(("gen_ai.system", sink.system(&attempt.provider)));
        attributes.push(("sluice.provider", text(&attempt.provider)));
        attributes.push(("sluice.upstream_key", text(&attempt.key_id)));
    }
    if let Some(attempt) = answered {
        attributes.push(("gen_ai.response.model", text(&attempt.vendor_model)));
    }
    if let Some(key) = done.key_id {
        attributes.push(("sluice.key_id", text(key)));
    }
    if let Some(cost) = done.cost_micros {
        attributes.push(("sluice.cost_micros", AttrValue::Int(cost)));
        attributes.push(("sluice.cost_usd", AttrValue::Float(cost as f64 / 1_000_000.0)));
    }
    // A server span is an error when the gateway failed (5xx); a 4xx is the client's.
    let error = (done.status >= 500).then(|| done.failure.unwrap_or("server_error").to_owned());
    if let Some(kind) = &error {
        attributes.push(("error.type", text(kind)));
    }
    sink.exporter.export(SpanData {
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        parent: trace.parent,
        name: format!("{operation} {}", done.model),
        kind: SpanKind::Server,
        start: trace.start,
        end: now,
        attributes,
        error,
    });
    for attempt in done.trail {
        let Some(span) = attempt.span else { continue };
        let (outcome, error) = match attempt.outcome {
            AttemptOutcome::Answered => ("answered", None),
            AttemptOutcome::Pending => ("abandoned", None),
            AttemptOutcome::Failed { kind, .. } => ("failed", Some(kind.to_owned())),
        };
        let mut attributes = vec![
            ("gen_ai.operation.name", text(operation)),
            ("gen_ai.system", sink.system(&attempt.provider)),
            ("gen_ai.request.model", text(&attempt.vendor_model)),
            ("sluice.provider", text(&attempt.provider)),
            ("sluice.upstream_key", text(&attempt.key_id)),
            ("sluice.attempt.outcome", text(outcome)),
        ];
        if let Some(kind) = &error {
            attributes.push(("error.type", text(kind)));
        }
        sink.exporter.export(SpanData {
            trace_id: trace.trace_id,
            span_id: span.span_id,
            parent: Some(trace.span_id),
            name: format!("{operation} {}", attempt.vendor_model),
            kind: SpanKind::Client,
            start: span.start,
            end: if span.end == 0 { now } else { span.end },
            attributes,
            error,
        });
    }
}

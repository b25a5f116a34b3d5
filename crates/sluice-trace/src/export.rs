//! Spans leave the gateway over OTLP/HTTP with the JSON encoding (`POST {endpoint}/v1/traces`), from a
//! bounded queue drained by one task: [`Exporter::export`] never waits, a full queue drops the span and
//! counts it, and a collector that is down or slow costs a timed-out POST in the export task, never
//! anything on the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::context::{SpanId, TraceId, hex};

/// A span's kind, as OTLP numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The request the gateway served.
    Server = 2,
    /// A call the gateway made upstream.
    Client = 3,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    /// Its trace.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// Its parent, if any.
    pub parent: Option<SpanId>,
    /// Its name.
    pub name: String,
    /// Server or client.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end: u64,
    /// Its attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// The error's description, for a failed span.
    pub error: Option<String>,
}

impl SpanData {
    fn to_otlp(&self) -> Value {
        let attributes: Vec<Value> = self.attributes.iter().map(|(k, v)| attribute(k, v)).collect();
        let mut span = json!({
            "traceId": hex(&self.trace_id),
            "spanId": hex(&self.span_id),
            "name": self.name,
            "kind": self.kind as i32,
            "startTimeUnixNano": self.start.to_string(),
            "endTimeUnixNano": self.end.to_string(),
            "attributes": attributes,
            // STATUS_CODE_ERROR is 2, UNSET 0.
            "status": match &self.error {
                Some(message) => json!({"code": 2, "message": message}),
                None => json!({"code": 0}),
            },
        });
        if let Some(parent) = self.parent {
            span["parentSpanId"] = Value::String(hex(&parent));
        }
        span
    }
}

fn attribute(key: &str, value: &AttrValue) -> Value {
    let value = match value {
        AttrValue::Str(s) => json!({"stringValue": s}),
        // OTLP/JSON writes 64-bit integers as strings.
        AttrValue::Int(i) => json!({"intValue": i.to_string()}),
        AttrValue::Float(f) => json!({"doubleValue": f}),
    };
    json!({"key": key, "value": value})
}

/// How spans are exported.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// The collector's OTLP/HTTP base (`http://127.0.0.1:4318`); spans go to `/v1/traces` under it.
    pub endpoint: reqwest::Url,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Spans waiting before new ones are dropped.
    pub queue: usize,
    /// Spans per export request.
    pub batch: usize,
    /// Longest wait before a partial batch is sent.
    pub interval: Duration,
    /// Longest wait for the collector's answer.
    pub timeout: Duration,
}

/// Counts of what the exporter did, since start.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped: the queue was full, or the collector refused or could not be reached.
    pub dropped: AtomicU64,
}

/// The handle the request path holds.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: mpsc::Sender<SpanData>,
    stats: Arc<ExportStats>,
}

impl Exporter {
    /// Starts the export task; it ends when every handle is dropped, after sending what is queued.
    pub fn start(client: reqwest::Client, settings: ExportSettings) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let stats = Arc::new(ExportStats::default());
        tokio::spawn(run(client, settings, rx, Arc::clone(&stats)));
        Self { tx, stats }
    }

    /// Queues `span` for export, never waiting.
    pub fn export(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What was exported and dropped so far.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }
}

async fn run(
    client: reqwest::Client,
    settings: ExportSettings,
    mut rx: mpsc::Receiver<SpanData>,
    stats: Arc<ExportStats>,
) {
    let url = match settings.endpoint.join("v1/traces") {
        Ok(url) => url,
        Err(_) => return,
    };
    let mut batch = Vec::with_capacity(settings.batch);
    loop {
        // Wait for a first span, then gather more for at most `interval`.
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + settings.interval;
        while batch.len() < settings.batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [attribute("service.name", &AttrValue::Str(settings.service_name.clone()))]},
            "scopeSpans": [{
                "scope": {"name": "sluice", "version": env!("CARGO_PKG_VERSION")},
                "spans": batch.iter().map(SpanData::to_otlp).collect::<Vec<_>>(),
            }],
        }]});
        let count = batch.len() as u64;
        batch.clear();
        let sent = client
            .post(url.clone())
            .timeout(settings.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => {
                stats.exported.fetch_add(count, Ordering::Relaxed);
            }
            // Traces are worth less than the gateway's memory: a batch the collector did not take is dropped.
            Ok(answer) => {
                stats.dropped.fetch_add(count, Ordering::Relaxed);
                tracing::debug!(status = answer.status().as_u16(), "the trace collector refused spans");
            }
            Err(error) => {
                stats.dropped.fetch_add(count, Ordering::Relaxed);
                tracing::debug!(timeout = error.is_timeout(), "the trace collector could not be reached");
            }
        }
    }
}

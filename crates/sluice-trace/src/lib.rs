//! Traces: each request's place in a W3C trace ([`RequestTrace`], kept in a task-local so the router and
//! the transport below need no extra parameters), and OpenTelemetry spans exported over OTLP/HTTP JSON
//! from a bounded queue ([`Exporter`]).
//!
//! OTLP's JSON encoding is written here with `serde_json` instead of the `opentelemetry-otlp` crate:
//! the gateway's spans are built once per request from what the ledger already knows, so an SDK's span
//! processors, propagators and protobuf/gRPC stacks would add a large dependency tree for no behaviour
//! the gateway uses.

mod context;
mod export;

pub use crate::context::{
    AttemptSpan, RequestTrace, SpanId, TraceId, begin_attempt, current, hex, parse_traceparent, scope, unix_nanos,
    upstream_traceparent,
};
pub use crate::export::{AttrValue, ExportSettings, ExportStats, Exporter, SpanData, SpanKind};

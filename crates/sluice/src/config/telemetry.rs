//! `[telemetry]`: OpenTelemetry traces over OTLP/HTTP (JSON) when `otlp_endpoint` is set.

use serde::Deserialize;

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`); spans go to `/v1/traces` under it.
    /// Unset: no traces. `OTEL_EXPORTER_OTLP_ENDPOINT` overrides it.
    pub otlp_endpoint: Option<String>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Spans waiting for export before new ones are dropped.
    pub queue: usize,
    /// Spans per export request.
    pub batch: usize,
    /// Longest wait before a partial batch is sent.
    pub export_interval_ms: u64,
    /// Longest wait for the collector to answer an export.
    pub export_timeout_ms: u64,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "sluice".to_owned(),
            queue: 2048,
            batch: 512,
            export_interval_ms: 1000,
            export_timeout_ms: 5000,
        }
    }
}

impl RawTelemetry {
    /// Every problem of the table, as (key, message).
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: &str| problems.push((format!("telemetry.{key}"), message.to_owned()));
        if let Some(endpoint) = &self.otlp_endpoint
            && parse_endpoint(endpoint).is_none()
        {
            problem(
                "otlp_endpoint",
                "must be an http:// or https:// URL like http://127.0.0.1:4318",
            );
        }
        if self.service_name.is_empty() {
            problem("service_name", "must not be empty");
        }
        for (key, value) in [
            ("queue", self.queue as u64),
            ("batch", self.batch as u64),
            ("export_interval_ms", self.export_interval_ms),
            ("export_timeout_ms", self.export_timeout_ms),
        ] {
            if value == 0 {
                problem(key, "must be greater than 0");
            }
        }
        problems
    }
}

/// An OTLP/HTTP base URL, with a trailing slash so `v1/traces` joins under any path it has.
pub fn parse_endpoint(endpoint: &str) -> Option<reqwest::Url> {
    let base = if endpoint.ends_with('/') {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/")
    };
    reqwest::Url::parse(&base)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
}

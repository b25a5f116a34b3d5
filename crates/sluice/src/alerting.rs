//! `[[alerts]]` turned into running watches, and `sluice alerts test`.

use std::sync::Arc;

use sluice_alerts::{Alert, Event, Retry, Settings, Sink, share_to_bp};

use crate::config::{Config, MissingVar, Secret, resolve_secret};
use crate::wiring::{Gateway, WiringError, http_client};

/// The webhooks of `[[alerts]]` with their `env:` values read through `env`. A webhook whose URL or secret
/// names an unset variable is left out with a warning (a missing secret never means sending unsigned).
pub fn sinks(config: &Config, env: &dyn Fn(&str) -> Option<String>, warnings: &mut Vec<String>) -> Vec<Sink> {
    let mut sinks = Vec::new();
    for (i, alert) in config.alerts.iter().enumerate() {
        let mut missing = |var: MissingVar| {
            let message = format!("alerts[{i}] is disabled: {var}");
            tracing::warn!("{message}");
            warnings.push(message);
        };
        let url = match resolve_secret(&alert.url, env) {
            Secret::Value(value) => value,
            Secret::Missing(var) => {
                missing(var);
                continue;
            }
        };
        let secret = match alert.secret.as_deref().map(|raw| resolve_secret(raw, env)) {
            None => None,
            Some(Secret::Value(value)) => Some(value),
            Some(Secret::Missing(var)) => {
                missing(var);
                continue;
            }
        };
        use secrecy::ExposeSecret;
        let Ok(url) = reqwest::Url::parse(url.expose_secret()) else {
            let message = format!("alerts[{i}] is disabled: its url is not an http:// or https:// URL");
            tracing::warn!("{message}");
            warnings.push(message);
            continue;
        };
        let mut budget_bp: Vec<u32> = alert.budget.iter().map(|share| share_to_bp(*share)).collect();
        budget_bp.sort_unstable();
        budget_bp.dedup();
        sinks.push(Sink {
            url,
            secret,
            budget_bp,
            keys: alert.keys,
            subscriptions: alert.subscriptions,
        });
    }
    sinks
}

impl Gateway {
    /// Starts the budget and key watches of `[[alerts]]`, if any webhook is configured and usable. Budgets
    /// are watched only with a store attached.
    pub fn watch_alerts(
        &mut self,
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, WiringError> {
        let sinks = sinks(config, env, &mut self.warnings);
        let Some(interval) = config.alerts.iter().map(|a| a.interval()).min() else {
            return Ok(None);
        };
        if sinks.is_empty() {
            return Ok(None);
        }
        let settings = Settings {
            sinks,
            interval,
            retry: Retry::default(),
            gateway: sluice_alerts::host_name(),
        };
        let client = http_client(config.timeouts.connect)?;
        let store = self.tenancy.as_ref().map(|t| t.store.clone());
        Ok(Some(sluice_alerts::spawn(
            settings,
            client,
            store,
            Arc::clone(&self.router),
        )))
    }
}

/// `sluice alerts test`: one test alert to every webhook, retried as alerts are; one line per webhook
/// (its host only). Fails if any webhook did not take it.
pub async fn send_test(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    let mut warnings = Vec::new();
    let sinks = sinks(config, env, &mut warnings);
    for warning in &warnings {
        println!("warning: {warning}");
    }
    if sinks.is_empty() {
        anyhow::bail!("no usable [[alerts]] webhook in {}", config.path.display());
    }
    let client = http_client(config.timeouts.connect)?;
    let alert = Alert::new(Event::Test, &sluice_alerts::host_name(), chrono::Utc::now());
    let mut failed = 0;
    for sink in &sinks {
        let signed = if sink.secret.is_some() { ", signed" } else { "" };
        // Three tries: an operator at a terminal wants the answer in seconds, not after a minute of backoff.
        let retry = Retry {
            attempts: 3,
            ..Retry::default()
        };
        match sluice_alerts::deliver(&client, sink, &alert, retry).await {
            Ok(status) => println!("{}: delivered ({status}{signed})", sink.host()),
            Err(error) => {
                failed += 1;
                println!("{}: {error}", sink.host());
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} webhook(s) did not take the test alert", sinks.len());
    }
    Ok(())
}

impl Gateway {
    /// Exports a span per request over OTLP/HTTP when `[telemetry] otlp_endpoint` (or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`) is set; [`crate::app`] then traces every request.
    pub fn export_traces(&mut self, config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<(), WiringError> {
        let telemetry = &config.telemetry;
        let from_env = env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|e| !e.is_empty());
        let Some(endpoint) = from_env.or_else(|| telemetry.otlp_endpoint.clone()) else {
            return Ok(());
        };
        let Some(endpoint) = crate::config::parse_endpoint(&endpoint) else {
            let message = "OTEL_EXPORTER_OTLP_ENDPOINT is not an http:// or https:// URL: traces are off".to_owned();
            tracing::warn!("{message}");
            self.warnings.push(message);
            return Ok(());
        };
        let settings = sluice_trace::ExportSettings {
            endpoint,
            service_name: telemetry.service_name.clone(),
            queue: telemetry.queue,
            batch: telemetry.batch,
            interval: std::time::Duration::from_millis(telemetry.export_interval_ms),
            timeout: std::time::Duration::from_millis(telemetry.export_timeout_ms),
        };
        let exporter = sluice_trace::Exporter::start(http_client(config.timeouts.connect)?, settings);
        let systems = config
            .providers
            .iter()
            .map(|p| (p.name.clone(), gen_ai_system(p).to_owned()))
            .collect();
        self.traces = Some(sluice_pipeline::TraceSink::new(exporter, systems));
        Ok(())
    }
}

/// The GenAI semantic conventions' `gen_ai.system` of a provider: the convention's name for the vendors
/// it names, else the provider's kind.
fn gen_ai_system(provider: &crate::config::ProviderConfig) -> &'static str {
    match &provider.upstream {
        crate::config::Upstream::Vendor { spec, .. } => match spec.kind {
            "azure" => "az.ai.openai",
            "gemini" => "gcp.gemini",
            other => other,
        },
        crate::config::Upstream::Simulated(_) => "simulated",
    }
}

//! `[[alerts]]`: webhooks told when a tenant's spend crosses a threshold of its budget, when an upstream
//! key or deployment is taken out or recovers, and when a tenant asks for a service needing approval. Several tables are allowed; each says what it watches.

use std::time::Duration;

use serde::Deserialize;

/// `[[alerts]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    /// The webhook (`https://hooks.slack.com/services/...`); `env:VAR` reads it from the environment, the
    /// place for a URL that carries a token. (`webhook` is accepted as another name for it.)
    #[serde(alias = "webhook")]
    pub url: String,
    /// Signs each body with HMAC-SHA256 (`x-sluice-signature: sha256=<hex>`); `env:VAR` allowed.
    #[serde(default)]
    pub secret: Option<String>,
    /// Thresholds of a tenant's budget to announce, as shares (0.8 = 80%); `[]` watches no budget.
    #[serde(default = "default_thresholds")]
    pub budget: Vec<f64>,
    /// Whether upstream keys and deployments taken out, and their recoveries, are announced.
    #[serde(default = "default_keys")]
    pub keys: bool,
    /// Whether tenants' subscription requests waiting for an admin are announced.
    #[serde(default = "default_keys")]
    pub subscriptions: bool,
    /// How often budgets and keys are checked; the smallest of every table applies.
    #[serde(default = "default_interval")]
    pub check_interval_ms: u64,
}

fn default_thresholds() -> Vec<f64> {
    sluice_alerts::DEFAULT_THRESHOLDS.to_vec()
}

fn default_keys() -> bool {
    true
}

fn default_interval() -> u64 {
    10_000
}

impl RawAlert {
    /// Every problem of table `index`, as (key, message).
    pub(crate) fn problems(&self, index: usize) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| problems.push((format!("alerts[{index}].{key}"), message));
        if !self.url.starts_with("env:") {
            match reqwest::Url::parse(&self.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
                // The URL itself is not repeated: a webhook's path is its secret.
                _ => problem("url", "must be an http:// or https:// URL, or env:VAR".to_owned()),
            }
        }
        if self.secret.as_deref().is_some_and(str::is_empty) {
            problem("secret", "must not be empty (leave it out to send unsigned)".to_owned());
        }
        for (i, share) in self.budget.iter().enumerate() {
            if !(share.is_finite() && *share > 0.0 && *share <= 10.0) {
                problem(
                    &format!("budget[{i}]"),
                    format!("must be a share of the budget above 0 and at most 10 (0.8 is 80%); got {share}"),
                );
            }
        }
        if self.check_interval_ms == 0 {
            problem("check_interval_ms", "must be greater than 0".to_owned());
        }
        if self.budget.is_empty() && !self.keys && !self.subscriptions {
            problem(
                "budget",
                "watches nothing: give thresholds or set keys or subscriptions = true".to_owned(),
            );
        }
        problems
    }

    /// How often to check.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const MODEL: &str = "[[providers]]\nname = \"sim\"\nkind = \"simulated\"\n\n[[models]]\nname = \"m\"\n\
                         [[models.deployments]]\nprovider = \"sim\"\nmodel = \"x\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), &format!("{MODEL}\n{extra}"))
    }

    #[test]
    fn alerts_telemetry_and_request_logs_parse_with_their_defaults() {
        let config = parse(
            "[[alerts]]\nwebhook = \"https://hooks.example.com/T/secret\"\n\n[[alerts]]\nurl = \"env:HOOK\"\n\
             budget = [0.9]\nkeys = false\ncheck_interval_ms = 500\n\n[telemetry]\notlp_endpoint = \
             \"http://127.0.0.1:4318\"\n",
        )
        .unwrap();
        assert_eq!(config.alerts.len(), 2);
        assert_eq!(config.alerts[0].budget, [0.5, 0.8, 1.0]);
        assert!(config.alerts[0].keys);
        assert_eq!(config.alerts[1].budget, [0.9]);
        assert_eq!(config.telemetry.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(config.telemetry.service_name, "sluice");
        assert_eq!(config.redact.len(), crate::config::DEFAULT_REDACT.len());
        assert!(parse("").unwrap().alerts.is_empty());
    }

    #[test]
    fn mistakes_are_named_by_key_and_the_webhook_is_not_repeated() {
        let unknown = parse("[[alerts]]\nurl = \"https://h.example.com/x\"\nthreshold = 0.8\n")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field `threshold`"), "{unknown}");
        let invalid = parse(
            "[[alerts]]\nurl = \"ftp://h.example.com/T0/s3cret\"\nbudget = [0.0, 20]\ncheck_interval_ms = 0\n\n\
             [telemetry]\notlp_endpoint = \"collector\"\nqueue = 0\n\n[request_logs]\nredact = [\"(unclosed\"]\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "alerts[0].url",
            "alerts[0].budget[0]",
            "alerts[0].budget[1]",
            "alerts[0].check_interval_ms",
            "telemetry.otlp_endpoint",
            "telemetry.queue",
            "request_logs.redact[0]",
        ] {
            assert!(invalid.contains(key), "{key}: {invalid}");
        }
        assert!(!invalid.contains("s3cret"), "{invalid}");
        let unknown = parse("[telemetry]\nendpoint = \"http://x\"\n").unwrap_err().to_string();
        assert!(unknown.contains("unknown field `endpoint`"), "{unknown}");
    }
}

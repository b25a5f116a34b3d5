//! `[[alerts]]`: webhooks told when a tenant's spend crosses a threshold of its budget and when an upstream
//! key or deployment is taken out or recovers. Several tables are allowed; each says what it watches.

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
        if self.budget.is_empty() && !self.keys {
            problem(
                "budget",
                "watches nothing: give thresholds or set keys = true".to_owned(),
            );
        }
        problems
    }

    /// How often to check.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }
}

//! `[redis]`: budgets shared by every replica through Redis. Without the table (and without
//! `SLUICE_REDIS_URL`), each process keeps its budgets in memory.

use std::time::Duration;

use serde::Deserialize;
use sluice_budget::RedisSettings;

/// `[redis]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedis {
    /// `redis://[:password@]host:port[/db]`; `SLUICE_REDIS_URL` overrides it (the place for a password).
    pub url: String,
    /// Every key and the channel start with it, so several gateways can share one Redis.
    pub prefix: String,
    /// The longest wait for any Redis call; past it, a replica serves from its local share.
    pub timeout_ms: u64,
    /// The longest wait for a connection.
    pub connect_timeout_ms: u64,
    /// How often a replica tells the others it is alive; three missed beats and it counts as gone.
    pub heartbeat_ms: u64,
    /// How long a lease of a shared budget serves requests before what is left goes back.
    pub lease_ms: u64,
    /// The largest lease, as a share of a limit divided by the replicas alive (0 to 1).
    pub lease_share: f64,
}

impl Default for RawRedis {
    fn default() -> Self {
        let defaults = RedisSettings::default();
        Self {
            url: defaults.url,
            prefix: defaults.prefix,
            timeout_ms: defaults.timeout.as_millis() as u64,
            connect_timeout_ms: defaults.connect_timeout.as_millis() as u64,
            heartbeat_ms: defaults.heartbeat.as_millis() as u64,
            lease_ms: defaults.lease.as_millis() as u64,
            lease_share: defaults.lease_share,
        }
    }
}

impl RawRedis {
    /// Every problem of the table, as (key, message).
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| problems.push((format!("redis.{key}"), message));
        if !is_redis_url(&self.url) {
            problem(
                "url",
                "must be a URL like redis://127.0.0.1:6379 (TLS, rediss://, is not built in)".to_owned(),
            );
        }
        if self.prefix.is_empty() || self.prefix.chars().any(|c| c.is_whitespace()) {
            problem("prefix", "must be a non-empty word without spaces".to_owned());
        }
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("heartbeat_ms", self.heartbeat_ms),
            ("lease_ms", self.lease_ms),
        ] {
            if value == 0 {
                problem(key, "must be greater than 0".to_owned());
            } else if value > super::MAX_DURATION_MS {
                problem(key, format!("must be at most {} (one day)", super::MAX_DURATION_MS));
            }
        }
        if !(self.lease_share > 0.0 && self.lease_share <= 1.0) {
            problem(
                "lease_share",
                format!("must be above 0 and at most 1; got {}", self.lease_share),
            );
        }
        problems
    }

    /// The backend's settings, with the URL `SLUICE_REDIS_URL` gives when set.
    pub fn settings(&self, url: Option<String>) -> RedisSettings {
        RedisSettings {
            url: url.unwrap_or_else(|| self.url.clone()),
            prefix: self.prefix.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            lease: Duration::from_millis(self.lease_ms),
            lease_share: self.lease_share,
        }
    }
}

/// Whether `url` is a plain Redis URL the client can use.
pub(crate) fn is_redis_url(url: &str) -> bool {
    url.strip_prefix("redis://").is_some_and(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const MODEL: &str = "[[providers]]\nname = \"up\"\nkind = \"openai\"\nkeys = [\"k\"]\n[[models]]\nname = \"m\"\n[[models.deployments]]\nprovider = \"up\"\nmodel = \"gpt-4o\"\n";

    fn problems(table: &str) -> String {
        match Config::parse(Path::new("sluice.toml"), &format!("{MODEL}[redis]\n{table}")) {
            Ok(_) => String::new(),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn the_table_has_defaults_and_every_bad_value_is_named() {
        let config = Config::parse(Path::new("sluice.toml"), &format!("{MODEL}[redis]\n")).unwrap();
        let settings = config.redis.as_ref().unwrap().settings(None);
        assert_eq!(settings, sluice_budget::RedisSettings::default());
        assert_eq!(
            config
                .redis
                .unwrap()
                .settings(Some("redis://other:6379".to_owned()))
                .url,
            "redis://other:6379",
            "SLUICE_REDIS_URL wins"
        );
        assert!(problems("url = \"http://x\"").contains("redis.url"));
        assert!(problems("url = \"rediss://x:6379\"").contains("TLS"));
        assert!(problems("lease_share = 0.0").contains("redis.lease_share"));
        assert!(problems("timeout_ms = 0").contains("redis.timeout_ms"));
        assert!(problems("prefix = \"a b\"").contains("redis.prefix"));
        assert!(problems("colour = 1").contains("colour"), "unknown keys are refused");
        assert_eq!(problems("url = \"redis://127.0.0.1:6379\"\nlease_ms = 500"), "");
    }
}

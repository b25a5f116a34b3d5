//! `config/sluice.toml`: read into raw serde structs that reject unknown keys, then validated into the
//! runtime settings ([`Config`]), which is all wiring reads. Every error names the file, the key and the
//! problem. Providers and models: [`providers`].

mod providers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use sluice_store::WriterConfig;

pub use providers::{
    DeploymentConfig, ModelConfig, ProviderConfig, ProviderKind, RawDeployment, RawModel, RawProvider, RawSimulate,
    Upstream,
};

mod alerts;
mod redis;
mod request_logs;
mod telemetry;
pub use self::alerts::RawAlert;
pub use self::redis::RawRedis;
pub use self::request_logs::{DEFAULT_REDACT, RawRequestLogs};
pub use self::telemetry::{RawTelemetry, parse_endpoint};

/// The longest duration a `*_ms` setting may name: one day.
pub(crate) const MAX_DURATION_MS: u64 = 86_400_000;

/// The most usage rows `[store] batch_rows` may name: the usage writer's queue holds 4,000.
const MAX_BATCH_ROWS: usize = 1_000;

/// The configuration as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`
    #[serde(default)]
    pub server: RawServer,
    /// `[store]`
    #[serde(default)]
    pub store: RawStore,
    /// `[auth]`
    #[serde(default)]
    pub auth: RawAuth,
    /// `[upstream]`
    #[serde(default)]
    pub upstream: RawUpstream,
    /// `[log]`
    #[serde(default)]
    pub log: RawLog,
    /// `[[providers]]`
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    /// `[[models]]`
    #[serde(default)]
    pub models: Vec<RawModel>,
    /// `[prompts]`
    #[serde(default)]
    pub prompts: RawPrompts,
    /// `[redis]`: budgets shared between replicas; absent, each process keeps its own.
    #[serde(default)]
    pub redis: Option<RawRedis>,
    /// `[[alerts]]`: webhooks for budget thresholds and upstream key health.
    #[serde(default)]
    pub alerts: Vec<RawAlert>,
    /// `[telemetry]`: OpenTelemetry traces.
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// `[request_logs]`: redaction of tenants' opt-in request logs.
    #[serde(default)]
    pub request_logs: RawRequestLogs,
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Address to listen on.
    pub listen: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Longest time to a response head.
    pub request_timeout_ms: u64,
    /// How long in-flight requests may run on after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// How long the usage ledger may take to flush after draining; what is left is spooled.
    pub shutdown_flush_ms: u64,
    /// Longest time from a request head's first byte (or a new connection) to the whole head.
    pub header_timeout_ms: u64,
    /// Longest time a connection may stay open with no request in flight.
    pub keep_alive_timeout_ms: u64,
    /// Longest time an answer may wait on a client that reads none of it.
    pub send_timeout_ms: u64,
    /// Connections open at once.
    pub max_connections: usize,
    /// Requests in flight at once.
    pub max_in_flight: usize,
    /// HTTP/2 streams in flight at once on one connection.
    pub max_concurrent_streams: u32,
    /// The largest request head (HTTP/1.1) or header list (HTTP/2).
    pub max_header_bytes: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        let serve = sluice_server::ServeSettings::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout_ms: 600_000,
            shutdown_grace_ms: ms(serve.grace),
            shutdown_flush_ms: 5_000,
            header_timeout_ms: ms(serve.header_timeout),
            keep_alive_timeout_ms: ms(serve.keep_alive_timeout),
            send_timeout_ms: ms(serve.send_timeout),
            max_connections: serve.max_connections,
            max_in_flight: serve.max_in_flight,
            max_concurrent_streams: serve.max_concurrent_streams,
            max_header_bytes: serve.max_header_bytes,
        }
    }
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// Database URL; `SLUICE_DATABASE_URL` overrides it.
    pub url: String,
    /// Where usage rows wait while the database is unreachable.
    pub spool: PathBuf,
    /// The price list costs are computed from.
    pub prices: PathBuf,
    /// How often virtual keys and tenants are re-read from the database.
    pub refresh_ms: u64,
    /// The longest a usage row waits in the gateway before it is written to the ledger.
    pub flush_ms: u64,
    /// The most usage rows written in one insert; a full batch is written without waiting for `flush_ms`.
    pub batch_rows: usize,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: "sqlite://data/sluice.db".to_owned(),
            spool: PathBuf::from("data/usage.spool"),
            prices: PathBuf::from("config/prices.toml"),
            refresh_ms: 2_000,
            flush_ms: WriterConfig::DEFAULT_FLUSH_MS,
            batch_rows: WriterConfig::DEFAULT_BATCH_SIZE,
        }
    }
}

/// `[auth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// The admin key (`env:VAR` or literal).
    pub admin_key: Option<String>,
    /// Client keys accepted on `/v1` (`env:VAR` or literal).
    pub keys: Vec<String>,
    /// Failed authentications one client address may make per window before it is answered 429; 0
    /// turns the throttle off.
    pub max_failures: u32,
    /// The window `max_failures` counts over.
    pub failure_window_ms: u64,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            admin_key: None,
            keys: Vec::new(),
            max_failures: 20,
            failure_window_ms: 60_000,
        }
    }
}

/// `[upstream]`: how upstream calls are bounded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// Opening a connection.
    pub connect_timeout_ms: u64,
    /// From request to response head.
    pub first_byte_timeout_ms: u64,
    /// Between two reads of a body or stream.
    pub idle_timeout_ms: u64,
    /// Upstream calls per client request, failovers included.
    pub max_attempts: u32,
    /// First step of the backoff after a 429 without a retry time.
    pub backoff_base_ms: u64,
    /// Largest step of that backoff.
    pub backoff_max_ms: u64,
    /// Consecutive failures that open a deployment's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps a deployment out before a probe.
    pub breaker_cooloff_ms: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 300_000,
            idle_timeout_ms: 60_000,
            max_attempts: 3,
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            breaker_failures: 5,
            breaker_cooloff_ms: 30_000,
        }
    }
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `sluice=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[prompts]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPrompts {
    /// Folder of prompt templates, relative to the working directory.
    pub dir: PathBuf,
    /// How often the folder is checked for changes; 0 turns reloading off.
    pub reload_ms: u64,
}

impl Default for RawPrompts {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("prompts"),
            reload_ms: 1000,
        }
    }
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected shape.
    #[error("{}:{line}: {key}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// The key path, like `providers[0].kind`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Values that parse but do not fit together.
    #[error("{}", render_problems(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each problem: key path and message.
        problems: Vec<(String, String)>,
    },
}

fn render_problems(path: &Path, problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(key, message)| format!("{}: {key}: {message}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A resolved secret: its value, or the variable that should have held it.
#[derive(Debug)]
pub enum Secret {
    /// The value.
    Value(SecretString),
    /// `env:VAR` with VAR unset or empty.
    Missing(MissingVar),
}

/// The variable an `env:VAR` secret named, unset or empty. Displays as the reason, for warnings.
#[derive(Debug)]
pub struct MissingVar {
    /// The variable's name.
    pub var: String,
    /// Set, but to nothing (as docker compose passes `KEY=` for a variable it was not given).
    pub empty: bool,
}

impl std::fmt::Display for MissingVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.empty { "is set but empty" } else { "is not set" };
        write!(f, "environment variable {} {state}", self.var)
    }
}

/// Resolves `env:VAR` through `env`, or takes a literal value as it is.
pub fn resolve_secret(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Secret {
    match raw.strip_prefix("env:") {
        Some(var) => match env(var.trim()) {
            Some(value) if !value.is_empty() => Secret::Value(SecretString::from(value)),
            value => Secret::Missing(MissingVar {
                var: var.trim().to_owned(),
                empty: value.is_some(),
            }),
        },
        None => Secret::Value(SecretString::from(raw.to_owned())),
    }
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// HTTP limits.
    pub max_body_bytes: usize,
    /// Time to a response head.
    pub request_timeout: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// How long the ledger may take to flush at shutdown.
    pub shutdown_flush: Duration,
    /// How the server bounds its clients.
    pub serve: sluice_server::ServeSettings,
    /// Upstream timeouts.
    pub timeouts: sluice_providers::Timeouts,
    /// Upstream calls per request.
    pub max_attempts: u32,
    /// Backoff and circuit breaking of upstream failures.
    pub failover: FailoverConfig,
    /// `[[providers]]`, each with its vendor from the registry and its defaults resolved.
    pub providers: Vec<ProviderConfig>,
    /// `[[models]]`, each deployment naming a configured provider.
    pub models: Vec<ModelConfig>,
    /// `[store]`
    pub store: StoreConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[prompts]`
    pub prompts: PromptsConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[redis]`, checked: budgets shared between replicas; absent, each process keeps its own (unless
    /// `SLUICE_REDIS_URL` is set).
    pub redis: Option<RawRedis>,
    /// `[[alerts]]`, checked; `env:` values are resolved when the gateway starts.
    pub alerts: Vec<RawAlert>,
    /// `[telemetry]`, checked.
    pub telemetry: RawTelemetry,
    /// `[request_logs]` redaction patterns, compiled.
    pub redact: Vec<regex::Regex>,
}

/// How upstream failures are backed off and broken off, from `[upstream]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverConfig {
    /// First step of the backoff after a 429 without a retry time.
    pub backoff_base: Duration,
    /// Largest step of that backoff.
    pub backoff_max: Duration,
    /// Consecutive failures that open a deployment's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps a deployment out before a probe.
    pub breaker_cooloff: Duration,
}

/// `[store]`, validated.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Database URL; `SLUICE_DATABASE_URL` overrides it.
    pub url: String,
    /// Where usage rows wait while the database is unreachable.
    pub spool: PathBuf,
    /// The price list costs are computed from.
    pub prices: PathBuf,
    /// How often virtual keys and tenants are re-read from the database.
    pub refresh: Duration,
    /// The longest a usage row waits before it is written.
    pub flush: Duration,
    /// The most usage rows per insert.
    pub batch_rows: usize,
}

/// `[auth]`: the keys as written (`env:VAR` or a literal), resolved when the gateway is built.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The admin key.
    pub admin_key: Option<String>,
    /// Client keys accepted on `/v1`.
    pub keys: Vec<String>,
    /// Failed authentications one client address may make per window before it is answered 429; 0
    /// turns the throttle off.
    pub max_failures: u32,
    /// The window `max_failures` counts over.
    pub failure_window: Duration,
}

/// `[prompts]`, validated.
#[derive(Debug, Clone)]
pub struct PromptsConfig {
    /// Folder of prompt templates, relative to the working directory.
    pub dir: PathBuf,
    /// How often the folder is checked for changes; `None` when reloading is off.
    pub reload: Option<Duration>,
}

/// `[log]`, validated.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// A tracing filter such as `info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Config {
    /// Reads and validates the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates configuration `text` read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw = parse_raw(path, text)?;
        validate(path, raw)
    }
}

fn parse_raw(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    let parse_error = |key: String, message: String, span: Option<std::ops::Range<usize>>| ConfigError::Parse {
        path: path.to_owned(),
        line: span.map_or(1, |s| line_of(text, s.start)),
        key,
        message,
    };
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| parse_error("(syntax)".to_owned(), e.message().to_owned(), e.span()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        parse_error(
            if key == "." { "(top level)".to_owned() } else { key },
            inner.message().to_owned(),
            inner.span(),
        )
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn validate(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let mut problems: providers::Problems = Vec::new();
    let mut problem = |key: String, message: String| problems.push((key, message));

    let listen = match raw.server.listen.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problem(
                "server.listen".to_owned(),
                format!("`{}` is not an address like 127.0.0.1:8080", raw.server.listen),
            );
            None
        }
    };
    // Durations, each with whether zero means something (off, no wait) or would spin or never wait. Past
    // a day is a typo, and a huge one overflows the clock arithmetic it feeds.
    for (key, value, zero_allowed) in [
        ("server.request_timeout_ms", raw.server.request_timeout_ms, false),
        ("server.shutdown_grace_ms", raw.server.shutdown_grace_ms, true),
        ("server.shutdown_flush_ms", raw.server.shutdown_flush_ms, false),
        ("server.header_timeout_ms", raw.server.header_timeout_ms, false),
        ("server.keep_alive_timeout_ms", raw.server.keep_alive_timeout_ms, false),
        ("server.send_timeout_ms", raw.server.send_timeout_ms, false),
        ("store.refresh_ms", raw.store.refresh_ms, false),
        ("store.flush_ms", raw.store.flush_ms, false),
        ("auth.failure_window_ms", raw.auth.failure_window_ms, false),
        ("upstream.connect_timeout_ms", raw.upstream.connect_timeout_ms, false),
        (
            "upstream.first_byte_timeout_ms",
            raw.upstream.first_byte_timeout_ms,
            false,
        ),
        ("upstream.idle_timeout_ms", raw.upstream.idle_timeout_ms, false),
        // Checked against each other below.
        ("upstream.backoff_base_ms", raw.upstream.backoff_base_ms, true),
        ("upstream.backoff_max_ms", raw.upstream.backoff_max_ms, true),
        ("upstream.breaker_cooloff_ms", raw.upstream.breaker_cooloff_ms, true),
        ("prompts.reload_ms", raw.prompts.reload_ms, true),
    ] {
        if value == 0 && !zero_allowed {
            problem(key.to_owned(), "must be greater than 0".to_owned());
        } else if value > MAX_DURATION_MS {
            problem(key.to_owned(), format!("must be at most {MAX_DURATION_MS} (one day)"));
        }
    }
    for (key, value) in [
        ("server.max_body_bytes", raw.server.max_body_bytes as u64),
        ("server.max_connections", raw.server.max_connections as u64),
        ("server.max_in_flight", raw.server.max_in_flight as u64),
        (
            "server.max_concurrent_streams",
            u64::from(raw.server.max_concurrent_streams),
        ),
    ] {
        if value == 0 {
            problem(key.to_owned(), "must be greater than 0".to_owned());
        }
    }
    if raw.server.max_header_bytes < 1024 {
        problem("server.max_header_bytes".to_owned(), "must be at least 1024".to_owned());
    }
    if !(1..=MAX_BATCH_ROWS).contains(&raw.store.batch_rows) {
        problem(
            "store.batch_rows".to_owned(),
            format!("must be from 1 to {MAX_BATCH_ROWS}"),
        );
    }
    if raw.upstream.breaker_failures == 0 {
        problem("upstream.breaker_failures".to_owned(), "must be at least 1".to_owned());
    }
    if raw.upstream.backoff_base_ms == 0 || raw.upstream.backoff_max_ms < raw.upstream.backoff_base_ms {
        problem(
            "upstream.backoff_base_ms".to_owned(),
            "must be greater than 0 and at most upstream.backoff_max_ms".to_owned(),
        );
    }
    if raw.upstream.max_attempts == 0 {
        problem("upstream.max_attempts".to_owned(), "must be at least 1".to_owned());
    }

    let RawConfig {
        server,
        store,
        auth,
        upstream,
        log,
        providers: raw_providers,
        models: raw_models,
        prompts,
        redis,
        alerts,
        telemetry,
        request_logs,
    } = raw;
    let providers = providers::validate_providers(raw_providers, &mut problems);
    let models = providers::validate_models(raw_models, &providers, &mut problems);

    if let Some(redis) = &redis {
        problems.extend(redis.problems());
    }
    for (i, alert) in alerts.iter().enumerate() {
        problems.extend(alert.problems(i));
    }
    problems.extend(telemetry.problems());
    let redact = request_logs.compile().unwrap_or_else(|found| {
        problems.extend(found);
        Vec::new()
    });

    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        });
    }
    Ok(Config {
        path: path.to_owned(),
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        max_body_bytes: server.max_body_bytes,
        request_timeout: Duration::from_millis(server.request_timeout_ms),
        shutdown_grace: Duration::from_millis(server.shutdown_grace_ms),
        shutdown_flush: Duration::from_millis(server.shutdown_flush_ms),
        serve: sluice_server::ServeSettings {
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            keep_alive_timeout: Duration::from_millis(server.keep_alive_timeout_ms),
            send_timeout: Duration::from_millis(server.send_timeout_ms),
            max_connections: server.max_connections,
            max_in_flight: server.max_in_flight,
            max_concurrent_streams: server.max_concurrent_streams,
            max_header_bytes: server.max_header_bytes,
            grace: Duration::from_millis(server.shutdown_grace_ms),
        },
        timeouts: sluice_providers::Timeouts {
            connect: Duration::from_millis(upstream.connect_timeout_ms),
            first_byte: Duration::from_millis(upstream.first_byte_timeout_ms),
            idle: Duration::from_millis(upstream.idle_timeout_ms),
        },
        max_attempts: upstream.max_attempts,
        failover: FailoverConfig {
            backoff_base: Duration::from_millis(upstream.backoff_base_ms),
            backoff_max: Duration::from_millis(upstream.backoff_max_ms),
            breaker_failures: upstream.breaker_failures,
            breaker_cooloff: Duration::from_millis(upstream.breaker_cooloff_ms),
        },
        providers,
        models,
        store: StoreConfig {
            url: store.url,
            spool: store.spool,
            prices: store.prices,
            refresh: Duration::from_millis(store.refresh_ms),
            flush: Duration::from_millis(store.flush_ms),
            batch_rows: store.batch_rows,
        },
        auth: AuthConfig {
            admin_key: auth.admin_key,
            keys: auth.keys,
            max_failures: auth.max_failures,
            failure_window: Duration::from_millis(auth.failure_window_ms),
        },
        prompts: PromptsConfig {
            dir: prompts.dir,
            reload: (prompts.reload_ms > 0).then(|| Duration::from_millis(prompts.reload_ms)),
        },
        log: LogConfig {
            format: log.format,
            level: log.level,
        },
        redis,
        alerts,
        telemetry,
        redact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
keys = ["env:OPENAI_API_KEY"]

[[models]]
name = "gpt-4o-mini"
[[models.deployments]]
provider = "openai"
model = "gpt-4o-mini"
"#;

    fn error_of(text: &str) -> String {
        Config::parse(Path::new("config/sluice.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_shipped_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/sluice.toml");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.models.iter().any(|m| m.name == "sluice-demo"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn a_minimal_configuration_gets_defaults() {
        let config = Config::parse(Path::new("x.toml"), MINIMAL).unwrap();
        assert_eq!(config.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(config.timeouts.connect, Duration::from_secs(5));
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.models[0].deployments[0].weight, 1);
    }

    #[test]
    fn unknown_keys_are_rejected_with_file_line_and_key() {
        let text = MINIMAL.replace("kind = \"openai\"", "kind = \"openai\"\nbase_ulr = \"https://x\"");
        assert_eq!(
            error_of(&text),
            "config/sluice.toml:5: providers[0].base_ulr: unknown field `base_ulr`, expected one of `name`, `kind`, \
             `base_url`, `keys`, `api_version`, `stream_usage`, `simulate`"
        );
        let text = format!("[server]\nlisten = \"127.0.0.1:1\"\nport = 8080\n{MINIMAL}");
        let message = error_of(&text);
        assert!(
            message.starts_with("config/sluice.toml:3: server.port: unknown field `port`"),
            "{message}"
        );
    }

    #[test]
    fn wrong_types_and_unknown_kinds_name_the_key() {
        let text = format!("[server]\nmax_body_bytes = \"big\"\n{MINIMAL}");
        let message = error_of(&text);
        assert!(
            message.starts_with("config/sluice.toml:2: server.max_body_bytes: invalid type: string \"big\""),
            "{message}"
        );
        let message = error_of(&MINIMAL.replace("kind = \"openai\"", "kind = \"openia\""));
        assert!(
            message.starts_with("config/sluice.toml:4: providers[0].kind: unknown variant `openia`"),
            "{message}"
        );
    }

    #[test]
    fn durations_past_a_day_are_refused_by_name() {
        let text = format!("[upstream]\nbreaker_cooloff_ms = 18446744073709551615\n{MINIMAL}");
        let message = error_of(&text);
        assert!(
            message.contains("upstream.breaker_cooloff_ms: must be at most 86400000 (one day)"),
            "{message}"
        );
        // Zero is a duration that means something for some keys (no grace, no cool-off, no reload).
        let text = format!("[server]\nshutdown_grace_ms = 0\n[upstream]\nbreaker_cooloff_ms = 0\n{MINIMAL}");
        assert!(Config::parse(Path::new("x.toml"), &text).is_ok());
        let text = MINIMAL.replace(
            "name = \"gpt-4o-mini\"\n[[",
            "name = \"gpt-4o-mini\"\nmax_queue_ms = 100000000\n[[",
        );
        let message = error_of(&text);
        assert!(message.contains("models[0].max_queue_ms: must be at most"), "{message}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let message = error_of("[server\nlisten = 1");
        assert!(message.starts_with("config/sluice.toml:1: (syntax):"), "{message}");
    }

    #[test]
    fn missing_fields_are_named() {
        let message = error_of("[[providers]]\nname = \"x\"\n");
        assert!(message.contains("providers[0]: missing field `kind`"), "{message}");
    }

    #[test]
    fn values_that_do_not_fit_together_are_each_reported() {
        let text = r#"
[server]
listen = "localhost"
[upstream]
idle_timeout_ms = 0
[[providers]]
name = "a"
kind = "openai_compatible"
[[providers]]
name = "a"
kind = "openai"
keys = []
[providers.simulate]
latency_ms = 1
[[models]]
name = "m"
[[models.deployments]]
provider = "nope"
model = "x"
weight = 0
"#;
        let message = error_of(text);
        let expected = [
            "config/sluice.toml: server.listen: `localhost` is not an address like 127.0.0.1:8080",
            "config/sluice.toml: upstream.idle_timeout_ms: must be greater than 0",
            "config/sluice.toml: providers[0].base_url: is required for kind `openai_compatible`",
            "config/sluice.toml: providers[1].name: a provider named `a` is already defined",
            "config/sluice.toml: providers[1].simulate: only applies to kind `simulated`, not `openai`",
            "config/sluice.toml: providers[1].keys: must list at least one key (`env:VAR` or a literal)",
            "config/sluice.toml: models[0].deployments[0].provider: no provider named `nope` (defined: a)",
            "config/sluice.toml: models[0].deployments[0].weight: must be at least 1",
        ];
        assert_eq!(message, expected.join("\n"));
    }

    #[test]
    fn simulated_settings_are_checked() {
        let text = r#"
[[providers]]
name = "sim"
kind = "simulated"
[providers.simulate]
error_rate = 1.5
fault = "explode"
[[models]]
name = "m"
[[models.deployments]]
provider = "sim"
model = "m"
"#;
        let message = error_of(text);
        assert!(
            message.contains("providers[0].simulate.error_rate: must be between 0 and 1; got 1.5"),
            "{message}"
        );
        assert!(
            message.contains("providers[0].simulate.fault: unknown fault `explode`"),
            "{message}"
        );
    }

    #[test]
    fn a_configuration_without_models_is_refused() {
        assert_eq!(
            error_of(""),
            "config/sluice.toml: models: no model is defined; add at least one [[models]] table"
        );
    }

    #[test]
    fn secrets_resolve_from_the_environment_or_literally() {
        use secrecy::ExposeSecret;
        let env = |name: &str| match name {
            "SET" => Some("value".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        match resolve_secret("env:SET", &env) {
            Secret::Value(v) => assert_eq!(v.expose_secret(), "value"),
            other => panic!("{other:?}"),
        }
        match resolve_secret("env:UNSET", &env) {
            Secret::Missing(m) => assert_eq!(m.to_string(), "environment variable UNSET is not set"),
            other => panic!("{other:?}"),
        }
        match resolve_secret("env:EMPTY", &env) {
            Secret::Missing(m) => assert_eq!(m.to_string(), "environment variable EMPTY is set but empty"),
            other => panic!("{other:?}"),
        }
        match resolve_secret("sk-literal", &env) {
            Secret::Value(v) => assert_eq!(v.expose_secret(), "sk-literal"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_edge_bounds_have_defaults_and_refuse_zero() {
        let config = Config::parse(Path::new("x.toml"), MINIMAL).unwrap();
        assert_eq!(config.serve, sluice_server::ServeSettings::default());
        assert_eq!(config.serve.header_timeout, Duration::from_secs(10));
        assert_eq!(
            (config.shutdown_grace, config.shutdown_flush),
            (Duration::from_secs(20), Duration::from_secs(5))
        );
        assert_eq!(
            (config.auth.max_failures, config.auth.failure_window),
            (20, Duration::from_secs(60))
        );
        let text = format!(
            "[server]\nheader_timeout_ms = 0\nmax_connections = 0\nmax_body_bytes = 0\nmax_header_bytes = 10\n[auth]\nfailure_window_ms = 0\n{MINIMAL}"
        );
        let message = error_of(&text);
        for key in [
            "server.header_timeout_ms: must be greater than 0",
            "server.max_connections: must be greater than 0",
            "server.max_body_bytes: must be greater than 0",
            "server.max_header_bytes: must be at least 1024",
            "auth.failure_window_ms: must be greater than 0",
        ] {
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn the_ledger_write_pace_has_defaults_and_bounds() {
        let config = Config::parse(Path::new("x.toml"), MINIMAL).unwrap();
        assert_eq!(
            (config.store.flush, config.store.batch_rows),
            (Duration::from_millis(200), 500)
        );
        let config = Config::parse(
            Path::new("x.toml"),
            &format!("[store]\nflush_ms = 20\nbatch_rows = 1000\n{MINIMAL}"),
        )
        .unwrap();
        assert_eq!(
            (config.store.flush, config.store.batch_rows),
            (Duration::from_millis(20), 1000)
        );
        let message = error_of(&format!(
            "[store]\nrefresh_ms = 0\nflush_ms = 0\nbatch_rows = 1001\n{MINIMAL}"
        ));
        for key in [
            "store.refresh_ms: must be greater than 0",
            "store.flush_ms: must be greater than 0",
            "store.batch_rows: must be from 1 to 1000",
        ] {
            assert!(message.contains(key), "{message}");
        }
        let message = error_of(&format!("[store]\nbatch_rows = 0\n{MINIMAL}"));
        assert!(
            message.contains("store.batch_rows: must be from 1 to 1000"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let message = Config::load(Path::new("/nonexistent/sluice.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("/nonexistent/sluice.toml: cannot read the configuration"),
            "{message}"
        );
    }
}

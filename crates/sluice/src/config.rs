//! `config/sluice.toml`: read into raw serde structs that reject unknown keys, then validated into the
//! runtime settings. Every error names the file, the key and the problem.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

mod redis;
pub use self::redis::RawRedis;

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
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout_ms: 600_000,
            shutdown_grace_ms: 30_000,
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
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: "sqlite://data/sluice.db".to_owned(),
            spool: PathBuf::from("data/usage.spool"),
            prices: PathBuf::from("config/prices.toml"),
            refresh_ms: 2_000,
        }
    }
}

/// `[auth]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// The admin key (`env:VAR` or literal).
    pub admin_key: Option<String>,
    /// Client keys accepted on `/v1` (`env:VAR` or literal).
    pub keys: Vec<String>,
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

/// The vendors Sluice speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// api.openai.com
    Openai,
    /// Azure OpenAI
    Azure,
    /// Anthropic Messages
    Anthropic,
    /// Google Gemini
    Gemini,
    /// Any OpenAI-compatible server.
    OpenaiCompatible,
    /// The built-in simulated vendor.
    Simulated,
}

impl ProviderKind {
    fn name(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::OpenaiCompatible => "openai_compatible",
            ProviderKind::Simulated => "simulated",
        }
    }
}

/// `[[providers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// Name deployments refer to.
    pub name: String,
    /// Which vendor.
    pub kind: ProviderKind,
    /// The vendor's API root.
    #[serde(default)]
    pub base_url: Option<String>,
    /// API keys (`env:VAR` or literal), each with its own budgets.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Azure's `api-version`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Ask OpenAI-format upstreams for usage in streams (default true; turn off for servers that reject
    /// `stream_options`).
    #[serde(default)]
    pub stream_usage: Option<bool>,
    /// The simulated vendor's behaviour (`kind = "simulated"` only).
    #[serde(default)]
    pub simulate: Option<RawSimulate>,
}

/// `[providers.simulate]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSimulate {
    /// Delay before the response head.
    pub latency_ms: u64,
    /// Streaming speed.
    pub tokens_per_sec: Option<f64>,
    /// Its own requests per minute per key.
    pub rpm: Option<u32>,
    /// Its own tokens per minute per key.
    pub tpm: Option<u32>,
    /// Share of requests failed with a 500.
    pub error_rate: f64,
    /// Tokens per reply.
    pub reply_tokens: Option<u32>,
    /// `hang`, `reset-after=N`, `stall-after=N`, `malformed-after=N`.
    pub fault: Option<String>,
}

/// `[[models]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// The name clients send.
    pub name: String,
    /// Where it is served.
    pub deployments: Vec<RawDeployment>,
    /// How long a request may wait for capacity when every key is at its limit.
    #[serde(default = "default_max_queue_ms")]
    pub max_queue_ms: u64,
}

fn default_max_queue_ms() -> u64 {
    5_000
}

/// `[[models.deployments]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    /// A provider name.
    pub provider: String,
    /// The vendor's model id.
    pub model: String,
    /// Tokens per minute per key, as the vendor counts them.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests per minute per key.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Lower is tried first.
    #[serde(default)]
    pub priority: u32,
    /// Share among equal priorities.
    #[serde(default = "one")]
    pub weight: u32,
    /// Completion cap when the client sets none.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Requests in flight at once per key.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Drop client parameters the vendor cannot honour (listed in `x-sluice-dropped-params`) instead of
    /// answering 400.
    #[serde(default)]
    pub drop_unsupported: bool,
    /// This deployment's prices, overriding `prices.toml`.
    #[serde(default)]
    pub price: Option<sluice_store::Price>,
}

fn one() -> u32 {
    1
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
    Missing {
        /// The variable's name.
        var: String,
    },
}

/// Resolves `env:VAR` through `env`, or takes a literal value as it is.
pub fn resolve_secret(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Secret {
    match raw.strip_prefix("env:") {
        Some(var) => match env(var.trim()).filter(|v| !v.is_empty()) {
            Some(value) => Secret::Value(SecretString::from(value)),
            None => Secret::Missing {
                var: var.trim().to_owned(),
            },
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
    /// Upstream timeouts.
    pub timeouts: sluice_providers::Timeouts,
    /// Upstream calls per request.
    pub max_attempts: u32,
    /// The raw configuration, validated.
    pub raw: RawConfig,
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
    let mut problems: Vec<(String, String)> = Vec::new();
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
    if raw.server.max_body_bytes == 0 {
        problem("server.max_body_bytes".to_owned(), "must be greater than 0".to_owned());
    }
    for (key, value) in [
        ("server.request_timeout_ms", raw.server.request_timeout_ms),
        ("upstream.connect_timeout_ms", raw.upstream.connect_timeout_ms),
        ("upstream.first_byte_timeout_ms", raw.upstream.first_byte_timeout_ms),
        ("upstream.idle_timeout_ms", raw.upstream.idle_timeout_ms),
    ] {
        if value == 0 {
            problem(key.to_owned(), "must be greater than 0".to_owned());
        }
    }
    if raw.store.refresh_ms == 0 {
        problem("store.refresh_ms".to_owned(), "must be greater than 0".to_owned());
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

    let mut provider_names = HashSet::new();
    for (i, provider) in raw.providers.iter().enumerate() {
        let at = |field: &str| format!("providers[{i}].{field}");
        if provider.name.trim().is_empty() {
            problem(at("name"), "must not be empty".to_owned());
        } else if !provider_names.insert(provider.name.as_str()) {
            problem(
                at("name"),
                format!("a provider named `{}` is already defined", provider.name),
            );
        }
        let kind = provider.kind;
        if let Some(url) = &provider.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problem(at("base_url"), format!("`{url}` must start with http:// or https://"));
        }
        match kind {
            ProviderKind::OpenaiCompatible | ProviderKind::Azure if provider.base_url.is_none() => {
                problem(at("base_url"), format!("is required for kind `{}`", kind.name()))
            }
            _ => {}
        }
        if kind == ProviderKind::Azure && provider.api_version.is_none() {
            problem(
                at("api_version"),
                format!(
                    "is required for kind `azure` (the current GA version is `{}`)",
                    sluice_providers::AZURE_DEFAULT_API_VERSION
                ),
            );
        }
        if kind != ProviderKind::Azure && provider.api_version.is_some() {
            problem(
                at("api_version"),
                format!("only applies to kind `azure`, not `{}`", kind.name()),
            );
        }
        if kind == ProviderKind::Simulated {
            if let Some(sim) = &provider.simulate {
                if !(0.0..=1.0).contains(&sim.error_rate) {
                    problem(
                        at("simulate.error_rate"),
                        format!("must be between 0 and 1; got {}", sim.error_rate),
                    );
                }
                if sim.tokens_per_sec.is_some_and(|t| t.is_nan() || t <= 0.0) {
                    problem(at("simulate.tokens_per_sec"), "must be greater than 0".to_owned());
                }
                if let Some(fault) = &sim.fault
                    && let Err(message) = fault.parse::<sluice_providers::Fault>()
                {
                    problem(at("simulate.fault"), message);
                }
            }
        } else {
            if provider.simulate.is_some() {
                problem(
                    at("simulate"),
                    format!("only applies to kind `simulated`, not `{}`", kind.name()),
                );
            }
            if provider.keys.is_empty() && kind != ProviderKind::OpenaiCompatible {
                problem(
                    at("keys"),
                    "must list at least one key (`env:VAR` or a literal)".to_owned(),
                );
            }
        }
        if kind != ProviderKind::Openai && kind != ProviderKind::OpenaiCompatible && provider.stream_usage.is_some() {
            problem(
                at("stream_usage"),
                "only applies to kinds `openai` and `openai_compatible`".to_owned(),
            );
        }
        for (k, key) in provider.keys.iter().enumerate() {
            if key.trim().is_empty() || key.trim() == "env:" {
                problem(at(&format!("keys[{k}]")), "must not be empty".to_owned());
            }
        }
    }

    let mut model_names = HashSet::new();
    for (i, model) in raw.models.iter().enumerate() {
        let at = |field: &str| format!("models[{i}].{field}");
        if model.name.trim().is_empty() {
            problem(at("name"), "must not be empty".to_owned());
        } else if !model_names.insert(model.name.as_str()) {
            problem(at("name"), format!("a model named `{}` is already defined", model.name));
        }
        if model.deployments.is_empty() {
            problem(at("deployments"), "must list at least one deployment".to_owned());
        }
        for (d, deployment) in model.deployments.iter().enumerate() {
            let at = |field: &str| format!("models[{i}].deployments[{d}].{field}");
            if !provider_names.contains(deployment.provider.as_str()) {
                let mut known: Vec<&str> = provider_names.iter().copied().collect();
                known.sort_unstable();
                problem(
                    at("provider"),
                    format!(
                        "no provider named `{}` (defined: {})",
                        deployment.provider,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            if deployment.model.trim().is_empty() {
                problem(at("model"), "must not be empty".to_owned());
            }
            if deployment.weight == 0 {
                problem(at("weight"), "must be at least 1".to_owned());
            }
            if deployment.max_tokens == Some(0) {
                problem(at("max_tokens"), "must be at least 1".to_owned());
            }
            if deployment.max_in_flight == Some(0) {
                problem(at("max_in_flight"), "must be at least 1".to_owned());
            }
            for (field, value) in [("tpm", deployment.tpm), ("rpm", deployment.rpm)] {
                if value == Some(0) {
                    problem(at(field), "must be at least 1 (leave it out for no limit)".to_owned());
                }
            }
        }
    }
    if raw.models.is_empty() {
        problem(
            "models".to_owned(),
            "no model is defined; add at least one [[models]] table".to_owned(),
        );
    }

    if let Some(redis) = &raw.redis {
        problems.extend(redis.problems());
    }

    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        });
    }
    Ok(Config {
        path: path.to_owned(),
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        max_body_bytes: raw.server.max_body_bytes,
        request_timeout: Duration::from_millis(raw.server.request_timeout_ms),
        shutdown_grace: Duration::from_millis(raw.server.shutdown_grace_ms),
        timeouts: sluice_providers::Timeouts {
            connect: Duration::from_millis(raw.upstream.connect_timeout_ms),
            first_byte: Duration::from_millis(raw.upstream.first_byte_timeout_ms),
            idle: Duration::from_millis(raw.upstream.idle_timeout_ms),
        },
        max_attempts: raw.upstream.max_attempts,
        raw,
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
        assert!(config.raw.models.iter().any(|m| m.name == "sluice-demo"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn a_minimal_configuration_gets_defaults() {
        let config = Config::parse(Path::new("x.toml"), MINIMAL).unwrap();
        assert_eq!(config.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(config.timeouts.connect, Duration::from_secs(5));
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.raw.models[0].deployments[0].weight, 1);
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
        let env = |name: &str| (name == "SET").then(|| "value".to_owned());
        match resolve_secret("env:SET", &env) {
            Secret::Value(v) => assert_eq!(v.expose_secret(), "value"),
            other => panic!("{other:?}"),
        }
        match resolve_secret("env:UNSET", &env) {
            Secret::Missing { var } => assert_eq!(var, "UNSET"),
            other => panic!("{other:?}"),
        }
        match resolve_secret("sk-literal", &env) {
            Secret::Value(v) => assert_eq!(v.expose_secret(), "sk-literal"),
            other => panic!("{other:?}"),
        }
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

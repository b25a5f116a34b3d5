//! `[[providers]]` and `[[models]]`: read as written, then validated against the vendor registry
//! (`sluice_providers::VENDORS`, plus the in-process simulator) into the runtime settings wiring builds
//! from. A vendor's settings are checked by what its registry entry requires or refuses, so a new vendor
//! needs nothing here.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use sluice_providers::{Field, ProviderSettings, VENDORS, VendorSpec};
use sluice_simulate::{Fault, SimConfig};

/// A provider's `kind`: a vendor of the registry, or the in-process simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// A vendor of `sluice_providers::VENDORS`.
    Vendor(&'static VendorSpec),
    /// The built-in simulated vendor (`sluice-simulate`), served without a network hop.
    Simulated,
}

impl ProviderKind {
    /// The simulator's kind.
    pub const SIMULATED: &'static str = "simulated";

    /// The name written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Vendor(spec) => spec.kind,
            ProviderKind::Simulated => Self::SIMULATED,
        }
    }

    /// The kind written as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            Self::SIMULATED => Some(ProviderKind::Simulated),
            _ => sluice_providers::vendor(name).map(ProviderKind::Vendor),
        }
    }

    /// Every kind, in the order messages list them.
    pub fn all() -> impl Iterator<Item = ProviderKind> {
        VENDORS
            .iter()
            .map(|spec| ProviderKind::Vendor(spec))
            .chain(std::iter::once(ProviderKind::Simulated))
    }
}

impl<'de> Deserialize<'de> for ProviderKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ProviderKind::parse(&name).ok_or_else(|| {
            let known: Vec<String> = ProviderKind::all().map(|k| format!("`{}`", k.name())).collect();
            serde::de::Error::custom(format!(
                "unknown variant `{name}`, expected one of {}",
                known.join(", ")
            ))
        })
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
    /// Who may call it: `open` (every tenant), `approval` (an approved subscription) or `private` (an
    /// admin's grant).
    #[serde(default)]
    pub access: sluice_pipeline::Access,
    /// What it is, for the catalog.
    #[serde(default)]
    pub description: Option<String>,
    /// Anthropic model ids served as this model on the Messages API (Claude Code sends its own): an
    /// undated id (`claude-sonnet-4-5`) also matches its dated forms and `-latest`.
    #[serde(default)]
    pub aliases: Vec<String>,
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

// === The validated settings ===

/// A validated provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Name deployments refer to.
    pub name: String,
    /// What serves it, with its settings.
    pub upstream: Upstream,
    /// Its keys as written (`env:VAR` or a literal), resolved when the gateway is built.
    pub keys: Vec<String>,
}

/// What serves a provider.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// A vendor of the registry, with its settings' defaults resolved.
    Vendor {
        /// The vendor.
        spec: &'static VendorSpec,
        /// What building its adapter takes.
        settings: ProviderSettings,
    },
    /// The in-process simulated vendor.
    Simulated(SimConfig),
}

impl ProviderConfig {
    /// The provider's kind.
    pub fn kind(&self) -> ProviderKind {
        match &self.upstream {
            Upstream::Vendor { spec, .. } => ProviderKind::Vendor(spec),
            Upstream::Simulated(_) => ProviderKind::Simulated,
        }
    }

    /// Whether it works without keys (a simulator, a keyless local server): then it gets one anonymous
    /// key, so its pool has something to meter.
    pub fn keyless(&self) -> bool {
        match &self.upstream {
            Upstream::Vendor { spec, .. } => spec.keys != Field::Required,
            Upstream::Simulated(_) => true,
        }
    }
}

/// A validated model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The name clients send.
    pub name: String,
    /// Where it is served; each names a configured provider.
    pub deployments: Vec<DeploymentConfig>,
    /// How long a request may wait for capacity when every key is at its limit.
    pub max_queue: Duration,
    /// Who may call it.
    pub access: sluice_pipeline::Access,
    /// What it is, for the catalog.
    pub description: Option<String>,
    /// Anthropic model ids served as this model on the Messages API.
    pub aliases: Vec<String>,
}

/// A validated deployment.
#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    /// The provider's name, which is configured.
    pub provider: String,
    /// The vendor's model id.
    pub model: String,
    /// Tokens per minute per key.
    pub tpm: Option<u64>,
    /// Requests per minute per key.
    pub rpm: Option<u64>,
    /// Lower is tried first.
    pub priority: u32,
    /// Share among equal priorities, at least 1.
    pub weight: u32,
    /// Completion cap when the client sets none.
    pub max_tokens: Option<u32>,
    /// Requests in flight at once per key.
    pub max_in_flight: Option<u32>,
    /// Drop client parameters the vendor cannot honour instead of answering 400.
    pub drop_unsupported: bool,
    /// This deployment's prices, overriding `prices.toml`.
    pub price: Option<sluice_store::Price>,
}

// === Validation ===

/// A problem's key path and message.
pub(super) type Problems = Vec<(String, String)>;

/// `` `a` ``, `` `a` and `b` ``, `` `a`, `b` and `c` ``.
fn listed(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// The problem with a setting given to a kind that does not take it: which kinds do.
fn refused(kind: ProviderKind, takes: impl Fn(&VendorSpec) -> bool) -> String {
    let kinds: Vec<&str> = VENDORS
        .iter()
        .filter(|spec| takes(spec))
        .map(|spec| spec.kind)
        .collect();
    let noun = if kinds.len() == 1 { "kind" } else { "kinds" };
    format!("only applies to {noun} {}, not `{}`", listed(&kinds), kind.name())
}

/// Validates `[[providers]]`, reporting each problem to `problems`.
pub(super) fn validate_providers(raw: Vec<RawProvider>, problems: &mut Problems) -> Vec<ProviderConfig> {
    let mut names = HashSet::new();
    let mut providers = Vec::with_capacity(raw.len());
    for (i, provider) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("providers[{i}].{field}");
        let mut problem = |field: &str, message: String| problems.push((at(field), message));
        if provider.name.trim().is_empty() {
            problem("name", "must not be empty".to_owned());
        } else if !names.insert(provider.name.clone()) {
            problem(
                "name",
                format!("a provider named `{}` is already defined", provider.name),
            );
        }
        if let Some(url) = &provider.base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problem("base_url", format!("`{url}` must start with http:// or https://"));
            } else if let Err(e) = axum::http::Uri::try_from(url.as_str()) {
                problem("base_url", format!("`{url}` is not a valid URL: {e}"));
            }
        }
        for (k, key) in provider.keys.iter().enumerate() {
            if key.trim().is_empty() || key.trim() == "env:" {
                problem(&format!("keys[{k}]"), "must not be empty".to_owned());
            }
        }
        let kind = provider.kind;
        let upstream = match kind {
            ProviderKind::Vendor(spec) => {
                if provider.simulate.is_some() {
                    problem(
                        "simulate",
                        format!(
                            "only applies to kind `{}`, not `{}`",
                            ProviderKind::SIMULATED,
                            spec.kind
                        ),
                    );
                }
                let base_url = match (&provider.base_url, spec.default_base_url) {
                    (Some(url), _) => url.clone(),
                    (None, Some(default)) => default.to_owned(),
                    (None, None) => {
                        problem("base_url", format!("is required for kind `{}`", spec.kind));
                        String::new()
                    }
                };
                match (spec.api_version, &provider.api_version) {
                    (Field::Required, None) => problem(
                        "api_version",
                        format!(
                            "is required for kind `{}` (the current GA version is `{}`)",
                            spec.kind,
                            spec.current_api_version.unwrap_or_default()
                        ),
                    ),
                    (Field::Refused, Some(_)) => problem("api_version", refused(kind, |s| s.api_version.accepted())),
                    _ => {}
                }
                if spec.stream_usage == Field::Refused && provider.stream_usage.is_some() {
                    problem("stream_usage", refused(kind, |s| s.stream_usage.accepted()));
                }
                if spec.keys == Field::Required && provider.keys.is_empty() {
                    problem("keys", "must list at least one key (`env:VAR` or a literal)".to_owned());
                }
                Upstream::Vendor {
                    spec,
                    settings: ProviderSettings {
                        base_url,
                        api_version: provider.api_version,
                        stream_usage: provider.stream_usage.unwrap_or(true),
                    },
                }
            }
            ProviderKind::Simulated => {
                for (field, given) in [
                    ("base_url", provider.base_url.is_some()),
                    ("api_version", provider.api_version.is_some()),
                    ("stream_usage", provider.stream_usage.is_some()),
                ] {
                    if given {
                        problem(
                            field,
                            format!(
                                "does not apply to kind `{}`: it has no upstream",
                                ProviderKind::SIMULATED
                            ),
                        );
                    }
                }
                Upstream::Simulated(simulator(provider.simulate.unwrap_or_default(), &mut problem))
            }
        };
        providers.push(ProviderConfig {
            name: provider.name,
            upstream,
            keys: provider.keys,
        });
    }
    providers
}

/// The simulator's behaviour from `[providers.simulate]`.
fn simulator(raw: RawSimulate, problem: &mut impl FnMut(&str, String)) -> SimConfig {
    let defaults = SimConfig::default();
    if !(0.0..=1.0).contains(&raw.error_rate) {
        problem(
            "simulate.error_rate",
            format!("must be between 0 and 1; got {}", raw.error_rate),
        );
    }
    if raw.tokens_per_sec.is_some_and(|t| t.is_nan() || t <= 0.0) {
        problem("simulate.tokens_per_sec", "must be greater than 0".to_owned());
    }
    let fault = raw.fault.as_deref().and_then(|fault| match fault.parse::<Fault>() {
        Ok(fault) => Some(fault),
        Err(message) => {
            problem("simulate.fault", message);
            None
        }
    });
    SimConfig {
        rpm: raw.rpm,
        tpm: raw.tpm,
        latency: Duration::from_millis(raw.latency_ms),
        tokens_per_sec: raw.tokens_per_sec,
        error_rate: raw.error_rate,
        reply_tokens: raw.reply_tokens.unwrap_or(defaults.reply_tokens),
        fault,
        ..defaults
    }
}

/// Validates `[[models]]` against the validated `providers`, reporting each problem to `problems`.
pub(super) fn validate_models(
    raw: Vec<RawModel>,
    providers: &[ProviderConfig],
    problems: &mut Problems,
) -> Vec<ModelConfig> {
    let provider_names: HashSet<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    let mut names = HashSet::new();
    let mut aliases = HashSet::new();
    let mut models = Vec::with_capacity(raw.len());
    for (i, model) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("models[{i}].{field}");
        if model.name.trim().is_empty() {
            problems.push((at("name"), "must not be empty".to_owned()));
        } else if !names.insert(model.name.clone()) {
            problems.push((at("name"), format!("a model named `{}` is already defined", model.name)));
        }
        if model.deployments.is_empty() {
            problems.push((at("deployments"), "must list at least one deployment".to_owned()));
        }
        if model.max_queue_ms > super::MAX_DURATION_MS {
            problems.push((
                at("max_queue_ms"),
                format!("must be at most {} (one day)", super::MAX_DURATION_MS),
            ));
        }
        let mut deployments = Vec::with_capacity(model.deployments.len());
        for (d, deployment) in model.deployments.into_iter().enumerate() {
            let at = |field: &str| format!("models[{i}].deployments[{d}].{field}");
            if !provider_names.contains(deployment.provider.as_str()) {
                let mut known: Vec<&str> = provider_names.iter().copied().collect();
                known.sort_unstable();
                problems.push((
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
                ));
            }
            if deployment.model.trim().is_empty() {
                problems.push((at("model"), "must not be empty".to_owned()));
            }
            if deployment.weight == 0 {
                problems.push((at("weight"), "must be at least 1".to_owned()));
            }
            if deployment.max_tokens == Some(0) {
                problems.push((at("max_tokens"), "must be at least 1".to_owned()));
            }
            if deployment.max_in_flight == Some(0) {
                problems.push((at("max_in_flight"), "must be at least 1".to_owned()));
            }
            for (field, value) in [("tpm", deployment.tpm), ("rpm", deployment.rpm)] {
                if value == Some(0) {
                    problems.push((at(field), "must be at least 1 (leave it out for no limit)".to_owned()));
                }
            }
            deployments.push(DeploymentConfig {
                provider: deployment.provider,
                model: deployment.model,
                tpm: deployment.tpm,
                rpm: deployment.rpm,
                priority: deployment.priority,
                weight: deployment.weight,
                max_tokens: deployment.max_tokens,
                max_in_flight: deployment.max_in_flight,
                drop_unsupported: deployment.drop_unsupported,
                price: deployment.price,
            });
        }
        for (a, alias) in model.aliases.iter().enumerate() {
            if alias.trim().is_empty() {
                problems.push((at(&format!("aliases[{a}]")), "must not be empty".to_owned()));
            } else if !aliases.insert(alias.clone()) {
                problems.push((
                    at(&format!("aliases[{a}]")),
                    format!("the alias `{alias}` is already given to a model"),
                ));
            }
        }
        models.push(ModelConfig {
            name: model.name,
            deployments,
            max_queue: Duration::from_millis(model.max_queue_ms),
            access: model.access,
            description: model.description,
            aliases: model.aliases,
        });
    }
    // An alias naming a model would hide it from Messages clients that ask for it by name.
    for model in &models {
        for alias in &model.aliases {
            if names.contains(alias) {
                problems.push((
                    format!("models.aliases `{alias}`"),
                    "is the name of a configured model; an alias must be another name".to_owned(),
                ));
            }
        }
    }
    if models.is_empty() {
        problems.push((
            "models".to_owned(),
            "no model is defined; add at least one [[models]] table".to_owned(),
        ));
    }
    models
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    use super::*;

    fn problems_of(text: &str) -> Vec<String> {
        match Config::parse(Path::new("x.toml"), text) {
            Err(ConfigError::Invalid { problems, .. }) => problems
                .into_iter()
                .map(|(key, message)| format!("{key}: {message}"))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    const MODEL: &str = "\n[[models]]\nname = \"m\"\n[[models.deployments]]\nprovider = \"p\"\nmodel = \"x\"\n";

    #[test]
    fn every_registry_kind_and_the_simulator_parse() {
        let kinds: Vec<&str> = ProviderKind::all().map(ProviderKind::name).collect();
        assert_eq!(
            kinds,
            [
                "openai",
                "azure",
                "anthropic",
                "gemini",
                "openai_compatible",
                "simulated"
            ]
        );
        for kind in ProviderKind::all() {
            assert_eq!(ProviderKind::parse(kind.name()), Some(kind));
        }
    }

    #[test]
    fn settings_are_checked_by_what_the_registry_says() {
        let provider =
            |kind: &str, extra: &str| format!("[[providers]]\nname = \"p\"\nkind = \"{kind}\"\n{extra}{MODEL}");
        assert_eq!(
            problems_of(&provider("azure", "keys = [\"k\"]\n")),
            [
                "providers[0].base_url: is required for kind `azure`",
                "providers[0].api_version: is required for kind `azure` (the current GA version is `2024-10-21`)",
            ]
        );
        assert_eq!(
            problems_of(&provider(
                "anthropic",
                "keys = [\"k\"]\nstream_usage = false\napi_version = \"v\"\n"
            )),
            [
                "providers[0].api_version: only applies to kind `azure`, not `anthropic`",
                "providers[0].stream_usage: only applies to kinds `openai` and `openai_compatible`, not `anthropic`",
            ]
        );
        assert_eq!(
            problems_of(&provider(
                "openai",
                "keys = [\"k\"]\nbase_url = \"https://my proxy/v1\"\n"
            )),
            ["providers[0].base_url: `https://my proxy/v1` is not a valid URL: invalid uri character"]
        );
        assert_eq!(
            problems_of(&provider("simulated", "base_url = \"http://x\"\n")),
            ["providers[0].base_url: does not apply to kind `simulated`: it has no upstream"]
        );
    }

    #[test]
    fn defaults_are_resolved() {
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"gemini\"\nkeys = [\"k\"]\n\
             [[providers]]\nname = \"q\"\nkind = \"openai_compatible\"\nbase_url = \"http://127.0.0.1:11434/v1\"\n\
             stream_usage = false\n\
             [[providers]]\nname = \"s\"\nkind = \"simulated\"\n[providers.simulate]\nfault = \"reset-after=2\"\n{MODEL}"
        );
        let config = Config::parse(Path::new("x.toml"), &text).unwrap();
        match &config.providers[0].upstream {
            Upstream::Vendor { spec, settings } => {
                assert_eq!(spec.kind, "gemini");
                assert_eq!(settings.base_url, "https://generativelanguage.googleapis.com");
                assert!(settings.stream_usage);
                assert!(!config.providers[0].keyless());
            }
            other => panic!("{other:?}"),
        }
        match &config.providers[1].upstream {
            Upstream::Vendor { settings, .. } => assert!(!settings.stream_usage),
            other => panic!("{other:?}"),
        }
        assert!(config.providers[1].keyless());
        match &config.providers[2].upstream {
            Upstream::Simulated(sim) => {
                assert_eq!(sim.fault, Some(Fault::ResetAfter(2)));
                assert_eq!(sim.reply_tokens, SimConfig::default().reply_tokens);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(config.providers[2].kind(), ProviderKind::Simulated);
        assert_eq!(config.models[0].max_queue, Duration::from_secs(5));
        assert_eq!(config.models[0].deployments[0].weight, 1);
    }

    #[test]
    fn aliases_are_unique_and_name_no_model() {
        let provider = "[[providers]]\nname = \"p\"\nkind = \"simulated\"\n";
        let model = |name: &str, aliases: &str| {
            format!(
                "\n[[models]]\nname = \"{name}\"\naliases = {aliases}\n[[models.deployments]]\nprovider = \"p\"\nmodel = \"x\"\n"
            )
        };
        let ok = format!("{provider}{}", model("m", "[\"claude-sonnet-4-5\"]"));
        let config = Config::parse(Path::new("x.toml"), &ok).unwrap();
        assert_eq!(config.models[0].aliases, ["claude-sonnet-4-5"]);
        let text = format!(
            "{provider}{}{}",
            model("m", "[\"claude-a\", \"\", \"n\"]"),
            model("n", "[\"claude-a\"]")
        );
        let problems = problems_of(&text);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("models[0].aliases[1]: must not be empty")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("models[1].aliases[0]") && p.contains("already")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`n`") && p.contains("name of a configured model")),
            "{problems:?}"
        );
    }
}

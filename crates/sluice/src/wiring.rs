//! Turns a validated [`Config`] into the running pieces: the HTTP client, the adapters, the router and
//! the authenticator.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use sluice_budget::{Backoff, BudgetBackend, Limits, LocalBudgets, RedisBudgets};
use sluice_pipeline::{Authenticator, DeploymentPrice, Directory, Ledger, Pipeline, PriceBook, StaticKeys};
use sluice_prompts::PromptWatcher;
use sluice_providers::{ChatProvider, ClientSettings, UpstreamClient, UpstreamKey};
use sluice_router::breaker::BreakerPolicy;
use sluice_router::{Deployment, DeploymentSpec, ModelRoute, ProviderPool, Router, RouterSettings};
use sluice_server::{AppState, HttpSettings, Tenancy};
use sluice_simulate::{SimulatedAdapter, Simulator};
use sluice_store::{Prices, Store, UsageWriter, WriterConfig};

use crate::config::{Config, ProviderConfig, Secret, Upstream, resolve_secret};

/// Why the gateway could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// The HTTP client could not be built (its TLS setup failed).
    #[error("cannot build the upstream HTTP client: {0}")]
    HttpClient(String),
    /// The database could not be used.
    #[error("cannot {what}: {source}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: sluice_store::StoreError,
    },
    /// The admin and client keys break a rule (see [`crate::exposure::check_keys`]).
    #[error(transparent)]
    Keys(#[from] crate::exposure::ExposureError),
    /// The price list does not load; the message names the file, the line and the key.
    #[error("cannot load the prices: {0}")]
    Prices(sluice_store::PricesError),
    /// The shared budgets could not start.
    #[error("cannot share budgets through Redis ([redis] or SLUICE_REDIS_URL): {0}")]
    Budgets(#[from] sluice_budget::BudgetError),
    /// The prompt templates do not load; each problem names its file and line.
    #[error("the prompt templates in {dir} do not load:\n{source}")]
    Prompts {
        /// The prompts folder.
        dir: String,
        /// Every problem found.
        source: sluice_prompts::LoadError,
    },
}

/// The assembled gateway.
pub struct Gateway {
    /// The router over every configured model.
    pub router: Arc<Router>,
    /// Who may call: the configured keys, and virtual keys once the store is attached.
    pub auth: Arc<dyn Authenticator>,
    /// Every budget: upstream keys' and tenants'.
    pub budgets: Arc<dyn BudgetBackend>,
    /// The same budgets when they are shared through Redis, for waiting on the first connection and
    /// leaving at shutdown.
    pub redis: Option<Arc<RedisBudgets>>,
    /// Where usage is recorded, once [`attach_store`] ran.
    pub ledger: Option<Arc<Ledger>>,
    /// The configured client and admin keys, also accepted with a store.
    configured: Option<StaticKeys>,
    /// Tenants, virtual keys and the usage ledger, once [`attach_store`] ran.
    pub tenancy: Option<Tenancy>,
    /// Simulated vendors by provider name, for inspection.
    pub simulators: HashMap<String, Arc<Simulator>>,
    /// The published prompt templates, reloaded by [`Gateway::watch_prompts`].
    pub prompts: Arc<PromptWatcher>,
    /// What was disabled and why, already logged.
    pub warnings: Vec<String>,
    /// Where request spans go, once [`Gateway::export_traces`] found an endpoint.
    pub traces: Option<sluice_pipeline::TraceSink>,
    /// Tenants' opt-in request logs, once [`attach_store`] ran.
    pub request_logs: Option<Arc<sluice_pipeline::RequestLogs>>,
}

/// The providers' client: one connection pool for every provider, so connections are reused; through
/// the proxies the environment names (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`).
pub fn upstream_client(connect_timeout: Duration) -> Result<UpstreamClient, WiringError> {
    UpstreamClient::new(ClientSettings::from_env(connect_timeout)).map_err(|e| WiringError::HttpClient(e.to_string()))
}

/// The HTTP client of the gateway's own calls out (alert webhooks, trace export), which are few.
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, WiringError> {
    // reqwest is built without a default TLS backend; ring is small and builds without extra tools.
    // Installing twice (tests build several gateways) is harmless, so the result is ignored.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        // The router retries and fails over itself. reqwest's own policy (protocol NACKs, which HTTP/1.1
        // never sends) cloned every request's headers and extensions in case it retried.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WiringError::HttpClient(sluice_providers::error::error_chain(&e)))
}

/// Assembles the gateway, reading `env:` secrets through `env`.
pub fn build(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<Gateway, WiringError> {
    let client = upstream_client(config.timeouts.connect)?;
    let mut warnings = Vec::new();
    let mut simulators = HashMap::new();
    let mut pools: HashMap<&str, Arc<ProviderPool>> = HashMap::new();

    for (i, provider) in config.providers.iter().enumerate() {
        let (keys, missing) = resolve_keys(i, provider, env, &mut warnings);
        let (adapter, embeds): (Arc<dyn ChatProvider>, bool) = match &provider.upstream {
            Upstream::Vendor { spec, settings } => {
                (spec.adapter(client.clone(), settings, config.timeouts), spec.embeds)
            }
            Upstream::Simulated(sim_config) => {
                let sim = Arc::new(Simulator::new(sim_config.clone()));
                simulators.insert(provider.name.clone(), Arc::clone(&sim));
                (Arc::new(SimulatedAdapter::new(sim, config.timeouts)), false)
            }
        };
        if keys.is_empty() {
            let message = format!(
                "provider `{}` is disabled: none of its keys is set (set {})",
                provider.name,
                missing.join(" or ")
            );
            tracing::warn!("{message}");
            warnings.push(message);
        }
        pools.insert(
            provider.name.as_str(),
            Arc::new(ProviderPool::new(provider.name.as_str(), adapter, keys, missing).with_embeddings(embeds)),
        );
    }

    let failover = &config.failover;
    let breaker = BreakerPolicy {
        failures: failover.breaker_failures,
        cool_off: failover.breaker_cooloff,
    };
    let redis = redis_budgets(config, env)?;
    let budgets: Arc<dyn BudgetBackend> = match &redis {
        Some(redis) => Arc::clone(redis) as Arc<dyn BudgetBackend>,
        None => Arc::new(LocalBudgets::new()),
    };
    let models = config
        .models
        .iter()
        .map(|model| {
            let deployments = model
                .deployments
                .iter()
                .enumerate()
                .filter_map(|(ordinal, d)| {
                    pools.get(d.provider.as_str()).map(|pool| {
                        let spec = DeploymentSpec {
                            ordinal,
                            provider: Arc::clone(pool),
                            model: d.model.as_str().into(),
                            max_tokens: d.max_tokens,
                            priority: d.priority,
                            weight: d.weight,
                            limits: Limits {
                                rpm: d.rpm,
                                tpm: d.tpm,
                                max_in_flight: d.max_in_flight,
                            },
                            breaker,
                            drop_unsupported: d.drop_unsupported,
                        };
                        Deployment::new(&model.name, spec, budgets.as_ref())
                    })
                })
                .collect();
            ModelRoute::new(model.name.as_str(), deployments, model.max_queue)
        })
        .collect();
    let settings = RouterSettings {
        max_attempts: config.max_attempts,
        backoff: Backoff {
            base: failover.backoff_base,
            max: failover.backoff_max,
        },
    };
    let router = Arc::new(Router::new(models, settings));
    // Each encoding costs tens of MB and tens of milliseconds to load: only those the configured
    // deployments use are loaded, once, here rather than on the first request.
    for encoding in router.encodings() {
        encoding.preload();
    }

    let mut client_keys = Vec::new();
    for (i, raw) in config.auth.keys.iter().enumerate() {
        match resolve_secret(raw, env) {
            Secret::Value(value) => client_keys.push((format!("auth.keys[{i}]"), value)),
            Secret::Missing(missing) => {
                let message = format!("auth.keys[{i}] is disabled: {missing}");
                tracing::warn!("{message}");
                warnings.push(message);
            }
        }
    }
    let admin_key = match config.auth.admin_key.as_deref().map(|raw| resolve_secret(raw, env)) {
        Some(Secret::Value(value)) => Some(value),
        Some(Secret::Missing(missing)) => {
            let message = format!("auth.admin_key is disabled: {missing}");
            tracing::warn!("{message}");
            warnings.push(message);
            None
        }
        None => None,
    };
    crate::exposure::check_keys(&client_keys, admin_key.as_ref())?;
    if client_keys.is_empty() && admin_key.is_none() {
        let message =
            "no client key and no admin key is set: only tenants' virtual keys (`sluice keys create`) are accepted"
                .to_owned();
        tracing::warn!("{message}");
        warnings.push(message);
    }
    for message in price_disagreements(config) {
        tracing::warn!("{message}");
        warnings.push(message);
    }
    let auth = Arc::new(StaticKeys::new(&client_keys, admin_key.as_ref()));
    let configured = Some(StaticKeys::new(&client_keys, admin_key.as_ref()));
    let prompts = Arc::new(load_prompts(config, &router)?);
    Ok(Gateway {
        router,
        auth,
        budgets,
        redis,
        ledger: None,
        configured,
        tenancy: None,
        simulators,
        prompts,
        warnings,
        traces: None,
        request_logs: None,
    })
}

/// The Redis settings when budgets are shared: `[redis]`, or its defaults when only `SLUICE_REDIS_URL`
/// is set (which overrides `[redis] url`).
pub fn redis_settings(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Option<sluice_budget::RedisSettings> {
    let url = env("SLUICE_REDIS_URL").filter(|url| !url.is_empty());
    match (&config.redis, url) {
        (Some(raw), url) => Some(raw.settings(url)),
        (None, Some(url)) => Some(crate::config::RawRedis::default().settings(Some(url))),
        (None, None) => None,
    }
}

/// Budgets shared through Redis, when configured; they connect in the background and serve local shares
/// until Redis answers.
fn redis_budgets(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Arc<RedisBudgets>>, WiringError> {
    let Some(settings) = redis_settings(config, env) else {
        return Ok(None);
    };
    let budgets = RedisBudgets::start(settings)?;
    tracing::info!(replica = budgets.replica(), "budgets are shared through Redis");
    Ok(Some(Arc::new(budgets)))
}

/// The database URL: `SLUICE_DATABASE_URL` when set, else `[store] url`.
pub fn store_url(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> String {
    env("SLUICE_DATABASE_URL")
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| config.store.url.clone())
}

/// Opens the store and applies its migrations.
pub async fn open_store(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<Store, WiringError> {
    let url = store_url(config, env);
    let store = Store::open(&url).await.map_err(|source| WiringError::Store {
        what: "open the database",
        source,
    })?;
    store.migrate().await.map_err(|source| WiringError::Store {
        what: "migrate the database",
        source,
    })?;
    Ok(store)
}

/// How long a start waits for the rows an earlier run left in the spool to reach the ledger.
const LEFTOVERS_WAIT: Duration = Duration::from_secs(10);

/// Attaches the store: virtual keys and tenants join the configured keys, and every request is recorded
/// in the usage ledger. Keys and tenants are re-read every `[store] refresh_ms`.
pub async fn attach_store(
    gateway: &mut Gateway,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), WiringError> {
    let store = open_store(config, env).await?;
    // Costs decide budgets: a price list with an error stops the start rather than leaving models unpriced.
    // A missing one is said loudly; without prices, costs are not counted and tenants with a budget are
    // refused every model without a price of its own (never served uncounted).
    let prices = if config.store.prices.exists() {
        Some(Prices::load(&config.store.prices).map_err(WiringError::Prices)?)
    } else {
        let message = format!(
            "no price list at {}: costs are counted only for deployments with their own price, and tenants with a \
             budget are refused the other models",
            config.store.prices.display()
        );
        tracing::warn!("{message}");
        gateway.warnings.push(message);
        None
    };
    let book = price_book(config, prices.as_ref());
    let writer_config = WriterConfig {
        batch_size: config.store.batch_rows,
        flush_interval: config.store.flush,
        ..WriterConfig::new(&config.store.spool)
    };
    let writer = UsageWriter::start(store.clone(), writer_config).map_err(|source| WiringError::Store {
        what: "start the usage writer",
        source,
    })?;
    // Rows an earlier run left in the spool were charged to their tenants then: they go into the ledger
    // before tenants' spend is seeded from it, or the restarted gateway would let each tenant spend them
    // again.
    let leftovers = writer.stats().spool_pending;
    if leftovers > 0 && !writer.leftovers_replayed(LEFTOVERS_WAIT).await {
        let message = format!(
            "{} of the {leftovers} usage rows left in the spool were not replayed within {} s: tenants' spend \
             this period is short by their cost until the period ends",
            writer.stats().spool_pending,
            LEFTOVERS_WAIT.as_secs()
        );
        tracing::warn!("{message}");
        gateway.warnings.push(message);
    }
    let configured = gateway.configured.take().unwrap_or_else(|| StaticKeys::new(&[], None));
    let directory = Arc::new(
        Directory::load(store.clone(), configured, Arc::clone(&gateway.budgets))
            .await
            .map_err(|source| WiringError::Store {
                what: "load keys and tenants",
                source,
            })?,
    );
    let request_logs = sluice_pipeline::RequestLogs::start(store.clone(), config.redact.clone())
        .await
        .map_err(|source| WiringError::Store {
            what: "load the request-log settings",
            source,
        })?;
    gateway.request_logs = Some(request_logs);
    gateway.auth = Arc::clone(&directory) as Arc<dyn Authenticator>;
    gateway.tenancy = Some(Tenancy { store, directory });
    gateway.ledger = Some(Arc::new(Ledger::new(writer, book)));
    Ok(())
}

/// Every deployment's price, by the deployment's position in its model's configuration: its own `price`,
/// else its vendor model's list price, else none. A deployment's price applies to it alone.
pub fn price_book(config: &Config, prices: Option<&Prices>) -> PriceBook {
    let mut book = PriceBook::new();
    for model in &config.models {
        let choices = model
            .deployments
            .iter()
            .map(|d| DeploymentPrice::resolve(prices, &d.model, d.price.as_ref()))
            .collect();
        book.set(&model.name, choices);
    }
    book
}

/// Deployments of one provider and vendor model whose prices disagree: usually a mistake, since the vendor
/// bills them alike. One line per pair, saying which price applies where.
pub fn price_disagreements(config: &Config) -> Vec<String> {
    let deployments: Vec<_> = config
        .models
        .iter()
        .flat_map(|m| m.deployments.iter().map(move |d| (m.name.as_str(), d)))
        .collect();
    let describe = |price: Option<&sluice_store::Price>| {
        price.map_or_else(
            || "the list price of prices.toml".to_owned(),
            |p| {
                format!(
                    "its own price ({} / {} micro-dollars per million input / output)",
                    p.input, p.output
                )
            },
        )
    };
    let mut lines = Vec::new();
    for (i, (model_a, a)) in deployments.iter().enumerate() {
        for (model_b, b) in &deployments[i + 1..] {
            if a.provider == b.provider && a.model == b.model && a.price != b.price {
                lines.push(format!(
                    "models `{model_a}` and `{model_b}` both deploy `{}` on provider `{}` at different prices: \
                     `{model_a}` is charged {}, `{model_b}` {}",
                    a.model,
                    a.provider,
                    describe(a.price.as_ref()),
                    describe(b.price.as_ref()),
                ));
            }
        }
    }
    lines
}

impl Gateway {
    /// Re-reads keys and tenants every `[store] refresh_ms`, when a store is attached.
    pub fn refresh_tenancy(&self, config: &Config) -> Option<tokio::task::JoinHandle<()>> {
        let tenancy = self.tenancy.as_ref()?;
        Some(Arc::clone(&tenancy.directory).spawn_refresh(config.store.refresh))
    }

    /// Re-reads request-log settings every `[store] refresh_ms` and purges logs past their retention,
    /// when a store is attached.
    pub fn maintain_request_logs(&self, config: &Config) -> Option<tokio::task::JoinHandle<()>> {
        Some(Arc::clone(self.request_logs.as_ref()?).maintain(config.store.refresh))
    }

    /// Waits, at most `limit`, for shared budgets to reach Redis before serving, so the first requests
    /// take leases rather than local shares.
    pub async fn connect_budgets(&self, limit: Duration) {
        if let Some(redis) = &self.redis
            && !redis.wait_connected(limit).await
        {
            tracing::warn!("Redis did not answer yet: serving with local shares of every limit until it does");
        }
    }

    /// Flushes the usage ledger, within `grace`.
    pub async fn flush(&self, grace: Duration) {
        if let Some(redis) = &self.redis {
            redis.leave().await;
        }
        if let Some(ledger) = &self.ledger {
            let stats = ledger.writer().shutdown(grace).await;
            tracing::info!(?stats, "usage ledger flushed");
        }
    }
}

/// Loads the prompt templates, checking that each names a configured model (on every reload too).
pub fn load_prompts(config: &Config, router: &Router) -> Result<PromptWatcher, WiringError> {
    let models: HashSet<String> = router.model_names().map(str::to_owned).collect();
    PromptWatcher::with_model_check(&config.prompts.dir, move |model| models.contains(model)).map_err(|source| {
        WiringError::Prompts {
            dir: config.prompts.dir.display().to_string(),
            source,
        }
    })
}

impl Gateway {
    /// Reloads prompt templates when their files change, every `reload_ms` of the configuration (never
    /// when it is 0). A broken edit is logged and the last good templates keep serving.
    pub fn watch_prompts(&self, config: &Config) -> Option<tokio::task::JoinHandle<()>> {
        let interval = config.prompts.reload?;
        Some(tokio::spawn(Arc::clone(&self.prompts).watch(interval)))
    }
}

fn resolve_keys(
    index: usize,
    provider: &ProviderConfig,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> (Vec<UpstreamKey>, Vec<String>) {
    let mut keys = Vec::new();
    let mut missing = Vec::new();
    for (k, raw) in provider.keys.iter().enumerate() {
        match resolve_secret(raw, env) {
            Secret::Value(value) => keys.push(UpstreamKey::new(format!("{}#{k}", provider.name), value)),
            Secret::Missing(var) => {
                let message = format!(
                    "providers[{index}].keys[{k}] of provider `{}` is disabled: {var}",
                    provider.name
                );
                tracing::warn!("{message}");
                warnings.push(message);
                missing.push(var.var);
            }
        }
    }
    // Simulated vendors and keyless local servers (Ollama, vLLM without --api-key) need no key: they get
    // one anonymous key so the pool has something to meter.
    if provider.keys.is_empty() && provider.keyless() {
        keys.push(UpstreamKey::new(
            format!("{}#anonymous", provider.name),
            SecretString::from(String::new()),
        ));
    }
    (keys, missing)
}

/// The gateway's HTTP app for `config`.
pub fn app(gateway: &Gateway, config: &Config) -> axum::Router {
    let policies = config
        .models
        .iter()
        .map(|m| {
            let policy = sluice_pipeline::ModelPolicy {
                access: m.access,
                description: m.description.clone(),
            };
            (m.name.clone(), policy)
        })
        .collect();
    let pipeline = Pipeline::new(Arc::clone(&gateway.router), gateway.ledger.clone()).with_model_policies(policies);
    let pipeline = match &gateway.traces {
        Some(traces) => pipeline.with_traces(traces.clone()),
        None => pipeline,
    };
    let pipeline = Arc::new(match &gateway.request_logs {
        Some(logs) => pipeline.with_request_logs(Arc::clone(logs)),
        None => pipeline,
    });
    let state = AppState::new(
        pipeline,
        Arc::clone(&gateway.auth),
        HttpSettings {
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
            auth_throttle: sluice_server::throttle::ThrottleSettings {
                max_failures: config.auth.max_failures,
                window: config.auth.failure_window,
            },
        },
        Some(Arc::clone(&gateway.prompts)),
        gateway.tenancy.clone(),
        Arc::clone(&gateway.budgets),
    )
    .with_model_aliases(sluice_protocols::messages::ModelAliases::new(
        config
            .models
            .iter()
            .flat_map(|m| m.aliases.iter().map(move |alias| (alias.clone(), m.name.clone()))),
    ));
    sluice_server::build_router(state)
}

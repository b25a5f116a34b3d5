//! `sluice`: the gateway's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sluice::config::{Config, LogFormat};
use sluice_simulate::{Fault, SimConfig, Simulator};

/// jemalloc rather than glibc's malloc: its thread caches serve the many short-lived allocations of a
/// request in fewer instructions (10% fewer per request in all), for about 2 MB more resident memory.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod catalog;
mod logging;
mod spend;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "An OpenAI-compatible LLM gateway that turns 429s into answers."
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "SLUICE_CONFIG", default_value = "config/sluice.toml")]
    config: PathBuf,
    /// Log format; overrides `[log] format`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Check the configuration and print what it serves.
    CheckConfig,
    /// Run a simulated vendor (OpenAI, Anthropic or Gemini wire format), for tests, demos and load drills.
    Simulate(SimulateArgs),
    /// Prompt templates: check them (for CI) or list them.
    #[command(subcommand)]
    Prompts(PromptsCommand),
    /// Apply the database migrations (`serve` also does it on start).
    Migrate,
    /// Tenants: create or list.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Virtual keys: create, list or revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Spend from the usage ledger: totals by category, or `export` the rows for finance.
    Spend(spend::SpendArgs),
    /// Token counting.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Every model and prompt with its access and versions; with `--tenant`, what that tenant may do.
    Catalog(catalog::CatalogArgs),
    /// Subscription requests: list, approve or reject.
    #[command(subcommand)]
    Subscriptions(catalog::SubscriptionsCommand),
    /// Grants of a service to a tenant: add, revoke or list.
    #[command(subcommand)]
    Grants(catalog::GrantsCommand),
    /// The audit log of admin actions, newest first.
    Audit(catalog::AuditArgs),
    /// Alerts: send a test alert to every `[[alerts]]` webhook.
    #[command(subcommand)]
    Alerts(AlertsCommand),
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Post one test alert (`"kind": "test"`) to every webhook, signed where configured; exits non-zero if
    /// any did not take it.
    Test,
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Print the prompt tokens of a chat-completions request body (messages, tools), as the gateway
    /// counts them before sending.
    Count {
        /// A configured model name, or a vendor model id such as gpt-4o.
        #[arg(long)]
        model: String,
        /// The request body as JSON; standard input when absent.
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// Its unique name.
        name: String,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// Spend budget in USD per period.
        #[arg(long)]
        budget_usd: Option<f64>,
        /// The budget's period: day or month.
        #[arg(long, default_value = "month")]
        budget_period: String,
        /// Model names it may call (all when absent); repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Prompt names it may call (all when absent).
        #[arg(long, value_delimiter = ',')]
        prompts: Option<Vec<String>>,
    },
    /// List tenants.
    List,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a virtual key for a tenant; the key is printed once.
    Create {
        /// The tenant.
        tenant: String,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
    },
    /// List a tenant's keys (ids and prefixes, never the keys).
    List {
        /// The tenant.
        tenant: String,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum PromptsCommand {
    /// Load every template under `[prompts] dir`, report each problem with its file and line, and exit
    /// non-zero if there is any.
    Check,
    /// List the published prompts and their versions.
    List,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on; overrides `server.listen` (containers want 0.0.0.0:8080).
    #[arg(long, env = "SLUICE_LISTEN")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Which vendor to imitate: any provider `kind` (openai, azure, anthropic, gemini, openai_compatible).
    #[arg(long, default_value = "openai", value_parser = sluice_simulate::vendor)]
    vendor: &'static sluice_providers::VendorSpec,
    /// Requests per minute each key may make.
    #[arg(long)]
    rpm: Option<u32>,
    /// Tokens per minute each key may use.
    #[arg(long)]
    tpm: Option<u32>,
    /// Delay before each response head, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Streaming speed; unlimited when unset.
    #[arg(long)]
    tokens_per_sec: Option<f64>,
    /// Share of requests answered with a 500, from 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Tokens per reply when the client sets no smaller cap.
    #[arg(long, default_value_t = 16)]
    reply_tokens: u32,
    /// Inject a fault: hang, reset-after=N, stall-after=N, malformed-after=N.
    #[arg(long)]
    fault: Option<Fault>,
    /// Seed of the error draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let mut config = Config::load(&cli.config)?;
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            init_logging(cli.log_format, Some(&config));
            serve(config).await
        }
        Command::CheckConfig => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            sluice::exposure::check_listen(&config)?;
            let gateway = sluice::build(&config, &env_var)?;
            println!("{}: ok", config.path.display());
            println!(
                "  store {}",
                sluice::exposure::redact_url(&sluice::wiring::store_url(&config, &env_var))
            );
            for model in &config.models {
                let providers: Vec<&str> = model.deployments.iter().map(|d| d.provider.as_str()).collect();
                println!("  model {} -> {}", model.name, providers.join(", "));
            }
            for warning in &gateway.warnings {
                println!("  warning: {warning}");
            }
            Ok(())
        }
        Command::Prompts(command) => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            let gateway = sluice::build(&config, &env_var)?;
            let registry = gateway.prompts.current();
            match command {
                PromptsCommand::Check => println!(
                    "{}: {} prompt template(s) ok",
                    config.prompts.dir.display(),
                    registry.iter().count()
                ),
                PromptsCommand::List => {
                    for prompt in registry.list() {
                        let versions: Vec<String> = prompt.versions.iter().map(u32::to_string).collect();
                        println!(
                            "{} (versions {}; model {}): {}",
                            prompt.name,
                            versions.join(", "),
                            prompt.model,
                            prompt.description
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Alerts(AlertsCommand::Test) => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            sluice::alerting::send_test(&config, &env_var).await
        }
        Command::Migrate => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            sluice::wiring::open_store(&config, &env_var).await?;
            println!(
                "{}: migrations applied",
                sluice::exposure::redact_url(&sluice::wiring::store_url(&config, &env_var))
            );
            Ok(())
        }
        Command::Tenants(command) => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            let store = sluice::wiring::open_store(&config, &env_var).await?;
            tenants(&store, command).await
        }
        Command::Keys(command) => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            let store = sluice::wiring::open_store(&config, &env_var).await?;
            keys(&store, command, sluice::wiring::redis_settings(&config, &env_var)).await
        }
        Command::Catalog(args) => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            let gateway = sluice::build(&config, &env_var)?;
            let store = sluice::wiring::open_store(&config, &env_var).await?;
            catalog::catalog(&store, &config.models, &gateway.prompts.current(), args).await
        }
        Command::Subscriptions(command) => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            let store = sluice::wiring::open_store(&config, &env_var).await?;
            catalog::subscriptions(&store, command).await
        }
        Command::Grants(command) => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            let store = sluice::wiring::open_store(&config, &env_var).await?;
            catalog::grants(&store, command).await
        }
        Command::Audit(args) => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            let store = sluice::wiring::open_store(&config, &env_var).await?;
            catalog::audit_log(&store, args).await
        }
        Command::Spend(args) => {
            let config = Config::load(&cli.config)?;
            init_logging(cli.log_format, Some(&config));
            let store = sluice::wiring::open_store(&config, &env_var).await?;
            spend::run(&store, args).await
        }
        Command::Tokens(TokensCommand::Count { model, file }) => {
            let body = match &file {
                Some(path) => std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
                None => {
                    let mut body = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                        .context("cannot read standard input")?;
                    body
                }
            };
            let request: sluice_api::ChatCompletionRequest =
                sluice_api::parse_json(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
            // A configured model is counted with its first deployment's encoding; otherwise the name is
            // taken as a vendor model id.
            let vendor_model = Config::load(&cli.config).ok().and_then(|config| {
                config
                    .models
                    .iter()
                    .find(|m| m.name == model)
                    .and_then(|m| m.deployments.first())
                    .map(|d| d.model.clone())
            });
            let vendor_model = vendor_model.as_deref().unwrap_or(&model);
            let encoding = sluice_tokens::Encoding::for_model(vendor_model, sluice_tokens::EncodingName::O200kBase);
            let count = sluice_tokens::count_chat(&request, encoding);
            println!(
                "{} prompt tokens ({}, {})",
                count.tokens,
                encoding.name,
                if count.is_estimate() { "estimate" } else { "exact" }
            );
            Ok(())
        }
        Command::Simulate(args) => {
            init_logging(cli.log_format, None);
            simulate(args).await
        }
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn tenants(store: &sluice_store::Store, command: TenantsCommand) -> anyhow::Result<()> {
    match command {
        TenantsCommand::Create {
            name,
            rpm,
            tpm,
            budget_usd,
            budget_period,
            models,
            prompts,
        } => {
            let budget_micros = match budget_usd {
                Some(usd) => Some(
                    sluice_store::usd_to_micros(usd)
                        .filter(|m| *m >= 0)
                        .context("--budget-usd must be a non-negative amount")?,
                ),
                None => None,
            };
            let budget_period = match budget_period.as_str() {
                "day" => sluice_store::BudgetPeriod::Day,
                "month" => sluice_store::BudgetPeriod::Month,
                other => anyhow::bail!("--budget-period must be day or month, not `{other}`"),
            };
            let tenant = store
                .create_tenant(&sluice_store::NewTenant {
                    name,
                    rpm,
                    tpm,
                    budget_micros,
                    budget_period,
                    models,
                    prompts,
                })
                .await?;
            let detail = serde_json::to_value(&tenant).unwrap_or_default();
            catalog::audit(store, "tenant.create", &tenant.name, detail).await;
            println!("created tenant {}", tenant.name);
        }
        TenantsCommand::List => {
            let rows = store
                .list_tenants()
                .await?
                .into_iter()
                .map(|tenant| {
                    vec![
                        tenant.name,
                        tenant.rpm.map_or("-".to_owned(), |v| v.to_string()),
                        tenant.tpm.map_or("-".to_owned(), |v| v.to_string()),
                        tenant.budget_micros.map_or("-".to_owned(), sluice_store::format_usd),
                        tenant.budget_period.to_string(),
                    ]
                })
                .collect::<Vec<_>>();
            print!(
                "{}",
                table_text(
                    &[
                        ("tenant", Align::Left),
                        ("rpm", Align::Right),
                        ("tpm", Align::Right),
                        ("budget_usd", Align::Right),
                        ("period", Align::Left),
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

async fn keys(
    store: &sluice_store::Store,
    command: KeysCommand,
    redis: Option<sluice_budget::RedisSettings>,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    match command {
        KeysCommand::Create { tenant, name } => {
            let created = store.create_key(&tenant, name.as_deref(), None).await?;
            let detail = serde_json::json!({"tenant": created.tenant, "name": created.name, "prefix": created.prefix});
            catalog::audit(store, "key.create", &created.id, detail).await;
            println!("id:  {}", created.id);
            println!("key: {}", created.key.expose_secret());
            eprintln!("The key is shown once; store it now.");
        }
        KeysCommand::List { tenant } => {
            let now = chrono::Utc::now();
            let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let rows = store
                .list_keys(&tenant)
                .await?
                .into_iter()
                .map(|key| {
                    let state = format!("{:?}", key.state(now));
                    vec![
                        key.id,
                        key.prefix,
                        key.name.unwrap_or_else(|| "-".to_owned()),
                        state,
                        time(key.created_at),
                        key.expires_at.map_or("-".to_owned(), time),
                    ]
                })
                .collect::<Vec<_>>();
            print!(
                "{}",
                table_text(
                    &[
                        ("id", Align::Left),
                        ("prefix", Align::Left),
                        ("name", Align::Left),
                        ("state", Align::Left),
                        ("created", Align::Left),
                        ("expires", Align::Left),
                    ],
                    &rows
                )
            );
        }
        KeysCommand::Revoke { id } => {
            store.revoke_key(&id).await?;
            catalog::audit(store, "key.revoke", &id, serde_json::json!({})).await;
            println!("revoked {id}");
            // Replicas sharing budgets through Redis drop the key at once; the others at their next refresh.
            if let Some(settings) = redis {
                let revoked = sluice_budget::Announcement::KeyRevoked(id.as_str().into());
                if let Err(err) = sluice_budget::RedisBudgets::announce_once(&settings, revoked).await {
                    eprintln!(
                        "warning: could not tell the gateways through Redis ({err}); they see it within [store] refresh_ms"
                    );
                }
            }
        }
    }
    Ok(())
}

/// How a table column lines its cells up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left.
    Right,
}

/// `rows` under `columns` as lines of text: each column as wide as its widest cell (header included),
/// two spaces between columns, no trailing spaces. Widths count characters.
fn table_text(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let width = |text: &str| text.chars().count();
    let mut widths: Vec<usize> = columns.iter().map(|(name, _)| width(name)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let header: Vec<String> = columns.iter().map(|(name, _)| (*name).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, ((cell, w), (_, align))) in row.iter().zip(&widths).zip(columns).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(w - width(cell));
            match align {
                Align::Left => {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
                Align::Right => {
                    line.push_str(&pad);
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

async fn serve(config: Config) -> anyhow::Result<()> {
    sluice::exposure::check_listen(&config)?;
    let mut gateway = sluice::build(&config, &env_var)?;
    gateway.connect_budgets(Duration::from_secs(2)).await;
    sluice::wiring::attach_store(&mut gateway, &config, &env_var).await?;
    let _refreshing = gateway.refresh_tenancy(&config);
    let _logs = gateway.maintain_request_logs(&config);
    let _watching = gateway.watch_prompts(&config);
    let _alerting = gateway.watch_alerts(&config, &env_var)?;
    gateway.export_traces(&config, &env_var)?;
    let app = sluice::app(&gateway, &config);
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (server.listen in {})",
            config.listen,
            config.path.display()
        )
    })?;
    let models: Vec<&str> = gateway.router.model_names().collect();
    if let Some(warning) = sluice::exposure::open_files_warning(&config.serve) {
        tracing::warn!("{warning}");
    }
    tracing::info!(address = %config.listen, models = ?models, "sluice is listening");
    sluice_server::serve_with(listener, app, sluice_server::shutdown_signal(), config.serve).await?;
    gateway.flush(config.shutdown_flush).await;
    tracing::info!("sluice stopped");
    Ok(())
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.error_rate) {
        anyhow::bail!("--error-rate must be between 0 and 1; got {}", args.error_rate);
    }
    let sim = Arc::new(Simulator::new(SimConfig {
        rpm: args.rpm,
        tpm: args.tpm,
        latency: Duration::from_millis(args.latency_ms),
        tokens_per_sec: args.tokens_per_sec,
        error_rate: args.error_rate,
        reply_tokens: args.reply_tokens,
        fault: args.fault,
        seed: args.seed,
    }));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %args.listen, vendor = args.vendor.kind, config = ?sim.config(), "simulated vendor is listening");
    let app = sluice_simulate::router(sim, args.vendor.wire);
    sluice_server::serve(listener, app, sluice_server::shutdown_signal(), Duration::from_secs(5)).await?;
    Ok(())
}

fn init_logging(format: Option<LogFormatArg>, config: Option<&Config>) {
    let level = config.map_or("info", |c| c.log.level.as_str());
    let json = match format {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Text) => false,
        None => config.is_some_and(|c| c.log.format == LogFormat::Json),
    };
    logging::init(level, json);
}

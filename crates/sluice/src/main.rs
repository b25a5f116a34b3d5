//! `sluice`: the gateway's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sluice::config::{Config, LogFormat};
use sluice_providers::{Fault, SimConfig, Simulator};

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
    /// Which vendor's wire format to speak: openai, anthropic or gemini.
    #[arg(long, default_value = "openai")]
    vendor: sluice_simulate::Vendor,
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
            let gateway = sluice::build(&config, &env_var)?;
            println!("{}: ok", config.path.display());
            for model in &config.raw.models {
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
                    config.raw.prompts.dir.display(),
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
        Command::Simulate(args) => {
            init_logging(cli.log_format, None);
            simulate(args).await
        }
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let gateway = sluice::build(&config, &env_var)?;
    let _watching = gateway.watch_prompts(&config);
    let app = sluice::app(&gateway, &config);
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (server.listen in {})",
            config.listen,
            config.path.display()
        )
    })?;
    let models: Vec<&str> = gateway.router.model_names().collect();
    tracing::info!(address = %config.listen, models = ?models, "sluice is listening");
    sluice_server::serve(listener, app, sluice_server::shutdown_signal(), config.shutdown_grace).await?;
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
    tracing::info!(address = %args.listen, vendor = args.vendor.name(), config = ?sim.config(), "simulated vendor is listening");
    let app = sluice_simulate::router(sim, args.vendor);
    sluice_server::serve(listener, app, sluice_server::shutdown_signal(), Duration::from_secs(5)).await?;
    Ok(())
}

fn init_logging(format: Option<LogFormatArg>, config: Option<&Config>) {
    use tracing_subscriber::EnvFilter;
    let level = config.map_or("info", |c| c.raw.log.level.as_str());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Text) => false,
        None => config.is_some_and(|c| c.raw.log.format == LogFormat::Json),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.init();
    }
}

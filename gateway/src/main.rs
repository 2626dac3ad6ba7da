//! The `gateway` binary: parse flags, load config, set up logging, bind, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gateway::config::LogFormat;

/// A high-performance API gateway.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Config file (TOML).
    #[arg(long, env = "GATEWAY_CONFIG", default_value = "config/gateway.toml")]
    config: PathBuf,
    /// Worker threads for the proxy (default: one per core).
    #[arg(long, env = "GATEWAY_WORKERS")]
    workers: Option<usize>,
    /// Log format, overriding `[log] format`: human or json.
    #[arg(long, env = "GATEWAY_LOG_FORMAT")]
    log_format: Option<String>,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = gateway::config::load(&args.config)?;
    if args.check {
        println!(
            "{}: ok ({} routes, {} upstreams)",
            args.config.display(),
            config.routes.len(),
            config.upstreams.len()
        );
        return Ok(());
    }
    let format = match args.log_format.as_deref() {
        None => config.log.format,
        Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(other) => anyhow::bail!("--log-format {other}: use human or json"),
    };
    init_tracing(format);

    let workers = match args.workers {
        Some(0) => anyhow::bail!("--workers must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // This thread accepts connections and runs the admin server, reloads and
    // discovery; with one worker it also serves the connections, and with more each
    // worker thread runs a single-threaded runtime of its own (`server::workers`).
    let runtime = gateway::runtime().context("starting the runtime")?;
    runtime.block_on(async {
        let listeners = gateway::Listeners::bind(&config).await?;
        gateway::run_with_workers(listeners, config, workers, gateway::shutdown::signal()).await?;
        Ok(())
    })
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

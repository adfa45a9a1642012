//! `tidemark-agent`: streams a PostgreSQL database's committed changes into
//! an archive. A thin clap layer over `tidemark_agent::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tidemark_agent::config::{Layers, Origin};

#[derive(Parser)]
#[command(
    name = "tidemark-agent",
    version,
    about = "Archive a PostgreSQL database's committed changes continuously",
    long_about = "tidemark-agent runs beside a PostgreSQL database (15 or later, wal_level = logical) and streams \
                  every committed change through logical replication into an archive, within about a second of \
                  the commit. It acknowledges to PostgreSQL only what is durable in the archive, and resumes where \
                  the archive ends after a restart or crash.\n\n\
                  Settings come from, in increasing priority: defaults, the configuration file, TIDEMARK_* \
                  environment variables, these flags. The source defaults to libpq's PG* variables.",
    after_help = "Examples:\n  \
                  tidemark-agent --source 'host=/var/run/postgresql dbname=synapse user=tidemark' --archive file:///var/lib/tidemark/archive\n  \
                  PGDATABASE=synapse TIDEMARK_ARCHIVE=file:///srv/archive tidemark-agent\n\n\
                  Stop it with SIGTERM or Ctrl-C: it closes the open segment, makes it durable and exits 0.\n\
                  Logs go to standard error; TIDEMARK_LOG sets the level (error, warn, info, debug)."
)]
struct Cli {
    /// Configuration file (TOML). Default: ./tidemark.toml if it exists.
    #[arg(long, short = 'c', env = "TIDEMARK_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The database: a libpq connection string or postgresql:// URI [env: TIDEMARK_SOURCE].
    #[arg(long, value_name = "CONNSTR")]
    source: Option<String>,
    /// Where to archive: file:///absolute/path or s3://bucket/prefix [env: TIDEMARK_ARCHIVE].
    #[arg(long, value_name = "URL")]
    archive: Option<String>,
    /// Serve /metrics and /healthz here (default 127.0.0.1:9187; off to disable) [env: TIDEMARK_METRICS_ADDR].
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_addr: Option<String>,
}

fn layers(cli: &Cli) -> Result<Layers, tidemark_agent::config::ConfigError> {
    let mut layers = Layers::default();
    let default_file = PathBuf::from("tidemark.toml");
    match &cli.config {
        Some(path) => layers.add_file(path)?,
        None if default_file.is_file() => layers.add_file(&default_file)?,
        None => {}
    }
    let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("TIDEMARK_")).collect();
    layers.add_env(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(source) = &cli.source {
        layers.set("source", source.clone(), Origin::Flag("--source".into()));
    }
    if let Some(archive) = &cli.archive {
        layers.set("archive", archive.clone(), Origin::Flag("--archive".into()));
    }
    if let Some(addr) = &cli.metrics_addr {
        layers.set("metrics_addr", addr.clone(), Origin::Flag("--metrics-addr".into()));
    }
    Ok(layers)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the agent still runs; it just cannot stop cleanly.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let config = match layers(&cli).and_then(|l| l.validate()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tidemark-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidemark-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tidemark_agent::run(config, shutdown_signal())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("tidemark-agent: {message}");
            ExitCode::FAILURE
        }
    }
}

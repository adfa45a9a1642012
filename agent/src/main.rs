//! `tidemark-agent`: will stream a PostgreSQL database's committed changes
//! into an archive. Until the streaming issue lands it only answers --help
//! and --version, and says so.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tidemark-agent",
    version,
    about = "Archive a PostgreSQL database continuously (not yet functional)",
    long_about = "tidemark-agent will run beside a PostgreSQL database, take a consistent base dump and \
                  stream every committed change into an archive (a local directory or S3).\n\n\
                  This build has the archive format and test harness only: the agent does not stream yet."
)]
struct Cli {}

fn main() -> ExitCode {
    Cli::parse();
    eprintln!("tidemark-agent: this build cannot stream yet; only the archive format (wal-format) is in place");
    ExitCode::from(2)
}

//! `tidemark`: the command line for tidemark archives.
//!
//! Only what works is offered: today `inspect` reads a segment file. The
//! restore, list, verify and mark commands arrive with base dumps and restore.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod inspect;

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Inspect tidemark archives of PostgreSQL databases",
    long_about = "tidemark keeps a PostgreSQL database restorable to any moment: tidemark-agent archives \
                  every committed change; this command reads that archive.\n\n\
                  Available now: inspect. Restore, list, verify and mark are not available yet."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a segment file's header, and with --records every record in it.
    ///
    /// Checks every checksum and structural rule of the format while reading
    /// (wal-format/FORMAT.md), and ends with an error naming the block or
    /// record at fault if the file is damaged.
    #[command(
        after_help = "Example:\n  tidemark inspect archive/segments/0000000001000000-00000000010001C8.seg --records"
    )]
    Inspect {
        /// A segment file (`segments/<start>-<end>.seg` in a file:// archive).
        path: PathBuf,
        /// Print every record, not only the header and totals.
        #[arg(long)]
        records: bool,
        /// Print as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { path, records, json } => inspect::run(&path, records, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`tidemark inspect ... | head`) is not a failure.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidemark: {e:#}");
            ExitCode::FAILURE
        }
    }
}

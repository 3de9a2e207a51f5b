use std::process::ExitCode;

use clap::Parser;

use enc::cli::Cli;

/// Threads for blocking work (the embedded store's commits, which redb runs one at a time):
/// a burst of writes waits in a queue rather than holding a thread, and its memory, each.
const BLOCKING_THREADS: usize = 8;

fn main() -> ExitCode {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .expect("the async runtime")
        .block_on(enc::cli::run(Cli::parse()))
}

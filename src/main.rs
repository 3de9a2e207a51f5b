use clap::Parser;

use enc::cli::{Cli, Command};
use enc::{server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::serve(cli.config, server::shutdown_signal()).await,
    }
}

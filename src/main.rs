use clap::Parser;

use enc::cli::{Cli, Command, DynamodbCommand};
use enc::store::dynamodb::{DynamoStore, tables};
use enc::{server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::serve(cli.config, server::shutdown_signal()).await,
        Command::Dynamodb {
            action: DynamodbCommand::Tables,
        } => {
            let definitions = tables::definitions(&cli.config.table_prefix);
            println!("{}", serde_json::to_string_pretty(&definitions)?);
            Ok(())
        }
        Command::Dynamodb {
            action: DynamodbCommand::CreateTables,
        } => {
            let store = DynamoStore::connect(&cli.config.dynamodb()).await;
            tables::create_tables(store.client(), &cli.config.table_prefix).await
        }
    }
}

use std::process::ExitCode;

use clap::Parser;

use enc::cli::{Cli, Command, DynamodbCommand};
use enc::store::dynamodb::{DynamoDb, DynamoSettings, tables};
use enc::{as_code, classify, client, migrate, server, telemetry};

/// Threads for blocking work (the embedded store's commits, which redb runs one at a time):
/// a burst of writes waits in a queue rather than holding a thread, and its memory, each.
const BLOCKING_THREADS: usize = 8;

fn main() -> ExitCode {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .expect("the async runtime")
        .block_on(run())
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config;
    let command = cli.command.unwrap_or(Command::Serve);
    // Only the server exports traces; the client commands just log.
    let telemetry = telemetry::init(config.log_format, matches!(command, Command::Serve));
    match command {
        Command::Serve => {
            let served =
                server::serve(config, telemetry.tracing(), server::shutdown_signal()).await;
            telemetry.shutdown();
            report(served)
        }
        Command::Classify { certname } => classify::run(&config, &certname).await,
        Command::Export { dir } => as_code::export(&config, &dir).await,
        Command::Plan { tree } => as_code::plan(&config, &tree).await,
        Command::Apply { tree, plan, force } => as_code::apply(&config, &tree, &plan, force).await,
        Command::Migrate(args) => migrate::run(&config, &args).await,
        Command::Healthcheck => {
            if client::healthcheck(&config).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Dynamodb { action } => report(dynamodb(action, &config).await),
    }
}

async fn dynamodb(action: DynamodbCommand, config: &enc::config::Config) -> anyhow::Result<()> {
    match action {
        DynamodbCommand::Tables => {
            let definitions = tables::definitions(&config.table_prefix);
            println!("{}", serde_json::to_string_pretty(&definitions)?);
            Ok(())
        }
        DynamodbCommand::CreateTables => {
            let store = DynamoDb::connect(&DynamoSettings::of(config)).await;
            tables::create_tables(store.client(), &config.table_prefix).await
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

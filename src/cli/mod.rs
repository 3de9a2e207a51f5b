//! The command line: each subcommand's arguments and what runs it. `serve` (the default)
//! serves HTTP; `classify`, `export`, `plan`, `apply` and `healthcheck` are clients of a
//! running enc (classify is Puppet's ENC command, as_code the tree files); `migrate` and
//! `dynamodb` talk to DynamoDB.

pub mod as_code;
pub mod classify;
pub mod migrate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::store::dynamodb::{DynamoDb, DynamoSettings, tables};
use crate::{client, server, telemetry};
use as_code::TreeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "enc",
    version,
    about = "External node classifier for Puppet, with the metrics form and operations endpoints.",
    long_about = "External node classifier for Puppet, with the metrics form and operations \
                  endpoints.\n\nEvery option can also be set by the environment variable shown \
                  beside it; the command line wins.",
    after_help = "Without a subcommand, enc serves HTTP (as `enc serve`)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API, Swagger UI and operations endpoints (the default).
    Serve,
    /// Print a node's classification as YAML for Puppet (`external_nodes = enc classify`,
    /// `node_terminus = exec`). Exits non-zero for an unknown node.
    Classify {
        /// The node's certname, as Puppet passes it.
        certname: String,
    },
    /// Write the whole classification (from the enc at ENC_URL, with the token in
    /// ENC_TOKEN_FILE) as a tree of YAML files, one per object, under --dir.
    Export {
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Plan the tree under --dir against the enc at ENC_URL: prints every change and its
    /// impact on nodes, then `plan <id>`. Exits 0 when nothing would change, 2 when
    /// something would (as terraform's -detailed-exitcode), 1 on an error.
    Plan {
        #[command(flatten)]
        tree: TreeArgs,
    },
    /// Apply exactly the plan <id> of the tree under --dir (with a token of scope write);
    /// refused if anything the plan read has changed since. An apply of several commits
    /// (DynamoDB) asked again finishes what an interruption left (or says all was written);
    /// an apply of one commit asked again is refused (412).
    Apply {
        #[command(flatten)]
        tree: TreeArgs,
        /// The plan id `enc plan` printed.
        #[arg(long)]
        plan: String,
        /// Apply even though the plan gives nodes conflicting values.
        #[arg(long)]
        force: bool,
    },
    /// Write the earlier ENC's DynamoDB tables (Node, NodeGroup, Environment) as a tree
    /// under --dir, for `enc plan` and `enc apply`. Reports every item it cannot map and why
    /// on stderr; exits 0 when every item is mapped, 2 when some are not, 1 on an error.
    Migrate(migrate::MigrateArgs),
    /// Exit 0 if the local server answers /healthz (for container health checks).
    Healthcheck,
    /// DynamoDB table definitions.
    Dynamodb {
        #[command(subcommand)]
        action: DynamodbCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DynamodbCommand {
    /// Print every table as DynamoDB CreateTable input (JSON), named with ENC_TABLE_PREFIX.
    Tables,
    /// Create the tables that do not exist yet (for DynamoDB Local and development; in AWS
    /// the tables come from CloudFormation).
    CreateTables,
}

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> ExitCode {
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

async fn dynamodb(action: DynamodbCommand, config: &Config) -> anyhow::Result<()> {
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

//! Command line: `enc [serve]`.

use clap::{Parser, Subcommand};

use crate::config::Config;

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

//! Configuration: every setting, its environment variable and its default, in one place.
//! `enc --help` prints this documentation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where enc keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// One redb file under `ENC_DATA_DIR`; needs no AWS.
    Embedded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for CloudWatch Logs Insights).
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address and port the HTTP server listens on.
    #[arg(
        long,
        env = "ENC_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Storage backend.
    #[arg(
        long,
        env = "ENC_STORE",
        value_enum,
        default_value = "embedded",
        global = true
    )]
    pub store: StoreKind,

    /// Directory of the embedded store's file (created if missing).
    #[arg(long, env = "ENC_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.
    #[arg(
        long,
        env = "ENC_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 20,
        global = true
    )]
    pub shutdown_grace_seconds: u64,

    /// Log format. `RUST_LOG` filters what is logged (default `info`).
    #[arg(
        long,
        env = "ENC_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

impl Config {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

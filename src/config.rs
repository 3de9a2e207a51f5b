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
    /// Amazon DynamoDB (credentials and region from the standard AWS chain).
    Dynamodb,
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

    /// DynamoDB endpoint to use instead of AWS's, e.g. DynamoDB Local `http://127.0.0.1:8000`.
    #[arg(long, env = "ENC_DYNAMODB_ENDPOINT", global = true)]
    pub dynamodb_endpoint: Option<String>,

    /// Prefix of the DynamoDB table names (`<prefix>nodes`, `<prefix>node_groups`, ...).
    #[arg(long, env = "ENC_TABLE_PREFIX", default_value = "enc-", global = true)]
    pub table_prefix: String,

    /// Milliseconds to open a connection to DynamoDB.
    #[arg(
        long,
        env = "ENC_DYNAMODB_CONNECT_TIMEOUT_MS",
        default_value_t = 1000,
        global = true
    )]
    pub dynamodb_connect_timeout_ms: u64,

    /// Milliseconds one DynamoDB call may take, retries included; past it the request
    /// answers 503.
    #[arg(
        long,
        env = "ENC_DYNAMODB_TIMEOUT_MS",
        default_value_t = 3000,
        global = true
    )]
    pub dynamodb_timeout_ms: u64,

    /// Attempts per DynamoDB call (standard retry mode, with backoff).
    #[arg(
        long,
        env = "ENC_DYNAMODB_MAX_ATTEMPTS",
        default_value_t = 3,
        global = true
    )]
    pub dynamodb_max_attempts: u32,

    /// Browser origins allowed to call enc across origins, comma-separated (e.g. a metrics form
    /// hosted on `https://forms.example.com`). No CORS when empty.
    #[arg(long, env = "ENC_CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Vec<String>,

    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.
    #[arg(
        long,
        env = "ENC_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 20,
        global = true
    )]
    pub shutdown_grace_seconds: u64,

    /// Base URL of the enc service that `enc classify` asks (through the load balancer in AWS).
    #[arg(
        long,
        env = "ENC_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,

    /// Seconds `enc classify` waits for the service before falling back to its cache.
    #[arg(
        long,
        env = "ENC_CLASSIFY_TIMEOUT",
        default_value_t = 10,
        global = true
    )]
    pub classify_timeout: u64,

    /// Directory where `enc classify` keeps each node's last good answer, used (with a warning)
    /// when the service is unreachable, times out or fails. No cache when unset.
    #[arg(long, env = "ENC_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,

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
    pub fn dynamodb(&self) -> crate::store::dynamodb::DynamoSettings {
        crate::store::dynamodb::DynamoSettings {
            endpoint: self.dynamodb_endpoint.clone(),
            table_prefix: self.table_prefix.clone(),
            connect_timeout: Duration::from_millis(self.dynamodb_connect_timeout_ms),
            operation_timeout: Duration::from_millis(self.dynamodb_timeout_ms),
            max_attempts: self.dynamodb_max_attempts.max(1),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

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

/// Whether callers must say who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every route but health, documentation and the empty form needs a token or sign-in.
    On,
    /// Anyone may do anything: for local experiments only (logged at start and in /readyz).
    Off,
}

/// A secret from the environment: kept out of `Debug` output and `--help`.
#[derive(Clone)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(…)")
    }
}

impl std::str::FromStr for SecretValue {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretValue(s.to_owned()))
    }
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

    /// Seconds a client has to send a request's headers before its connection is closed.
    #[arg(
        long,
        env = "ENC_HEADER_TIMEOUT_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub header_timeout_seconds: u64,

    /// Seconds a kept-alive connection may be idle between requests before enc closes it:
    /// above the load balancer's idle timeout (the ALB's is 60 s), so that the balancer never
    /// sends a request on a connection enc is closing.
    #[arg(
        long,
        env = "ENC_KEEP_ALIVE_SECONDS",
        default_value_t = 75,
        global = true
    )]
    pub keep_alive_seconds: u64,

    /// Seconds a request may take; past it enc answers 503.
    #[arg(
        long,
        env = "ENC_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30,
        global = true
    )]
    pub request_timeout_seconds: u64,

    /// Requests answered at once; past it enc answers 503 with Retry-After at once rather than
    /// queue (health checks and /metrics are not counted).
    #[arg(
        long,
        env = "ENC_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256,
        global = true
    )]
    pub max_concurrent_requests: usize,

    /// MiB of the embedded store's page cache; pages past it are read from the operating
    /// system's file cache, so the process stays small as the file grows.
    #[arg(
        long,
        env = "ENC_EMBEDDED_CACHE_MIB",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=4096),
        global = true
    )]
    pub embedded_cache_mib: u32,

    /// Fleet-wide operations run at once (a group write's judgement or preview, a lookup of
    /// a group's or a class's nodes, a plan, an apply, an export); past it enc answers 503
    /// with Retry-After at once, so memory stays bounded.
    #[arg(
        long,
        env = "ENC_MAX_FLEET_WORK",
        default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(1..=64),
        global = true
    )]
    pub max_fleet_work: u32,

    /// Nodes one page of a lookup (`/nodegroup/{g}/nodes`, `/classes/{c}/nodes`) judges at
    /// most: a page of a group that holds few stops there, however few it holds, and its
    /// `next_cursor` says where the next starts.
    #[arg(
        long,
        env = "ENC_LOOKUP_JUDGED",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
        global = true
    )]
    pub lookup_judged: u32,

    /// Nodes whose whole facts one request may read when their rule views were taken before
    /// the rules read the paths they read now; also how many a group write takes again
    /// itself before leaving the rest to the background (answers say `provisional` until
    /// then).
    #[arg(
        long,
        env = "ENC_VIEWS_INLINE",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(0..=1_000_000),
        global = true
    )]
    pub views_inline: u32,

    /// Seconds after which an agent run stores its node's whole facts again although what
    /// rules read did not change (an agent run whose rule view changed stores them at once).
    #[arg(
        long,
        env = "ENC_FACTS_REFRESH_SECONDS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u32).range(0..=31_536_000),
        global = true
    )]
    pub facts_refresh_seconds: u32,

    /// Milliseconds the background taking of rule views pauses between pages, to leave the
    /// store to agent runs.
    #[arg(
        long,
        env = "ENC_VIEWS_PACE_MS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=60_000),
        global = true
    )]
    pub views_pace_ms: u32,

    /// Whether a node enc does not know, sent with facts that a group's rule takes in (or
    /// pinned by a group), is recorded, in the environment that group gives, and classified.
    #[arg(long, env = "ENC_CLASSIFY_UNKNOWN", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub classify_unknown: bool,

    /// Days the change history is kept (DynamoDB's TTL on `expires_at`, and an hourly prune);
    /// unset: forever.
    #[arg(long, env = "ENC_HISTORY_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..=36500), global = true)]
    pub history_retention_days: Option<u32>,

    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.
    #[arg(
        long,
        env = "ENC_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 20,
        global = true
    )]
    pub shutdown_grace_seconds: u64,

    /// Base URL of the enc service that `enc classify`, `export`, `plan` and `apply` ask
    /// (through the load balancer in AWS).
    #[arg(
        long,
        env = "ENC_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,

    /// Lets the commands that send a token (`classify`, `export`, `plan`, `apply`) send it to
    /// an `http://` ENC_URL that is not this machine: in clear, readable on the network.
    #[arg(long, env = "ENC_ALLOW_HTTP", default_value_t = false, global = true)]
    pub allow_http: bool,

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

    /// The Puppet server's fact cache, `<server_datadir>/facts` (Debian's puppetserver:
    /// `/var/lib/puppetserver/server_data/facts`; Puppet's packages:
    /// `/opt/puppetlabs/server/data/puppetserver/server_data/facts`): `enc classify` sends the
    /// node's facts from `<certname>.json` there, or from an older server's
    /// `<certname>.yaml`, so group rules judge them. No facts are sent when unset.
    #[arg(long, env = "ENC_FACTS_DIR", global = true)]
    pub facts_dir: Option<PathBuf>,

    /// The Puppet CA's certificate (Puppet's `ssl/certs/ca.pem`; may hold a chain): `enc
    /// classify` sends trusted facts only from a node certificate that verifies against it.
    /// No trusted facts are sent when unset.
    #[arg(long, env = "ENC_PUPPET_CA_CERT", global = true)]
    pub puppet_ca_cert: Option<PathBuf>,

    /// The Puppet CA's revocation list: a revoked node certificate gives no trusted facts.
    /// Default: Puppet's `ssl/crl.pem` beside ENC_PUPPET_CA_CERT's `ssl/certs/`, when it exists.
    #[arg(long, env = "ENC_PUPPET_CRL", global = true)]
    pub puppet_crl: Option<PathBuf>,

    /// The Puppet CA's signed certificates, `<certname>.pem` (Debian's puppetserver:
    /// `/etc/puppet/puppetserver/ca/signed`; Puppet's packages:
    /// `/etc/puppetlabs/puppetserver/ca/signed`), read for the node's trusted facts.
    #[arg(long, env = "ENC_PUPPET_SIGNED_DIR", global = true)]
    pub puppet_signed_dir: Option<PathBuf>,

    /// The Puppet CA, e.g. `https://puppet:8140`: asked for
    /// `/puppet-ca/v1/certificate/<certname>` when ENC_PUPPET_SIGNED_DIR is unset or lacks the
    /// node; its server certificate must verify against ENC_PUPPET_CA_CERT.
    #[arg(long, env = "ENC_PUPPET_CA_URL", global = true)]
    pub puppet_ca_url: Option<String>,

    /// Whether callers must present identity: `on` (a bearer token, the load balancer's
    /// sign-in, or the form's session), or `off` for local experiments only.
    #[arg(
        long,
        env = "ENC_AUTH",
        value_enum,
        default_value = "on",
        global = true
    )]
    pub auth: AuthMode,

    /// A secret always accepted as an `admin` token (at least 32 characters; in AWS from
    /// Secrets Manager). Set it in the environment, never on a command line.
    #[arg(
        long,
        env = "ENC_BOOTSTRAP_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub bootstrap_token: Option<SecretValue>,

    /// A file holding the bootstrap secret instead (e.g. a mounted secret).
    #[arg(long, env = "ENC_BOOTSTRAP_TOKEN_FILE", global = true)]
    pub bootstrap_token_file: Option<PathBuf>,

    /// The file holding the token `enc classify` (scope `classify`), `export` (`read`), `plan`
    /// (`plan`) and `apply` (`write`) present.
    #[arg(long, env = "ENC_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,

    /// The load balancer's ARN: trust its `x-amzn-oidc-data` sign-in data (ES256, signed by
    /// this load balancer). Sign-in through the load balancer is off when unset.
    #[arg(long, env = "ENC_ALB_OIDC_SIGNER", global = true)]
    pub alb_oidc_signer: Option<String>,

    /// Where the load balancer's public keys are: `<url>/<kid>`. Default: the region's
    /// `https://public-keys.auth.elb.<AWS_REGION>.amazonaws.com`.
    #[arg(long, env = "ENC_ALB_OIDC_KEYS_URL", global = true)]
    pub alb_oidc_keys_url: Option<String>,

    /// Scopes of people signed in through the load balancer, as JSON: `"claim=value"` (or
    /// `"*"` for everyone) to a list, e.g. `{"groups=enc-admins": ["admin"], "*":
    /// ["activities:write"]}`. Nobody gets a scope that is not given here.
    #[arg(long, env = "ENC_ALB_OIDC_SCOPES", default_value = "", global = true)]
    pub alb_oidc_scopes: String,

    /// Whether `/metrics` needs a token with the scope `read`.
    #[arg(
        long,
        env = "ENC_METRICS_TOKEN_REQUIRED",
        default_value_t = false,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub metrics_token_required: bool,

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
    pub fn history_retention(&self) -> Option<chrono::Duration> {
        self.history_retention_days
            .map(|days| chrono::Duration::days(i64::from(days)))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    /// The bootstrap secret, from the environment or its file; refused when short.
    pub fn bootstrap_secret(&self) -> anyhow::Result<Option<String>> {
        let secret = match (&self.bootstrap_token, &self.bootstrap_token_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set ENC_BOOTSTRAP_TOKEN or ENC_BOOTSTRAP_TOKEN_FILE, not both")
            }
            (Some(secret), None) => secret.0.trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("ENC_BOOTSTRAP_TOKEN_FILE {}: {e}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        if secret.chars().count() < 32 {
            anyhow::bail!("the bootstrap token must be at least 32 characters");
        }
        Ok(Some(secret))
    }
}

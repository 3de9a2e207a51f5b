//! The real binary, over real TCP: start, serve, stop on SIGTERM, start again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::helpers::{ADMIN, dynamodb_under_test, unique_prefix};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_enc");

/// Where a started enc keeps its data: a directory for the embedded store, or (in the
/// DynamoDB pass) fresh tables on DynamoDB Local, created by `enc dynamodb create-tables`.
pub(crate) struct EncData {
    dir: tempfile::TempDir,
    table_prefix: String,
    /// Whether enc gets the test bootstrap secret (`ADMIN`).
    bootstrap: bool,
}

impl EncData {
    pub(crate) fn new() -> EncData {
        let data = EncData {
            dir: tempfile::tempdir().unwrap(),
            table_prefix: unique_prefix(),
            bootstrap: true,
        };
        if dynamodb_under_test() {
            // Setup waits as long as DynamoDB Local needs while it warms up beside other tests.
            let out = data
                .command()
                .env("ENC_DYNAMODB_TIMEOUT_MS", "30000")
                .args(["dynamodb", "create-tables"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        data
    }

    /// Data for an enc started without a bootstrap secret.
    pub(crate) fn without_bootstrap() -> EncData {
        EncData {
            bootstrap: false,
            ..EncData::new()
        }
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub(crate) fn table_prefix(&self) -> &str {
        &self.table_prefix
    }

    /// The enc binary with a clean environment pointing at this data.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("ENC_DATA_DIR", self.dir.path())
            .env("RUST_LOG", "warn");
        if self.bootstrap {
            command.env("ENC_BOOTSTRAP_TOKEN", ADMIN);
        }
        if dynamodb_under_test() {
            command
                .env("ENC_STORE", "dynamodb")
                .env(
                    "ENC_DYNAMODB_ENDPOINT",
                    std::env::var("ENC_TEST_DYNAMODB_ENDPOINT").unwrap(),
                )
                .env("ENC_TABLE_PREFIX", &self.table_prefix);
            for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
                if let Ok(value) = std::env::var(name) {
                    command.env(name, value);
                }
            }
        }
        command
    }
}

pub(crate) struct Enc {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    /// The thread reading enc's stderr into `logs`; it ends when enc has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Enc {
    pub(crate) fn start(data: &EncData, grace_seconds: u64) -> Enc {
        Enc::start_with(data, grace_seconds, &[], false)
    }

    /// Starts enc with extra environment; with `capture`, its stderr (the logs) is kept
    /// for `logs()` instead of shown.
    pub(crate) fn start_with(
        data: &EncData,
        grace_seconds: u64,
        env: &[(&str, &str)],
        capture: bool,
    ) -> Enc {
        let stderr = if capture {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        Enc::start_logging_to(data, grace_seconds, env, stderr)
    }

    /// Starts enc with extra environment, its stderr (the logs) going to `stderr` (kept for
    /// `logs()` if that is a pipe).
    pub(crate) fn start_logging_to(
        data: &EncData,
        grace_seconds: u64,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Enc {
        let addr = free_addr();
        let mut command = data.command();
        command
            .env("ENC_LISTEN", addr.to_string())
            .env("ENC_SHUTDOWN_GRACE_SECONDS", grace_seconds.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = command.spawn().expect("start enc");
        let logs = Arc::new(Mutex::new(String::new()));
        let reader = child.stderr.take().map(|stderr| {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut all = logs.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            })
        });
        let enc = Enc {
            child,
            addr,
            logs,
            reader,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) =
                enc.try_http("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            {
                return enc;
            }
            sleep(Duration::from_millis(50));
        }
        panic!("enc did not become healthy on {addr}");
    }

    /// What enc logged so far (with `capture`): complete once `wait` has seen enc exit.
    pub(crate) fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// What enc logged, once it holds `needle` (or after 10 s): enc writes its log lines a
    /// few milliseconds after the event, and a thread here reads them after that.
    pub(crate) fn logs_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) || Instant::now() > deadline {
                return logs;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Sends a raw request (with whatever headers) and returns status and body.
    pub(crate) fn send_raw(&self, request: &str) -> (u16, String) {
        self.try_http(request).expect("HTTP exchange")
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn try_http(&self, request: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.write_all(request.as_bytes())?;
        read_response(&mut stream)
    }

    /// A request as the test administrator (the bootstrap secret).
    pub(crate) fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.http_as(Some(ADMIN), method, path, body)
    }

    /// A request presenting `token`, or no identity.
    pub(crate) fn http_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        let request = match body {
            Some(b) => format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ),
            None => {
                format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\r\n")
            }
        };
        self.try_http(&request).expect("HTTP exchange")
    }

    /// A token with these scopes, made through the API: its secret.
    pub(crate) fn token(&self, name: &str, scopes: &[&str]) -> String {
        let body = serde_json::json!({"name": name, "scopes": scopes}).to_string();
        let (status, answer) = self.http("POST", "/tokens", Some(&body));
        assert_eq!(status, 201, "{answer}");
        let made: serde_json::Value = serde_json::from_str(&answer).unwrap();
        made["token"].as_str().unwrap().to_owned()
    }

    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub(crate) fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its stderr is closed: the reader has every line, or soon will.
                if let Some(reader) = self.reader.take() {
                    reader.join().expect("the log reader");
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("enc did not stop within {limit:?}");
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Enc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    // Longer than enc's own request timeout (30 s): enc answers first, a 503 if it ran out
    // of time (a large apply on DynamoDB Local under a loaded test run takes over 10 s).
    stream.set_read_timeout(Some(Duration::from_secs(35)))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

const ENV: &str = r#"{"environment_name":"production","puppet_cluster_name":"eu"}"#;

#[test]
fn serves_over_tcp_stops_on_sigterm_and_keeps_data() {
    let data = EncData::new();
    let mut enc = Enc::start(&data, 5);
    let (status, body) = enc.http("POST", "/environment/", Some(ENV));
    assert_eq!(status, 201, "{body}");
    let (status, body) = enc.http("GET", "/environment/production/eu", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\":1"));
    let (status, _) = enc.http("GET", "/readyz", None);
    assert_eq!(status, 200);

    enc.terminate();
    assert!(enc.wait(Duration::from_secs(10)).success());

    let enc = Enc::start(&data, 5);
    let (status, body) = enc.http("GET", "/environment/production/eu", None);
    assert_eq!(status, 200, "data survives a restart: {body}");
}

/// Text logs written to a file (not a terminal) are plain text: no colour codes, and a
/// request's duration in milliseconds to the microsecond.
#[test]
fn text_logs_to_a_file_have_no_colour_codes_and_round_durations() {
    let data = EncData::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.log");
    let file = std::fs::File::create(&path).unwrap();
    let env = [("ENC_LOG_FORMAT", "text"), ("RUST_LOG", "info")];
    let mut enc = Enc::start_logging_to(&data, 5, &env, file.into());
    let (status, _) = enc.http("GET", "/environment/production/eu", None);
    assert_eq!(status, 404);
    enc.terminate();
    assert!(enc.wait(Duration::from_secs(10)).success());
    let logs = std::fs::read_to_string(&path).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("/environment/production/eu"))
        .unwrap_or_else(|| panic!("no log line of the request in {logs}"));
    assert!(!logs.contains('\u{1b}'), "colour codes in a file: {logs:?}");
    let duration = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("duration_ms="))
        .unwrap_or_else(|| panic!("no duration in {line}"));
    let decimals = duration.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(
        duration.parse::<f64>().is_ok() && decimals <= 3,
        "duration_ms={duration} in {line}"
    );
}

#[test]
fn finishes_a_request_in_flight_when_told_to_stop() {
    let mut enc = Enc::start(&EncData::new(), 10);
    let mut stream = TcpStream::connect(enc.addr).unwrap();
    let head = format!(
        "POST /environment/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        ENV.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&ENV.as_bytes()[..10]).unwrap();
    sleep(Duration::from_millis(300));

    enc.terminate();
    sleep(Duration::from_millis(300));
    assert!(
        enc.child.try_wait().unwrap().is_none(),
        "enc waits for the request"
    );
    stream.write_all(&ENV.as_bytes()[10..]).unwrap();
    let (status, body) = read_response(&mut stream).unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(enc.wait(Duration::from_secs(10)).success());
}

#[test]
fn the_grace_period_bounds_shutdown() {
    let mut enc = Enc::start(&EncData::new(), 1);
    let mut stream = TcpStream::connect(enc.addr).unwrap();
    let head = format!(
        "POST /environment/ HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).unwrap();
    sleep(Duration::from_millis(300));
    let asked = Instant::now();
    enc.terminate();
    assert!(enc.wait(Duration::from_secs(10)).success());
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "waited for the grace period: {took:?}"
    );
}

#[test]
fn help_explains_subcommands_and_every_variable() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "serve",
        "ENC_LISTEN",
        "ENC_STORE",
        "ENC_DATA_DIR",
        "ENC_SHUTDOWN_GRACE_SECONDS",
        "ENC_LOG_FORMAT",
        "RUST_LOG",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn a_bad_setting_is_refused_at_start() {
    let out = Command::new(BIN)
        .env("ENC_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ENC_LISTEN")
            || String::from_utf8_lossy(&out.stderr).contains("listen")
    );
    for (name, value) in [
        ("ENC_EMBEDDED_CACHE_MIB", "0"),
        ("ENC_MAX_FLEET_WORK", "0"),
        ("ENC_MAX_FLEET_WORK", "many"),
    ] {
        let out = Command::new(BIN).env(name, value).output().unwrap();
        assert!(!out.status.success(), "{name}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&name.to_lowercase().replace("enc_", "").replace('_', "-")),
            "{name}={value}: {stderr}"
        );
    }
}

#[test]
fn dynamodb_tables_prints_create_table_inputs() {
    let out = Command::new(BIN)
        .args(["dynamodb", "tables"])
        .env("ENC_TABLE_PREFIX", "enc-prod-")
        .output()
        .unwrap();
    assert!(out.status.success());
    let tables: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = tables
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["TableName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "enc-prod-environments",
            "enc-prod-node_groups",
            "enc-prod-nodes",
            "enc-prod-facts",
            "enc-prod-views",
            "enc-prod-activities",
            "enc-prod-tokens",
            "enc-prod-history"
        ]
    );
    for table in tables.as_array().unwrap() {
        assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
        let name = table["TableName"].as_str().unwrap();
        // What agent runs write is in no index (one would be one partition for the fleet).
        let written_by_agent_runs = ["enc-prod-facts", "enc-prod-views"].contains(&name);
        match table.get("GlobalSecondaryIndexes") {
            Some(indexes) => {
                assert!(!written_by_agent_runs, "{name} has an index");
                assert!(!indexes.as_array().unwrap().is_empty(), "{name}");
            }
            None => assert!(written_by_agent_runs, "{name} has no index"),
        }
    }
}

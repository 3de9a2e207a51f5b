//! The real binary, over real TCP: start, serve, stop on SIGTERM, start again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_enc");

struct Enc {
    child: Child,
    addr: SocketAddr,
}

impl Enc {
    fn start(data_dir: &Path, grace_seconds: u64) -> Enc {
        let addr = free_addr();
        let child = Command::new(BIN)
            .env_clear()
            .env("ENC_LISTEN", addr.to_string())
            .env("ENC_DATA_DIR", data_dir)
            .env("ENC_SHUTDOWN_GRACE_SECONDS", grace_seconds.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start enc");
        let enc = Enc { child, addr };
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

    fn try_http(&self, request: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.write_all(request.as_bytes())?;
        read_response(&mut stream)
    }

    fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let request = match body {
            Some(b) => format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ),
            None => format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        };
        self.try_http(&request).expect("HTTP exchange")
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
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

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
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
    let dir = tempfile::tempdir().unwrap();
    let mut enc = Enc::start(dir.path(), 5);
    let (status, body) = enc.http("POST", "/environment/", Some(ENV));
    assert_eq!(status, 201, "{body}");
    let (status, body) = enc.http("GET", "/environment/production/eu", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\":1"));
    let (status, _) = enc.http("GET", "/readyz", None);
    assert_eq!(status, 200);

    enc.terminate();
    assert!(enc.wait(Duration::from_secs(10)).success());

    let enc = Enc::start(dir.path(), 5);
    let (status, body) = enc.http("GET", "/environment/production/eu", None);
    assert_eq!(status, 200, "data survives a restart: {body}");
}

#[test]
fn finishes_a_request_in_flight_when_told_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = Enc::start(dir.path(), 10);
    let mut stream = TcpStream::connect(enc.addr).unwrap();
    let head = format!(
        "POST /environment/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
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
    let dir = tempfile::tempdir().unwrap();
    let mut enc = Enc::start(dir.path(), 1);
    let mut stream = TcpStream::connect(enc.addr).unwrap();
    stream
        .write_all(b"POST /environment/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
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
            "enc-prod-nodes"
        ]
    );
    for table in tables.as_array().unwrap() {
        assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
        assert!(
            !table["GlobalSecondaryIndexes"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
}

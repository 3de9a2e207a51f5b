//! Debian's Puppet Server 7 with `node_terminus = exec` and real `puppet agent -t` runs: the
//! facts the server receives and the certificates its CA signs decide a node's groups, and the
//! agent applies their classes.
//!
//! `scripts/test` starts one Puppet Server for the whole run (`start_puppetserver` in
//! scripts/lib.sh: its own CA, autosigning, code from tests/fixtures/puppetserver) and names
//! it in `ENC_TEST_PUPPETSERVER_DIR` and `ENC_TEST_PUPPETSERVER_PORT`. Its `external_nodes`
//! runs `enc classify` as `<dir>/enc.env` says, which the test writes for the enc it starts:
//! so the server serves one test at a time, and there is one test here.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::binary::{BIN, Enc, EncData, free_addr};
use crate::helpers::tool;

/// An agent run that takes longer than this has hung.
const AGENT_TIMEOUT: Duration = Duration::from_secs(240);

/// The Puppet Server `scripts/test` started, and the paths of its throwaway layout.
struct PuppetServer {
    dir: PathBuf,
    port: u16,
}

impl PuppetServer {
    /// The server of this run; `None` (with a line on stderr) outside CI when there is none.
    fn of_this_run() -> Option<PuppetServer> {
        let dir = std::env::var_os("ENC_TEST_PUPPETSERVER_DIR");
        let port = std::env::var("ENC_TEST_PUPPETSERVER_PORT").ok();
        let (Some(dir), Some(port)) = (dir, port) else {
            let why = "ENC_TEST_PUPPETSERVER_DIR and ENC_TEST_PUPPETSERVER_PORT are not set: \
                       scripts/test starts Puppet Server and sets them (or source scripts/lib.sh, \
                       then start_puppetserver && wait_for_puppetserver)";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            crate::helpers::skipped(&format!("the Puppet Server test: {why}"));
            return None;
        };
        let port = port.parse().expect("ENC_TEST_PUPPETSERVER_PORT is a port");
        Some(PuppetServer {
            dir: dir.into(),
            port,
        })
    }

    /// Where Puppet Server 7 keeps the facts agents send, as `<certname>.json`
    /// (`<server_datadir>/facts`; server_datadir is `<vardir>/server_data`).
    fn facts_dir(&self) -> PathBuf {
        self.dir.join("var/server_data/facts")
    }

    /// The CA's signed certificates, `<certname>.pem`.
    fn signed_dir(&self) -> PathBuf {
        self.dir.join("ca/signed")
    }

    /// The Puppet CA certificate and CRL as the server keeps them (Puppet's `ssl/certs/ca.pem`
    /// and `ssl/crl.pem`).
    fn ca_cert(&self) -> PathBuf {
        self.dir.join("ssl/certs/ca.pem")
    }

    fn crl(&self) -> PathBuf {
        self.dir.join("ssl/crl.pem")
    }

    /// Points the server's `external_nodes` at this enc (replacing the file whole, so the
    /// server never reads half of it).
    fn classify_with(&self, vars: &[(&str, String)]) {
        let text: String = vars
            .iter()
            .map(|(name, value)| {
                assert!(!value.contains('\''), "{value}");
                format!("{name}='{value}'\n")
            })
            .collect();
        let pending = self.dir.join("enc.env.pending");
        std::fs::write(&pending, text).unwrap();
        std::fs::rename(&pending, self.dir.join("enc.env")).unwrap();
    }

    /// `puppet agent -t` as `certname`, in its own throwaway Puppet directories under `dirs`,
    /// its CSR asking for these extensions: the exit status (2: changes applied, no failures)
    /// and everything it printed.
    fn agent_run(
        &self,
        certname: &str,
        extensions: &[(&str, &str)],
        dirs: &Path,
    ) -> (ExitStatus, String) {
        let dir = |name: &str| dirs.join(name);
        std::fs::create_dir_all(dir("conf")).unwrap();
        let requests: String = extensions
            .iter()
            .map(|(name, value)| format!("  {name}: {value:?}\n"))
            .collect();
        std::fs::write(
            dir("conf/csr_attributes.yaml"),
            format!("extension_requests:\n{requests}"),
        )
        .unwrap();
        let log = dir("agent.log");
        let out = std::fs::File::create(&log).unwrap();
        // Facter asks a cloud's metadata service (169.254.169.254) on a cloud VM: its HTTP
        // goes to a closed local port instead, and the agent's own to 127.0.0.1, directly.
        let nowhere = format!("http://{}", free_addr());
        let started = Instant::now();
        let mut child = Command::new(tool("ENC_TEST_PUPPET", "puppet"))
            .env("http_proxy", &nowhere)
            .env("HTTP_PROXY", &nowhere)
            .env("no_proxy", "127.0.0.1,localhost")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .args(["agent", "-t", "--color", "false"])
            .args([
                "--server",
                "127.0.0.1",
                "--serverport",
                &self.port.to_string(),
            ])
            .args(["--certname", certname, "--keylength", "2048"])
            // Without this, the connection the agent reuses after sending its CSR waits out
            // Jetty's 30 s idle timeout before the agent tries again on a new one.
            .args(["--http_keepalive_timeout", "0"])
            .arg("--confdir")
            .arg(dir("conf"))
            .arg("--ssldir")
            .arg(dir("ssl"))
            .arg("--vardir")
            .arg(dir("var"))
            .arg("--codedir")
            .arg(dir("code"))
            .arg("--logdir")
            .arg(dir("log"))
            .arg("--rundir")
            .arg(dir("run"))
            .arg("--publicdir")
            .arg(dir("public"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("puppet agent runs (scripts/test installs Debian's puppet package)");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > AGENT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "puppet agent -t for {certname} took over {AGENT_TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(100));
        };
        eprintln!(
            "puppet agent -t for {certname}: {status} after {:?}",
            started.elapsed()
        );
        (status, std::fs::read_to_string(&log).unwrap())
    }
}

/// What the agent's run wrote to `dir/<certname>.<class>`, if it ran that class.
fn probe(dir: &Path, certname: &str, class: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(format!("{certname}.{class}"))).ok()
}

#[test]
fn a_real_agent_run_is_classified_by_its_facts_and_its_certificate() {
    let Some(server) = PuppetServer::of_this_run() else {
        return;
    };
    let data = EncData::new();
    let enc = Enc::start(&data, 5);
    // Certnames of this run only: the CA signs a certname once.
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (db, web) = (format!("db-{run}.enc.test"), format!("web-{run}.enc.test"));
    let written = tempfile::tempdir().unwrap();
    let probe_dir = written.path().to_str().unwrap();
    let requests = [
        (
            "/environment/",
            json!({"environment_name": "production", "puppet_cluster_name": "e2e"}),
        ),
        (
            "/nodegroup/",
            json!({
                "name": "Puppet agents",
                "classes": {"enc_probe": {"dir": probe_dir, "message": "named"}},
                "environment_name": "production", "puppet_cluster_name": "e2e"
            }),
        ),
        (
            "/nodegroup/",
            json!({
                "name": "Linux kernels", "parent": "Puppet agents",
                "rule": ["=", ["fact", "kernel"], "Linux"],
                "classes": {"enc_probe::fact": {"dir": probe_dir, "message": "kernel Linux"}},
                "environment_name": "production", "puppet_cluster_name": "e2e"
            }),
        ),
        (
            "/nodegroup/",
            json!({
                "name": "Databases", "parent": "Puppet agents",
                "rule": ["=", ["trusted", "extensions", "pp_role"], "db"],
                "classes": {"enc_probe::role": {"dir": probe_dir, "message": "db"}},
                "environment_name": "production", "puppet_cluster_name": "e2e"
            }),
        ),
    ];
    for (path, body) in requests {
        let (status, answer) = enc.http("POST", path, Some(&body.to_string()));
        assert_eq!(status, 201, "{answer}");
    }
    for node in [&db, &web] {
        let body = json!({
            "unique_name": node, "node_group_name": "Puppet agents",
            "environment_name": "production", "puppet_cluster_name": "e2e"
        });
        let (status, answer) = enc.http("POST", "/nodes/", Some(&body.to_string()));
        assert_eq!(status, 201, "{answer}");
    }

    // The Puppet server's side: a classify token, a classification cache, and the server's
    // own fact cache and CA.
    let token_file = written.path().join("classify-token");
    std::fs::write(&token_file, enc.token("puppet-e2e", &["classify"]) + "\n").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let path = |path: &Path| path.to_str().expect("a UTF-8 path").to_owned();
    server.classify_with(&[
        ("ENC_TEST_BIN", BIN.to_owned()),
        ("ENC_URL", enc.url()),
        ("ENC_TOKEN_FILE", path(&token_file)),
        ("ENC_CACHE_DIR", path(cache.path())),
        // Time enough while the rest of the suite loads the machine: a timeout would give
        // the answer cached before the facts came.
        ("ENC_CLASSIFY_TIMEOUT", "60".to_owned()),
        ("ENC_FACTS_DIR", path(&server.facts_dir())),
        ("ENC_PUPPET_SIGNED_DIR", path(&server.signed_dir())),
        ("ENC_PUPPET_CA_CERT", path(&server.ca_cert())),
        ("ENC_PUPPET_CRL", path(&server.crl())),
    ]);

    let agents = tempfile::tempdir().unwrap();
    for (node, role) in [(&db, "db"), (&web, "web")] {
        let (status, output) =
            server.agent_run(node, &[("pp_role", role)], &agents.path().join(node));
        assert_eq!(
            status.code(),
            Some(2),
            "{node}: changes applied, no failure:\n{output}"
        );
        // The named group's class, with its parameter.
        assert_eq!(
            probe(written.path(), node, "enc_probe").as_deref(),
            Some("named"),
            "{output}"
        );
        // The server kept the facts the agent sent where enc classify reads them.
        let kept = server.facts_dir().join(format!("{node}.json"));
        let facts: Value = serde_json::from_slice(
            &std::fs::read(&kept).unwrap_or_else(|e| panic!("{}: {e}", kept.display())),
        )
        .unwrap();
        assert_eq!(facts["name"], **node);
        assert_eq!(facts["values"]["kernel"], "Linux");
        // The group whose rule reads an ordinary fact took the node in.
        assert_eq!(
            probe(written.path(), node, "fact").as_deref(),
            Some("kernel Linux"),
            "{output}"
        );
    }
    // The group whose rule reads the certificate's pp_role took in the node whose
    // certificate carries pp_role db, and not the other.
    assert_eq!(probe(written.path(), &db, "role").as_deref(), Some("db"));
    assert_eq!(probe(written.path(), &web, "role"), None);
    // enc says the same, by the facts the Puppet server sent it.
    for (node, databases) in [(&db, true), (&web, false)] {
        let (status, explained) = enc.http(
            "GET",
            &format!("/nodes/{node}/classification?explain=true"),
            None,
        );
        assert_eq!(status, 200, "{explained}");
        let explained: Value = serde_json::from_str(&explained).unwrap();
        let membership = &explained["membership"];
        let groups = membership["groups"].as_array().unwrap();
        let by_rule = |name: &str| {
            groups
                .iter()
                .any(|g| g["group"] == name && g["why"][0] == "rule")
        };
        assert!(by_rule("Linux kernels"), "{node}: {membership}");
        assert_eq!(by_rule("Databases"), databases, "{node}: {membership}");
        assert!(membership["facts_received_at"].is_string(), "{membership}");
    }
}

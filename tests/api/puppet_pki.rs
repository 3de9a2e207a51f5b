//! What a Puppet server holds, made with real tools for the trusted-facts tests: a Puppet CA
//! laid out as Puppet lays it out (`ssl/certs/ca.pem`, `ssl/crl.pem`, `ca/signed/`), node
//! certificates with extension requests signed by OpenSSL's `ca` command, the CA served over
//! https (OpenSSL's `s_server`), fact caches written by Puppet's JSON facts terminus, and
//! Puppet's own Ruby as the oracle of `$trusted`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::binary::free_addr;
use crate::helpers::tool;

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .expect("the tool runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl() -> Command {
    Command::new(tool("ENC_TEST_OPENSSL", "openssl"))
}

/// A certificate authority in a directory of its own, as Puppet's CA and ssldir.
pub(crate) struct Ca {
    dir: tempfile::TempDir,
}

impl Ca {
    /// A self-signed CA.
    pub(crate) fn new(name: &str) -> Ca {
        let ca = Ca::empty();
        run(ca
            .openssl_with("req")
            .args(["-x509", "-extensions", "ca_ext", "-days", "30"])
            .args(["-newkey", "rsa:2048", "-nodes", "-subj"])
            .arg(format!("/CN=Puppet CA: {name}"))
            .arg("-keyout")
            .arg(ca.dir.path().join("ca/ca.key"))
            .arg("-out")
            .arg(ca.ca_cert()));
        ca
    }

    /// A CA that `parent` signed; its `ca.pem` holds the chain, itself first, as Puppet's
    /// does with an intermediate CA.
    pub(crate) fn intermediate(parent: &Ca, name: &str) -> Ca {
        let ca = Ca::empty();
        let csr = ca.dir.path().join("keys/ca.csr");
        run(ca
            .openssl_with("req")
            .args(["-new", "-newkey", "rsa:2048", "-nodes", "-subj"])
            .arg(format!("/CN=Puppet CA: {name}"))
            .arg("-keyout")
            .arg(ca.dir.path().join("ca/ca.key"))
            .arg("-out")
            .arg(&csr));
        run(parent
            .openssl_with("ca")
            .args(["-batch", "-notext", "-extensions", "ca_ext", "-in"])
            .arg(&csr)
            .arg("-out")
            .arg(ca.ca_cert()));
        let chain = [
            std::fs::read(ca.ca_cert()).unwrap(),
            std::fs::read(parent.ca_cert()).unwrap(),
        ]
        .concat();
        std::fs::write(ca.ca_cert(), chain).unwrap();
        ca
    }

    fn empty() -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let root = root.as_path();
        for sub in ["ssl/certs", "ca/signed", "ca/new", "keys"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("ca/index.txt"), "").unwrap();
        std::fs::write(root.join("ca/serial"), "1000\n").unwrap();
        std::fs::write(root.join("ca/crlnumber"), "1000\n").unwrap();
        std::fs::write(root.join("ca.cnf"), config(root)).unwrap();
        Ca { dir }
    }

    fn openssl_with(&self, command: &str) -> Command {
        let mut c = openssl();
        c.arg(command)
            .arg("-config")
            .arg(self.dir.path().join("ca.cnf"));
        c
    }

    /// Puppet's `ssl/certs/ca.pem`.
    pub(crate) fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ssl/certs/ca.pem")
    }

    /// The CA's signed directory, `<certname>.pem`.
    pub(crate) fn signed_dir(&self) -> PathBuf {
        self.dir.path().join("ca/signed")
    }

    /// Signs a certificate for `certname` with these extension requests (OpenSSL's
    /// `-addext` syntax), valid 30 days from now or between `dates` (`YYYYMMDDHHMMSSZ`), into
    /// the signed directory; its path, and its key's.
    pub(crate) fn issue(
        &self,
        certname: &str,
        extensions: &[&str],
        dates: Option<(&str, &str)>,
    ) -> (PathBuf, PathBuf) {
        let key = self.dir.path().join(format!("keys/{certname}.key"));
        let csr = self.dir.path().join(format!("keys/{certname}.csr"));
        let mut request = self.openssl_with("req");
        request
            .args(["-new", "-newkey", "rsa:2048", "-nodes", "-subj"])
            .arg(format!("/CN={certname}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr);
        for extension in extensions {
            request.args(["-addext", extension]);
        }
        run(&mut request);
        let cert = self.signed_dir().join(format!("{certname}.pem"));
        let mut sign = self.openssl_with("ca");
        sign.args(["-batch", "-notext", "-in"])
            .arg(&csr)
            .arg("-out")
            .arg(&cert);
        if let Some((start, end)) = dates {
            sign.args(["-startdate", start, "-enddate", end]);
        }
        run(&mut sign);
        (cert, key)
    }

    /// Revokes `cert` and writes the CA's CRL.
    pub(crate) fn revoke(&self, cert: &Path) {
        run(self.openssl_with("ca").arg("-revoke").arg(cert));
        self.write_crl();
    }

    /// Writes the CA's CRL where Puppet keeps it, `ssl/crl.pem`; its path.
    pub(crate) fn write_crl(&self) -> PathBuf {
        let crl = self.dir.path().join("ssl/crl.pem");
        run(self.openssl_with("ca").arg("-gencrl").arg("-out").arg(&crl));
        crl
    }

    /// Writes `ssl/crl.pem` as Puppet keeps it under an intermediate CA: this CA's CRL and
    /// then `parent`'s.
    pub(crate) fn write_crl_chain(&self, parent: &Ca) {
        let own = std::fs::read(self.write_crl()).unwrap();
        let parents = std::fs::read(parent.write_crl()).unwrap();
        std::fs::write(self.dir.path().join("ssl/crl.pem"), [own, parents].concat()).unwrap();
    }
}

fn config(root: &Path) -> String {
    format!(
        r#"[ca]
default_ca = puppet_ca
[puppet_ca]
dir = {root}/ca
database = $dir/index.txt
new_certs_dir = $dir/new
certificate = {root}/ssl/certs/ca.pem
private_key = $dir/ca.key
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 30
default_crl_days = 30
policy = any_name
copy_extensions = copy
unique_subject = no
x509_extensions = node_ext
[any_name]
commonName = supplied
[node_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[req]
distinguished_name = dn
[dn]
"#,
        root = root.display()
    )
}

/// `$trusted` as Puppet 7 computes it from `cert` for `certname`, with Puppet's OIDs
/// registered as Puppet Server registers them.
pub(crate) fn puppets_trusted(cert: &Path, certname: &str) -> Value {
    const SCRIPT: &str = r#"require "puppet"
Puppet::SSL::Oids.register_puppet_oids
cert = Puppet::SSL::Certificate.from_s(File.read(ARGV[0]))
puts JSON.generate(Puppet::Context::TrustedInformation.remote(true, ARGV[1], cert).to_h)"#;
    let out = run(Command::new(tool("ENC_TEST_RUBY", "ruby"))
        .args(["-rjson", "-e", SCRIPT])
        .arg(cert)
        .arg(certname));
    serde_json::from_str(&out).unwrap()
}

/// Writes `values` as each certname's facts with Puppet's JSON facts terminus, as Puppet
/// Server 7 does under its `server_datadir`; the files' paths (`<server_datadir>/facts/...`).
pub(crate) fn cache_json_facts(
    server_datadir: &Path,
    certnames: &[&str],
    values: &Value,
) -> Vec<PathBuf> {
    const SCRIPT: &str = r##"require "puppet"
dir, scratch, values, *certnames = ARGV
Puppet.initialize_settings(["--confdir", "#{scratch}/conf", "--vardir", "#{scratch}/var",
  "--server_datadir", dir, "--client_datadir", dir])
Puppet::Node::Facts.indirection.terminus_class = :json
certnames.each do |certname|
  facts = Puppet::Node::Facts.new(certname, JSON.parse(values))
  facts.timestamp = Time.now
  Puppet::Node::Facts.indirection.save(facts)
  puts Puppet::Node::Facts.indirection.terminus.path(facts.name)
end"##;
    let scratch = tempfile::tempdir().unwrap();
    let out = run(Command::new(tool("ENC_TEST_RUBY", "ruby"))
        .args(["-rjson", "-e", SCRIPT])
        .arg(server_datadir)
        .arg(scratch.path())
        .arg(values.to_string())
        .args(certnames));
    out.lines().map(PathBuf::from).collect()
}

/// The Puppet CA's certificate endpoint over https: files under `root` served by OpenSSL's
/// `s_server` with `cert` and `key`.
pub(crate) struct CaServer {
    child: Child,
    pub(crate) url: String,
}

impl CaServer {
    pub(crate) fn start(root: &Path, cert: &Path, key: &Path) -> CaServer {
        let addr = free_addr();
        let child = openssl()
            .current_dir(root)
            .args(["s_server", "-WWW", "-quiet", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs");
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "s_server");
            std::thread::sleep(Duration::from_millis(50));
        }
        CaServer {
            child,
            url: format!("https://{addr}"),
        }
    }

    /// Serves `cert` as the CA serves `certname`'s.
    pub(crate) fn publish(root: &Path, certname: &str, cert: &Path) {
        let dir = root.join("puppet-ca/v1/certificate");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(cert, dir.join(certname)).unwrap();
    }
}

impl Drop for CaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as enc's server would have received it.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) body: Option<Value>,
}

/// A server standing in for enc, that records each request and answers it with an empty
/// classification of the node asked for, so `enc classify` succeeds.
pub(crate) fn recorder() -> (String, mpsc::Receiver<Recorded>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sent, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let path = parts.next().unwrap_or_default().to_owned();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = (length > 0).then(|| serde_json::from_slice(&body).unwrap());
            let _ = sent.send(Recorded { method, body });
            let name = path.split('/').nth(2).unwrap_or_default();
            let answer = serde_json::json!({"name": name, "environment": "production", "classes": {}, "parameters": {}}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, received)
}

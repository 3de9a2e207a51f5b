//! The node's certificate, as the Puppet CA signed it, for its trusted facts. The agent's
//! own fact submission can claim anything, so `$trusted` is built only from a certificate
//! found in the CA's signed directory or fetched from the CA, verified here against the
//! Puppet CA certificate and its CRL, for this certname, today. Whatever fails, the node is
//! classified without trusted facts: trusted-path rules then do not take it in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use serde_json::Value;
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};

use super::{der, puppet_trusted};
use crate::config::Config;
use crate::domain::Certname;

/// Where the node's certificate and the CA's are: the `ENC_PUPPET_*` settings.
pub(super) struct PuppetCa<'a> {
    ca_cert: Option<&'a Path>,
    crl: Option<&'a Path>,
    signed_dir: Option<&'a Path>,
    url: Option<&'a str>,
}

impl<'a> PuppetCa<'a> {
    pub(super) fn from_config(config: &'a Config) -> Self {
        Self {
            ca_cert: config.puppet_ca_cert.as_deref(),
            crl: config.puppet_crl.as_deref(),
            signed_dir: config.puppet_signed_dir.as_deref(),
            url: config.puppet_ca_url.as_deref(),
        }
    }

    /// Whether any `ENC_PUPPET_*` setting is made: without, trusted facts are off.
    pub(super) fn configured(&self) -> bool {
        self.ca_cert.is_some()
            || self.crl.is_some()
            || self.signed_dir.is_some()
            || self.url.is_some()
    }

    /// The node's trusted facts from its verified certificate, or why there are none.
    pub(super) async fn trusted(
        &self,
        certname: &Certname,
        timeout: Duration,
    ) -> Result<Value, String> {
        let ca_path = self
            .ca_cert
            .ok_or("ENC_PUPPET_CA_CERT is not set, so no certificate can be verified")?;
        let ca = pem_certificates(ca_path)?;
        let crls = self.crls(ca_path)?;
        let (der, source) = self.node_certificate(certname, &ca, timeout).await?;
        let refused = |why: String| format!("the certificate of {certname} ({source}) {why}");
        verify(&der, &ca, &crls).map_err(refused)?;
        let parts = der::certificate(&der).ok_or_else(|| refused("cannot be read".into()))?;
        match parts.common_name {
            Some(cn) if cn == certname.as_str().as_bytes() => {}
            Some(cn) => {
                return Err(refused(format!("is for {:?}", String::from_utf8_lossy(cn))));
            }
            None => return Err(refused("has no common name".into())),
        }
        Ok(puppet_trusted::trusted(
            certname.as_str(),
            &parts.extensions,
        ))
    }

    /// The CRLs: `ENC_PUPPET_CRL`, which must be readable, or else Puppet's `ssl/crl.pem`
    /// beside `ssl/certs/ca.pem` when it exists.
    fn crls(&self, ca_path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
        let (path, required) = match self.crl {
            Some(path) => (path.to_owned(), true),
            None => (default_crl(ca_path), false),
        };
        match std::fs::read(&path) {
            Ok(pem) => CertificateRevocationListDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("ENC_PUPPET_CRL {}: {e}", path.display())),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("ENC_PUPPET_CRL {}: {e}", path.display())),
        }
    }

    /// The certificate from the signed directory, or else from the CA; and where from.
    async fn node_certificate(
        &self,
        certname: &Certname,
        ca: &[CertificateDer<'static>],
        timeout: Duration,
    ) -> Result<(CertificateDer<'static>, String), String> {
        if let Some(dir) = self.signed_dir {
            let path = dir.join(format!("{certname}.pem"));
            match std::fs::read(&path) {
                Ok(pem) => return first_certificate(&pem, &path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.url.is_some() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(format!(
                        "no certificate of {certname}: {} is absent",
                        path.display()
                    ));
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        let Some(base) = self.url else {
            return Err(
                "set ENC_PUPPET_SIGNED_DIR or ENC_PUPPET_CA_URL to find node certificates".into(),
            );
        };
        let url = format!(
            "{}/puppet-ca/v1/certificate/{certname}",
            base.trim_end_matches('/')
        );
        if !url.starts_with("https://") {
            return Err(format!("ENC_PUPPET_CA_URL {base} is not https"));
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(ca.iter().cloned());
        let fetched = crate::client::get_trusting(&url, "text/plain", roots, timeout)
            .await
            .map_err(|e| e.to_string())?;
        match fetched.status {
            StatusCode::OK => first_certificate(&fetched.body, &url),
            StatusCode::NOT_FOUND => {
                Err(format!("no certificate of {certname}: {url} answered 404"))
            }
            status => Err(format!("{url} answered {status}")),
        }
    }
}

/// `ssl/crl.pem` for `ssl/certs/ca.pem`.
fn default_crl(ca_path: &Path) -> PathBuf {
    ca_path
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("crl.pem")
}

fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("ENC_PUPPET_CA_CERT {}: {e}", path.display()))?;
    let found = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ENC_PUPPET_CA_CERT {}: {e}", path.display()))?;
    if found.is_empty() {
        return Err(format!(
            "ENC_PUPPET_CA_CERT {}: no certificate in it",
            path.display()
        ));
    }
    Ok(found)
}

fn first_certificate(
    pem: &[u8],
    source: &str,
) -> Result<(CertificateDer<'static>, String), String> {
    match CertificateDer::pem_slice_iter(pem).next() {
        Some(Ok(der)) => Ok((der, source.to_owned())),
        Some(Err(e)) => Err(format!("{source}: {e}")),
        None => Err(format!("{source}: no certificate in it")),
    }
}

/// Chain, validity and revocation as Puppet's own checks (`certificate_revocation =
/// chain`): the CA file's self-signed certificates are the roots, the others intermediates;
/// with CRLs, every certificate under the root needs its issuer's CRL.
fn verify(
    node: &CertificateDer<'_>,
    ca: &[CertificateDer<'static>],
    crls: &[CertificateRevocationListDer<'static>],
) -> Result<(), String> {
    let self_signed = |der: &CertificateDer<'_>| {
        EndEntityCert::try_from(der).is_ok_and(|c| c.subject() == c.issuer())
    };
    let (mut roots, mut intermediates): (Vec<_>, Vec<_>) =
        ca.iter().cloned().partition(|c| self_signed(c));
    if roots.is_empty() {
        roots = std::mem::take(&mut intermediates);
    }
    let anchors = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot be checked: the CA certificate is unusable ({e})"))?;
    let crls = crls
        .iter()
        .map(|crl| BorrowedCertRevocationList::from_der(crl).map(CertRevocationList::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot be checked: the CRL is unusable ({e})"))?;
    let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
    // An out-of-date CRL still lists what it lists; Puppet's CA renews it on every revocation.
    let revocation = RevocationOptionsBuilder::new(&crl_refs)
        .ok()
        .map(|options| {
            options
                .with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Deny)
                .with_expiration_policy(ExpirationPolicy::Ignore)
                .build()
        });
    let node = EndEntityCert::try_from(node).map_err(|e| format!("cannot be read ({e})"))?;
    node.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        UnixTime::now(),
        KeyUsage::client_auth(),
        revocation,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => "has expired".to_owned(),
        webpki::Error::CertNotValidYet { .. } => "is not valid yet".to_owned(),
        webpki::Error::CertRevoked => "is revoked by the CA's CRL".to_owned(),
        webpki::Error::UnknownIssuer => {
            "is not signed by the Puppet CA (ENC_PUPPET_CA_CERT)".to_owned()
        }
        webpki::Error::UnknownRevocationStatus => {
            "cannot be checked: the CRL is not the Puppet CA's (ENC_PUPPET_CRL)".to_owned()
        }
        other => format!("does not verify ({other})"),
    })
}

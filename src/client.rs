//! A small HTTP(S) client for the commands that talk to a running enc.

use std::time::Duration;

use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer from {url} within {seconds} s")]
    Timeout { url: String, seconds: f64 },
    #[error("could not reach {url}: {reason}")]
    Failed { url: String, reason: String },
}

pub struct Fetched {
    pub status: StatusCode,
    pub body: Bytes,
}

/// GETs `url`, answering within `timeout` or failing.
pub async fn get(url: &str, accept: &str, timeout: Duration) -> Result<Fetched, FetchError> {
    get_as(url, accept, None, timeout).await
}

/// The largest answer read by default: a whole classification tree of a large fleet fits.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Whether `url` may carry a bearer token: over https, or over http only to this machine
/// (loopback) or when `allow_http` says so (`ENC_ALLOW_HTTP`).
pub fn check_clear_text(url: &str, allow_http: bool) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| format!("ENC_URL {url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") || allow_http {
        return Ok(());
    }
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    Err(format!(
        "ENC_URL {url} is http://: the token would cross the network in clear; use https://, \
         or set ENC_ALLOW_HTTP=true to send it anyway"
    ))
}

/// GETs `url`, refusing an answer longer than `max_bytes`.
pub async fn get_at_most(
    url: &str,
    accept: &str,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    exchange(url, accept, None, None, &[], None, max_bytes, timeout).await
}

/// GETs `url` presenting `token` (a bearer token), answering within `timeout` or failing.
pub async fn get_as(
    url: &str,
    accept: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    fetch(url, accept, token, None, timeout).await
}

/// GETs `url`, or with `json` POSTs it that JSON, presenting `token`, answering within
/// `timeout` or failing.
pub async fn fetch(
    url: &str,
    accept: &str,
    token: Option<&str>,
    json: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    fetch_with(url, accept, token, json, &[], timeout).await
}

/// As `fetch`, refusing an answer longer than `max_bytes`.
pub async fn fetch_at_most(
    url: &str,
    accept: &str,
    token: Option<&str>,
    json: Option<Vec<u8>>,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    exchange(url, accept, token, json, &[], None, max_bytes, timeout).await
}

/// As `fetch`, with more request headers.
pub async fn fetch_with(
    url: &str,
    accept: &str,
    token: Option<&str>,
    json: Option<Vec<u8>>,
    headers: &[(header::HeaderName, String)],
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    exchange(
        url,
        accept,
        token,
        json,
        headers,
        None,
        MAX_ANSWER_BYTES,
        timeout,
    )
    .await
}

/// GETs `url` over https trusting only `roots` (a private CA's, such as Puppet's),
/// answering within `timeout` or failing.
pub async fn get_trusting(
    url: &str,
    accept: &str,
    roots: rustls::RootCertStore,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    exchange(
        url,
        accept,
        None,
        None,
        &[],
        Some(roots),
        MAX_ANSWER_BYTES,
        timeout,
    )
    .await
}

/// The request, over https trusting `roots`, or the system's CAs when `None`; an answer
/// longer than `max_bytes` is refused.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    url: &str,
    accept: &str,
    token: Option<&str>,
    json: Option<Vec<u8>>,
    headers: &[(header::HeaderName, String)],
    roots: Option<rustls::RootCertStore>,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let failed = |reason: String| FetchError::Failed {
        url: url.to_owned(),
        reason,
    };
    let method = if json.is_some() { "POST" } else { "GET" };
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .header(header::ACCEPT, accept)
        .header(
            header::USER_AGENT,
            concat!("enc/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if json.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(json.unwrap_or_default())))
        .map_err(|_| failed("the request could not be made (is the token one line?)".into()))?;
    let exchange = async {
        if url.starts_with("https:") || roots.is_some() {
            let tls = match roots {
                Some(roots) => {
                    hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config(roots)?)
                }
                None => hyper_rustls::HttpsConnectorBuilder::new()
                    .with_native_roots()
                    .map_err(|e| format!("no CA certificates: {e}"))?,
            }
            .https_only()
            .enable_http1()
            .build();
            send(
                Client::builder(TokioExecutor::new()).build(tls),
                request,
                max_bytes,
            )
            .await
        } else {
            send(
                Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
                request,
                max_bytes,
            )
            .await
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(failed),
        Err(_) => Err(FetchError::Timeout {
            url: url.to_owned(),
            seconds: timeout.as_secs_f64(),
        }),
    }
}

fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn send<C: Connect + Clone + Send + Sync + 'static>(
    client: Client<C, Full<Bytes>>,
    request: Request<Full<Bytes>>,
    max_bytes: usize,
) -> Result<Fetched, String> {
    let response = client
        .request(request)
        .await
        .map_err(|e| crate::telemetry::cause_chain(&e))?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
            Ok(_) => format!("the answer is longer than {max_bytes} bytes"),
            Err(e) => e.to_string(),
        })?
        .to_bytes();
    Ok(Fetched { status, body })
}

/// `enc healthcheck`: asks this host's server, on the port it listens on, for /healthz.
pub async fn healthcheck(config: &Config) -> bool {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/healthz");
    match get(&url, "application/json", Duration::from_secs(3)).await {
        Ok(f) if f.status == StatusCode::OK => true,
        Ok(f) => {
            eprintln!("enc: {url} answered {}", f.status);
            false
        }
        Err(e) => {
            eprintln!("enc: {e}");
            false
        }
    }
}

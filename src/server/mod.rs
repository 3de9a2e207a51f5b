//! Serving: open the store, listen, and shut down gracefully.

mod connection;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::App;
use crate::auth::Auth;
use crate::auth::alb::{Alb, ScopeRules, regional_keys_url};
use crate::auth::secret::{Secret, sha256_hex};
use crate::config::{AuthMode, Config, StoreKind};
use crate::domain::{Scope, Token, TokenName};
use crate::router::{access, router as app};
use crate::store::dynamodb::{DynamoDb, DynamoSettings};
use crate::store::embedded::Embedded;
use crate::store::engine::Engine;
use crate::store::{PageRequest, Store};

/// How identity is checked, from the configuration.
pub fn auth(config: &Config) -> anyhow::Result<Auth> {
    let bootstrap = config.bootstrap_secret()?;
    let alb = match &config.alb_oidc_signer {
        None => None,
        Some(signer) => {
            let rules = ScopeRules::parse(&config.alb_oidc_scopes)
                .map_err(|e| anyhow::anyhow!("ENC_ALB_OIDC_SCOPES {e}"))?;
            let region =
                std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION"));
            let keys_url = match (&config.alb_oidc_keys_url, region) {
                (Some(url), _) => url.clone(),
                (None, Ok(region)) => regional_keys_url(&region),
                (None, Err(_)) => anyhow::bail!(
                    "ENC_ALB_OIDC_SIGNER needs AWS_REGION (or ENC_ALB_OIDC_KEYS_URL) to find the load balancer's keys"
                ),
            };
            Some(Alb::new(signer.clone(), keys_url, rules))
        }
    };
    let required = config.auth == AuthMode::On;
    Ok(Auth::new(
        required,
        bootstrap.as_deref(),
        alb,
        config.metrics_token_required,
        access(),
    ))
}

/// On a first start (no bootstrap secret, and a store that never had a token) makes an
/// `admin` token and keeps its secret only in `<data dir>/admin-token`: mode 0600, created
/// exclusively (a file or link planted there is removed, never written through), written
/// before the token is stored so that a failed write leaves no token nobody can use. stderr
/// (CloudWatch in AWS) names the file, never the secret. A store whose tokens were all
/// deleted is not a first start: its token revisions say it had some, and nobody gets a new
/// admin by deleting tokens and restarting enc.
async fn first_admin_token(store: &Store, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let any = PageRequest {
        limit: 1,
        cursor: None,
    };
    if !store.list_tokens(&any).await?.items.is_empty() {
        return Ok(());
    }
    let ever = crate::store::ChangeFilter {
        kind: Some(&crate::store::tokens::TOKEN),
        ..Default::default()
    };
    if !store.changes(&ever, &any).await?.items.is_empty() {
        tracing::warn!(
            "no API token is stored, but there were some: no first admin token is made; start enc with ENC_BOOTSTRAP_TOKEN to make one"
        );
        return Ok(());
    }
    let name = TokenName::parse("admin").expect("a valid name");
    let secret = Secret::generate(&name);
    let token = Token {
        name,
        scopes: [Scope::Admin].into(),
        description: Some("made by enc on its first start".into()),
        expires_at: None,
        created_by: "enc".into(),
        last_used_at: None,
        secret_sha256: sha256_hex(secret.expose()),
        clusters: None,
    };
    let path = data_dir.join("admin-token");
    write_private(&path, secret.expose()).with_context(|| format!("writing {}", path.display()))?;
    match store.create_token(token, "enc").await {
        Ok(_) => {}
        // Another enc made it at the same moment: its secret is the one, not this.
        Err(crate::store::StoreError::AlreadyExists { .. }) => {
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
    }
    eprintln!(
        "enc: made the first token, \"admin\" (scope admin); its secret is in {} (readable by its owner only)",
        path.display()
    );
    Ok(())
}

/// Writes a new file only its owner can read: whatever was at `path` (a file, a link) is
/// removed first, and the file is created exclusively without following a link, so the
/// secret goes nowhere else.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        crate::store::embedded::private_dir(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Engine>> {
    match config.store {
        StoreKind::Dynamodb => Ok(Arc::new(
            DynamoDb::connect(&DynamoSettings::of(config)).await,
        )),
        StoreKind::Embedded => {
            let cache = config.embedded_cache_mib as usize * 1024 * 1024;
            let store = Embedded::open_with_cache(&config.data_dir, cache).with_context(|| {
                format!(
                    "opening the embedded store in {}",
                    config.data_dir.display()
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// Removes revisions older than `retention`, now and every hour (on DynamoDB its TTL does
/// the same, within days; this makes it exact).
async fn prune_history(store: Arc<crate::store::Store>, retention: chrono::Duration) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let before = chrono::Utc::now() - retention;
        match store.prune_history(&before).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "pruned change history"),
            Err(e) => {
                tracing::warn!(error = %crate::error::cause_chain(&e), "pruning history failed")
            }
        }
        match store.prune_view_versions(&chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "pruned versions of rule views"),
            Err(e) => {
                let error = crate::error::cause_chain(&e);
                tracing::warn!(error = %error, "pruning versions of rule views failed");
            }
        }
    }
}

/// Serves until `shutdown` completes, then gives in-flight requests the grace period.
pub async fn serve(
    config: Config,
    trace_context: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let auth = auth(&config)?;
    let store = open_store(&config).await?;
    let backend = store.backend();
    let state = App::new(store)
        .with_cors_origins(&config.cors_origins)?
        .with_trace_context(trace_context)
        .with_auth(auth)
        .with_history_retention(config.history_retention())
        .with_classify_unknown(config.classify_unknown)
        .with_limits(
            crate::Limits::new(
                Duration::from_secs(config.request_timeout_seconds.max(1)),
                config.max_concurrent_requests,
            )
            .with_fleet_work(config.max_fleet_work as usize)
            .with_lookup_judged(config.lookup_judged as usize),
        )
        .with_views(
            config.views_inline as usize,
            chrono::Duration::seconds(i64::from(config.facts_refresh_seconds)),
            Duration::from_millis(u64::from(config.views_pace_ms)),
        );
    if !state.auth.required {
        tracing::warn!("{}", crate::handlers::health::AUTH_OFF);
    } else if config.bootstrap_secret()?.is_none() {
        first_admin_token(&state.store, &config.data_dir).await?;
    }
    if let Some(retention) = config.history_retention() {
        tokio::spawn(prune_history(state.store.clone(), retention));
    }
    // Views through the rules' paths: an earlier taking goes on where it was, and a store
    // written by an enc before views is viewed.
    state.views.start();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, store = backend, "enc listening");
    let waits = connection::Waits {
        header: Duration::from_secs(config.header_timeout_seconds.max(1)),
        idle: Duration::from_secs(config.keep_alive_seconds.max(1)),
    };
    serve_http(
        listener,
        app(state.into()),
        waits,
        shutdown,
        config.shutdown_grace(),
    )
    .await;
    tracing::info!(store = backend, "store closed, enc stopped");
    Ok(())
}

/// Serves HTTP/1.1 until `shutdown`, then lets requests in flight finish for up to `grace`.
/// A client has `waits.header` to send each request's headers, so a slow one cannot hold a
/// connection forever, and a kept-alive connection may be idle for `waits.idle` between
/// requests (`connection`).
async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    waits: connection::Waits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's header-read timeout would also cut idle connections: `connection` times both.
    http.timer(TokioTimer::new()).header_read_timeout(None);
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (stream, service) = connection::watch(stream, service, waits);
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!(grace_seconds = grace.as_secs(), "grace period over, stopping with requests in flight"),
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

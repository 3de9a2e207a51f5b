//! Serving: open the store, listen, and shut down gracefully.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{Config, StoreKind};
use crate::store::dynamodb::DynamoDb;
use crate::store::embedded::Embedded;
use crate::store::engine::Engine;
use crate::{App, app};

pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Engine>> {
    match config.store {
        StoreKind::Dynamodb => Ok(Arc::new(DynamoDb::connect(&config.dynamodb()).await)),
        StoreKind::Embedded => {
            let store = Embedded::open(&config.data_dir).with_context(|| {
                format!(
                    "opening the embedded store in {}",
                    config.data_dir.display()
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// Serves until `shutdown` completes, then gives in-flight requests the grace period.
pub async fn serve(
    config: Config,
    trace_context: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let backend = store.backend();
    let state = App::new(store)
        .with_cors_origins(&config.cors_origins)?
        .with_trace_context(trace_context);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, store = backend, "enc listening");

    let (stopping_tx, stopping_rx) = oneshot::channel();
    let server = axum::serve(listener, app(state.into())).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stopping_tx.send(());
    });
    let grace = config.shutdown_grace();
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result.context("serving HTTP")?,
        () = deadline => tracing::warn!(grace_seconds = grace.as_secs(), "grace period over, stopping with requests in flight"),
    }
    tracing::info!(store = backend, "store closed, enc stopped");
    Ok(())
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

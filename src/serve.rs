//! Serve wires configuration, Kubernetes client, pipeline and router, and runs
//! them as a plain HTTP server (Deployment, Knative) or an AWS Lambda function.

use std::{
    sync::{Arc, atomic::AtomicBool, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::{
    apicall::ApiCalls,
    auth::Auth,
    config::Config,
    http::{AppState, router},
    lock::LeaseLock,
    pipeline::{Pipeline, Settings},
};

/// Parts are the long-lived objects of one process.
pub struct Parts {
    pub state: AppState,
    pub lock: Option<LeaseLock>,
}

/// build connects to Kubernetes and assembles the request path. Everything a
/// request needs is made here, so that the first request after a cold start
/// does no set-up work.
pub async fn build(config: &Config) -> anyhow::Result<Parts> {
    let mut kc = kube::Config::infer()
        .await
        .context("loading Kubernetes client configuration")?;
    // Each call is bounded by `ApiCalls`. A read timeout here would also fire on
    // idle pooled connections and break the next request sent on them.
    kc.connect_timeout = Some(config.api_timeout);
    let client = kube::Client::try_from(kc).context("building Kubernetes client")?;
    Ok(assemble(config, client).await)
}

/// assemble builds the request path around an existing client.
pub async fn assemble(config: &Config, client: kube::Client) -> Parts {
    let lock = config.distributed_locking.then(|| {
        LeaseLock::new(
            client.clone(),
            &config.lock_namespace,
            &config.instance,
            config.lock_duration,
            config.lock_wait,
        )
    });
    if lock.is_none() {
        tracing::warn!(
            "distributed locking is OFF (GATEWAY_ENABLE_DISTRIBUTED_LOCKING=false): rollback mode, \
             duplicates are prevented by fenced RR names only"
        );
    }
    if !config.fencing {
        tracing::warn!(
            "RR name fencing is OFF (GATEWAY_UNSAFE_DISABLE_FENCING=true): for tests only"
        );
    }
    let settings = Settings {
        namespace: config.namespace.clone(),
        api_timeout: config.api_timeout,
        batch_timeout: config.lock_wait + config.api_timeout * 8,
        max_in_flight: config.max_in_flight,
        fencing: config.fencing,
    };
    let pipeline = Pipeline::new(client.clone(), settings, lock.clone());
    // Opens the TLS connection now rather than on the first signal.
    match pipeline.api_reachable().await {
        Ok(()) => tracing::info!("Kubernetes API reachable"),
        Err(e) => {
            tracing::warn!(error = %e, "Kubernetes API not reachable yet; /readyz stays false until it is")
        }
    }
    let state = AppState {
        pipeline,
        auth: Arc::new(Auth::new(&config.auth, client, config.api_timeout)),
        ready: Arc::new(AtomicBool::new(true)),
        max_body_bytes: config.max_body_bytes,
        alert_concurrency: config.alert_concurrency,
        cluster_id: config.cluster_id.clone(),
    };
    Parts { state, lock }
}

/// run picks the serve mode: Lambda when `AWS_LAMBDA_RUNTIME_API` is set, HTTP otherwise.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let parts = build(&config).await?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        tracing::info!("serving as an AWS Lambda function");
        return lambda_http::run(router(parts.state))
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    }
    http_server(config, parts).await
}

async fn http_server(config: Config, parts: Parts) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, instance = %config.instance, "listening");

    if let Some(lock) = parts.lock.clone() {
        tokio::spawn(sweep_leases(lock, config.lock_duration, config.api_timeout));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::clone(&parts.state.ready);
    tokio::spawn(async move {
        termination().await;
        ready.store(false, Ordering::SeqCst);
        tracing::info!("shutdown signal received: draining in-flight requests");
        let _ = stop_tx.send(true);
        termination().await;
        tracing::error!("second shutdown signal: aborting");
        std::process::exit(1);
    });

    let mut graceful_rx = stop_rx.clone();
    let server = axum::serve(listener, router(parts.state)).with_graceful_shutdown(async move {
        let _ = graceful_rx.wait_for(|stop| *stop).await;
    });
    let mut deadline_rx = stop_rx;
    tokio::select! {
        r = server => r.context("serving HTTP")?,
        _ = async {
            let _ = deadline_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(config.shutdown_timeout).await;
        } => tracing::warn!(timeout = ?config.shutdown_timeout, "in-flight requests did not finish in time"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// sweep_leases removes expired Leases now and then, so that Leases of
/// crashed holders do not pile up for fingerprints that never recur.
async fn sweep_leases(lock: LeaseLock, lease: Duration, api_timeout: Duration) {
    let period = (lease * 4).max(Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        match lock.sweep(&ApiCalls::new(api_timeout)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed expired leases"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired leases failed"),
        }
    }
}

async fn termination() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

//! App wires configuration, Kubernetes client, pipeline and router together, and runs
//! them as a plain HTTP server (Deployment, Knative) or an AWS Lambda function.

use std::{
    sync::{Arc, atomic::AtomicBool, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use axum::{middleware, routing::get};
use tokio::sync::watch;

use crate::{
    chaos::Pauser,
    config::{Config, Scope},
    k8s::{self, ApiCalls, KubeError, Owners, Records, RemediationRequests},
    lambda,
    pipeline::{Pipeline, Resolver, Settings, Writer},
    telemetry::{self, Telemetry},
    web::{self, AppState, Auth, router},
};

/// App is the long-lived objects of one process.
pub struct App {
    pub(crate) state: AppState,
    records: Records,
    rrs: RemediationRequests,
}

/// build connects to Kubernetes and assembles the request path. Everything a request
/// needs is made here, so that the first request after a cold start does no set-up work.
pub async fn build(config: &Config) -> anyhow::Result<App> {
    let client = k8s::connect(config.api_timeout, config.eks.as_ref())
        .await
        .context("building the Kubernetes client")?;
    Ok(assemble(config, client).await)
}

/// BATCH_CALLS is how many Kubernetes calls, each bounded by `GATEWAY_API_TIMEOUT_MS`, the
/// timeout of one batch allows besides its lock wait. The longest round of a write that
/// loses no race makes seven in sequence: the record read, a read of the RR it names, the
/// list of the fingerprint's RRs, the claim, the create, a read of the colliding writer's
/// RR and its status write. A status write lost to a concurrent writer adds a re-read and
/// a write, and a round started over adds the release, the record read and a read of the
/// RR it names. It is a budget, not a bound on the worst case (more rounds, more lost
/// status writes): a batch past it is answered 503, which the sender retries.
const BATCH_CALLS: u32 = 12;

/// assemble builds the request path around an existing client.
pub async fn assemble(config: &Config, client: kube::Client) -> App {
    if !config.distributed_locking {
        tracing::warn!(
            "distributed locking is OFF (GATEWAY_ENABLE_DISTRIBUTED_LOCKING=false): rollback mode, \
             duplicates are prevented by the fence records alone"
        );
    }
    let records = Records::new(
        client.clone(),
        &config.lock_namespace,
        &config.namespace,
        &config.instance,
        config.lock_duration,
        config.lock_wait,
        config.distributed_locking,
    );
    let rrs = RemediationRequests::new(client.clone(), &config.namespace);
    let pipeline = pipeline(config, &client, &records, &rrs);
    // Opens the TLS connection now rather than on the first signal.
    match k8s::reachable(&client, config.api_timeout).await {
        Ok(()) => tracing::info!("Kubernetes API reachable"),
        Err(e) => {
            tracing::warn!(error = %e, "Kubernetes API not reachable yet; /readyz stays false until it is")
        }
    }
    let state = AppState {
        pipeline: Arc::new(pipeline),
        auth: Arc::new(Auth::new(
            &config.auth,
            client.clone(),
            &config.namespace,
            config.api_timeout,
        )),
        client,
        ready: Arc::new(AtomicBool::new(true)),
        requests: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
        config: Arc::new(config.clone()),
    };
    App {
        state,
        records,
        rrs,
    }
}

/// pipeline builds the pipeline: the resolver the configuration asks for and the writer of
/// `records` and `rrs`.
fn pipeline(
    config: &Config,
    client: &kube::Client,
    records: &Records,
    rrs: &RemediationRequests,
) -> Pipeline {
    let pauser = Arc::new(Pauser::new(&config.chaos));
    if !pauser.fencing() {
        tracing::warn!(
            "RR name fencing is OFF (GATEWAY_UNSAFE_DISABLE_FENCING=true): for tests only"
        );
    }
    let settings = Settings {
        api_timeout: config.api_timeout,
        batch_timeout: config.lock_wait + config.api_timeout * BATCH_CALLS,
        max_in_flight: config.max_in_flight,
    };
    let resolver = Resolver {
        owners: config.owner_resolution.then(|| Owners::new(client.clone())),
        scope: (config.scope == Scope::Managed).then(|| k8s::Scope::new(client.clone())),
    };
    let writer = Writer::new(records.clone(), rrs.clone(), pauser);
    Pipeline::new(resolver, writer, settings)
}

impl App {
    /// router is the HTTP API of this app, with the HTTP server's telemetry around it
    /// (`gateway.http.request.duration`, the request's span under the caller's `traceparent`).
    pub fn router(&self) -> axum::Router {
        router(self.state.clone()).layer(middleware::from_fn(telemetry::http_server))
    }

    /// sweep runs one pass of the sweep over this app's fence records (`k8s::sweep`), and
    /// returns how many it removed.
    pub async fn sweep(&self) -> Result<usize, KubeError> {
        let config = &self.state.config;
        let calls = ApiCalls::new(config.api_timeout);
        let n = k8s::sweep(&self.records, &self.rrs, config.sweep_min_age, &calls).await?;
        if n > 0 {
            telemetry::metrics().sweep_removals.add(n as u64, &[]);
            tracing::info!(removed = n, "removed fence records that fence nothing");
        }
        Ok(n)
    }
}

/// run picks the serve mode: Lambda when `AWS_LAMBDA_RUNTIME_API` is set, HTTP otherwise.
pub async fn run(config: Config, telemetry: Telemetry) -> anyhow::Result<()> {
    let app = build(&config).await?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        tracing::info!("serving as an AWS Lambda function");
        if config.metrics_addr.is_some() {
            tracing::warn!("GATEWAY_METRICS_ADDR is ignored under Lambda: nothing can scrape it");
        }
        if config.tls.is_some() {
            tracing::warn!(
                "GATEWAY_TLS_* is ignored under Lambda: the function URL or API Gateway terminates TLS"
            );
        }
        return lambda::run(app, telemetry).await;
    }
    if let Some(addr) = config.metrics_addr {
        serve_metrics(addr, telemetry).await?;
    }
    http_server(config, app).await
}

/// serve_metrics serves `GET /metrics` (Prometheus text format) on its own port.
async fn serve_metrics(addr: std::net::SocketAddr, telemetry: Telemetry) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding GATEWAY_METRICS_ADDR {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics");
    let metrics = axum::Router::new().route(
        "/metrics",
        get(move || {
            let text = telemetry.prometheus_text().unwrap_or_default();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, metrics).await {
            tracing::warn!(error = %e, "serving metrics failed");
        }
    });
    Ok(())
}

async fn http_server(config: Config, app: App) -> anyhow::Result<()> {
    // Loaded before the port opens: configuration checked the files, but they may have
    // changed since.
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(
            web::Tls::load(files.clone())
                .map_err(|e| anyhow::anyhow!("{}: {}", e.var, e.problem))?,
        )),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        instance = %config.instance,
        tls = tls.is_some(),
        client_certificates = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        "listening"
    );

    let app = Arc::new(app);
    tokio::spawn(sweep_records(Arc::clone(&app), config.lock_duration));

    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::clone(&app.state.ready);
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
    let limits = web::Limits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
    };
    let server = web::serve(listener, app.router(), limits, tls, async move {
        let _ = graceful_rx.wait_for(|stop| *stop).await;
    });
    let mut deadline_rx = stop_rx;
    tokio::select! {
        () = server => {},
        _ = async {
            let _ = deadline_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(config.shutdown_timeout).await;
        } => tracing::warn!(timeout = ?config.shutdown_timeout, "in-flight requests did not finish in time"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// sweep_records deletes, now and then, fence records that fence nothing any more (under
/// Lambda a scheduled event runs each pass instead: `lambda`).
async fn sweep_records(app: Arc<App>, lease: Duration) {
    let period = (lease * 4).max(Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = app.sweep().await {
            tracing::warn!(error = %e, "sweeping fence records failed");
        }
    }
}

/// termination waits for the process to be asked to stop: SIGTERM or Ctrl-C.
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

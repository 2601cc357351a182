//! Telemetry sets up logs, metrics and traces once per process.
//!
//! Metrics leave the process over OTLP because instances are short-lived and many, and,
//! when `GATEWAY_METRICS_ADDR` is set, are also served in the Prometheus text format for a
//! scraper. OTLP export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the signal's own
//! `OTEL_EXPORTER_OTLP_{METRICS,TRACES,LOGS}_ENDPOINT`) is set, unless
//! `OTEL_SDK_DISABLED=true` or `OTEL_{METRICS,TRACES,LOGS}_EXPORTER=none`. OTLP logs carry
//! the audit events (`audit`) only. `OTEL_EXPORTER_OTLP_PROTOCOL` selects
//! `http/protobuf` (default) or `grpc`; `https://` endpoints use rustls with the system
//! roots and, when `OTEL_EXPORTER_OTLP_CERTIFICATE` (or the signal's own
//! `OTEL_EXPORTER_OTLP_{METRICS,TRACES,LOGS}_CERTIFICATE`) names a PEM file, its CAs too
//! (opentelemetry-otlp reads neither that variable nor, for gRPC, the system roots, so the
//! gateway configures its clients). Every export runs
//! on the SDK's own thread with the exporter's timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`,
//! default 10 s), so a slow or absent collector never slows a request; spans and audit
//! records wait in bounded queues that drop when full.

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram, Meter},
    propagation::{Extractor, TextMapPropagator as _},
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::{
    WithHttpConfig as _, WithTonicConfig as _,
    tonic_types::transport::{Certificate, ClientTlsConfig},
};
use opentelemetry_sdk::{
    Resource,
    logs::{BatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider},
    metrics::SdkMeterProvider,
    propagation::TraceContextPropagator,
    resource::{ResourceDetector as _, TelemetryResourceDetector},
    trace::SdkTracerProvider,
};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt, layer::SubscriberExt as _};

use crate::{
    audit,
    config::{ConfigError, LogFormat},
    signal::{Item, Source},
};

/// SERVICE_NAME is `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// names the service.
pub const SERVICE_NAME: &str = "signal-gateway";

/// FLUSH_TIMEOUT bounds a flush at the end of a Lambda invocation.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Telemetry holds the providers of one process; `shutdown` flushes them at exit.
#[derive(Clone, Default)]
pub struct Telemetry {
    meters: Option<SdkMeterProvider>,
    tracer: Option<SdkTracerProvider>,
    /// logs exports the audit events as OTLP log records.
    logs: Option<SdkLoggerProvider>,
    /// registry holds the instruments served on `GATEWAY_METRICS_ADDR`.
    registry: Option<prometheus::Registry>,
}

/// Protocol is the OTLP transport of one signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// Env is how telemetry reads the environment: the process' own, or a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// process_env reads a variable of this process; an empty value counts as unset.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Signal names an OTLP signal and its variables.
#[derive(Clone, Copy)]
struct Signal {
    /// upper is the signal's part of `OTEL_EXPORTER_OTLP_<upper>_*`.
    upper: &'static str,
    /// exporter is its `OTEL_<...>_EXPORTER` variable.
    exporter: &'static str,
}

const METRICS: Signal = Signal {
    upper: "METRICS",
    exporter: "OTEL_METRICS_EXPORTER",
};
const TRACES: Signal = Signal {
    upper: "TRACES",
    exporter: "OTEL_TRACES_EXPORTER",
};
const LOGS: Signal = Signal {
    upper: "LOGS",
    exporter: "OTEL_LOGS_EXPORTER",
};

/// AUDIT_QUEUE_DEFAULT is the batch log processor's queue size unless
/// `OTEL_BLRP_MAX_QUEUE_SIZE` sets it (the SDK's default).
const AUDIT_QUEUE_DEFAULT: usize = 2048;

/// audit_queue is the bound on audit records waiting for export: `OTEL_BLRP_MAX_QUEUE_SIZE`,
/// else the SDK's default.
fn audit_queue(env: Env<'_>) -> audit::Queue {
    let size = env("OTEL_BLRP_MAX_QUEUE_SIZE")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(AUDIT_QUEUE_DEFAULT);
    audit::Queue::new(size)
}

/// otlp_protocol says whether `signal` is exported over OTLP and how; an unknown protocol
/// is a configuration error naming its variable.
fn otlp_protocol(env: Env<'_>, signal: Signal) -> Result<Option<Protocol>, ConfigError> {
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let off = env(signal.exporter).is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env(&format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.upper)).is_some();
    if disabled || off || !endpoint {
        return Ok(None);
    }
    let own = format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", signal.upper);
    let (var, value) = match env(&own) {
        Some(v) => (own, v),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
            env("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "http/protobuf".into()),
        ),
    };
    match value.trim() {
        "http/protobuf" => Ok(Some(Protocol::HttpProtobuf)),
        "grpc" => Ok(Some(Protocol::Grpc)),
        other => Err(ConfigError {
            var,
            problem: format!("'{other}' is not supported: use http/protobuf or grpc"),
        }),
    }
}

/// otlp_timeout is the bound on one export of `signal`, as the exporter library reads it.
fn otlp_timeout(env: Env<'_>, signal: Signal) -> Duration {
    env(&format!("OTEL_EXPORTER_OTLP_{}_TIMEOUT", signal.upper))
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|v| v.trim().parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

/// otlp_certificate reads the PEM file of CA certificates that `signal`'s exporter trusts
/// besides the system roots: `OTEL_EXPORTER_OTLP_<SIGNAL>_CERTIFICATE`, else
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`. An unreadable file, or one without a certificate, is
/// a configuration error naming its variable.
fn otlp_certificate(env: Env<'_>, signal: Signal) -> Result<Option<Vec<u8>>, ConfigError> {
    let own = format!("OTEL_EXPORTER_OTLP_{}_CERTIFICATE", signal.upper);
    let (var, path) = match env(&own) {
        Some(p) => (own, p),
        None => match env("OTEL_EXPORTER_OTLP_CERTIFICATE") {
            Some(p) => ("OTEL_EXPORTER_OTLP_CERTIFICATE".to_owned(), p),
            None => return Ok(None),
        },
    };
    let path = path.trim();
    let problem = match std::fs::read(path) {
        Err(e) => format!("reading {path}: {e}"),
        Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => return Ok(Some(pem)),
            Ok(_) => format!("{path} holds no PEM certificate"),
            Err(e) => format!("{path}: {e}"),
        },
    };
    Err(ConfigError { var, problem })
}

/// http_client is the exporter's blocking client with the CAs of `pem` trusted besides the
/// system roots; the library builds the same one, without them, when none is given.
fn http_client(pem: &[u8], timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)?;
    // A blocking client must not be built on an async thread (it starts a runtime of its own).
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(timeout)
            .tls_certs_merge(certs)
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP http client panicked"))?
    .map_err(Into::into)
}

/// grpc_tls is the TLS of a gRPC exporter (used for `https://` endpoints only): the CAs of
/// `pem` and, with `native`, the system roots. The library's own default trusts no root at
/// all, so a collector behind a public CA would fail without it.
fn grpc_tls(pem: Option<&[u8]>, native: bool) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new();
    let tls = match pem {
        Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
        None => tls,
    };
    if native { tls.with_native_roots() } else { tls }
}

/// resource_attributes are the attributes of this process' telemetry, lowest precedence
/// first: the gateway's defaults (`service.name`, a `service.instance.id` unique to the
/// process, `k8s.pod.name` and `k8s.namespace.name` from `POD_NAME` (or, in a pod,
/// `HOSTNAME`) and `POD_NAMESPACE`),
/// then `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME`.
#[must_use]
pub fn resource_attributes(env: Env<'_>, instance_id: &str) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("service.name", SERVICE_NAME),
        KeyValue::new("service.instance.id", instance_id.to_owned()),
    ];
    // In a pod, HOSTNAME is the pod's name (Knative cannot set POD_NAME from a fieldRef).
    let in_pod = env("KUBERNETES_SERVICE_HOST").is_some();
    let pod = env("POD_NAME").or_else(|| env("HOSTNAME").filter(|_| in_pod));
    if let Some(pod) = pod {
        attrs.push(KeyValue::new("k8s.pod.name", pod));
    }
    if let Some(ns) = env("POD_NAMESPACE") {
        attrs.push(KeyValue::new("k8s.namespace.name", ns));
    }
    for pair in env("OTEL_RESOURCE_ATTRIBUTES")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((k, v)) = pair.split_once('=')
            && !k.trim().is_empty()
        {
            attrs.push(KeyValue::new(k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    if let Some(name) = env("OTEL_SERVICE_NAME") {
        attrs.push(KeyValue::new("service.name", name));
    }
    // Later entries win.
    let mut out: Vec<KeyValue> = Vec::with_capacity(attrs.len());
    for kv in attrs {
        out.retain(|o| o.key != kv.key);
        out.push(kv);
    }
    out
}

/// instance_id is a random UUID (version 4) naming this process.
fn instance_id() -> String {
    let b: [u8; 16] = rand::random();
    let n = u128::from_be_bytes(b) & !(0xf000 << 64) & !(0xc000 << 48);
    let n = n | (0x4000 << 64) | (0x8000 << 48);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn resource(env: Env<'_>) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            TelemetryResourceDetector
                .detect()
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_attributes(resource_attributes(env, &instance_id()))
        .build()
}

fn exporter_error(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("building the OTLP {what} exporter: {e}")
}

/// init installs the global log subscriber, the meter provider and, when traces are
/// exported, the tracer; `prometheus` also serves the instruments for a scraper.
/// `RUST_LOG` overrides the default `info` level.
/// otlp_exporter builds a span, metric or log exporter (distinct builder types with the same
/// methods) for `protocol`, trusting the CA bundle `pem` when one is set. It uses `?` on
/// the HTTP client's construction.
macro_rules! otlp_exporter {
    ($otlp:ident, $protocol:expr, $pem:ident, $timeout:expr) => {
        match $protocol {
            Protocol::HttpProtobuf => match &$pem {
                Some(pem) => $otlp()
                    .with_http()
                    .with_http_client(http_client(pem, $timeout)?)
                    .build(),
                None => $otlp().with_http().build(),
            },
            Protocol::Grpc => {
                let build = |native| {
                    $otlp()
                        .with_tonic()
                        .with_tls_config(grpc_tls($pem.as_deref(), native))
                        .build()
                };
                // tonic refuses the system roots where there are none (a bare image).
                build(true).or_else(|_| build(false))
            }
        }
    };
}

pub fn init(format: LogFormat, prometheus: bool) -> anyhow::Result<Telemetry> {
    init_with(format, prometheus, &process_env)
}

fn init_with(format: LogFormat, prometheus: bool, env: Env<'_>) -> anyhow::Result<Telemetry> {
    // rustls needs a process-wide crypto provider for the exporter's https client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics_protocol = otlp_protocol(env, METRICS)?;
    let traces_protocol = otlp_protocol(env, TRACES)?;
    let logs_protocol = otlp_protocol(env, LOGS)?;
    let resource = resource(env);

    let tracer = match traces_protocol {
        None => None,
        Some(protocol) => {
            let pem = otlp_certificate(env, TRACES)?;
            let timeout = otlp_timeout(env, TRACES);
            let otlp = opentelemetry_otlp::SpanExporter::builder;
            let exporter = otlp_exporter!(otlp, protocol, pem, timeout)
                .map_err(|e| exporter_error("span", e))?;
            let provider = SdkTracerProvider::builder()
                .with_resource(resource.clone())
                .with_batch_exporter(exporter)
                .build();
            global::set_text_map_propagator(TraceContextPropagator::new());
            global::set_tracer_provider(provider.clone());
            Some(provider)
        }
    };

    let logs_provider = match logs_protocol {
        None => None,
        Some(protocol) => {
            let pem = otlp_certificate(env, LOGS)?;
            let timeout = otlp_timeout(env, LOGS);
            let otlp = opentelemetry_otlp::LogExporter::builder;
            let exporter = otlp_exporter!(otlp, protocol, pem, timeout)
                .map_err(|e| exporter_error("log", e))?;
            // The processor's own queue is as large as the audit queue, so it never drops
            // a record that the audit queue did not already refuse and count.
            let queue = audit_queue(env);
            let config = BatchConfigBuilder::default()
                .with_max_queue_size(queue.capacity())
                .build();
            let processor = BatchLogProcessor::builder(queue.exporter(exporter))
                .with_batch_config(config)
                .build();
            let provider = SdkLoggerProvider::builder()
                .with_resource(resource.clone())
                .with_log_processor(processor)
                .build();
            audit::install(provider.logger(audit::TARGET), queue);
            Some(provider)
        }
    };

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => logs.boxed(),
    };
    let traces = tracer.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("signal-gateway"))
            .with_location(false)
    });
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces);
    let _ = tracing::subscriber::set_global_default(subscriber);

    let mut builder = SdkMeterProvider::builder().with_resource(resource);
    let mut any = false;
    if let Some(protocol) = metrics_protocol {
        let pem = otlp_certificate(env, METRICS)?;
        let timeout = otlp_timeout(env, METRICS);
        let otlp = opentelemetry_otlp::MetricExporter::builder;
        let exporter = otlp_exporter!(otlp, protocol, pem, timeout)
            .map_err(|e| exporter_error("metric", e))?;
        builder = builder.with_periodic_exporter(exporter);
        any = true;
    }
    let registry = if prometheus {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| anyhow::anyhow!("building the Prometheus exporter: {e}"))?;
        builder = builder.with_reader(exporter);
        any = true;
        Some(registry)
    } else {
        None
    };
    let meters = any.then(|| builder.build());
    if let Some(provider) = &meters {
        global::set_meter_provider(provider.clone());
        // The instruments, their zero series and the process metrics exist from start-up.
        let _ = metrics();
        audit::register_metrics();
    }
    if let Some(protocol) = metrics_protocol {
        tracing::info!(protocol = ?protocol, "exporting metrics over OTLP");
    }
    if let Some(protocol) = traces_protocol {
        tracing::info!(protocol = ?protocol, "exporting traces over OTLP");
    }
    if let Some(protocol) = logs_protocol {
        tracing::info!(protocol = ?protocol, "exporting audit events over OTLP logs");
    }
    Ok(Telemetry {
        meters,
        tracer,
        logs: logs_provider,
        registry,
    })
}

impl Telemetry {
    /// prometheus_text encodes every instrument in the Prometheus text format.
    #[must_use]
    pub fn prometheus_text(&self) -> Option<String> {
        let registry = self.registry.as_ref()?;
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .ok()?;
        String::from_utf8(out).ok()
    }

    /// flush pushes what was recorded so far, bounded by a timeout, off the async threads.
    /// Lambda calls it at the end of every invocation: the instance may freeze right after.
    pub async fn flush(&self) {
        if self.meters.is_none() && self.tracer.is_none() && self.logs.is_none() {
            return;
        }
        let this = self.clone();
        let work = tokio::task::spawn_blocking(move || {
            if let Some(t) = &this.tracer {
                let _ = t.force_flush();
            }
            if let Some(l) = &this.logs {
                let _ = l.force_flush();
            }
            if let Some(m) = &this.meters {
                let _ = m.force_flush();
            }
        });
        if tokio::time::timeout(FLUSH_TIMEOUT, work).await.is_err() {
            tracing::warn!(timeout = ?FLUSH_TIMEOUT, "flushing telemetry timed out");
        }
    }

    /// shutdown exports what was recorded since the last period and stops the exporters.
    pub async fn shutdown(self) {
        let done = tokio::task::spawn_blocking(move || {
            let traces = self.tracer.as_ref().map(SdkTracerProvider::shutdown);
            let logs = self.logs.as_ref().map(SdkLoggerProvider::shutdown);
            let metrics = self.meters.as_ref().map(SdkMeterProvider::shutdown);
            [traces, logs, metrics]
                .iter()
                .all(|r| !matches!(r, Some(Err(_))))
        })
        .await;
        if !matches!(done, Ok(true)) {
            tracing::warn!("flushing telemetry at exit failed");
        }
    }
}

/// Metrics are the instruments the gateway records. Their Prometheus names (after an
/// OTLP collector's Prometheus exporter, or on `GATEWAY_METRICS_ADDR`) are in the README;
/// where kubernaut's Gateway has a metric of the same meaning, the name and labels are its
/// (`pkg/gateway/metrics/metrics.go`), so that dashboards and alerts written for it work.
pub struct Metrics {
    /// signals counts every entry of every answer by `source_type` (`prometheus`,
    /// `kubernetes-events`) and `status` (created, duplicate, ignored, rejected, failed):
    /// the one count that matches the answers, and the only one of `ignored` and `failed`.
    pub signals: Counter<u64>,
    /// signals_received counts firing alerts and Warning Events that became a signal, by
    /// `source_type` and `severity` (the sender's value, bounded by `severities`).
    pub signals_received: Counter<u64>,
    /// signals_deduplicated counts signals counted on an existing RR, by `signal_name`.
    pub signals_deduplicated: Counter<u64>,
    /// signals_rejected counts signals given no RR, by `reason`: `invalid_signal` (the
    /// alert or event can never become a signal), `unmanaged_resource`, `resource_not_found`.
    pub signals_rejected: Counter<u64>,
    /// crds_created counts RRs created, by `source_type` and `status` (`created`).
    pub crds_created: Counter<u64>,
    /// crd_creation_errors counts RR creates that failed, by `error_type`: `k8s_api_error`
    /// (the create request failed or was refused) or `fetch_existing_failed` (the create
    /// collided with another writer's and reading that RR failed).
    pub crd_creation_errors: Counter<u64>,
    /// owner_resolution counts target-to-workload resolutions by `kind` (the workload's on
    /// success, the target's on failure, as kubernaut), `outcome` (`success`, `failed`) and
    /// `detail`: `cached` (no request), `read`, `gone` (refused: the target no longer
    /// exists), `forbidden`, `error`.
    pub owner_resolution: Counter<u64>,
    /// kube_api_requests counts Kubernetes API requests by `verb`, `resource` and
    /// `outcome` (`ok`, `conflict`, `not_found`, `client_error`, `server_error`,
    /// `timeout`, `transport`).
    pub kube_api_requests: Counter<u64>,
    /// request_duration is the HTTP server duration by `endpoint` (the matched route, or
    /// `unmatched`), `method` and `status` (the code). Record it with `served`.
    pub request_duration: Histogram<f64>,
    /// http_requests counts what `request_duration` counts, by the same labels: the SDK
    /// exports no histogram series before its first recording, so this is the count that
    /// exists at zero from start-up (`HTTP_ANSWERS`), for ratios on a quiet gateway.
    pub http_requests: Counter<u64>,
    /// lock_attempts counts claims of a fence record with locking on
    /// (`gateway_lock_acquisition_attempts_total` in Prometheus).
    pub lock_attempts: Counter<u64>,
    /// lock_success counts claims that took the lock.
    pub lock_success: Counter<u64>,
    /// lock_failures counts claims that did not, by `reason`: `timeout` (held for the
    /// whole wait budget), `cancelled`, `api_error`, or `superseded` (the record changed
    /// first, usually because another writer created the RR: nothing is left to lock for).
    pub lock_failures: Counter<u64>,
    /// lock_contention counts claims that found the record held by another writer.
    pub lock_contention: Counter<u64>,
    /// lock_wait is the time from the start of a claim to its outcome.
    pub lock_wait: Histogram<f64>,
    /// lock_hold is the time from a won claim to the end of its hold: its RR created and
    /// counted, or its release when it produced none. Record it with `lock_held`.
    pub lock_hold: Histogram<f64>,
    /// lock_holds counts the holds `lock_hold` measures, and exists at zero from start-up
    /// (the histogram cannot: see `http_requests`). `lock_wait`'s count is `lock_attempts`.
    pub lock_holds: Counter<u64>,
    /// lock_takeovers counts claims that took over a holder's expired lease.
    pub lock_takeovers: Counter<u64>,
    /// fence_collisions counts RR creates that found the claimed name already created by
    /// another writer (the batch is then counted on that RR).
    pub fence_collisions: Counter<u64>,
    /// sweep_removals counts fence records deleted by the sweep.
    pub sweep_removals: Counter<u64>,
    /// severities bounds the `severity` label of `signals_received`.
    severities: Bounded,
    /// signal_names bounds the `signal_name` label of `signals_deduplicated`.
    signal_names: Bounded,
    /// kinds bounds the `kind` label of `owner_resolution`.
    kinds: Bounded,
}

/// LOCK_BUCKETS resolve a lock that costs one API round trip (about a millisecond).
const LOCK_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// HTTP_BUCKETS are kubernaut's (1 ms doubling to 512 ms), doubled on to 16 s so that a
/// request that waits for a lock or a slow API server is not lost in `+Inf`.
const HTTP_BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384,
];

/// SEVERITY_VALUES, SIGNAL_NAME_VALUES and KIND_VALUES are how many distinct values of the
/// sender's `severity`, `signal_name` and `kind` one process keeps as labels.
const SEVERITY_VALUES: usize = 16;
const SIGNAL_NAME_VALUES: usize = 256;
const KIND_VALUES: usize = 32;

/// SOURCES are the adapters, each a `source_type`.
const SOURCES: [Source; 2] = [Source::Alertmanager, Source::KubernetesEvent];

/// SIGNAL_STATUSES are the statuses of an answer's entries (`gateway.signals`).
pub(crate) const SIGNAL_STATUSES: [&str; 5] =
    ["created", "duplicate", "ignored", "rejected", "failed"];

/// SIGNAL_ANSWERS are the HTTP statuses a signal endpoint answers (README, "HTTP API").
const SIGNAL_ANSWERS: &[&str] = &[
    "200", "201", "202", "400", "401", "403", "413", "415", "500", "503",
];

/// HTTP_ANSWERS are the routes, each with its method and the statuses it answers: the
/// series of `gateway.http.requests` that exist at zero from start-up. A request that
/// matches no route, or a route with another method, is counted from its first.
const HTTP_ANSWERS: &[(&str, &str, &[&str])] = &[
    ("/api/v1/signals/prometheus", "POST", SIGNAL_ANSWERS),
    ("/api/v1/signals/kubernetes-event", "POST", SIGNAL_ANSWERS),
    ("/healthz", "GET", &["200"]),
    ("/readyz", "GET", &["200", "503"]),
];

/// OTHER is the label value of every value past a label's bound.
const OTHER: &str = "other";

/// UNMATCHED is the `endpoint` of a request that matched no route (the path is not kept:
/// it is the sender's, unbounded).
const UNMATCHED: &str = "unmatched";

/// Bounded keeps the first `limit` distinct values of a label a sender controls and names
/// every later one `other`, so that no sender can grow the number of series without bound.
struct Bounded {
    limit: usize,
    seen: Mutex<HashSet<String>>,
}

impl Bounded {
    fn new(limit: usize) -> Bounded {
        Bounded {
            limit,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// label is `value` if it is one of the values kept, else `other`.
    fn label(&self, value: &str) -> String {
        let Ok(mut seen) = self.seen.lock() else {
            return OTHER.to_owned();
        };
        if seen.contains(value) || (seen.len() < self.limit && seen.insert(value.to_owned())) {
            value.to_owned()
        } else {
            OTHER.to_owned()
        }
    }
}

/// Intake is what the outcome metrics of one item of a payload need once it is answered.
#[derive(Debug, Default)]
pub struct Intake {
    /// signal_name is the signal's alert name or event reason (None: not a signal).
    signal_name: Option<String>,
}

impl Metrics {
    /// new creates the instruments from `meter`, the series whose labels are known at zero,
    /// and, where `/proc` exists, the process metrics.
    #[must_use]
    pub fn new(meter: &Meter) -> Metrics {
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let m = Metrics {
            signals: counter(
                "gateway.signals",
                "Entries of the answers, by source type and status",
            ),
            signals_received: counter(
                "gateway.signals.received",
                "Signals received, by source type and severity",
            ),
            signals_deduplicated: counter(
                "gateway.signals.deduplicated",
                "Signals counted on an existing RemediationRequest, by signal name",
            ),
            signals_rejected: counter(
                "gateway.signals.rejected",
                "Signals given no RemediationRequest, by reason",
            ),
            crds_created: counter(
                "gateway.crds.created",
                "RemediationRequests created, by source type and status",
            ),
            crd_creation_errors: counter(
                "gateway.crd.creation.errors",
                "RemediationRequest creates that failed, by error type",
            ),
            owner_resolution: counter(
                "gateway.owner.resolution",
                "Resolutions of a signal's target to its workload, by kind, outcome and detail",
            ),
            kube_api_requests: counter(
                "gateway.kube.api.requests",
                "Kubernetes API requests, by verb, resource and outcome",
            ),
            request_duration: seconds(
                "gateway.http.request.duration",
                "HTTP request duration, by endpoint, method and status",
                &HTTP_BUCKETS,
            ),
            http_requests: counter(
                "gateway.http.requests",
                "HTTP requests answered, by endpoint, method and status",
            ),
            lock_attempts: counter(
                "gateway.lock.acquisition.attempts",
                "Claims of a fence record with locking on",
            ),
            lock_success: counter(
                "gateway.lock.acquisition.success",
                "Claims that took the lock",
            ),
            lock_failures: counter(
                "gateway.lock.acquisition.failures",
                "Claims that did not take the lock, by reason",
            ),
            lock_contention: counter(
                "gateway.lock.contention",
                "Claims that found the record held by another writer",
            ),
            lock_wait: seconds(
                "gateway.lock.wait.duration",
                "Time from the start of a claim to its outcome",
                &LOCK_BUCKETS,
            ),
            lock_hold: seconds(
                "gateway.lock.hold.duration",
                "Time from a won claim to the end of its hold (its RR counted, or its release)",
                &LOCK_BUCKETS,
            ),
            lock_holds: counter(
                "gateway.lock.holds",
                "Holds of a won claim that ended (the count of the hold duration)",
            ),
            lock_takeovers: counter(
                "gateway.lock.takeovers",
                "Claims that took over an expired lease of another holder",
            ),
            fence_collisions: counter(
                "gateway.fence.collisions",
                "RR creates that lost to another writer of the same claimed name",
            ),
            sweep_removals: counter(
                "gateway.sweep.removals",
                "Fence records deleted by the sweep",
            ),
            severities: Bounded::new(SEVERITY_VALUES),
            signal_names: Bounded::new(SIGNAL_NAME_VALUES),
            kinds: Bounded::new(KIND_VALUES),
        };
        m.zeros();
        process::register(meter);
        m
    }

    /// zeros records 0 on every series whose labels are all known in advance, so that a
    /// `rate()` or `increase()` over them has a start point before the first event. The
    /// labels the sender controls (`severity`, `signal_name`, `kind`) have no known values:
    /// their counters start with their first signal. Histograms cannot start at zero (the
    /// SDK exports a histogram series only once it holds a recording); their counts do:
    /// `http_requests`, `lock_holds` and `lock_attempts`.
    fn zeros(&self) {
        for c in [
            &self.lock_attempts,
            &self.lock_success,
            &self.lock_contention,
            &self.lock_holds,
            &self.lock_takeovers,
            &self.fence_collisions,
            &self.sweep_removals,
        ] {
            c.add(0, &[]);
        }
        for source in SOURCES {
            for status in SIGNAL_STATUSES {
                self.signals.add(
                    0,
                    &[kv("source_type", source_type(source)), kv("status", status)],
                );
            }
        }
        for (verb, resource) in crate::k8s::request_kinds() {
            for outcome in crate::k8s::OUTCOMES {
                self.kube_api_requests.add(
                    0,
                    &[
                        kv("verb", verb),
                        kv("resource", resource),
                        kv("outcome", outcome),
                    ],
                );
            }
        }
        for (endpoint, method, statuses) in HTTP_ANSWERS {
            for status in *statuses {
                self.http_requests.add(
                    0,
                    &[
                        kv("endpoint", *endpoint),
                        kv("method", *method),
                        kv("status", *status),
                    ],
                );
            }
        }
        for reason in ["timeout", "cancelled", "api_error", "superseded"] {
            self.lock_failures.add(0, &[kv("reason", reason)]);
        }
        for reason in ["invalid_signal", "unmanaged_resource", "resource_not_found"] {
            self.signals_rejected.add(0, &[kv("reason", reason)]);
        }
        for error_type in ["k8s_api_error", "fetch_existing_failed"] {
            self.crd_creation_errors
                .add(0, &[kv("error_type", error_type)]);
        }
        for source in SOURCES {
            self.crds_created.add(
                0,
                &[
                    kv("source_type", source_type(source)),
                    kv("status", "created"),
                ],
            );
        }
    }

    /// intake counts one item of a payload as it arrives: a signal as received, an item
    /// that can never become one as rejected (`invalid_signal`).
    pub fn intake(&self, source: Source, item: &Item) -> Intake {
        match item {
            Item::Signal(signal) => {
                self.signals_received.add(
                    1,
                    &[
                        kv("source_type", source_type(source)),
                        kv("severity", self.severities.label(&signal.severity)),
                    ],
                );
                Intake {
                    signal_name: Some(signal.name.clone()),
                }
            }
            Item::Rejected { .. } => {
                self.signals_rejected
                    .add(1, &[kv("reason", "invalid_signal")]);
                Intake::default()
            }
            Item::Ignored { .. } => Intake::default(),
        }
    }

    /// answered counts one entry of an answer by its `status`, and a duplicate by its
    /// signal's name.
    pub fn answered(&self, source: Source, intake: &Intake, status: &'static str) {
        self.signals.add(
            1,
            &[kv("source_type", source_type(source)), kv("status", status)],
        );
        if status == "duplicate" {
            let name = intake.signal_name.as_deref().unwrap_or_default();
            self.signals_deduplicated
                .add(1, &[kv("signal_name", self.signal_names.label(name))]);
        }
    }

    /// served records one answered HTTP request: its duration and its count.
    pub fn served(&self, endpoint: String, method: &'static str, status: &str, seconds: f64) {
        let attrs = [
            kv("endpoint", endpoint),
            kv("method", method),
            kv("status", status.to_owned()),
        ];
        self.request_duration.record(seconds, &attrs);
        self.http_requests.add(1, &attrs);
    }

    /// lock_held records the end of one hold of a won claim: its duration and its count.
    pub fn lock_held(&self, seconds: f64) {
        self.lock_hold.record(seconds, &[]);
        self.lock_holds.add(1, &[]);
    }

    /// crd_created counts one RR created for a signal from `source`.
    pub fn crd_created(&self, source: Source) {
        self.crds_created.add(
            1,
            &[
                kv("source_type", source_type(source)),
                kv("status", "created"),
            ],
        );
    }

    /// crd_creation_failed counts one failed RR create (`k8s_api_error`,
    /// `fetch_existing_failed`).
    pub fn crd_creation_failed(&self, error_type: &'static str) {
        self.crd_creation_errors
            .add(1, &[kv("error_type", error_type)]);
    }

    /// owner_resolved counts one owner resolution of a target: `kind` is the workload's
    /// on success, the target's on failure; `detail` is `cached` or `read` (success),
    /// `gone`, `forbidden` or `error` (failed).
    pub fn owner_resolved(&self, kind: &str, detail: &'static str) {
        let outcome = if matches!(detail, "cached" | "read") {
            "success"
        } else {
            "failed"
        };
        self.owner_resolution.add(
            1,
            &[
                kv("kind", self.kinds.label(kind)),
                kv("outcome", outcome),
                kv("detail", detail),
            ],
        );
    }
}

/// source_type is kubernaut's `source_type` label of an adapter (its `spec.signalSource`).
fn source_type(source: Source) -> &'static str {
    source.signal_source()
}

/// Process registers the `process_*` metrics of Prometheus' client libraries as observable
/// instruments, read from `/proc` at each collection, so that they go out over OTLP as well
/// as on `GATEWAY_METRICS_ADDR`. Where a file cannot be read or parsed (not Linux), its
/// metric is absent.
mod process {
    use opentelemetry::metrics::Meter;

    /// USER_HZ is the unit of the times in `/proc/<pid>/stat`: the kernel reports them in
    /// 1/100 s to user space on every architecture (Prometheus' procfs assumes the same).
    const USER_HZ: f64 = 100.0;

    fn read(path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// register creates the instruments; their callbacks run at each collection.
    pub(super) fn register(meter: &Meter) {
        let started = read("/proc/self/stat")
            .zip(read("/proc/stat"))
            .and_then(|(stat, boot)| start_time(&stat, &boot));
        let _ = meter
            .f64_observable_counter("process.cpu")
            .with_unit("s")
            .with_description("Total user and system CPU time spent in seconds")
            .with_callback(|o| {
                if let Some(v) = read("/proc/self/stat").as_deref().and_then(cpu_seconds) {
                    o.observe(v, &[]);
                }
            })
            .build();
        let _ = meter
            .u64_observable_gauge("process.resident_memory")
            .with_unit("By")
            .with_description("Resident memory size in bytes")
            .with_callback(|o| {
                if let Some(v) = read("/proc/self/status")
                    .as_deref()
                    .and_then(|s| status_bytes(s, "VmRSS"))
                {
                    o.observe(v, &[]);
                }
            })
            .build();
        let _ = meter
            .u64_observable_gauge("process.virtual_memory")
            .with_unit("By")
            .with_description("Virtual memory size in bytes")
            .with_callback(|o| {
                if let Some(v) = read("/proc/self/status")
                    .as_deref()
                    .and_then(|s| status_bytes(s, "VmSize"))
                {
                    o.observe(v, &[]);
                }
            })
            .build();
        let _ = meter
            .u64_observable_gauge("process.open_fds")
            .with_description("Number of open file descriptors")
            .with_callback(|o| {
                if let Some(v) = open_fds() {
                    o.observe(v, &[]);
                }
            })
            .build();
        let _ = meter
            .u64_observable_gauge("process.max_fds")
            .with_description("Maximum number of open file descriptors")
            .with_callback(|o| {
                if let Some(v) = read("/proc/self/limits").as_deref().and_then(max_fds) {
                    o.observe(v, &[]);
                }
            })
            .build();
        if let Some(started) = started {
            let _ = meter
                .f64_observable_gauge("process.start_time")
                .with_unit("s")
                .with_description("Start time of the process since unix epoch in seconds")
                .with_callback(move |o| o.observe(started, &[]))
                .build();
        }
    }

    /// stat_fields are the fields of `/proc/<pid>/stat` after the command name (field 3,
    /// the state, first); the name is in parentheses and may hold spaces and parentheses.
    fn stat_fields(stat: &str) -> Option<Vec<&str>> {
        let (_, rest) = stat.rsplit_once(')')?;
        Some(rest.split_whitespace().collect())
    }

    /// ticks is field `n` (numbered from 1, as in proc(5)) of `/proc/<pid>/stat`.
    fn ticks(fields: &[&str], n: usize) -> Option<f64> {
        fields
            .get(n.checked_sub(3)?)?
            .parse::<u64>()
            .ok()
            .map(|t| t as f64)
    }

    /// cpu_seconds is utime + stime (fields 14 and 15).
    pub(super) fn cpu_seconds(stat: &str) -> Option<f64> {
        let fields = stat_fields(stat)?;
        Some((ticks(&fields, 14)? + ticks(&fields, 15)?) / USER_HZ)
    }

    /// start_time is the boot time (`btime` of `/proc/stat`) plus the process' start after
    /// boot (field 22), in seconds since the epoch.
    pub(super) fn start_time(stat: &str, boot: &str) -> Option<f64> {
        let fields = stat_fields(stat)?;
        let btime = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(btime as f64 + ticks(&fields, 22)? / USER_HZ)
    }

    /// status_bytes is the `key` line of `/proc/<pid>/status` (in kB) in bytes.
    pub(super) fn status_bytes(status: &str, key: &str) -> Option<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
        let mut parts = line.split_whitespace();
        let kb = parts.next()?.parse::<u64>().ok()?;
        match parts.next() {
            Some("kB") => kb.checked_mul(1024),
            _ => None,
        }
    }

    /// max_fds is the soft limit of "Max open files" in `/proc/<pid>/limits`.
    pub(super) fn max_fds(limits: &str) -> Option<u64> {
        limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// open_fds counts the entries of `/proc/self/fd` (the one reading it included, as
    /// Prometheus' client libraries count).
    fn open_fds() -> Option<u64> {
        let entries = std::fs::read_dir("/proc/self/fd").ok()?;
        Some(entries.filter(Result::is_ok).count() as u64)
    }
}

/// metrics returns the instruments, created on first use from the global meter.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new(&global::meter("signal-gateway")))
}

/// kv is a short constructor for one attribute.
#[must_use]
pub fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

/// trace_id is the OpenTelemetry trace id of `span`, when traces are exported.
#[must_use]
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// method names a request's method in its span and its `method` label: a known method, or
/// `_OTHER` (a bounded label set).
fn method(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// http_server is the middleware around the router: it records `gateway.http.request.duration`
/// and, for the signal endpoints, opens the request's server span under the caller's W3C
/// `traceparent`, if any.
pub async fn http_server(req: Request, next: Next) -> Response {
    let method = method(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let traced = route.as_deref().is_some_and(|r| r.starts_with("/api/"));
    let start = Instant::now();
    let res = if traced {
        let route = route.as_deref().unwrap_or_default();
        let span = tracing::info_span!(
            "http request",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
            // Set by `web::headers::stamp`, inside this span.
            request_id = tracing::field::Empty,
        );
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        let res = next.run(req).instrument(span.clone()).await;
        span.record("http.response.status_code", res.status().as_u16());
        res
    } else {
        next.run(req).await
    };
    metrics().served(
        route.unwrap_or_else(|| UNMATCHED.to_owned()),
        method,
        res.status().as_str(),
        start.elapsed().as_secs_f64(),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[test]
    fn resource_has_instance_pod_and_namespace() {
        let e = env(&[("POD_NAME", "gw-1"), ("POD_NAMESPACE", "ops")]);
        let a = resource_attributes(&e, "id-1");
        assert_eq!(attr(&a, "service.name").as_deref(), Some(SERVICE_NAME));
        assert_eq!(attr(&a, "service.instance.id").as_deref(), Some("id-1"));
        assert_eq!(attr(&a, "k8s.pod.name").as_deref(), Some("gw-1"));
        assert_eq!(attr(&a, "k8s.namespace.name").as_deref(), Some("ops"));
        let knative = env(&[
            ("HOSTNAME", "sg-00001-x"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ]);
        let a = resource_attributes(&knative, "id-2");
        assert_eq!(attr(&a, "k8s.pod.name").as_deref(), Some("sg-00001-x"));
        let laptop = env(&[("HOSTNAME", "laptop")]);
        assert_eq!(
            attr(&resource_attributes(&laptop, "id-3"), "k8s.pod.name"),
            None
        );
        assert_ne!(instance_id(), instance_id());
        let id = instance_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4", "a version 4 UUID: {id}");
    }

    #[test]
    fn service_name_from_the_environment_is_never_overwritten() {
        let e = env(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=billing,team=ops")]);
        let a = resource_attributes(&e, "x");
        assert_eq!(attr(&a, "service.name").as_deref(), Some("billing"));
        assert_eq!(attr(&a, "team").as_deref(), Some("ops"));
        let e = env(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=billing"),
            ("OTEL_SERVICE_NAME", "alerts"),
        ]);
        let a = resource_attributes(&e, "x");
        assert_eq!(attr(&a, "service.name").as_deref(), Some("alerts"));
        assert_eq!(
            a.iter()
                .filter(|kv| kv.key.as_str() == "service.name")
                .count(),
            1
        );
    }

    #[test]
    fn protocol_is_chosen_per_signal_and_unknown_ones_are_refused() {
        let none = env(&[]);
        assert_eq!(otlp_protocol(&none, METRICS).unwrap(), None);
        let e = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")]);
        assert_eq!(
            otlp_protocol(&e, TRACES).unwrap(),
            Some(Protocol::HttpProtobuf)
        );
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!(otlp_protocol(&e, TRACES).unwrap(), Some(Protocol::Grpc));
        assert_eq!(otlp_protocol(&e, METRICS).unwrap(), None);
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json"),
        ]);
        let err = otlp_protocol(&e, METRICS).unwrap_err();
        assert_eq!(err.var, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL");
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert_eq!(otlp_protocol(&e, TRACES).unwrap(), None);
        assert!(otlp_protocol(&e, METRICS).unwrap().is_some());
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(otlp_protocol(&e, METRICS).unwrap(), None);
    }

    #[test]
    fn audit_logs_follow_the_variables_of_the_other_signals() {
        let e = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        assert_eq!(
            otlp_protocol(&e, LOGS).unwrap(),
            Some(Protocol::HttpProtobuf)
        );
        assert_eq!(audit_queue(&e).capacity(), AUDIT_QUEUE_DEFAULT);
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc"),
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "64"),
        ]);
        assert_eq!(otlp_protocol(&e, LOGS).unwrap(), Some(Protocol::Grpc));
        assert_eq!(otlp_protocol(&e, METRICS).unwrap(), None);
        assert_eq!(audit_queue(&e).capacity(), 64);
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_LOGS_EXPORTER", "none"),
        ]);
        assert_eq!(otlp_protocol(&e, LOGS).unwrap(), None);
        assert!(otlp_protocol(&e, TRACES).unwrap().is_some());
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json"),
        ]);
        let err = otlp_protocol(&e, LOGS).unwrap_err();
        assert_eq!(err.var, "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL");
        let e = env(&[("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "/nonexistent.pem")]);
        let err = otlp_certificate(&e, LOGS).unwrap_err();
        assert_eq!(err.var, "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE");
    }

    #[test]
    fn certificate_is_read_per_signal_and_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.pem()).unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let (good, empty) = (good.display().to_string(), empty.display().to_string());
        assert_eq!(otlp_certificate(&env(&[]), METRICS).unwrap(), None);
        let pairs = [
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", empty.as_str()),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", good.as_str()),
        ];
        let e = env(&pairs);
        assert_eq!(
            otlp_certificate(&e, TRACES).unwrap(),
            Some(ca.pem().into_bytes())
        );
        let err = otlp_certificate(&e, METRICS).unwrap_err();
        assert_eq!(err.var, "OTEL_EXPORTER_OTLP_CERTIFICATE");
        let e = env(&[("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "/nonexistent.pem")]);
        let err = otlp_certificate(&e, METRICS).unwrap_err();
        assert_eq!(err.var, "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE");
    }

    /// prometheus_text_of serves the instruments of `record` as `GATEWAY_METRICS_ADDR` does.
    fn prometheus_text_of(record: impl FnOnce(&Metrics)) -> String {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        record(&Metrics::new(&provider.meter("test")));
        Telemetry {
            registry: Some(registry),
            ..Telemetry::default()
        }
        .prometheus_text()
        .unwrap()
    }

    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                text.lines().any(|l| l == *line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    fn alert(name: &str, severity: &str) -> Item {
        Item::Signal(crate::signal::Signal {
            fingerprint: crate::signal::Fingerprint::of(
                None,
                &crate::signal::TargetResource::pod("prod", "web-0"),
            ),
            name: name.into(),
            severity: severity.into(),
            source: Source::Alertmanager,
            target: crate::signal::TargetResource::pod("prod", "web-0"),
            labels: Default::default(),
            annotations: Default::default(),
            firing_time: jiff::Timestamp::UNIX_EPOCH,
            received_time: jiff::Timestamp::UNIX_EPOCH,
            cluster_id: None,
            provider_data: String::new(),
            original_payload: None,
        })
    }

    /// The Prometheus names are part of the contract: the original plan's lock metrics
    /// (DESIGN.md) and kubernaut's Gateway's names (`pkg/gateway/metrics/metrics.go`).
    #[test]
    fn prometheus_names_are_exactly_the_contracts() {
        let text = prometheus_text_of(|m| {
            m.lock_attempts.add(1, &[]);
            m.lock_success.add(1, &[]);
            m.lock_failures.add(1, &[kv("reason", "timeout")]);
            m.lock_contention.add(1, &[]);
            m.lock_wait.record(0.0007, &[]);
            m.lock_hold.record(0.002, &[]);
            m.lock_takeovers.add(1, &[]);
            m.fence_collisions.add(1, &[]);
            m.sweep_removals.add(1, &[]);
            let intake = m.intake(
                Source::Alertmanager,
                &alert("KubePodCrashLooping", "critical"),
            );
            m.answered(Source::Alertmanager, &intake, "duplicate");
            let rejected = Item::Rejected {
                reason: "no target".into(),
            };
            let intake = m.intake(Source::KubernetesEvent, &rejected);
            m.answered(Source::KubernetesEvent, &intake, "rejected");
            m.signals_rejected
                .add(1, &[kv("reason", "unmanaged_resource")]);
            m.crd_created(Source::Alertmanager);
            m.crd_creation_failed("k8s_api_error");
            m.owner_resolved("Deployment", "read");
            m.owner_resolved("Pod", "gone");
            m.kube_api_requests.add(
                1,
                &[
                    kv("verb", "get"),
                    kv("resource", "leases"),
                    kv("outcome", "ok"),
                ],
            );
            m.request_duration.record(
                0.01,
                &[
                    kv("endpoint", "/api/v1/signals/prometheus"),
                    kv("method", "POST"),
                    kv("status", "201"),
                ],
            );
        });
        assert_lines(
            &text,
            &[
                "gateway_lock_acquisition_attempts_total 1",
                "gateway_lock_acquisition_success_total 1",
                "gateway_lock_acquisition_failures_total{reason=\"timeout\"} 1",
                "gateway_lock_contention_total 1",
                "gateway_lock_wait_duration_seconds_bucket{le=\"0.001\"} 1",
                "gateway_lock_wait_duration_seconds_bucket{le=\"0.0005\"} 0",
                "gateway_lock_wait_duration_seconds_count 1",
                "gateway_lock_hold_duration_seconds_bucket{le=\"0.0025\"} 1",
                "gateway_lock_hold_duration_seconds_count 1",
                "gateway_lock_takeovers_total 1",
                "gateway_fence_collisions_total 1",
                "gateway_sweep_removals_total 1",
                "gateway_signals_total{source_type=\"prometheus\",status=\"duplicate\"} 1",
                "gateway_signals_total{source_type=\"kubernetes-events\",status=\"rejected\"} 1",
                "gateway_signals_received_total{severity=\"critical\",source_type=\"prometheus\"} 1",
                "gateway_signals_deduplicated_total{signal_name=\"KubePodCrashLooping\"} 1",
                "gateway_signals_rejected_total{reason=\"invalid_signal\"} 1",
                "gateway_signals_rejected_total{reason=\"unmanaged_resource\"} 1",
                "gateway_signals_rejected_total{reason=\"resource_not_found\"} 0",
                "gateway_crds_created_total{source_type=\"prometheus\",status=\"created\"} 1",
                "gateway_crds_created_total{source_type=\"kubernetes-events\",status=\"created\"} 0",
                "gateway_crd_creation_errors_total{error_type=\"k8s_api_error\"} 1",
                "gateway_crd_creation_errors_total{error_type=\"fetch_existing_failed\"} 0",
                "gateway_owner_resolution_total{detail=\"read\",kind=\"Deployment\",outcome=\"success\"} 1",
                "gateway_owner_resolution_total{detail=\"gone\",kind=\"Pod\",outcome=\"failed\"} 1",
                "gateway_kube_api_requests_total{outcome=\"ok\",resource=\"leases\",verb=\"get\"} 1",
                "gateway_http_request_duration_seconds_bucket{endpoint=\"/api/v1/signals/prometheus\",method=\"POST\",status=\"201\",le=\"0.008\"} 0",
                "gateway_http_request_duration_seconds_bucket{endpoint=\"/api/v1/signals/prometheus\",method=\"POST\",status=\"201\",le=\"0.016\"} 1",
                "gateway_http_request_duration_seconds_bucket{endpoint=\"/api/v1/signals/prometheus\",method=\"POST\",status=\"201\",le=\"0.512\"} 1",
                "gateway_http_request_duration_seconds_count{endpoint=\"/api/v1/signals/prometheus\",method=\"POST\",status=\"201\"} 1",
            ],
        );
        // Go's process collector: exactly its names and types, wherever /proc exists.
        if std::path::Path::new("/proc/self/stat").exists() {
            for (name, kind) in [
                ("process_cpu_seconds_total", "counter"),
                ("process_resident_memory_bytes", "gauge"),
                ("process_virtual_memory_bytes", "gauge"),
                ("process_open_fds", "gauge"),
                ("process_max_fds", "gauge"),
                ("process_start_time_seconds", "gauge"),
            ] {
                let typed = format!("# TYPE {name} {kind}");
                assert!(
                    text.lines().any(|l| l == typed),
                    "missing {typed:?} in\n{text}"
                );
                let value = text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")))
                    .and_then(|v| v.parse::<f64>().ok());
                // A test process may not have used a tick of CPU yet.
                let least = if kind == "counter" { 0.0 } else { 1.0 };
                assert!(value.is_some_and(|v| v >= least), "{name}: {value:?}");
            }
        }
    }

    /// Every series whose labels the gateway defines exists at 0 before any event; the
    /// histograms do not (the SDK exports none without a recording), their counts do.
    #[test]
    fn known_series_exist_at_zero_before_any_event() {
        let text = prometheus_text_of(|_| {});
        let mut want = vec![
            "gateway_lock_acquisition_attempts_total 0".to_owned(),
            "gateway_lock_acquisition_success_total 0".to_owned(),
            "gateway_lock_contention_total 0".to_owned(),
            "gateway_lock_holds_total 0".to_owned(),
            "gateway_lock_takeovers_total 0".to_owned(),
            "gateway_fence_collisions_total 0".to_owned(),
            "gateway_sweep_removals_total 0".to_owned(),
            "gateway_lock_acquisition_failures_total{reason=\"superseded\"} 0".to_owned(),
            "gateway_kube_api_requests_total{outcome=\"transport\",resource=\"remediationrequests/status\",verb=\"patch\"} 0".to_owned(),
            "gateway_kube_api_requests_total{outcome=\"ok\",resource=\"deployments\",verb=\"get\"} 0".to_owned(),
            "gateway_http_requests_total{endpoint=\"/readyz\",method=\"GET\",status=\"503\"} 0".to_owned(),
        ];
        for source in ["prometheus", "kubernetes-events"] {
            for status in SIGNAL_STATUSES {
                want.push(format!(
                    "gateway_signals_total{{source_type=\"{source}\",status=\"{status}\"}} 0"
                ));
            }
            for status in SIGNAL_ANSWERS {
                let endpoint = if source == "prometheus" {
                    "/api/v1/signals/prometheus"
                } else {
                    "/api/v1/signals/kubernetes-event"
                };
                want.push(format!(
                    "gateway_http_requests_total{{endpoint=\"{endpoint}\",method=\"POST\",status=\"{status}\"}} 0"
                ));
            }
        }
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        assert_lines(&text, &want);
        let kube = text
            .lines()
            .filter(|l| l.starts_with("gateway_kube_api_requests_total{"))
            .count();
        assert_eq!(
            kube,
            crate::k8s::request_kinds().len() * crate::k8s::OUTCOMES.len()
        );
        // If an SDK starts exporting empty histograms, the companion counts can go.
        for name in [
            "gateway_lock_wait_duration_seconds_count",
            "gateway_lock_hold_duration_seconds_count",
            "gateway_http_request_duration_seconds_count",
        ] {
            assert!(
                !text.lines().any(|l| l.starts_with(name)),
                "{name} exists before its first recording:\n{text}"
            );
        }
        // The labels a sender controls have no known values, so no series yet.
        for name in [
            "gateway_signals_received_total",
            "gateway_signals_deduplicated_total",
            "gateway_owner_resolution_total",
        ] {
            assert!(!text.lines().any(|l| l.starts_with(name)), "{name}");
        }
    }

    #[test]
    fn a_histogram_and_its_count_are_recorded_together() {
        let text = prometheus_text_of(|m| {
            m.served("/healthz".into(), "GET", "200", 0.003);
            m.lock_held(0.002);
        });
        assert_lines(
            &text,
            &[
                "gateway_http_request_duration_seconds_count{endpoint=\"/healthz\",method=\"GET\",status=\"200\"} 1",
                "gateway_http_requests_total{endpoint=\"/healthz\",method=\"GET\",status=\"200\"} 1",
                "gateway_lock_hold_duration_seconds_count 1",
                "gateway_lock_holds_total 1",
            ],
        );
    }

    #[test]
    fn sender_controlled_labels_are_bounded() {
        let b = Bounded::new(2);
        assert_eq!(b.label("critical"), "critical");
        assert_eq!(b.label("warning"), "warning");
        assert_eq!(b.label("Sev1"), "other");
        assert_eq!(b.label("critical"), "critical", "a kept value stays kept");
        let text = prometheus_text_of(|m| {
            for i in 0..=SEVERITY_VALUES {
                m.intake(Source::Alertmanager, &alert("X", &format!("s{i}")));
            }
        });
        let severity_series = text
            .lines()
            .filter(|l| l.starts_with("gateway_signals_received_total{"))
            .count();
        assert_eq!(severity_series, SEVERITY_VALUES + 1, "{text}");
        assert_lines(
            &text,
            &["gateway_signals_received_total{severity=\"other\",source_type=\"prometheus\"} 1"],
        );
    }

    #[test]
    fn process_files_are_parsed_as_proc5_describes() {
        // A command name with spaces and a parenthesis; utime 250, stime 50, starttime 1234.
        let stat = "4242 (gate way) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 9 0 1234 \
                    100000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(process::cpu_seconds(stat), Some(3.0));
        assert_eq!(
            process::start_time(stat, "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_012.34)
        );
        assert_eq!(process::start_time(stat, "cpu 1\n"), None);
        assert_eq!(process::cpu_seconds("4242 (gw"), None);
        assert_eq!(process::cpu_seconds("4242 (gw) S 1"), None);
        let status = "Name:\tgw\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(process::status_bytes(status, "VmRSS"), Some(2048 * 1024));
        assert_eq!(
            process::status_bytes(status, "VmSize"),
            Some(123_456 * 1024)
        );
        assert_eq!(process::status_bytes(status, "VmSwap"), None);
        assert_eq!(process::status_bytes("VmRSS: lots", "VmRSS"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63432                63432                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(process::max_fds(limits), Some(1024));
        assert_eq!(
            process::max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[test]
    fn unknown_methods_are_one_label() {
        assert_eq!(method(&http::Method::POST), "POST");
        assert_eq!(
            method(&http::Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
    }
}

//! Telemetry sets up logs, metrics and traces once per process.
//!
//! Metrics leave the process over OTLP because instances are short-lived and many, and,
//! when `GATEWAY_METRICS_ADDR` is set, are also served in the Prometheus text format for a
//! scraper. OTLP export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the kind's own
//! `OTEL_EXPORTER_OTLP_{METRICS,TRACES,LOGS}_ENDPOINT`) is set, unless
//! `OTEL_SDK_DISABLED=true` or `OTEL_{METRICS,TRACES,LOGS}_EXPORTER=none`. OTLP logs carry
//! the audit events (`audit`) only. `OTEL_EXPORTER_OTLP_PROTOCOL` selects
//! `http/protobuf` (default) or `grpc`; `https://` endpoints use rustls with the system
//! roots and, when `OTEL_EXPORTER_OTLP_CERTIFICATE` (or the kind's own
//! `OTEL_EXPORTER_OTLP_{METRICS,TRACES,LOGS}_CERTIFICATE`) names a PEM file, its CAs too.
//! Every export runs on the SDK's own thread with the exporter's timeout
//! (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s), so a slow or absent collector never slows
//! a request; spans and audit records wait in bounded queues that drop when full.
//!
//! The parts, one job each: `env` (the `OTEL_*` settings), `exporter` (the OTLP exporters
//! and their TLS clients), `resource`, `subscriber` (the log lines), `metrics` (the
//! instruments) with `process` (the `process_*` metrics), and `http` (the HTTP middleware).

mod env;
mod exporter;
mod http;
mod metrics;
mod process;
mod resource;
mod subscriber;

use std::time::Duration;

use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::{KeyValue, global, trace::TraceContextExt as _};
use opentelemetry_sdk::{
    Resource,
    logs::{BatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider},
    metrics::SdkMeterProvider,
    propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use env::{Env, Protocol};
pub use http::http_server;
#[cfg(test)]
pub(crate) use metrics::SIGNAL_STATUSES;
pub use metrics::{Intake, Metrics, metrics};
pub use resource::{SERVICE_NAME, resource_attributes};

use crate::{audit, config::LogFormat};

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

/// init installs the global log subscriber, the meter provider and, when traces are
/// exported, the tracer; `prometheus` also serves the instruments for a scraper.
/// `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat, prometheus: bool) -> anyhow::Result<Telemetry> {
    init_with(format, prometheus, &env::process_env)
}

fn init_with(format: LogFormat, prometheus: bool, env: Env<'_>) -> anyhow::Result<Telemetry> {
    // rustls needs a process-wide crypto provider for the exporter's https client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics_protocol = env::otlp_protocol(env, env::METRICS)?;
    let traces_protocol = env::otlp_protocol(env, env::TRACES)?;
    let logs_protocol = env::otlp_protocol(env, env::LOGS)?;
    let resource = resource::resource(env);
    let tracer = traces_protocol
        .map(|p| tracer(env, p, &resource))
        .transpose()?;
    let logs = logs_protocol
        .map(|p| audit_logs(env, p, &resource))
        .transpose()?;
    subscriber::install(format, tracer.as_ref());
    let (meters, registry) = meters(env, metrics_protocol, prometheus, resource)?;
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
        logs,
        registry,
    })
}

/// tracer builds the tracer provider and makes it, with the W3C propagator, the global one.
fn tracer(
    env: Env<'_>,
    protocol: Protocol,
    resource: &Resource,
) -> anyhow::Result<SdkTracerProvider> {
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(exporter::spans(env, protocol)?)
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    Ok(provider)
}

/// audit_logs builds the logger provider of the audit events and installs its logger.
fn audit_logs(
    env: Env<'_>,
    protocol: Protocol,
    resource: &Resource,
) -> anyhow::Result<SdkLoggerProvider> {
    let exporter = exporter::logs(env, protocol)?;
    // The processor's own queue is as large as the audit queue, so it never drops
    // a record that the audit queue did not already refuse and count.
    let queue = env::audit_queue(env);
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
    Ok(provider)
}

/// meters builds the meter provider when metrics go anywhere (OTLP, `prometheus`), makes
/// it the global one and creates the instruments; the registry is the Prometheus one.
fn meters(
    env: Env<'_>,
    protocol: Option<Protocol>,
    prometheus: bool,
    resource: Resource,
) -> anyhow::Result<(Option<SdkMeterProvider>, Option<prometheus::Registry>)> {
    let mut builder = SdkMeterProvider::builder().with_resource(resource);
    if let Some(protocol) = protocol {
        builder = builder.with_periodic_exporter(exporter::metrics(env, protocol)?);
    }
    let registry = if prometheus {
        let registry = prometheus::Registry::new();
        builder = builder.with_reader(prometheus_reader(&registry)?);
        Some(registry)
    } else {
        None
    };
    let meters = (protocol.is_some() || prometheus).then(|| builder.build());
    if let Some(provider) = &meters {
        global::set_meter_provider(provider.clone());
        // The instruments, their zero series and the process metrics exist from start-up.
        let _ = metrics();
        audit::register_metrics();
    }
    Ok((meters, registry))
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

/// prometheus_reader keeps the instruments in `registry`, for the Prometheus text format.
fn prometheus_reader(
    registry: &prometheus::Registry,
) -> anyhow::Result<opentelemetry_prometheus::PrometheusExporter> {
    opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_target_info()
        .scope_info_enabled(false)
        .build()
        .map_err(|e| anyhow::anyhow!("building the Prometheus exporter: {e}"))
}

/// scraped is a meter provider and a `Telemetry` that serves its instruments as
/// `GATEWAY_METRICS_ADDR` does, for tests.
#[cfg(test)]
pub(crate) fn scraped() -> (SdkMeterProvider, Telemetry) {
    let registry = prometheus::Registry::new();
    let reader = prometheus_reader(&registry).expect("a Prometheus exporter");
    let provider = SdkMeterProvider::builder().with_reader(reader).build();
    let telemetry = Telemetry {
        registry: Some(registry),
        ..Telemetry::default()
    };
    (provider, telemetry)
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

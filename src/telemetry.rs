//! Telemetry sets up logging and OTLP metrics once per process.
//!
//! Metrics leave the process over OTLP/HTTP (protobuf) because instances are
//! short-lived and many: nothing waits to be scraped. Export is on when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is
//! set (and `OTEL_SDK_DISABLED` is not `true`); the other standard `OTEL_*`
//! variables (headers, timeout, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) apply as usual. Without
//! an endpoint the instruments are no-ops.

use std::sync::OnceLock;

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram},
};
use opentelemetry_sdk::{Resource, metrics::SdkMeterProvider};
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// init installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// init_metrics installs the OTLP meter provider when an endpoint is configured.
/// Keep the returned provider and shut it down at exit to flush the last values.
pub fn init_metrics() -> anyhow::Result<Option<SdkMeterProvider>> {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled
        || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
    {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()
        .map_err(|e| anyhow::anyhow!("building the OTLP metric exporter: {e}"))?;
    let mut resource = Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("signal-gateway");
    }
    let provider = SdkMeterProvider::builder()
        .with_resource(resource.build())
        .with_periodic_exporter(exporter)
        .build();
    global::set_meter_provider(provider.clone());
    tracing::info!("exporting metrics over OTLP");
    Ok(Some(provider))
}

/// Metrics are the instruments the gateway records.
pub struct Metrics {
    /// signals counts signals by `source` and result `status`
    /// (created, duplicate, ignored, rejected, failed).
    pub signals: Counter<u64>,
    /// kube_api_requests counts Kubernetes API requests by the `path` of
    /// the batch that made them (created, duplicate, failed).
    pub kube_api_requests: Counter<u64>,
    /// request_duration is the HTTP request latency by route and status code.
    pub request_duration: Histogram<f64>,
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
    /// lock_hold is the time from a won claim to its release.
    pub lock_hold: Histogram<f64>,
}

/// LOCK_BUCKETS resolve a lock that costs one API round trip (about a millisecond).
const LOCK_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// metrics returns the instruments, created on first use from the global meter.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("signal-gateway");
        Metrics {
            signals: meter
                .u64_counter("signal_gateway.signals")
                .with_description("Signals received, by source and result")
                .build(),
            kube_api_requests: meter
                .u64_counter("signal_gateway.kube_api.requests")
                .with_description("Kubernetes API requests made for signals, by path")
                .build(),
            request_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP requests")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
            lock_attempts: meter
                .u64_counter("gateway.lock.acquisition.attempts")
                .with_description("Claims of a fence record with locking on")
                .build(),
            lock_success: meter
                .u64_counter("gateway.lock.acquisition.success")
                .with_description("Claims that took the lock")
                .build(),
            lock_failures: meter
                .u64_counter("gateway.lock.acquisition.failures")
                .with_description("Claims that did not take the lock, by reason")
                .build(),
            lock_contention: meter
                .u64_counter("gateway.lock.contention")
                .with_description("Claims that found the record held by another writer")
                .build(),
            lock_wait: meter
                .f64_histogram("gateway.lock.wait.duration")
                .with_unit("s")
                .with_description("Time from the start of a claim to its outcome")
                .with_boundaries(LOCK_BUCKETS.to_vec())
                .build(),
            lock_hold: meter
                .f64_histogram("gateway.lock.hold.duration")
                .with_unit("s")
                .with_description("Time from a won claim to its release")
                .with_boundaries(LOCK_BUCKETS.to_vec())
                .build(),
        }
    })
}

/// kv is a short constructor for one attribute.
#[must_use]
pub fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

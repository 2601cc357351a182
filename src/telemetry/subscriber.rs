//! Subscriber installs the process' `tracing` subscriber: the log lines on stderr in the
//! configured format, filtered by `RUST_LOG` (default `info`), and the spans' export when
//! traces go out over OTLP.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer as _, fmt, layer::SubscriberExt as _};

use crate::config::LogFormat;

/// install sets the global subscriber; `tracer`, when set, receives the spans.
pub(super) fn install(format: LogFormat, tracer: Option<&SdkTracerProvider>) {
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
    let traces = tracer.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("signal-gateway"))
            .with_location(false)
            // Nothing reads the OpenTelemetry context as the current one (the trace ids come
            // from the spans themselves), and a span's busy and idle times and its first
            // thread say little of async work: each would cost on every poll of every span.
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_threads(false)
    });
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

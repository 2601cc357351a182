//! Exporter builds the OTLP exporters of each telemetry kind with their TLS clients:
//! opentelemetry-otlp reads neither `OTEL_EXPORTER_OTLP_CERTIFICATE` nor, for gRPC, the
//! system roots, so the gateway configures the clients itself.

use std::time::Duration;

use opentelemetry_otlp::{
    LogExporter, MetricExporter, SpanExporter, WithHttpConfig as _, WithTonicConfig as _,
    tonic_types::transport::{Certificate, ClientTlsConfig},
};

use super::env::{self, Env, Protocol};

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

/// otlp_exporter builds a span, metric or log exporter (distinct builder types with the same
/// methods) for `kind` over `protocol`, trusting the CA bundle of the kind's certificate
/// variable when one is set; `what` names the exporter in an error.
macro_rules! otlp_exporter {
    ($exporter:ident, $env:expr, $kind:expr, $protocol:expr, $what:literal) => {{
        let pem = env::otlp_certificate($env, $kind)?;
        let built = match $protocol {
            Protocol::HttpProtobuf => match &pem {
                Some(pem) => $exporter::builder()
                    .with_http()
                    .with_http_client(http_client(pem, env::otlp_timeout($env, $kind))?)
                    .build(),
                None => $exporter::builder().with_http().build(),
            },
            Protocol::Grpc => {
                let build = |native| {
                    $exporter::builder()
                        .with_tonic()
                        .with_tls_config(grpc_tls(pem.as_deref(), native))
                        .build()
                };
                // tonic refuses the system roots where there are none (a bare image).
                build(true).or_else(|_| build(false))
            }
        };
        built.map_err(|e| anyhow::anyhow!("building the OTLP {} exporter: {e}", $what))
    }};
}

/// spans is the exporter of traces.
pub(super) fn spans(env: Env<'_>, protocol: Protocol) -> anyhow::Result<SpanExporter> {
    otlp_exporter!(SpanExporter, env, env::TRACES, protocol, "span")
}

/// logs is the exporter of the audit events.
pub(super) fn logs(env: Env<'_>, protocol: Protocol) -> anyhow::Result<LogExporter> {
    otlp_exporter!(LogExporter, env, env::LOGS, protocol, "log")
}

/// metrics is the exporter of the instruments.
pub(super) fn metrics(env: Env<'_>, protocol: Protocol) -> anyhow::Result<MetricExporter> {
    otlp_exporter!(MetricExporter, env, env::METRICS, protocol, "metric")
}

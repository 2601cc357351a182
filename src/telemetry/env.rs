//! Env reads the exporters' settings from the standard `OTEL_*` variables: whether each
//! telemetry kind (metrics, traces, logs) is exported over OTLP, its protocol, timeout and
//! CA certificates, and the bound of the audit queue.

use std::time::Duration;

use crate::{audit, config::ConfigError};

/// Env is how telemetry reads the environment: the process' own, or a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// process_env reads a variable of this process; an empty value counts as unset.
pub(super) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Protocol is the OTLP transport of one telemetry kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// Kind names a telemetry kind that OTLP exports, and its variables.
#[derive(Clone, Copy)]
pub(super) struct Kind {
    /// upper is the kind's part of `OTEL_EXPORTER_OTLP_<upper>_*`.
    upper: &'static str,
    /// exporter is its `OTEL_<...>_EXPORTER` variable.
    exporter: &'static str,
}

pub(super) const METRICS: Kind = Kind {
    upper: "METRICS",
    exporter: "OTEL_METRICS_EXPORTER",
};
pub(super) const TRACES: Kind = Kind {
    upper: "TRACES",
    exporter: "OTEL_TRACES_EXPORTER",
};
pub(super) const LOGS: Kind = Kind {
    upper: "LOGS",
    exporter: "OTEL_LOGS_EXPORTER",
};

/// AUDIT_QUEUE_DEFAULT is the batch log processor's queue size unless
/// `OTEL_BLRP_MAX_QUEUE_SIZE` sets it (the SDK's default).
const AUDIT_QUEUE_DEFAULT: usize = 2048;

/// audit_queue is the bound on audit records waiting for export: `OTEL_BLRP_MAX_QUEUE_SIZE`,
/// else the SDK's default.
pub(super) fn audit_queue(env: Env<'_>) -> audit::Queue {
    let size = env("OTEL_BLRP_MAX_QUEUE_SIZE")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(AUDIT_QUEUE_DEFAULT);
    audit::Queue::new(size)
}

/// otlp_protocol says whether `kind` is exported over OTLP and how; an unknown protocol
/// is a configuration error naming its variable.
pub(super) fn otlp_protocol(env: Env<'_>, kind: Kind) -> Result<Option<Protocol>, ConfigError> {
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let off = env(kind.exporter).is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env(&format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", kind.upper)).is_some();
    if disabled || off || !endpoint {
        return Ok(None);
    }
    let own = format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", kind.upper);
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

/// otlp_timeout is the bound on one export of `kind`, as the exporter library reads it.
pub(super) fn otlp_timeout(env: Env<'_>, kind: Kind) -> Duration {
    env(&format!("OTEL_EXPORTER_OTLP_{}_TIMEOUT", kind.upper))
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|v| v.trim().parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

/// otlp_certificate reads the PEM file of CA certificates that `kind`'s exporter trusts
/// besides the system roots: `OTEL_EXPORTER_OTLP_<KIND>_CERTIFICATE`, else
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`. An unreadable file, or one without a certificate, is
/// a configuration error naming its variable.
pub(super) fn otlp_certificate(env: Env<'_>, kind: Kind) -> Result<Option<Vec<u8>>, ConfigError> {
    let own = format!("OTEL_EXPORTER_OTLP_{}_CERTIFICATE", kind.upper);
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// env is an environment of `pairs` only.
    pub(in crate::telemetry) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn protocol_is_chosen_per_kind_and_unknown_ones_are_refused() {
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
    fn audit_logs_follow_the_variables_of_the_other_kinds() {
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
    fn certificate_is_read_per_kind_and_a_bad_file_is_refused() {
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
}

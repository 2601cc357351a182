//! Metrics are the gateway's instruments, with the series that exist at zero from
//! start-up so that a `rate()` over them has a start point.

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
};

use opentelemetry::{
    global,
    metrics::{Counter, Histogram, Meter},
};

use super::{kv, process};
use crate::signal::{Item, Source};

/// Metrics are the instruments the gateway records. Their Prometheus names (after an
/// OTLP collector's Prometheus exporter, or on `GATEWAY_METRICS_ADDR`) are in docs/observability.md;
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

/// SIGNAL_ANSWERS are the HTTP statuses a signal endpoint answers (docs/api.md, "HTTP API").
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

/// DESCRIPTIONS are the instruments' descriptions, by name.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "gateway.signals",
        "Entries of the answers, by source type and status",
    ),
    (
        "gateway.signals.received",
        "Signals received, by source type and severity",
    ),
    (
        "gateway.signals.deduplicated",
        "Signals counted on an existing RemediationRequest, by signal name",
    ),
    (
        "gateway.signals.rejected",
        "Signals given no RemediationRequest, by reason",
    ),
    (
        "gateway.crds.created",
        "RemediationRequests created, by source type and status",
    ),
    (
        "gateway.crd.creation.errors",
        "RemediationRequest creates that failed, by error type",
    ),
    (
        "gateway.owner.resolution",
        "Resolutions of a signal's target to its workload, by kind, outcome and detail",
    ),
    (
        "gateway.kube.api.requests",
        "Kubernetes API requests, by verb, resource and outcome",
    ),
    (
        "gateway.http.request.duration",
        "HTTP request duration, by endpoint, method and status",
    ),
    (
        "gateway.http.requests",
        "HTTP requests answered, by endpoint, method and status",
    ),
    (
        "gateway.lock.acquisition.attempts",
        "Claims of a fence record with locking on",
    ),
    (
        "gateway.lock.acquisition.success",
        "Claims that took the lock",
    ),
    (
        "gateway.lock.acquisition.failures",
        "Claims that did not take the lock, by reason",
    ),
    (
        "gateway.lock.contention",
        "Claims that found the record held by another writer",
    ),
    (
        "gateway.lock.wait.duration",
        "Time from the start of a claim to its outcome",
    ),
    (
        "gateway.lock.hold.duration",
        "Time from a won claim to the end of its hold (its RR counted, or its release)",
    ),
    (
        "gateway.lock.holds",
        "Holds of a won claim that ended (the count of the hold duration)",
    ),
    (
        "gateway.lock.takeovers",
        "Claims that took over an expired lease of another holder",
    ),
    (
        "gateway.fence.collisions",
        "RR creates that lost to another writer of the same claimed name",
    ),
    (
        "gateway.sweep.removals",
        "Fence records deleted by the sweep",
    ),
];

/// description is the description of the instrument `name` in `DESCRIPTIONS`.
fn description(name: &str) -> &'static str {
    DESCRIPTIONS
        .iter()
        .find_map(|(n, d)| (*n == name).then_some(*d))
        .unwrap_or_default()
}

impl Metrics {
    /// new creates the instruments from `meter`, the series whose labels are known at zero,
    /// and, where `/proc` exists, the process metrics.
    #[must_use]
    pub fn new(meter: &Meter) -> Metrics {
        let counter = |name: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description(name))
                .build()
        };
        let seconds = |name: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description(name))
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let m = Metrics {
            signals: counter("gateway.signals"),
            signals_received: counter("gateway.signals.received"),
            signals_deduplicated: counter("gateway.signals.deduplicated"),
            signals_rejected: counter("gateway.signals.rejected"),
            crds_created: counter("gateway.crds.created"),
            crd_creation_errors: counter("gateway.crd.creation.errors"),
            owner_resolution: counter("gateway.owner.resolution"),
            kube_api_requests: counter("gateway.kube.api.requests"),
            request_duration: seconds("gateway.http.request.duration", &HTTP_BUCKETS),
            http_requests: counter("gateway.http.requests"),
            lock_attempts: counter("gateway.lock.acquisition.attempts"),
            lock_success: counter("gateway.lock.acquisition.success"),
            lock_failures: counter("gateway.lock.acquisition.failures"),
            lock_contention: counter("gateway.lock.contention"),
            lock_wait: seconds("gateway.lock.wait.duration", &LOCK_BUCKETS),
            lock_hold: seconds("gateway.lock.hold.duration", &LOCK_BUCKETS),
            lock_holds: counter("gateway.lock.holds"),
            lock_takeovers: counter("gateway.lock.takeovers"),
            fence_collisions: counter("gateway.fence.collisions"),
            sweep_removals: counter("gateway.sweep.removals"),
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
            let source = kv("source_type", source_type(source));
            for status in SIGNAL_STATUSES {
                self.signals.add(0, &[source.clone(), kv("status", status)]);
            }
            self.crds_created.add(0, &[source, kv("status", "created")]);
        }
        self.zero_requests();
    }

    /// zero_requests records 0 on every series of the Kubernetes requests and of the HTTP
    /// answers (`zeros`).
    fn zero_requests(&self) {
        for (verb, resource) in crate::k8s::request_kinds() {
            for outcome in crate::k8s::OUTCOMES {
                let attrs = [
                    kv("verb", verb),
                    kv("resource", resource),
                    kv("outcome", outcome),
                ];
                self.kube_api_requests.add(0, &attrs);
            }
        }
        for (endpoint, method, statuses) in HTTP_ANSWERS {
            for status in *statuses {
                let attrs = [
                    kv("endpoint", *endpoint),
                    kv("method", *method),
                    kv("status", *status),
                ];
                self.http_requests.add(0, &attrs);
            }
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

/// metrics returns the instruments, created on first use from the global meter.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new(&global::meter("signal-gateway")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;

    /// prometheus_text_of serves the instruments of `record` as `GATEWAY_METRICS_ADDR` does.
    fn prometheus_text_of(record: impl FnOnce(&Metrics)) -> String {
        let (provider, telemetry) = crate::telemetry::scraped();
        record(&Metrics::new(&provider.meter("test")));
        telemetry.prometheus_text().unwrap()
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

    /// CONTRACT_LINES are the lines `prometheus_names_are_exactly_the_contracts` expects.
    const CONTRACT_LINES: &[&str] = &[
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
    ];

    /// The Prometheus names are part of the contract: the original plan's six lock metrics
    /// and kubernaut's Gateway's names (`pkg/gateway/metrics/metrics.go`).
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
        assert_lines(&text, CONTRACT_LINES);
        assert_process_metrics(&text);
    }

    /// assert_process_metrics checks that `text` has Go's process collector: exactly its
    /// names and types, wherever /proc exists.
    fn assert_process_metrics(text: &str) {
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
    fn every_instrument_has_its_description() {
        let text = prometheus_text_of(|m| {
            m.served("/healthz".into(), "GET", "200", 0.003);
            m.lock_wait.record(0.001, &[]);
            m.lock_held(0.002);
            let intake = m.intake(Source::Alertmanager, &alert("X", "critical"));
            m.answered(Source::Alertmanager, &intake, "duplicate");
            m.owner_resolved("Deployment", "read");
        });
        let help: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("# HELP gateway_"))
            .collect();
        assert_eq!(help.len(), DESCRIPTIONS.len(), "{text}");
        for line in help {
            assert!(line.split(' ').count() > 3, "{line}");
        }
    }
}

//! Audit records one event per decision the gateway takes on a signal, with the fields
//! kubernaut's Gateway sends its DataStorage service (`pkg/gateway/audit_emission.go`):
//! `gateway.signal.received` and `gateway.crd.created` for a signal that opened an RR,
//! `gateway.signal.deduplicated` for one counted on an existing RR, and `gateway.crd.failed`
//! for an RR create that failed. Each event is a JSON log line with target
//! `signal_gateway::audit` and, when OTLP logs are exported, an OTLP log record that a
//! collector routes to any store.
//!
//! The audit path never slows or fails a signal: events are emitted after the batch has
//! answered its callers, the log line is one write, and OTLP records wait for the SDK's
//! batch processor in a bounded queue. When that queue is full the record is dropped and
//! counted in `gateway_audit_events_dropped_total` (kubernaut: `audit_events_dropped_total`).

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::SystemTime,
};

use opentelemetry::{
    Key, global,
    logs::{AnyValue, LogRecord as _, Logger as _, Severity},
    metrics::{Counter, Meter},
    trace::{SpanContext, TraceContextExt as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter, SdkLogger},
};
use serde_json::{Map, Value, json};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{
    crd::SignalType,
    k8s::{CREATE_RR, KubeError},
    pipeline::Error,
    signal::{Signal, Source},
};

/// TARGET is the `tracing` target of the audit log lines, and the OTLP scope of the records.
pub const TARGET: &str = "signal_gateway::audit";

/// SIGNAL_RECEIVED, SIGNAL_DEDUPLICATED, CRD_CREATED and CRD_FAILED are kubernaut's event
/// types.
pub const SIGNAL_RECEIVED: &str = "gateway.signal.received";
pub const SIGNAL_DEDUPLICATED: &str = "gateway.signal.deduplicated";
pub const CRD_CREATED: &str = "gateway.crd.created";
pub const CRD_FAILED: &str = "gateway.crd.failed";

/// Caller is who sent a signal: the username the TokenReview returned, or nobody known
/// (`GATEWAY_AUTH=bearer` or `none`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller(Option<Arc<str>>);

impl Caller {
    /// anonymous is a caller whose identity the gateway does not learn.
    #[must_use]
    pub fn anonymous() -> Caller {
        Caller(None)
    }

    /// authenticated is a caller the API server named (TokenReview's `user.username`).
    #[must_use]
    pub fn authenticated(username: &str) -> Caller {
        Caller((!username.is_empty()).then(|| username.into()))
    }

    /// username is the caller's name, if the gateway knows it.
    #[must_use]
    pub fn username(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// actor is kubernaut's actor of a signal event: `authenticated-service` and the
    /// username, else `external` and the signal's source (`prometheus`, `kubernetes-events`).
    fn actor(&self, source: Source) -> (&'static str, String) {
        match self.username() {
            Some(user) => ("authenticated-service", user.to_owned()),
            None => ("external", source.signal_source().to_owned()),
        }
    }
}

/// Event is one audit event, with kubernaut's field names.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_timestamp: jiff::Timestamp,
    pub event_type: &'static str,
    pub event_action: &'static str,
    pub event_outcome: &'static str,
    pub actor_type: &'static str,
    pub actor_id: String,
    pub resource_type: &'static str,
    pub resource_id: String,
    pub correlation_id: String,
    pub namespace: String,
    /// cluster_id is the signal's cluster, left out when it is the local one.
    pub cluster_id: Option<String>,
    pub event_data: Map<String, Value>,
}

impl Event {
    /// VERSION is kubernaut's `version` of its audit events.
    pub const VERSION: &'static str = "1.0";
    /// CATEGORY is the `event_category` of every Gateway event.
    pub const CATEGORY: &'static str = "gateway";

    /// to_json is the event as kubernaut sends it (`original_payload` left out).
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "version": Event::VERSION,
            "event_timestamp": self.event_timestamp.to_string(),
            "event_category": Event::CATEGORY,
            "event_type": self.event_type,
            "event_action": self.event_action,
            "event_outcome": self.event_outcome,
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "correlation_id": self.correlation_id,
            "namespace": self.namespace,
            "event_data": self.event_data,
        });
        if let (Some(cluster), Some(map)) = (&self.cluster_id, v.as_object_mut()) {
            map.insert("cluster_id".into(), cluster.clone().into());
        }
        v
    }
}

/// rr_name is the name part of `<namespace>/<name>`.
fn rr_name(remediation_request: &str) -> &str {
    remediation_request
        .rsplit_once('/')
        .map_or(remediation_request, |(_, name)| name)
}

/// What is an event's type, action and outcome, as kubernaut names them.
struct What(&'static str, &'static str, &'static str);

const RECEIVED: What = What(SIGNAL_RECEIVED, "received", "success");
const DEDUPLICATED: What = What(SIGNAL_DEDUPLICATED, "deduplicated", "success");
const CREATED: What = What(CRD_CREATED, "created", "success");
const FAILED: What = What(CRD_FAILED, "failed", "failure");

/// base is an event about `signal` with the fields every event shares, and the
/// `event_data` keys every event has.
fn base(
    signal: &Signal,
    What(event_type, action, outcome): What,
    actor: (&'static str, String),
    resource: (&'static str, String),
    correlation_id: String,
) -> Event {
    let namespace = signal.target.namespace.clone();
    let mut data = Map::new();
    data.insert("event_type".into(), event_type.into());
    // kubernaut's Gateway writes `alert` for every adapter (`spec.signalType`).
    data.insert("signal_type".into(), SignalType::Alert.as_str().into());
    data.insert("signal_name".into(), signal.name.clone().into());
    data.insert("namespace".into(), namespace.clone().into());
    data.insert(
        "fingerprint".into(),
        signal.fingerprint.as_str().to_owned().into(),
    );
    Event {
        event_timestamp: jiff::Timestamp::now(),
        event_type,
        event_action: action,
        event_outcome: outcome,
        actor_type: actor.0,
        actor_id: actor.1,
        resource_type: resource.0,
        resource_id: resource.1,
        correlation_id,
        namespace,
        cluster_id: signal.cluster_id.clone().filter(|c| !c.is_empty()),
        event_data: data,
    }
}

/// with adds `pairs` to the event's `event_data`.
fn with(mut event: Event, pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Event {
    for (k, v) in pairs {
        event.event_data.insert(k.into(), v);
    }
    event
}

/// resource_fields are the `event_data` keys naming the signal's severity and workload.
fn resource_fields(signal: &Signal) -> [(&'static str, Value); 3] {
    [
        ("severity", signal.severity.clone().into()),
        ("resource_kind", signal.target.kind.clone().into()),
        ("resource_name", signal.target.name.clone().into()),
    ]
}

/// labels_and_annotations are the `event_data` keys kubernaut rebuilds an RR's from.
fn labels_and_annotations(signal: &Signal) -> [(&'static str, Value); 2] {
    [
        ("signal_labels", json!(signal.labels)),
        ("signal_annotations", json!(signal.annotations)),
    ]
}

/// received is `gateway.signal.received`: `signal`, from `caller`, opened the RR
/// `remediation_request` (`<namespace>/<name>`).
#[must_use]
pub fn received(signal: &Signal, caller: &Caller, remediation_request: &str) -> Event {
    let event = base(
        signal,
        RECEIVED,
        caller.actor(signal.source),
        ("Signal", signal.fingerprint.as_str().to_owned()),
        rr_name(remediation_request).to_owned(),
    );
    let event = with(event, resource_fields(signal));
    let event = with(
        event,
        [
            ("remediation_request", remediation_request.into()),
            ("deduplication_status", "new".into()),
        ],
    );
    with(event, labels_and_annotations(signal))
}

/// deduplicated is `gateway.signal.deduplicated`: `signal`, from `caller`, was counted on
/// the RR `remediation_request`, whose count it made `occurrence_count`.
#[must_use]
pub fn deduplicated(
    signal: &Signal,
    caller: &Caller,
    remediation_request: &str,
    occurrence_count: i64,
) -> Event {
    let event = base(
        signal,
        DEDUPLICATED,
        caller.actor(signal.source),
        ("Signal", signal.fingerprint.as_str().to_owned()),
        rr_name(remediation_request).to_owned(),
    );
    let event = with(event, [("occurrence_count", occurrence_count.into())]);
    let event = with(event, labels_and_annotations(signal));
    with(
        event,
        [
            ("remediation_request", remediation_request.into()),
            ("deduplication_status", "duplicate".into()),
        ],
    )
}

/// crd_created is `gateway.crd.created`: the RR `remediation_request` was created for
/// `signal`.
#[must_use]
pub fn crd_created(signal: &Signal, remediation_request: &str) -> Event {
    let event = base(
        signal,
        CREATED,
        ("gateway", "crd-creator".to_owned()),
        ("RemediationRequest", remediation_request.to_owned()),
        rr_name(remediation_request).to_owned(),
    );
    let event = with(event, resource_fields(signal));
    with(
        event,
        [
            ("remediation_request", remediation_request.into()),
            // kubernaut's: a new RR starts at one, whatever the batch added to it.
            ("occurrence_count", 1.into()),
        ],
    )
}

/// is_create_failure reports whether `error` is the failure of an RR create request: only
/// those are `gateway.crd.failed` (a failed lock wait or status write is not a failed create).
#[must_use]
pub fn is_create_failure(error: &Error) -> bool {
    matches!(
        error,
        Error::Kube(
            KubeError::Failed { op, .. } | KubeError::Timeout { op, .. } | KubeError::Unusable { op, .. }
        ) if *op == CREATE_RR
    )
}

/// crd_failed is `gateway.crd.failed`: creating the RR for `signal` failed with `error`.
/// Its resource and correlation id are kubernaut's readable
/// `<signalName>:<namespace>:<Kind>:<name>`.
#[must_use]
pub fn crd_failed(signal: &Signal, error: &Error) -> Event {
    let readable = format!(
        "{}:{}:{}:{}",
        signal.name, signal.target.namespace, signal.target.kind, signal.target.name
    );
    let event = base(
        signal,
        FAILED,
        ("gateway", "crd-creator".to_owned()),
        ("RemediationRequest", readable.clone()),
        readable,
    );
    let event = with(event, resource_fields(signal));
    let details = json!({
        "message": error.to_string(),
        "code": error_code(error),
        "component": "gateway",
        // A retry of the signal can succeed unless the API server refused the RR itself.
        "retry_possible": !crate::web::rejects_object(error),
    });
    with(event, [("error_details", details)])
}

/// error_code is kubernaut's `ERR_K8S_*` classification of a Kubernetes API failure
/// (`pkg/shared/audit/error_types.go`).
fn error_code(error: &Error) -> &'static str {
    let Error::Kube(e) = error else {
        return "ERR_K8S_UNKNOWN";
    };
    let status = match e {
        KubeError::Timeout { .. } => return "ERR_K8S_TIMEOUT",
        KubeError::Unusable { .. } => return "ERR_K8S_UNKNOWN",
        KubeError::Failed { source, .. } => match source.as_ref() {
            kube::Error::Api(status) => status,
            _ => return "ERR_K8S_UNKNOWN",
        },
    };
    match (status.reason.as_str(), status.code) {
        ("AlreadyExists", _) => "ERR_K8S_ALREADY_EXISTS",
        ("Timeout", _) | (_, 504) => "ERR_K8S_TIMEOUT",
        ("ServerTimeout", _) => "ERR_K8S_SERVER_TIMEOUT",
        (_, 404) => "ERR_K8S_NOT_FOUND",
        (_, 409) => "ERR_K8S_CONFLICT",
        (_, 403) => "ERR_K8S_FORBIDDEN",
        (_, 401) => "ERR_K8S_UNAUTHORIZED",
        (_, 422) => "ERR_K8S_INVALID",
        (_, 503) => "ERR_K8S_SERVICE_UNAVAILABLE",
        (_, 500) => "ERR_K8S_INTERNAL",
        _ => "ERR_K8S_UNKNOWN",
    }
}

/// emit writes `event` as a log line and, when OTLP logs are exported, queues it as a
/// record; `span` (the batch's) gives both its trace id. Never blocks.
pub fn emit(span: &tracing::Span, event: &Event) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    let trace_id = sc.is_valid().then(|| sc.trace_id().to_string());
    let data = Value::Object(event.event_data.clone()).to_string();
    // A root event: the trace layer would otherwise copy it onto the batch span.
    tracing::info!(
        target: TARGET,
        parent: None,
        version = Event::VERSION,
        event_timestamp = %event.event_timestamp,
        event_category = Event::CATEGORY,
        event_type = event.event_type,
        event_action = event.event_action,
        event_outcome = event.event_outcome,
        actor_type = event.actor_type,
        actor_id = %event.actor_id,
        resource_type = event.resource_type,
        resource_id = %event.resource_id,
        correlation_id = %event.correlation_id,
        namespace = %event.namespace,
        cluster_id = event.cluster_id.as_deref(),
        event_data = %data,
        trace_id = trace_id.as_deref(),
        "audit event"
    );
    if let Some(sink) = SINK.get()
        && !sink.emit(event, &sc)
    {
        dropped().add(1, &[]);
    }
}

/// dropped counts the records the full queue refused (`gateway_audit_events_dropped_total`).
fn dropped() -> &'static Counter<u64> {
    static DROPPED: OnceLock<Counter<u64>> = OnceLock::new();
    DROPPED.get_or_init(|| dropped_counter(&global::meter("signal-gateway")))
}

fn dropped_counter(meter: &Meter) -> Counter<u64> {
    meter
        .u64_counter("gateway.audit.events.dropped")
        .with_description("Audit events not exported because their queue was full")
        .build()
}

/// register_metrics creates the drop counter at zero; call it once the meter provider is set.
pub fn register_metrics() {
    dropped().add(0, &[]);
}

/// SINK is where `emit` queues OTLP records, when they are exported.
static SINK: OnceLock<Sink> = OnceLock::new();

/// install makes `emit` queue OTLP records on `logger`, bounded by `queue`; the first call wins.
pub fn install(logger: SdkLogger, queue: Queue) {
    let _ = SINK.set(Sink { logger, queue });
}

/// Queue bounds the records between `emit` and their export. The SDK's batch processor
/// drops a record when its channel is full but does not say so; the queue counts records
/// in (`emit`) and out (the export starts), and refuses a record before the channel could
/// be full, so that every drop is counted here.
#[derive(Clone, Debug)]
pub struct Queue {
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl Queue {
    /// new is a queue of `capacity` records: the batch processor's `max_queue_size`.
    #[must_use]
    pub fn new(capacity: usize) -> Queue {
        Queue {
            queued: Arc::new(AtomicUsize::new(0)),
            capacity: capacity.max(1),
        }
    }

    /// capacity is how many records may wait.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// exporter wraps the batch processor's exporter so that exported records leave the queue.
    #[must_use]
    pub fn exporter<E: LogExporter>(&self, inner: E) -> Dequeue<E> {
        Dequeue {
            inner,
            queued: Arc::clone(&self.queued),
        }
    }

    /// enter takes a place in the queue, or reports it full.
    fn enter(&self) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }
}

/// Dequeue is a log exporter that takes each batch it exports out of its `Queue`.
#[derive(Debug)]
pub struct Dequeue<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: LogExporter> LogExporter for Dequeue<E> {
    fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
        // The batch has left the processor's channel: its places are free again.
        let n = batch.iter().count();
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn event_enabled(&self, level: Severity, target: &str, name: Option<&str>) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Sink is the OTLP side of `emit`.
struct Sink {
    logger: SdkLogger,
    queue: Queue,
}

impl Sink {
    /// emit queues `event` as a log record; false when the queue was full (dropped).
    fn emit(&self, event: &Event, sc: &SpanContext) -> bool {
        if !self.queue.enter() {
            return false;
        }
        let mut record = self.logger.create_log_record();
        record.set_event_name(event.event_type);
        record.set_timestamp(SystemTime::from(event.event_timestamp));
        record.set_observed_timestamp(SystemTime::now());
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        record.set_body(event.event_type.into());
        if let Value::Object(fields) = event.to_json() {
            record.add_attributes(
                fields
                    .into_iter()
                    .filter_map(|(k, v)| Some((Key::from(k), any_value(v)?))),
            );
        }
        if sc.is_valid() {
            record.set_trace_context(sc.trace_id(), sc.span_id(), Some(sc.trace_flags()));
        }
        self.logger.emit(record);
        true
    }
}

/// any_value is a JSON value as an OTLP attribute value (nested maps and lists kept);
/// null has none.
fn any_value(v: Value) -> Option<AnyValue> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AnyValue::String(s.into()),
        Value::Array(items) => {
            AnyValue::ListAny(Box::new(items.into_iter().filter_map(any_value).collect()))
        }
        Value::Object(map) => AnyValue::Map(Box::new(
            map.into_iter()
                .filter_map(|(k, v)| Some((Key::from(k), any_value(v)?)))
                .collect(),
        )),
    })
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        io::Write,
        sync::{Mutex, mpsc},
        time::{Duration, Instant},
    };

    use opentelemetry::logs::LoggerProvider as _;
    use opentelemetry_sdk::logs::{BatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider};

    use super::*;
    use crate::signal::{Fingerprint, TargetResource};

    fn signal(cluster: Option<&str>) -> Signal {
        let target = TargetResource {
            kind: "Deployment".into(),
            name: "web".into(),
            namespace: "prod".into(),
            api_version: "apps/v1".into(),
        };
        Signal {
            fingerprint: Fingerprint::of(cluster, &target),
            name: "KubePodCrashLooping".into(),
            severity: "critical".into(),
            source: Source::Alertmanager,
            target,
            labels: [("alertname".to_owned(), "KubePodCrashLooping".to_owned())].into(),
            annotations: [("summary".to_owned(), "crash looping".to_owned())].into(),
            firing_time: jiff::Timestamp::UNIX_EPOCH,
            received_time: jiff::Timestamp::UNIX_EPOCH,
            cluster_id: cluster.map(str::to_owned),
            provider_data: String::new(),
            original_payload: Some("{\"alerts\":[]}".into()),
        }
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    /// COMMON are the fields of every event (kubernaut's `AuditEventRequest`), without
    /// `cluster_id`, which is there only for a signal of another cluster.
    const COMMON: [&str; 13] = [
        "version",
        "event_timestamp",
        "event_category",
        "event_type",
        "event_action",
        "event_outcome",
        "actor_type",
        "actor_id",
        "resource_type",
        "resource_id",
        "correlation_id",
        "namespace",
        "event_data",
    ];

    /// BASE are the `event_data` keys every event has.
    const BASE: [&str; 5] = [
        "event_type",
        "signal_type",
        "signal_name",
        "namespace",
        "fingerprint",
    ];

    fn data_keys(extra: &[&str]) -> BTreeSet<String> {
        BASE.iter().chain(extra).map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn received_has_kubernauts_fields() {
        let s = signal(None);
        let rr = "kubernaut/rr-abc-1";
        let user = Caller::authenticated("system:serviceaccount:monitoring:alertmanager");
        let v = received(&s, &user, rr).to_json();
        assert_eq!(keys(&v), set(&COMMON));
        assert_eq!(v["version"], "1.0");
        assert_eq!(v["event_category"], "gateway");
        assert_eq!(v["event_type"], "gateway.signal.received");
        assert_eq!(v["event_action"], "received");
        assert_eq!(v["event_outcome"], "success");
        assert_eq!(v["actor_type"], "authenticated-service");
        assert_eq!(
            v["actor_id"],
            "system:serviceaccount:monitoring:alertmanager"
        );
        assert_eq!(v["resource_type"], "Signal");
        assert_eq!(v["resource_id"], s.fingerprint.as_str());
        assert_eq!(v["correlation_id"], "rr-abc-1");
        assert_eq!(v["namespace"], "prod");
        let ts = v["event_timestamp"].as_str().unwrap_or_default();
        assert!(
            ts.ends_with('Z') && ts.parse::<jiff::Timestamp>().is_ok(),
            "{ts}"
        );
        let d = &v["event_data"];
        assert_eq!(
            keys(d),
            data_keys(&[
                "severity",
                "resource_kind",
                "resource_name",
                "remediation_request",
                "deduplication_status",
                "signal_labels",
                "signal_annotations",
            ])
        );
        assert_eq!(d["event_type"], "gateway.signal.received");
        assert_eq!(d["signal_type"], "alert");
        assert_eq!(d["signal_name"], "KubePodCrashLooping");
        assert_eq!(d["namespace"], "prod");
        assert_eq!(d["fingerprint"], s.fingerprint.as_str());
        assert_eq!(d["severity"], "critical");
        assert_eq!(d["resource_kind"], "Deployment");
        assert_eq!(d["resource_name"], "web");
        assert_eq!(d["remediation_request"], rr);
        assert_eq!(d["deduplication_status"], "new");
        assert_eq!(
            d["signal_labels"],
            json!({"alertname": "KubePodCrashLooping"})
        );
        assert_eq!(d["signal_annotations"], json!({"summary": "crash looping"}));
    }

    #[test]
    fn deduplicated_has_kubernauts_fields() {
        let s = signal(None);
        let v = deduplicated(&s, &Caller::anonymous(), "kubernaut/rr-abc-1", 7).to_json();
        assert_eq!(keys(&v), set(&COMMON));
        assert_eq!(v["event_type"], "gateway.signal.deduplicated");
        assert_eq!(v["event_action"], "deduplicated");
        assert_eq!(v["event_outcome"], "success");
        // Without a TokenReview the actor is the source, as kubernaut names it.
        assert_eq!(v["actor_type"], "external");
        assert_eq!(v["actor_id"], "prometheus");
        assert_eq!(v["resource_type"], "Signal");
        assert_eq!(v["correlation_id"], "rr-abc-1");
        let d = &v["event_data"];
        assert_eq!(
            keys(d),
            data_keys(&[
                "occurrence_count",
                "signal_labels",
                "signal_annotations",
                "remediation_request",
                "deduplication_status",
            ])
        );
        assert_eq!(d["occurrence_count"], 7);
        assert_eq!(d["deduplication_status"], "duplicate");
        assert_eq!(d["remediation_request"], "kubernaut/rr-abc-1");
        let mut event = s.clone();
        event.source = Source::KubernetesEvent;
        let v = deduplicated(&event, &Caller::anonymous(), "kubernaut/rr-abc-1", 2).to_json();
        assert_eq!(v["actor_id"], "kubernetes-events");
        assert_eq!(v["event_data"]["signal_type"], "alert");
    }

    #[test]
    fn crd_created_has_kubernauts_fields() {
        let s = signal(Some("eu-1"));
        let v = crd_created(&s, "kubernaut/rr-abc-1").to_json();
        let mut common = set(&COMMON);
        common.insert("cluster_id".into());
        assert_eq!(keys(&v), common);
        assert_eq!(v["cluster_id"], "eu-1");
        assert_eq!(v["event_type"], "gateway.crd.created");
        assert_eq!(v["event_action"], "created");
        assert_eq!(v["event_outcome"], "success");
        assert_eq!(v["actor_type"], "gateway");
        assert_eq!(v["actor_id"], "crd-creator");
        assert_eq!(v["resource_type"], "RemediationRequest");
        assert_eq!(v["resource_id"], "kubernaut/rr-abc-1");
        assert_eq!(v["correlation_id"], "rr-abc-1");
        let d = &v["event_data"];
        assert_eq!(
            keys(d),
            data_keys(&[
                "severity",
                "resource_kind",
                "resource_name",
                "remediation_request",
                "occurrence_count",
            ])
        );
        assert_eq!(d["occurrence_count"], 1);
        // An empty cluster id is the local cluster: no field.
        let v = crd_created(&signal(Some("")), "kubernaut/rr-abc-1").to_json();
        assert!(v.get("cluster_id").is_none(), "{v}");
    }

    fn api_error(code: u16, reason: &str, message: &str) -> Error {
        let status = kube::core::Status::failure(message, reason).with_code(code);
        Error::Kube(KubeError::failed(
            CREATE_RR,
            "rr-abc-1",
            kube::Error::Api(status.boxed()),
        ))
    }

    #[test]
    fn crd_failed_has_kubernauts_fields() {
        let s = signal(None);
        let e = api_error(422, "Invalid", "spec.severity: Too long");
        assert!(is_create_failure(&e));
        let v = crd_failed(&s, &e).to_json();
        assert_eq!(keys(&v), set(&COMMON));
        assert_eq!(v["event_type"], "gateway.crd.failed");
        assert_eq!(v["event_action"], "failed");
        assert_eq!(v["event_outcome"], "failure");
        assert_eq!(v["actor_type"], "gateway");
        assert_eq!(v["actor_id"], "crd-creator");
        assert_eq!(v["resource_type"], "RemediationRequest");
        let readable = "KubePodCrashLooping:prod:Deployment:web";
        assert_eq!(v["resource_id"], readable);
        assert_eq!(v["correlation_id"], readable);
        let d = &v["event_data"];
        assert_eq!(
            keys(d),
            data_keys(&[
                "severity",
                "resource_kind",
                "resource_name",
                "error_details"
            ])
        );
        let details = &d["error_details"];
        assert_eq!(
            keys(details),
            set(&["message", "code", "component", "retry_possible"])
        );
        assert_eq!(details["code"], "ERR_K8S_INVALID");
        assert_eq!(details["component"], "gateway");
        assert_eq!(details["retry_possible"], false);
        assert!(
            details["message"]
                .as_str()
                .is_some_and(|m| m.contains("Too long")),
            "{details}"
        );
        // A transient failure can succeed on retry.
        let unavailable = api_error(503, "ServiceUnavailable", "etcd is down");
        let details = &crd_failed(&s, &unavailable).to_json()["event_data"]["error_details"];
        assert_eq!(details["code"], "ERR_K8S_SERVICE_UNAVAILABLE");
        assert_eq!(details["retry_possible"], true);
        let timeout = Error::Kube(KubeError::Timeout {
            op: CREATE_RR,
            name: "rr-abc-1".into(),
            after: Duration::from_secs(5),
        });
        assert!(is_create_failure(&timeout));
        assert_eq!(error_code(&timeout), "ERR_K8S_TIMEOUT");
        assert_eq!(
            error_code(&api_error(403, "Forbidden", "no")),
            "ERR_K8S_FORBIDDEN"
        );
        assert_eq!(
            error_code(&api_error(500, "InternalError", "x")),
            "ERR_K8S_INTERNAL"
        );
    }

    #[test]
    fn only_a_failed_create_is_a_crd_failure() {
        let read = Error::Kube(KubeError::Timeout {
            op: "reading remediationrequest",
            name: "rr-abc-1".into(),
            after: Duration::from_secs(5),
        });
        assert!(!is_create_failure(&read));
        assert!(!is_create_failure(&Error::Cancelled));
        assert!(!is_create_failure(&Error::LockBusy {
            lease: "sg-x".into(),
            waited: Duration::from_secs(5),
        }));
    }

    #[test]
    fn callers_without_a_name_are_anonymous() {
        assert_eq!(Caller::authenticated(""), Caller::anonymous());
        assert_eq!(Caller::authenticated("admin").username(), Some("admin"));
        assert_eq!(Caller::default().username(), None);
    }

    /// Buffer collects what a test subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_line_is_json_with_the_audit_target_and_every_field() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(move || writer.clone())
            .finish();
        let s = signal(Some("eu-1"));
        let event = received(&s, &Caller::authenticated("admin"), "kubernaut/rr-abc-1");
        tracing::subscriber::with_default(subscriber, || {
            emit(&tracing::Span::none(), &event);
        });
        let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["target"], TARGET);
        assert_eq!(line["message"], "audit event");
        let want = event.to_json();
        for (k, v) in want.as_object().into_iter().flatten() {
            if k == "event_data" {
                let data: Value = serde_json::from_str(line[k].as_str().unwrap_or_default())
                    .expect("event_data as JSON");
                assert_eq!(&data, v);
            } else {
                assert_eq!(&line[k], v, "{k} in {line}");
            }
        }
    }

    /// The drop counter's Prometheus name is kubernaut's `audit_events_dropped_total` with
    /// the gateway's prefix.
    #[test]
    fn the_drop_counter_has_its_prometheus_name() {
        use opentelemetry::metrics::MeterProvider as _;
        let (provider, telemetry) = crate::telemetry::scraped();
        dropped_counter(&provider.meter("test")).add(3, &[]);
        let text = telemetry.prometheus_text().unwrap_or_default();
        assert!(
            text.lines()
                .any(|l| l == "gateway_audit_events_dropped_total 3"),
            "{text}"
        );
    }

    #[test]
    fn json_values_become_nested_attribute_values() {
        let v = any_value(json!({"a": {"b": [1, "x", true, null]}, "n": null, "f": 1.5}));
        let Some(AnyValue::Map(map)) = v else {
            panic!("a map: {v:?}");
        };
        assert_eq!(map.len(), 2, "null is left out: {map:?}");
        assert_eq!(map.get(&Key::from("f")), Some(&AnyValue::Double(1.5)));
        let Some(AnyValue::Map(a)) = map.get(&Key::from("a")) else {
            panic!("a nested map: {map:?}");
        };
        assert_eq!(
            a.get(&Key::from("b")),
            Some(&AnyValue::ListAny(Box::new(vec![
                AnyValue::Int(1),
                AnyValue::String("x".into()),
                AnyValue::Boolean(true),
            ])))
        );
    }

    /// Hung is an exporter whose every export waits until the test ends, as one against a
    /// collector that accepts and never answers.
    #[derive(Debug)]
    struct Hung {
        exports: mpsc::Sender<usize>,
        release: Arc<Mutex<mpsc::Receiver<()>>>,
    }

    impl LogExporter for Hung {
        fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
            let _ = self.exports.send(batch.iter().count());
            if let Ok(release) = self.release.lock() {
                let _ = release.recv_timeout(Duration::from_secs(30));
            }
            std::future::ready(Ok(()))
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (exports_tx, exports) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let queue = Queue::new(4);
        let exporter = queue.exporter(Hung {
            exports: exports_tx,
            release: Arc::new(Mutex::new(release_rx)),
        });
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(queue.capacity())
            .with_max_export_batch_size(queue.capacity())
            .with_scheduled_delay(Duration::from_millis(10))
            .build();
        let processor = BatchLogProcessor::builder(exporter)
            .with_batch_config(config)
            .build();
        let provider = SdkLoggerProvider::builder()
            .with_log_processor(processor)
            .build();
        let sink = Sink {
            logger: provider.logger(TARGET),
            queue: queue.clone(),
        };
        let event = crd_created(&signal(None), "kubernaut/rr-abc-1");
        let sc = SpanContext::empty_context();
        // The first record is exported, and its export hangs.
        assert!(sink.emit(&event, &sc));
        let first = exports.recv_timeout(Duration::from_secs(5));
        assert_eq!(first, Ok(1));
        let start = Instant::now();
        let accepted = (0..1000).filter(|_| sink.emit(&event, &sc)).count();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "emitting took {:?} while the export hung",
            start.elapsed()
        );
        assert_eq!(accepted, queue.capacity(), "the queue holds its capacity");
        drop(release);
        // Once exports go through again, the queue empties and takes records.
        let deadline = Instant::now() + Duration::from_secs(5);
        while queue.queued.load(Ordering::Acquire) > 0 {
            assert!(Instant::now() < deadline, "the queue never emptied");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(sink.emit(&event, &sc));
        let _ = provider.shutdown();
    }
}

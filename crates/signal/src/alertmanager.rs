//! Alertmanager webhook (version 4) adapter.
//!
//! The target is named by the first non-empty label of `target::KINDS` (docs/api.md's
//! target table); namespaced kinds also need a non-empty namespace, the `exported_namespace`
//! label, else the `namespace` label (kubernaut's order), or the alert is rejected rather than
//! matched against a later row. Names that are not valid Kubernetes names are rejected, never
//! truncated or rewritten.
//!
//! The cluster of an alert is its own `cluster` label (Alertmanager puts the group's common
//! labels on every alert), else `GATEWAY_CLUSTER_ID`.
//!
//! Replay: with `GATEWAY_REPLAY_WINDOW_SECONDS` set, a notification that would write anything
//! is refused when its `X-Timestamp` header (Unix seconds) is older than the window or more
//! than two minutes ahead, or, without the header, when no alert has a `startsAt` or the latest
//! one is more than two minutes ahead. `startsAt` has no age limit: Alertmanager re-sends an
//! ongoing alert with its original `startsAt` on every `repeat_interval`.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Map, Value};

use super::{
    Fingerprint, Item, ParseContext, PayloadError, SEVERITY_MAX, SIGNAL_NAME_MAX, Signal, Source,
    TargetResource, body_text, bounded, check_fresh, cluster_of, json_kind, opt_str, parse_object,
    parse_timestamp, provider_data, short, shown, string_map,
    target::{KINDS, NAMESPACE, is_dns1123_label, validate_target},
};

/// SEVERITY_DEFAULT is the severity of an alert without a `severity` label.
const SEVERITY_DEFAULT: &str = "unknown";

/// parse_alertmanager turns an Alertmanager v4 webhook body into one item per alert, in payload order.
///
/// The payload must be a JSON object with a non-empty `alerts` array and, when it says
/// which, `version` "4"; anything else is a [`PayloadError`], as is a notification the
/// replay check (module docs) refuses. Unknown fields are ignored. A single malformed alert
/// becomes [`Item::Rejected`] and does not spoil the rest of the group.
pub fn parse_alertmanager(body: &[u8], ctx: &ParseContext) -> Result<Vec<Item>, PayloadError> {
    let payload = parse_object(body)?;
    let alerts = alerts_of(&payload, ctx)?;
    if let Some(truncated) = payload
        .get("truncatedAlerts")
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
    {
        // Alertmanager's max_alerts dropped part of the group; those alerts are never seen here.
        tracing::warn!(
            // The gateway's target, which `RUST_LOG=signal_gateway=...` selects and its logs'
            // `target` field has always named.
            target: "signal_gateway::signal::alertmanager",
            truncated_alerts = truncated,
            received_alerts = alerts.len(),
            "alertmanager truncated the alert group"
        );
    }
    let whole = body_text(body);
    let items: Vec<Item> = alerts
        .iter()
        .enumerate()
        .map(|(index, alert)| parse_alert(index, alert, ctx, whole.as_ref()))
        .collect();
    // A notification that writes nothing cannot be replayed to any effect, and its
    // per-alert answers say more than a refusal would.
    if items.iter().any(|i| matches!(i, Item::Signal(_))) {
        check_replay(alerts, ctx)?;
    }
    Ok(items)
}

/// alerts_of is the notification's `alerts`, when its `version` is 4 (or unset) and there
/// are between one and `max_alerts` of them.
fn alerts_of<'a>(
    payload: &'a Map<String, Value>,
    ctx: &ParseContext,
) -> Result<&'a [Value], PayloadError> {
    match payload.get("version") {
        // kubernaut ignores `version`; without one, the v4 shape (an `alerts` array) decides.
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == "4" => {}
        Some(other) => {
            return Err(PayloadError::InvalidValue {
                field: "version".into(),
                expected: "\"4\" (Alertmanager webhook version 4)",
                found: found_value(other),
            });
        }
    }
    let alerts = match payload.get("alerts") {
        None | Some(Value::Null) => {
            return Err(PayloadError::MissingField {
                field: "alerts".into(),
            });
        }
        Some(Value::Array(alerts)) => alerts,
        Some(other) => {
            return Err(PayloadError::WrongType {
                field: "alerts".into(),
                expected: "an array",
                found: json_kind(other),
            });
        }
    };
    if alerts.is_empty() {
        return Err(PayloadError::NoAlerts);
    }
    if alerts.len() > ctx.max_alerts {
        return Err(PayloadError::TooManyAlerts {
            count: alerts.len(),
            limit: ctx.max_alerts,
        });
    }
    Ok(alerts)
}

/// check_replay applies the replay check of the module docs to a notification.
fn check_replay(alerts: &[Value], ctx: &ParseContext) -> Result<(), PayloadError> {
    let Some(window) = ctx.replay_window else {
        return Ok(());
    };
    if let Some(header) = &ctx.timestamp_header {
        let seconds: i64 = header
            .parse()
            .map_err(|_| PayloadError::InvalidTimestampHeader {
                value: shown(header),
                expected: "Unix seconds (an integer)",
            })?;
        if seconds < 0 {
            return Err(PayloadError::InvalidTimestampHeader {
                value: shown(header),
                expected: "Unix seconds (a non-negative integer)",
            });
        }
        let value = match jiff::Timestamp::from_second(seconds) {
            Ok(ts) => format!("{seconds} ({ts})"),
            Err(_) => seconds.to_string(),
        };
        return check_fresh(
            Some(("timestamp too old: possible replay attack", window)),
            "timestamp in future: possible clock skew attack",
            "header `X-Timestamp`",
            &value,
            seconds,
            ctx.received_time,
        );
    }
    let latest = alerts
        .iter()
        .enumerate()
        .filter_map(|(index, alert)| {
            let value = alert.get("startsAt")?.as_str()?;
            let ts = parse_timestamp("startsAt", value, ctx.received_time).ok()??;
            Some((ts, index, value))
        })
        .max_by_key(|(ts, _, _)| *ts);
    let Some((ts, index, value)) = latest else {
        return Err(PayloadError::NoTimestamp {
            problem: "alert payload missing startsAt timestamp",
            detail: "no alert has a non-zero `startsAt` and there is no `X-Timestamp` header",
        });
    };
    check_fresh(
        None,
        "alert startsAt in future: possible clock skew attack",
        &format!("field `startsAt` of alerts[{index}]"),
        &shown(value),
        ts.as_second(),
        ctx.received_time,
    )
}

/// found_value renders a JSON value for an error message: strings quoted, other types by name.
fn found_value(v: &Value) -> String {
    match v {
        Value::String(s) => shown(s),
        other => json_kind(other).to_owned(),
    }
}

/// parse_alert turns one element of `alerts` into an item; `whole` is the request body
/// when it fits in `spec.originalPayload`.
fn parse_alert(index: usize, alert: &Value, ctx: &ParseContext, whole: Option<&Arc<str>>) -> Item {
    let Value::Object(fields) = alert else {
        return Item::Rejected {
            reason: format!(
                "alerts[{index}]: must be an object, found {}",
                json_kind(alert)
            ),
        };
    };
    let labels = match string_map(fields, "labels", "labels") {
        Ok(labels) => labels,
        Err(e) => {
            return Item::Rejected {
                reason: format!("alerts[{index}]: {e}"),
            };
        }
    };
    let alertname = labels.get("alertname").filter(|n| !n.is_empty()).cloned();
    let prefix = match &alertname {
        Some(name) => format!("alerts[{index}] ({})", short(name)),
        None => format!("alerts[{index}]"),
    };
    // The request body when it fits, else this alert's own object when that does.
    let payload = || whole.cloned().or_else(|| bounded(&alert.to_string()));
    match firing_signal(fields, labels, alertname, ctx, payload) {
        Ok(item) => item,
        Err(reason) => Item::Rejected {
            reason: format!("{prefix}: {reason}"),
        },
    }
}

/// firing_signal classifies one alert by status and, when firing, builds its signal;
/// `original_payload` gives its `spec.originalPayload`.
fn firing_signal(
    alert: &Map<String, Value>,
    labels: BTreeMap<String, String>,
    alertname: Option<String>,
    ctx: &ParseContext,
    original_payload: impl FnOnce() -> Option<Arc<str>>,
) -> Result<Item, String> {
    if !is_firing(alert)? {
        let fingerprint = match (target_from_labels(&labels), cluster_of(Some(&labels), ctx)) {
            (Ok(target), Ok(cluster)) => Some(Fingerprint::of(cluster.as_deref(), &target)),
            _ => None,
        };
        return Ok(Item::Ignored {
            fingerprint,
            reason: "alert resolved".into(),
        });
    }
    let name = alertname.ok_or("no alertname label")?;
    within("alertname", &name, SIGNAL_NAME_MAX)?;
    let target = target_from_labels(&labels)?;
    let cluster_id = cluster_of(Some(&labels), ctx)?;
    let annotations = string_map(alert, "annotations", "annotations").map_err(|e| e.to_string())?;
    let starts_at = opt_str(alert, "startsAt", "startsAt").map_err(|e| e.to_string())?;
    let firing_time = match starts_at {
        Some(value) => {
            parse_timestamp("startsAt", value, ctx.received_time).map_err(|e| e.to_string())?
        }
        None => None,
    };
    let severity = labels
        .get("severity")
        .filter(|s| !s.is_empty())
        .map_or(SEVERITY_DEFAULT, String::as_str);
    within("severity", severity, SEVERITY_MAX)?;
    let namespace = alert_namespace(&labels).map_or("", |(_, ns)| ns);
    Ok(Item::Signal(Signal {
        fingerprint: Fingerprint::of(cluster_id.as_deref(), &target),
        name,
        severity: severity.to_owned(),
        source: Source::Alertmanager,
        target,
        provider_data: provider_data(Some(&labels), namespace),
        labels,
        annotations,
        firing_time: firing_time.unwrap_or(ctx.received_time),
        received_time: ctx.received_time,
        cluster_id,
        original_payload: original_payload(),
    }))
}

/// is_firing reads the alert's `status`: true when `firing`, false when `resolved`.
fn is_firing(alert: &Map<String, Value>) -> Result<bool, String> {
    match opt_str(alert, "status", "status").map_err(|e| e.to_string())? {
        Some("firing") => Ok(true),
        Some("resolved") => Ok(false),
        Some(other) => Err(PayloadError::InvalidValue {
            field: "status".into(),
            expected: "\"firing\" or \"resolved\"",
            found: shown(other),
        }
        .to_string()),
        None => Err(PayloadError::MissingField {
            field: "status".into(),
        }
        .to_string()),
    }
}

/// alert_namespace is the namespace an alert names and the label it came from:
/// `exported_namespace` (the object's own namespace when the scrape target's is in
/// `namespace`), else `namespace`, kubernaut's order; empty values count as absent.
fn alert_namespace(labels: &BTreeMap<String, String>) -> Option<(&'static str, &str)> {
    ["exported_namespace", "namespace"]
        .into_iter()
        .find_map(|key| {
            labels
                .get(key)
                .filter(|v| !v.is_empty())
                .map(|v| (key, v.as_str()))
        })
}

/// within refuses a label value longer than the RR field it fills allows, in
/// characters as the API server counts them: the RR would be refused with 422.
fn within(label: &str, value: &str, max: usize) -> Result<(), String> {
    let chars = value.chars().count();
    if chars > max {
        return Err(format!(
            "label `{label}` is {chars} characters; a RemediationRequest allows at most {max}"
        ));
    }
    Ok(())
}

/// target_from_labels picks the target resource from alert labels by the priority in the module docs.
fn target_from_labels(labels: &BTreeMap<String, String>) -> Result<TargetResource, String> {
    let label = |key: &str| {
        labels
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let namespace = alert_namespace(labels);
    for row in KINDS {
        let Some((row_label, name)) = row.label.and_then(|l| Some((l, label(l)?))) else {
            continue;
        };
        let namespace = if row.namespaced {
            namespace.map(|(_, ns)| ns).ok_or_else(|| {
                format!(
                    "label `{}` names {} {} but there is no `namespace` label; {} is namespaced",
                    row_label,
                    row.kind,
                    shown(name),
                    row.kind
                )
            })?
        } else {
            ""
        };
        let target = TargetResource {
            kind: row.kind.to_owned(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            api_version: row.api_version.to_owned(),
        };
        validate_target(&target).map_err(|e| format!("label `{row_label}`: {e}"))?;
        return Ok(target);
    }
    if let Some((ns_label, ns)) = namespace {
        if !is_dns1123_label(ns) {
            return Err(format!(
                "label `{ns_label}`: namespace {} is not a valid DNS-1123 label",
                shown(ns)
            ));
        }
        return Ok(TargetResource {
            kind: NAMESPACE.kind.to_owned(),
            name: ns.to_owned(),
            namespace: String::new(),
            api_version: NAMESPACE.api_version.to_owned(),
        });
    }
    let expected: Vec<&str> = KINDS.iter().filter_map(|r| r.label).collect();
    Err(format!(
        "no target resource label; expected one of {}, or namespace",
        expected.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE: &str =
        include_str!("../../../tests/fixtures/alertmanager/v4-single-crashloop.json");
    const GROUP: &str = include_str!("../../../tests/fixtures/alertmanager/v4-group.json");
    const MIXED: &str =
        include_str!("../../../tests/fixtures/alertmanager/v4-mixed-firing-resolved.json");
    const TRUNCATED: &str = include_str!("../../../tests/fixtures/alertmanager/v4-truncated.json");
    const NOTIFICATION_REASON: &str = include_str!(
        "../../../tests/fixtures/alertmanager/v4-notification-reason-truncated-alerts.json"
    );
    const V3: &str = include_str!("../../../tests/fixtures/alertmanager/v3-unknown-version.json");
    const NO_VERSION: &str =
        include_str!("../../../tests/fixtures/alertmanager/v4-no-version-federated.json");

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap_or(jiff::Timestamp::MIN)
    }

    fn ctx() -> ParseContext {
        ParseContext {
            cluster_id: None,
            received_time: ts("2025-06-12T08:15:00Z"),
            max_alerts: crate::MAX_ALERTS_DEFAULT,
            replay_window: None,
            timestamp_header: None,
        }
    }

    /// checked is the test context with kubernaut's replay window and `X-Timestamp` header.
    fn checked(header: Option<&str>) -> ParseContext {
        ParseContext {
            replay_window: Some(crate::REPLAY_WINDOW_DEFAULT),
            timestamp_header: header.map(str::to_owned),
            ..ctx()
        }
    }

    fn parse(body: &str) -> Vec<Item> {
        match parse_alertmanager(body.as_bytes(), &ctx()) {
            Ok(items) => items,
            Err(e) => panic!("payload must parse: {e}"),
        }
    }

    fn payload_error(body: &str) -> String {
        match parse_alertmanager(body.as_bytes(), &ctx()) {
            Ok(items) => panic!("payload must be rejected, got {items:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn signal(item: &Item) -> &Signal {
        match item {
            Item::Signal(s) => s,
            other => panic!("expected a signal, got {other:?}"),
        }
    }

    fn rejected(item: &Item) -> &str {
        match item {
            Item::Rejected { reason } => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// one_alert wraps labels into a minimal firing v4 payload.
    fn one_alert(labels: Value) -> String {
        serde_json::json!({
            "version": "4",
            "status": "firing",
            "alerts": [{"status": "firing", "labels": labels, "startsAt": "2025-06-12T08:00:00Z"}],
        })
        .to_string()
    }

    fn target_of(labels: Value) -> Result<TargetResource, String> {
        match parse(&one_alert(labels)).as_slice() {
            [Item::Signal(s)] => Ok(s.target.clone()),
            [Item::Rejected { reason }] => Err(reason.clone()),
            other => panic!("unexpected items {other:?}"),
        }
    }

    fn target(kind: &str, namespace: &str, name: &str, api_version: &str) -> TargetResource {
        TargetResource {
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.into(),
            api_version: api_version.into(),
        }
    }

    #[test]
    fn single_crashloop_becomes_one_pod_signal() {
        let items = parse(SINGLE);
        assert_eq!(items.len(), 1);
        let s = signal(&items[0]);
        assert_eq!(s.name, "KubePodCrashLooping");
        assert_eq!(s.severity, "warning");
        assert_eq!(s.source, Source::Alertmanager);
        assert_eq!(s.target, target("Pod", "prod", "web-0", "v1"));
        // printf 'prod:Pod:web-0' | sha256sum
        assert_eq!(
            s.fingerprint.as_str(),
            "07b7277eee612d0d04d9791f58c16b342e0d1140b3eda071cd2a25a476777e3f"
        );
        assert_eq!(s.firing_time, ts("2025-06-12T08:14:27.613Z"));
        assert_eq!(s.received_time, ts("2025-06-12T08:15:00Z"));
        assert_eq!(s.labels.len(), 12);
        assert_eq!(
            s.labels.get("reason").map(String::as_str),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            s.annotations.get("summary").map(String::as_str),
            Some("Pod is crash looping.")
        );
    }

    #[test]
    fn group_maps_each_alert_to_its_workload() {
        let targets: Vec<TargetResource> = parse(GROUP)
            .iter()
            .map(|i| signal(i).target.clone())
            .collect();
        assert_eq!(
            targets,
            vec![
                target("Deployment", "shop", "checkout", "apps/v1"),
                target("StatefulSet", "shop", "orders-db", "apps/v1"),
                target("PersistentVolumeClaim", "shop", "data-orders-db-0", "v1"),
                target(
                    "HorizontalPodAutoscaler",
                    "shop",
                    "checkout",
                    "autoscaling/v2"
                ),
                target("Job", "shop", "orders-reindex-29160480", "batch/v1"),
            ]
        );
        let items = parse(GROUP);
        assert_eq!(signal(&items[2]).severity, "critical");
        assert_ne!(
            signal(&items[0]).fingerprint,
            signal(&items[3]).fingerprint,
            "Deployment and HPA differ"
        );
    }

    #[test]
    fn mixed_group_ignores_resolved_alerts_with_their_fingerprint() {
        let items = parse(MIXED);
        assert_eq!(items.len(), 4);
        let node = signal(&items[0]);
        assert_eq!(
            node.target,
            target("Node", "", "worker-2", "v1"),
            "node is cluster-scoped"
        );
        // printf ':Node:worker-2' | sha256sum
        assert_eq!(
            node.fingerprint.as_str(),
            "e12977c57234eb3387198ef9acc7e98e2cca43936a021741b0735c49a9a528b6"
        );
        let expected_fp =
            Fingerprint::of(None, &target("Pod", "prod", "api-7c9d5f6b8-x2q4m", "v1"));
        assert_eq!(
            items[1],
            Item::Ignored {
                fingerprint: Some(expected_fp),
                reason: "alert resolved".into()
            }
        );
        assert_eq!(
            signal(&items[2]).target,
            target("DaemonSet", "logging", "fluent-bit", "apps/v1")
        );
        assert!(
            matches!(&items[3], Item::Ignored { fingerprint: Some(_), reason } if reason == "alert resolved")
        );
        assert_eq!(
            items[0].fingerprint().map(Fingerprint::as_str),
            Some("e12977c57234eb3387198ef9acc7e98e2cca43936a021741b0735c49a9a528b6")
        );
        assert!(items[3].fingerprint().is_some());
    }

    #[test]
    fn unknown_fields_are_ignored_and_unlabelled_alerts_rejected() {
        let items = parse(NOTIFICATION_REASON);
        assert_eq!(items.len(), 3);
        assert_eq!(
            signal(&items[0]).target,
            target("Pod", "batch", "indexer-6d4b8c7f9-w7lzp", "v1")
        );
        assert_eq!(
            signal(&items[1]).target,
            target("CronJob", "batch", "nightly-export", "batch/v1")
        );
        let reason = rejected(&items[2]);
        assert!(reason.starts_with(
            "alerts[2] (Watchdog): no target resource label; expected one of pod, deployment,"
        ));
        assert!(reason.ends_with("node, or namespace"), "{reason}");
    }

    #[test]
    fn non_v4_payloads_are_payload_errors() {
        assert!(payload_error(TRUNCATED).starts_with("payload is not valid JSON: "));
        assert_eq!(
            payload_error(V3),
            "field `version` must be \"4\" (Alertmanager webhook version 4), found \"3\""
        );
        assert_eq!(
            payload_error("[]"),
            "payload must be a JSON object, found an array"
        );
        assert_eq!(
            payload_error("\"4\""),
            "payload must be a JSON object, found a string"
        );
        assert!(
            payload_error(r#"{"alerts":[]}"#).starts_with("field `alerts` is empty"),
            "no version is fine; the shape decides"
        );
        assert_eq!(
            payload_error(r#"{"version":null}"#),
            "field `alerts` is required"
        );
        assert_eq!(
            payload_error(r#"{"version":"1","alerts":[{}]}"#),
            "field `version` must be \"4\" (Alertmanager webhook version 4), found \"1\""
        );
        assert_eq!(
            payload_error(r#"{"version":4,"alerts":[]}"#),
            "field `version` must be \"4\" (Alertmanager webhook version 4), found a number"
        );
        assert_eq!(
            payload_error(r#"{"version":"4"}"#),
            "field `alerts` is required"
        );
        assert_eq!(
            payload_error(r#"{"version":"4","alerts":{"0":{}}}"#),
            "field `alerts` must be an array, found an object"
        );
        assert!(
            payload_error(r#"{"version":"4","alerts":[]}"#).starts_with("field `alerts` is empty")
        );
        assert!(payload_error("").starts_with("payload is not valid JSON"));
    }

    #[test]
    fn label_priority_follows_the_table() {
        let t = target_of(serde_json::json!({
            "alertname": "X", "namespace": "ns", "node": "n1", "service": "svc", "deployment": "d", "pod": "p",
        }));
        assert_eq!(t, Ok(target("Pod", "ns", "p", "v1")));
        let t = target_of(
            serde_json::json!({"alertname": "X", "namespace": "ns", "node": "n1", "service": "svc"}),
        );
        assert_eq!(t, Ok(target("Service", "ns", "svc", "v1")));
        let t = target_of(serde_json::json!({"alertname": "X", "namespace": "ns", "node": "n1"}));
        assert_eq!(t, Ok(target("Node", "", "n1", "v1")));
        let t = target_of(
            serde_json::json!({"alertname": "X", "namespace": "ns", "replicaset": "r", "cronjob": "c"}),
        );
        assert_eq!(t, Ok(target("ReplicaSet", "ns", "r", "apps/v1")));
        let t = target_of(serde_json::json!({"alertname": "X", "namespace": "ns"}));
        assert_eq!(t, Ok(target("Namespace", "", "ns", "v1")));
    }

    #[test]
    fn scrape_job_label_is_not_a_target() {
        // Every Prometheus alert carries `job`; a node alert must not become a Job.
        let t = target_of(
            serde_json::json!({"alertname": "KubeNodeNotReady", "job": "kube-state-metrics", "node": "w1"}),
        );
        assert_eq!(t, Ok(target("Node", "", "w1", "v1")));
    }

    #[test]
    fn empty_label_values_count_as_absent() {
        let t = target_of(
            serde_json::json!({"alertname": "X", "namespace": "ns", "pod": "", "deployment": "web"}),
        );
        assert_eq!(t, Ok(target("Deployment", "ns", "web", "apps/v1")));
        let t = target_of(serde_json::json!({"alertname": "X", "namespace": "", "node": "w1"}));
        assert_eq!(t, Ok(target("Node", "", "w1", "v1")));
        let t = target_of(serde_json::json!({"alertname": "X", "namespace": "", "pod": ""}));
        assert!(t.is_err_and(|r| r.contains("no target resource label")));
    }

    #[test]
    fn namespaced_kind_without_namespace_is_rejected() {
        let t = target_of(
            serde_json::json!({"alertname": "KubePodCrashLooping", "pod": "web-0", "node": "w1"}),
        );
        assert_eq!(
            t,
            Err("alerts[0] (KubePodCrashLooping): label `pod` names Pod \"web-0\" but there is no `namespace` \
                 label; Pod is namespaced"
                .into())
        );
    }

    #[test]
    fn values_longer_than_the_rr_allows_are_rejected_per_alert() {
        let alert = |name: &str, severity: Option<&str>| {
            let mut labels =
                serde_json::json!({"alertname": name, "namespace": "prod", "pod": "web-0"});
            if let Some(severity) = severity {
                labels["severity"] = severity.into();
            }
            serde_json::json!({"status": "firing", "labels": labels})
        };
        let body = serde_json::json!({"version": "4", "alerts": [
            alert("X", Some(&"s".repeat(50))),
            alert("X", Some(&"s".repeat(51))),
            alert(&"N".repeat(253), Some("critical")),
            alert(&"N".repeat(254), Some("critical")),
            // Characters, not bytes, as the API server counts: 50 of 2 bytes each.
            alert("X", Some(&"é".repeat(50))),
            alert("X", Some("")),
            alert("X", None),
        ]});
        let items = parse(&body.to_string());
        assert_eq!(signal(&items[0]).severity.len(), 50);
        assert_eq!(
            rejected(&items[1]),
            "alerts[1] (X): label `severity` is 51 characters; a RemediationRequest allows at most 50"
        );
        assert_eq!(signal(&items[2]).name.len(), 253);
        let reason = rejected(&items[3]);
        assert!(
            reason.starts_with("alerts[3] (NNNN")
                && reason.ends_with(
                    "(254 bytes)): label `alertname` is 254 characters; a RemediationRequest \
                     allows at most 253"
                ),
            "{reason}"
        );
        assert_eq!(signal(&items[4]).severity.chars().count(), 50);
        assert_eq!(
            signal(&items[5]).severity,
            "unknown",
            "empty counts as absent"
        );
        assert_eq!(signal(&items[6]).severity, "unknown");
    }

    #[test]
    fn invalid_names_are_rejected_not_rewritten() {
        let t =
            target_of(serde_json::json!({"alertname": "X", "namespace": "prod", "pod": "wéb-0"}));
        assert!(
            t.as_ref()
                .is_err_and(|r| r.starts_with("alerts[0] (X): label `pod`: Pod name \"wéb-0\"")),
            "{t:?}"
        );
        let t =
            target_of(serde_json::json!({"alertname": "X", "namespace": "Prod", "pod": "web-0"}));
        assert!(
            t.as_ref()
                .is_err_and(|r| r.contains("namespace \"Prod\" is not a valid DNS-1123 label")),
            "{t:?}"
        );
        let t = target_of(serde_json::json!({"alertname": "X", "namespace": "prod", "pod": "a:b"}));
        assert!(t.is_err(), "':' would make the fingerprint ambiguous");
        let t = target_of(serde_json::json!({"alertname": "X", "namespace": "x".repeat(64)}));
        assert!(
            t.as_ref().is_err_and(|r| r.contains("label `namespace`")),
            "{t:?}"
        );
        let t = target_of(
            serde_json::json!({"alertname": "X", "namespace": "prod", "pod": "p".repeat(254)}),
        );
        assert!(
            t.as_ref().is_err_and(|r| r.contains("(254 bytes)")),
            "{t:?}"
        );
    }

    #[test]
    fn huge_and_unicode_label_values_are_kept_verbatim() {
        let big = "x".repeat(10 * 1024);
        let items = parse(&one_alert(serde_json::json!({
            "alertname": "Ünïcødé ⚠", "namespace": "prod", "pod": "web-0", "description": big, "empty": "",
            "severity": "",
        })));
        let s = signal(&items[0]);
        assert_eq!(s.name, "Ünïcødé ⚠");
        assert_eq!(
            s.labels.get("description").map(String::len),
            Some(10 * 1024)
        );
        assert_eq!(s.labels.get("empty").map(String::as_str), Some(""));
        assert_eq!(
            s.severity, "unknown",
            "an empty severity label counts as absent"
        );
    }

    #[test]
    fn missing_alertname_is_rejected() {
        let t = target_of(serde_json::json!({"namespace": "prod", "pod": "web-0"}));
        assert_eq!(t, Err("alerts[0]: no alertname label".into()));
        let t =
            target_of(serde_json::json!({"alertname": "", "namespace": "prod", "pod": "web-0"}));
        assert_eq!(t, Err("alerts[0]: no alertname label".into()));
    }

    #[test]
    fn same_pod_different_alertnames_share_a_fingerprint() {
        let a = parse(&one_alert(
            serde_json::json!({"alertname": "KubePodCrashLooping", "namespace": "prod", "pod": "web-0"}),
        ));
        let b = parse(&one_alert(
            serde_json::json!({"alertname": "KubePodNotReady", "namespace": "prod", "pod": "web-0"}),
        ));
        assert_eq!(signal(&a[0]).fingerprint, signal(&b[0]).fingerprint);
        assert_ne!(signal(&a[0]).name, signal(&b[0]).name);
    }

    #[test]
    fn cluster_id_changes_the_fingerprint() {
        let with = ParseContext {
            cluster_id: Some("eu-1".into()),
            ..ctx()
        };
        let items = parse_alertmanager(SINGLE.as_bytes(), &with).unwrap_or_default();
        // printf 'eu-1:prod:Pod:web-0' | sha256sum
        assert_eq!(
            signal(&items[0]).fingerprint.as_str(),
            "695282e3b5fc66c24daa6ea0e3d63e5033556b4433090e2bef0e1c76377f03bb"
        );
    }

    #[test]
    fn zero_or_missing_starts_at_falls_back_to_received_time() {
        for starts_at in [Value::String("0001-01-01T00:00:00Z".into()), Value::Null] {
            let body = serde_json::json!({
                "version": "4",
                "alerts": [{"status": "firing", "labels": {"alertname": "X", "namespace": "p", "pod": "a"}, "startsAt": starts_at}],
            });
            let items = parse(&body.to_string());
            assert_eq!(signal(&items[0]).firing_time, ctx().received_time);
        }
        let body = serde_json::json!({
            "version": "4",
            "alerts": [{"status": "firing", "labels": {"alertname": "X", "namespace": "p", "pod": "a"}, "startsAt": "soon"}],
        });
        let reason = parse(&body.to_string())
            .first()
            .map(|i| rejected(i).to_owned())
            .unwrap_or_default();
        assert_eq!(
            reason,
            "alerts[0] (X): field `startsAt` is not an RFC 3339 timestamp: \"soon\""
        );
    }

    #[test]
    fn malformed_alerts_are_rejected_one_by_one() {
        let body = serde_json::json!({
            "version": "4",
            "alerts": [
                "not an alert",
                {"status": "firing", "labels": {"alertname": "X", "pod": 7}},
                {"status": "pending", "labels": {"alertname": "X", "namespace": "p", "pod": "a"}},
                {"labels": {"alertname": "X", "namespace": "p", "pod": "a"}},
                {"status": "resolved", "labels": {"alertname": "Watchdog"}},
                {"status": "firing", "labels": {"alertname": "X", "namespace": "p", "pod": "a"}, "annotations": {"n": 1}},
                {"status": "firing", "labels": {"alertname": "X", "namespace": "p", "pod": "a"}},
            ],
        });
        let items = parse(&body.to_string());
        assert_eq!(
            rejected(&items[0]),
            "alerts[0]: must be an object, found a string"
        );
        assert_eq!(items[0].fingerprint(), None);
        assert_eq!(
            rejected(&items[1]),
            "alerts[1]: field `labels.pod` must be a string, found a number"
        );
        assert_eq!(
            rejected(&items[2]),
            "alerts[2] (X): field `status` must be \"firing\" or \"resolved\", found \"pending\""
        );
        assert_eq!(
            rejected(&items[3]),
            "alerts[3] (X): field `status` is required"
        );
        assert_eq!(
            items[4],
            Item::Ignored {
                fingerprint: None,
                reason: "alert resolved".into()
            }
        );
        assert_eq!(
            rejected(&items[5]),
            "alerts[5] (X): field `annotations.n` must be a string, found a number"
        );
        assert_eq!(signal(&items[6]).target, target("Pod", "p", "a", "v1"));
    }

    #[test]
    fn a_body_without_version_is_read_by_its_shape() {
        let items = parse(NO_VERSION);
        assert_eq!(items.len(), 2);
        let deployment = signal(&items[0]);
        assert_eq!(
            deployment.target,
            target("Deployment", "shop", "checkout", "apps/v1"),
            "exported_namespace is the object's namespace; namespace is the scrape target's"
        );
        let pod = signal(&items[1]);
        assert_eq!(
            pod.target,
            target("Pod", "shop", "checkout-7d9c6b5f4-k2x8p", "v1")
        );
        for s in [deployment, pod] {
            assert_eq!(s.cluster_id.as_deref(), Some("eu-west-1"));
        }
        // printf 'eu-west-1:shop:Deployment:checkout' | sha256sum
        assert_eq!(
            deployment.fingerprint.as_str(),
            "5ab038d59ea3363be7f31b7978c21e6d858cfdf39f7305eb0fde5b016c764029"
        );
    }

    #[test]
    fn the_alerts_cluster_label_wins_over_the_configured_cluster() {
        let with = |cluster: Option<&str>| ParseContext {
            cluster_id: cluster.map(str::to_owned),
            ..ctx()
        };
        let labelled = one_alert(
            serde_json::json!({"alertname": "X", "namespace": "prod", "pod": "web-0", "cluster": "eu-1"}),
        );
        let unlabelled =
            one_alert(serde_json::json!({"alertname": "X", "namespace": "prod", "pod": "web-0"}));
        let parsed = |body: &str, ctx: &ParseContext| {
            let items = parse_alertmanager(body.as_bytes(), ctx).unwrap_or_default();
            let s = signal(&items[0]);
            (s.cluster_id.clone(), s.fingerprint.as_str().to_owned())
        };
        // printf 'eu-1:prod:Pod:web-0' | sha256sum
        let eu1 = "695282e3b5fc66c24daa6ea0e3d63e5033556b4433090e2bef0e1c76377f03bb";
        assert_eq!(
            parsed(&labelled, &with(Some("local"))),
            (Some("eu-1".into()), eu1.into())
        );
        assert_eq!(
            parsed(&labelled, &with(None)),
            (Some("eu-1".into()), eu1.into())
        );
        assert_eq!(
            parsed(&unlabelled, &with(Some("eu-1"))),
            (Some("eu-1".into()), eu1.into())
        );
        assert_eq!(parsed(&unlabelled, &with(Some(""))).0, None);
        let resolved = serde_json::json!({"version": "4", "alerts": [{"status": "resolved",
            "labels": {"alertname": "X", "namespace": "prod", "pod": "web-0", "cluster": "eu-1"}}]});
        let items = parse(&resolved.to_string());
        assert_eq!(items[0].fingerprint().map(Fingerprint::as_str), Some(eu1));
        let long = one_alert(serde_json::json!({"alertname": "X", "namespace": "prod",
            "pod": "web-0", "cluster": "c".repeat(254)}));
        assert_eq!(
            rejected(&parse(&long)[0]),
            "alerts[0] (X): label `cluster` is 254 characters; a RemediationRequest allows at most 253"
        );
    }

    #[test]
    fn provider_data_and_the_original_payload_are_what_kubernaut_writes() {
        let s = parse(SINGLE).remove(0);
        let s = signal(&s);
        let provider: Value = serde_json::from_str(&s.provider_data).unwrap_or_default();
        assert_eq!(
            provider,
            serde_json::json!({"labels": s.labels, "namespace": "prod"})
        );
        assert!(
            s.provider_data
                .starts_with(r#"{"labels":{"alertname":"KubePodCrashLooping","container":"web","#)
                && s.provider_data.ends_with(
                    r#""uid":"5f0c7a4e-2b1d-4c9a-9d7e-3a6f1b8c2e41"},"namespace":"prod"}"#
                ),
            "keys sorted as Go marshals a map: {}",
            s.provider_data
        );
        assert_eq!(
            s.original_payload.as_deref(),
            Some(SINGLE),
            "the body as sent"
        );
        let federated = parse(NO_VERSION);
        let provider: Value =
            serde_json::from_str(&signal(&federated[0]).provider_data).unwrap_or_default();
        assert_eq!(provider["namespace"], "shop", "exported_namespace wins");
        let node = parse(&one_alert(
            serde_json::json!({"alertname": "X", "node": "w1"}),
        ));
        assert_eq!(
            signal(&node[0]).provider_data,
            r#"{"labels":{"alertname":"X","node":"w1"},"namespace":""}"#
        );
    }

    #[test]
    fn a_body_over_the_bound_keeps_each_alerts_own_object() {
        let bound = crate::ORIGINAL_PAYLOAD_MAX;
        let alert = |pod: &str, filler: usize| {
            serde_json::json!({"status": "firing", "startsAt": "2025-06-12T08:00:00Z",
                "labels": {"alertname": "X", "namespace": "p", "pod": pod},
                "annotations": {"filler": "f".repeat(filler)}})
        };
        let body = serde_json::json!({"version": "4", "alerts": [
            alert("a", bound / 2), alert("b", bound / 2), alert("c", bound),
        ]})
        .to_string();
        assert!(body.len() > bound);
        let items = parse(&body);
        let own = signal(&items[0])
            .original_payload
            .as_deref()
            .unwrap_or_default();
        assert!(
            own.len() < bound && own.len() > bound / 2,
            "{} bytes",
            own.len()
        );
        let own: Value = serde_json::from_str(own).unwrap_or_default();
        assert_eq!(own, alert("a", bound / 2));
        assert!(signal(&items[1]).original_payload.is_some());
        assert_eq!(
            signal(&items[2]).original_payload,
            None,
            "an alert over the bound on its own is left out"
        );
        // The alerts of a notification within the bound share one copy of it.
        let group = parse(GROUP);
        let payloads: Vec<_> = group
            .iter()
            .filter_map(|i| signal(i).original_payload.clone())
            .collect();
        assert_eq!(payloads.len(), 5);
        assert!(
            payloads
                .iter()
                .all(|p| std::sync::Arc::ptr_eq(p, &payloads[0]))
        );
    }

    #[test]
    fn the_timestamp_header_is_checked_against_the_replay_window() {
        let now = ctx().received_time.as_second();
        let parse_with = |header: &str| {
            parse_alertmanager(SINGLE.as_bytes(), &checked(Some(header))).map_err(|e| e.to_string())
        };
        for fresh in [now, now - 300, now + 120] {
            assert!(parse_with(&fresh.to_string()).is_ok(), "{fresh}");
        }
        let old = (now - 301).to_string();
        assert_eq!(
            parse_with(&old).err().unwrap_or_default(),
            format!(
                "timestamp too old: possible replay attack: header `X-Timestamp` is {old} \
                 (2025-06-12T08:09:59Z), 301 s old; the replay window is 300 s"
            )
        );
        let ahead = (now + 121).to_string();
        assert_eq!(
            parse_with(&ahead).err().unwrap_or_default(),
            format!(
                "timestamp in future: possible clock skew attack: header `X-Timestamp` is \
                 {ahead} (2025-06-12T08:17:01Z), 121 s ahead of the gateway's clock; at most \
                 120 s is tolerated"
            )
        );
        assert!(
            parse_with(&i64::MAX.to_string()).is_err_and(|e| e.starts_with("timestamp in future"))
        );
        for bad in ["", "now", "1749716100.5", "2025-06-12T08:15:00Z"] {
            assert!(
                parse_with(bad).is_err_and(|e| e.starts_with(&format!(
                    "invalid timestamp format: header `X-Timestamp` is {bad:?}, expected Unix \
                     seconds (an integer)"
                ))),
                "{bad:?}"
            );
        }
        assert!(
            parse_with("-1").is_err_and(|e| e.ends_with("a non-negative integer)")),
            "negative"
        );
        // The header, when sent, is what is checked: no startsAt is needed then.
        let body = serde_json::json!({"alerts": [{"status": "firing",
            "labels": {"alertname": "X", "namespace": "p", "pod": "a"}}]})
        .to_string();
        let header = now.to_string();
        assert!(parse_alertmanager(body.as_bytes(), &checked(Some(&header))).is_ok());
    }

    #[test]
    fn without_the_header_starts_at_may_be_old_but_not_ahead_or_missing() {
        let check = |body: &str| {
            parse_alertmanager(body.as_bytes(), &checked(None)).map_err(|e| e.to_string())
        };
        // Alertmanager re-sends an ongoing alert with its original startsAt.
        let old = one_alert(serde_json::json!({"alertname": "X", "namespace": "p", "pod": "a"}))
            .replace("2025-06-12T08:00:00Z", "2024-01-01T00:00:00Z");
        assert!(check(&old).is_ok());
        let alert = |starts_at: Value, status: &str| {
            serde_json::json!({"status": status, "startsAt": starts_at,
                "labels": {"alertname": "X", "namespace": "p", "pod": "a"}})
        };
        let body = |alerts: Vec<Value>| serde_json::json!({"alerts": alerts}).to_string();
        assert!(
            check(&body(vec![
                alert("2025-06-12T08:17:00Z".into(), "firing"),
                alert("2025-01-01T00:00:00Z".into(), "firing"),
            ]))
            .is_ok(),
            "120 s ahead is tolerated"
        );
        assert_eq!(
            check(&body(vec![
                alert("2025-01-01T00:00:00Z".into(), "firing"),
                alert("2025-06-12T08:17:01Z".into(), "resolved"),
            ]))
            .err()
            .unwrap_or_default(),
            "alert startsAt in future: possible clock skew attack: field `startsAt` of alerts[1] \
             is \"2025-06-12T08:17:01Z\", 121 s ahead of the gateway's clock; at most 120 s is \
             tolerated"
        );
        let missing = "alert payload missing startsAt timestamp: no alert has a non-zero \
                       `startsAt` and there is no `X-Timestamp` header";
        for none in [Value::Null, "0001-01-01T00:00:00Z".into(), "".into()] {
            assert_eq!(
                check(&body(vec![alert(none.clone(), "firing")]))
                    .err()
                    .unwrap_or_default(),
                missing,
                "{none}"
            );
        }
        // A notification that writes nothing is not checked: its answers stay per alert.
        let items = parse_alertmanager(
            body(vec![alert(Value::Null, "resolved")]).as_bytes(),
            &checked(None),
        );
        assert!(matches!(items.as_deref(), Ok([Item::Ignored { .. }])));
        let nameless = serde_json::json!({"alerts": [{"status": "firing", "labels": {}}]});
        let items = parse_alertmanager(nameless.to_string().as_bytes(), &checked(None));
        assert!(matches!(items.as_deref(), Ok([Item::Rejected { .. }])));
        // Off, nothing is checked.
        let ahead = body(vec![alert("2025-06-12T09:00:00Z".into(), "firing")]);
        assert!(parse_alertmanager(ahead.as_bytes(), &ctx()).is_ok());
        let stale_header = ParseContext {
            timestamp_header: Some("0".into()),
            ..ctx()
        };
        assert!(parse_alertmanager(SINGLE.as_bytes(), &stale_header).is_ok());
    }

    #[test]
    fn every_prefix_of_every_fixture_parses_or_fails_cleanly() {
        let ctx = ParseContext::now(None);
        for fixture in [SINGLE, GROUP, MIXED] {
            let bytes = fixture.trim_end().as_bytes();
            for end in 0..bytes.len() {
                // A truncated body must be an error (never a panic, never a partial success).
                assert!(
                    parse_alertmanager(&bytes[..end], &ctx).is_err(),
                    "prefix of {end} bytes was accepted"
                );
            }
            assert!(parse_alertmanager(bytes, &ctx).is_ok());
        }
    }
}

//! Kubernetes `core/v1` Event adapter.
//!
//! The target is the Event's `involvedObject`. For kinds the gateway knows
//! (Pod, Deployment, Node, ...) the namespace follows the kind's scope: it is
//! forced empty for cluster-scoped kinds such as Node, so that an Event and an
//! alert about one node share a fingerprint, and for namespaced kinds it falls
//! back to the Event's own namespace when `involvedObject.namespace` is empty.
//! Other kinds keep `involvedObject.namespace` as sent. A missing
//! `involvedObject.apiVersion` is filled in for known kinds.
//!
//! A Warning or Error Event becomes a signal named after its `reason`, its severity the
//! type as sent (`Warning`, `Error`), as kubernaut's Gateway writes it. Its labels are the
//! Event's `metadata.labels` plus `reason`, `type`, `component` (`source.component`, else
//! `reportingComponent`) and `host` (`source.host`, else `reportingInstance`) when set. Its
//! annotations are the Event's `metadata.annotations` plus `message`, `count` and `event`
//! (`<namespace>/<name>` of the Event object) when set. The firing time is
//! `lastTimestamp`, else `eventTime`, else `firstTimestamp`, else the time the
//! gateway received it. Its cluster is `GATEWAY_CLUSTER_ID`.
//!
//! Freshness: with `GATEWAY_REPLAY_WINDOW_SECONDS` set, a Warning or Error Event is refused
//! when that timestamp is missing, older than the window, or more than two minutes ahead of
//! the gateway's clock.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{
    Fingerprint, Item, ParseContext, PayloadError, SIGNAL_NAME_MAX, Signal, Source, TargetResource,
    body_text, check_fresh, json_kind, opt_object, opt_str, parse_object, parse_timestamp,
    provider_data, shown, string_map,
    target::{known_kind, validate_target},
};

/// parse_event turns one `core/v1` Event into an item.
///
/// A body that is not an Event object (not JSON, no `involvedObject` with
/// `kind` and `name`, no `type`, a `type` other than Normal, Warning or Error, a field
/// of the wrong JSON type, an unparseable timestamp) is a [`PayloadError`], as is a
/// Warning or Error Event the freshness check (module docs) refuses. A
/// well-formed Warning or Error Event that cannot name a valid target or has no
/// `reason` is [`Item::Rejected`].
pub fn parse_event(body: &[u8], ctx: &ParseContext) -> Result<Item, PayloadError> {
    let object = parse_object(body)?;
    let empty = Map::new();
    let event = Event::read(&object, &empty, ctx)?;
    let target = event_target(&event.involved, event.namespace);
    let cluster_id = ctx.cluster_id.clone().filter(|c| !c.is_empty());
    match event.event_type {
        // kubernaut answers 400; an Event exporter sends every Event, so that would be noise.
        "Normal" => {
            let fingerprint = target
                .ok()
                .map(|t| Fingerprint::of(cluster_id.as_deref(), &t));
            return Ok(Item::Ignored {
                fingerprint,
                reason: "normal event".into(),
            });
        }
        "Warning" | "Error" => {}
        other => {
            return Err(PayloadError::InvalidValue {
                field: "type".into(),
                expected: "\"Normal\", \"Warning\" or \"Error\"",
                found: shown(other),
            });
        }
    }
    let target = match target {
        Ok(target) => target,
        Err(reason) => {
            return Ok(Item::Rejected {
                reason: format!("event: {reason}"),
            });
        }
    };
    let reason = match signal_name(event.reason, &target) {
        Ok(reason) => reason,
        Err(reason) => return Ok(Item::Rejected { reason }),
    };
    // Only an Event that would write something is checked, as for Alertmanager.
    if let Some(window) = ctx.replay_window {
        check_event_fresh(event.firing_time, window, ctx)?;
    }
    Ok(Item::Signal(
        event.into_signal(reason, target, cluster_id, ctx, body),
    ))
}

/// Involved is the Event's `involvedObject`: what names its target.
struct Involved<'a> {
    kind: &'a str,
    name: &'a str,
    namespace: &'a str,
    api_version: &'a str,
}

/// Event is what the adapter reads of a `core/v1` Event, each field checked for its type.
struct Event<'a> {
    involved: Involved<'a>,
    event_type: &'a str,
    /// `metadata.namespace` and `metadata.name`: the Event object's own.
    namespace: &'a str,
    name: &'a str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    reason: Option<&'a str>,
    message: Option<&'a str>,
    count: Option<String>,
    component: Option<&'a str>,
    host: Option<&'a str>,
    /// The first of `lastTimestamp`, `eventTime`, `firstTimestamp` that is set, with its field
    /// and text: the firing time, and what the freshness check reads.
    firing_time: Option<(jiff::Timestamp, &'static str, &'a str)>,
}

impl<'a> Event<'a> {
    /// read reads the fields of `event` in a fixed order, so that the first wrong one is the
    /// error; `empty` stands in for an absent `metadata` or `source`.
    fn read(
        event: &'a Map<String, Value>,
        empty: &'a Map<String, Value>,
        ctx: &ParseContext,
    ) -> Result<Event<'a>, PayloadError> {
        if let Some(kind) = opt_str(event, "kind", "kind")?
            && kind != "Event"
        {
            return Err(PayloadError::InvalidValue {
                field: "kind".into(),
                expected: "\"Event\"",
                found: shown(kind),
            });
        }
        let involved = Involved::read(event)?;
        let event_type = required_str(event, "type", "type")?;
        let metadata = opt_object(event, "metadata", "metadata")?.unwrap_or(empty);
        let namespace = opt_str(metadata, "namespace", "metadata.namespace")?.unwrap_or("");
        let name = opt_str(metadata, "name", "metadata.name")?.unwrap_or("");
        let labels = string_map(metadata, "labels", "metadata.labels")?;
        let annotations = string_map(metadata, "annotations", "metadata.annotations")?;
        let reason = opt_str(event, "reason", "reason")?.filter(|r| !r.is_empty());
        let message = opt_str(event, "message", "message")?.filter(|m| !m.is_empty());
        let count = event_count(event)?;
        let source = opt_object(event, "source", "source")?.unwrap_or(empty);
        let component = first_non_empty([
            opt_str(source, "component", "source.component")?,
            opt_str(event, "reportingComponent", "reportingComponent")?,
        ]);
        let host = first_non_empty([
            opt_str(source, "host", "source.host")?,
            opt_str(event, "reportingInstance", "reportingInstance")?,
        ]);
        let firing_time = firing_time(event, ctx)?;
        Ok(Event {
            involved,
            event_type,
            namespace,
            name,
            labels,
            annotations,
            reason,
            message,
            count,
            component,
            host,
            firing_time,
        })
    }

    /// into_signal makes the Event the signal named `reason` about `target`.
    fn into_signal(
        self,
        reason: &str,
        target: TargetResource,
        cluster_id: Option<String>,
        ctx: &ParseContext,
        body: &[u8],
    ) -> Signal {
        let (mut labels, mut annotations) = (self.labels, self.annotations);
        labels.insert("reason".into(), reason.to_owned());
        labels.insert("type".into(), self.event_type.to_owned());
        insert_some(&mut labels, "component", self.component);
        insert_some(&mut labels, "host", self.host);
        insert_some(&mut annotations, "message", self.message);
        insert_some(&mut annotations, "count", self.count.as_deref());
        if !self.name.is_empty() {
            annotations.insert("event".into(), format!("{}/{}", self.namespace, self.name));
        }
        Signal {
            fingerprint: Fingerprint::of(cluster_id.as_deref(), &target),
            name: reason.to_owned(),
            severity: self.event_type.to_owned(),
            source: Source::KubernetesEvent,
            provider_data: provider_data(None, &target.namespace),
            target,
            labels,
            annotations,
            firing_time: self.firing_time.map_or(ctx.received_time, |(ts, _, _)| ts),
            received_time: ctx.received_time,
            cluster_id,
            original_payload: body_text(body),
        }
    }
}

impl<'a> Involved<'a> {
    /// read reads `involvedObject`, which must name a kind and a name.
    fn read(event: &'a Map<String, Value>) -> Result<Involved<'a>, PayloadError> {
        let involved = opt_object(event, "involvedObject", "involvedObject")?.ok_or_else(|| {
            PayloadError::MissingField {
                field: "involvedObject".into(),
            }
        })?;
        Ok(Involved {
            kind: required_str(involved, "kind", "involvedObject.kind")?,
            name: required_str(involved, "name", "involvedObject.name")?,
            namespace: opt_str(involved, "namespace", "involvedObject.namespace")?.unwrap_or(""),
            api_version: opt_str(involved, "apiVersion", "involvedObject.apiVersion")?
                .unwrap_or(""),
        })
    }
}

/// event_count reads `count`, a number, as text.
fn event_count(event: &Map<String, Value>) -> Result<Option<String>, PayloadError> {
    match event.get("count") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(PayloadError::WrongType {
            field: "count".into(),
            expected: "a number",
            found: json_kind(other),
        }),
    }
}

/// firing_time is the first of `lastTimestamp`, `eventTime`, `firstTimestamp` that is set,
/// with its field and text; each of them that is set must be a valid timestamp.
fn firing_time<'a>(
    event: &'a Map<String, Value>,
    ctx: &ParseContext,
) -> Result<Option<(jiff::Timestamp, &'static str, &'a str)>, PayloadError> {
    let mut firing_time = None;
    for field in ["lastTimestamp", "eventTime", "firstTimestamp"] {
        let parsed = match opt_str(event, field, field)? {
            Some(value) => {
                parse_timestamp(field, value, ctx.received_time)?.map(|ts| (ts, field, value))
            }
            None => None,
        };
        firing_time = firing_time.or(parsed);
    }
    Ok(firing_time)
}

/// signal_name is the Event's `reason`, which names its signal; without one, or with one
/// longer than the RR's `signalName` allows (it would be refused with 422), the Event is
/// rejected for the reason returned.
fn signal_name<'a>(reason: Option<&'a str>, target: &TargetResource) -> Result<&'a str, String> {
    let Some(reason) = reason else {
        return Err(format!(
            "event about {} {}: no reason",
            target.kind,
            shown(&target.name)
        ));
    };
    let chars = reason.chars().count();
    if chars > SIGNAL_NAME_MAX {
        return Err(format!(
            "event about {} {}: reason is {chars} characters; a RemediationRequest allows at \
             most {SIGNAL_NAME_MAX}",
            target.kind,
            shown(&target.name)
        ));
    }
    Ok(reason)
}

/// check_event_fresh applies the freshness check of the module docs to the Event's firing
/// time (`Event::firing_time`).
fn check_event_fresh(
    firing_time: Option<(jiff::Timestamp, &'static str, &str)>,
    window: std::time::Duration,
    ctx: &ParseContext,
) -> Result<(), PayloadError> {
    let Some((ts, field, value)) = firing_time else {
        return Err(PayloadError::NoTimestamp {
            problem: "event missing lastTimestamp and firstTimestamp",
            detail: "none of `lastTimestamp`, `eventTime`, `firstTimestamp` is set",
        });
    };
    check_fresh(
        Some(("event timestamp too old: possible stale event", window)),
        "event timestamp in future: possible clock skew",
        &format!("field `{field}`"),
        &shown(value),
        ts.as_second(),
        ctx.received_time,
    )
}

/// required_str reads a string field that must be present and non-empty.
fn required_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, PayloadError> {
    opt_str(obj, key, path)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| PayloadError::MissingField {
            field: path.to_owned(),
        })
}

/// first_non_empty returns the first candidate that is set and not empty.
fn first_non_empty<const N: usize>(candidates: [Option<&str>; N]) -> Option<&str> {
    candidates.into_iter().flatten().find(|s| !s.is_empty())
}

/// insert_some adds `key` to a map when the value is set.
fn insert_some(map: &mut BTreeMap<String, String>, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value.to_owned());
    }
}

/// event_target derives the target resource from `involvedObject`, as described in the module docs.
fn event_target(involved: &Involved<'_>, event_namespace: &str) -> Result<TargetResource, String> {
    let Involved {
        kind,
        name,
        namespace,
        api_version,
    } = *involved;
    let target = match known_kind(kind) {
        Some(known) => {
            let namespace = match (known.namespaced, namespace) {
                (false, _) => "",
                (true, "") => event_namespace,
                (true, ns) => ns,
            };
            if known.namespaced && namespace.is_empty() {
                return Err(format!(
                    "{} {} is namespaced but neither involvedObject.namespace nor metadata.namespace is set",
                    known.kind,
                    shown(name)
                ));
            }
            TargetResource {
                kind: known.kind.to_owned(),
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                api_version: if api_version.is_empty() {
                    known.api_version
                } else {
                    api_version
                }
                .to_owned(),
            }
        }
        None => TargetResource {
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            api_version: api_version.to_owned(),
        },
    };
    validate_target(&target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: &str = include_str!("../../../tests/fixtures/events/warning-backoff-pod.json");
    const SCHEDULED: &str = include_str!("../../../tests/fixtures/events/normal-scheduled.json");
    const NODE_OOM: &str =
        include_str!("../../../tests/fixtures/events/warning-systemoom-node.json");
    const FAILED_SCHEDULING: &str =
        include_str!("../../../tests/fixtures/events/warning-failedscheduling-eventtime.json");
    const ERROR: &str =
        include_str!("../../../tests/fixtures/events/error-reconcile-deployment.json");

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap_or(jiff::Timestamp::MIN)
    }

    fn ctx() -> ParseContext {
        ParseContext {
            cluster_id: None,
            received_time: ts("2025-06-12T08:30:00Z"),
            max_alerts: crate::MAX_ALERTS_DEFAULT,
            replay_window: None,
            timestamp_header: None,
        }
    }

    /// checked parses `body` with kubernaut's replay window.
    fn checked(body: &str) -> Result<Item, String> {
        let ctx = ParseContext {
            replay_window: Some(crate::REPLAY_WINDOW_DEFAULT),
            ..ctx()
        };
        parse_event(body.as_bytes(), &ctx).map_err(|e| e.to_string())
    }

    fn parse(body: &str) -> Item {
        match parse_event(body.as_bytes(), &ctx()) {
            Ok(item) => item,
            Err(e) => panic!("event must parse: {e}"),
        }
    }

    fn signal(body: &str) -> Signal {
        match parse(body) {
            Item::Signal(s) => s,
            other => panic!("expected a signal, got {other:?}"),
        }
    }

    fn payload_error(body: &str) -> String {
        match parse_event(body.as_bytes(), &ctx()) {
            Ok(item) => panic!("event must be rejected, got {item:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// edited returns the BackOff fixture with one JSON pointer replaced (or removed when `value` is None).
    fn edited(pointer: &str, value: Option<Value>) -> String {
        let mut event: Value = serde_json::from_str(BACKOFF).unwrap_or_default();
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        if let Some(Value::Object(map)) = event.pointer_mut(parent) {
            match value {
                Some(v) => map.insert(key.to_owned(), v),
                None => map.remove(key),
            };
        }
        event.to_string()
    }

    #[test]
    fn warning_backoff_on_a_pod_becomes_a_signal() {
        let s = signal(BACKOFF);
        assert_eq!(s.name, "BackOff");
        assert_eq!(
            s.severity, "Warning",
            "the type as sent, as kubernaut writes it"
        );
        assert_eq!(s.source, Source::KubernetesEvent);
        assert_eq!(
            s.target,
            TargetResource {
                kind: "Pod".into(),
                name: "web-0".into(),
                namespace: "prod".into(),
                api_version: "v1".into()
            }
        );
        // printf 'prod:Pod:web-0' | sha256sum: the same problem as the KubePodCrashLooping alert.
        assert_eq!(
            s.fingerprint.as_str(),
            "07b7277eee612d0d04d9791f58c16b342e0d1140b3eda071cd2a25a476777e3f"
        );
        assert_eq!(
            s.firing_time,
            ts("2025-06-12T08:14:22Z"),
            "lastTimestamp wins"
        );
        assert_eq!(s.received_time, ts("2025-06-12T08:30:00Z"));
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("component", "kubelet"),
                ("host", "worker-1"),
                ("reason", "BackOff"),
                ("type", "Warning")
            ]
        );
        assert_eq!(
            s.annotations.get("message").map(String::as_str),
            Some(
                "Back-off restarting failed container web in pod web-0_prod(5f0c7a4e-2b1d-4c9a-9d7e-3a6f1b8c2e41)"
            )
        );
        assert_eq!(s.annotations.get("count").map(String::as_str), Some("23"));
        assert_eq!(
            s.annotations.get("event").map(String::as_str),
            Some("prod/web-0.184863c2e3f4a1b7")
        );
    }

    #[test]
    fn normal_event_is_ignored_with_its_fingerprint() {
        let expected =
            Fingerprint::parse("07b7277eee612d0d04d9791f58c16b342e0d1140b3eda071cd2a25a476777e3f");
        assert_eq!(
            parse(SCHEDULED),
            Item::Ignored {
                fingerprint: expected,
                reason: "normal event".into()
            }
        );
    }

    #[test]
    fn node_event_is_cluster_scoped_and_matches_the_node_alert() {
        let s = signal(NODE_OOM);
        assert_eq!(s.target.kind, "Node");
        assert_eq!(
            s.target.namespace, "",
            "the Event lives in default, the Node in no namespace"
        );
        assert_eq!(s.target.api_version, "v1", "filled in for a known kind");
        // printf ':Node:worker-2' | sha256sum
        assert_eq!(
            s.fingerprint.as_str(),
            "e12977c57234eb3387198ef9acc7e98e2cca43936a021741b0735c49a9a528b6"
        );
        assert_eq!(s.name, "SystemOOM");
        assert_eq!(
            s.annotations.get("event").map(String::as_str),
            Some("default/worker-2.18486412f0c7d93e")
        );
    }

    #[test]
    fn cluster_scoped_kinds_drop_a_namespace_the_sender_set() {
        let mut event: Value = serde_json::from_str(NODE_OOM).unwrap_or_default();
        if let Some(m) = event
            .pointer_mut("/involvedObject")
            .and_then(Value::as_object_mut)
        {
            m.insert("namespace".into(), "default".into());
            m.insert("kind".into(), "node".into());
        }
        let s = signal(&event.to_string());
        assert_eq!(
            s.target.kind, "Node",
            "known kinds are matched case-insensitively"
        );
        assert_eq!(s.target.namespace, "");
        assert_eq!(
            s.fingerprint.as_str(),
            "e12977c57234eb3387198ef9acc7e98e2cca43936a021741b0735c49a9a528b6"
        );
    }

    #[test]
    fn event_time_is_used_when_legacy_timestamps_are_null() {
        let s = signal(FAILED_SCHEDULING);
        assert_eq!(s.firing_time, ts("2025-06-12T08:20:58.114209Z"));
        assert_eq!(
            s.labels.get("component").map(String::as_str),
            Some("default-scheduler")
        );
        assert_eq!(
            s.labels.get("host").map(String::as_str),
            Some("default-scheduler-control-plane")
        );
        assert!(!s.annotations.contains_key("count"));
    }

    #[test]
    fn firing_time_falls_back_in_order() {
        let only_first = edited("/lastTimestamp", Some(Value::Null));
        assert_eq!(signal(&only_first).firing_time, ts("2025-06-12T08:09:51Z"));
        let none = edited("/lastTimestamp", None);
        let none = {
            let mut v: Value = serde_json::from_str(&none).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.remove("firstTimestamp");
            }
            v.to_string()
        };
        assert_eq!(signal(&none).firing_time, ctx().received_time);
    }

    #[test]
    fn namespace_falls_back_to_the_event_namespace_for_namespaced_kinds() {
        let body = edited("/involvedObject/namespace", None);
        assert_eq!(signal(&body).target.namespace, "prod");
    }

    #[test]
    fn unknown_kinds_keep_what_the_sender_said() {
        let body = edited(
            "/involvedObject",
            Some(
                serde_json::json!({"kind": "Certificate", "name": "web-tls", "namespace": "prod", "apiVersion": "cert-manager.io/v1"}),
            ),
        );
        let s = signal(&body);
        assert_eq!(s.target.kind, "Certificate");
        assert_eq!(s.target.namespace, "prod");
        assert_eq!(s.target.api_version, "cert-manager.io/v1");
    }

    #[test]
    fn malformed_events_are_payload_errors_naming_the_field() {
        assert_eq!(
            payload_error("[1]"),
            "payload must be a JSON object, found an array"
        );
        assert!(payload_error("{\"type\":").starts_with("payload is not valid JSON"));
        assert_eq!(
            payload_error(&edited("/involvedObject", None)),
            "field `involvedObject` is required"
        );
        assert_eq!(
            payload_error(&edited("/involvedObject/kind", None)),
            "field `involvedObject.kind` is required"
        );
        assert_eq!(
            payload_error(&edited("/involvedObject/name", Some("".into()))),
            "field `involvedObject.name` is required"
        );
        assert_eq!(
            payload_error(&edited("/type", None)),
            "field `type` is required"
        );
        assert_eq!(
            payload_error(&edited("/type", Some("Info".into()))),
            "field `type` must be \"Normal\", \"Warning\" or \"Error\", found \"Info\""
        );
        assert_eq!(
            payload_error(&edited("/kind", Some("Pod".into()))),
            "field `kind` must be \"Event\", found \"Pod\""
        );
        assert_eq!(
            payload_error(&edited("/count", Some("23".into()))),
            "field `count` must be a number, found a string"
        );
        assert_eq!(
            payload_error(&edited("/lastTimestamp", Some("last tuesday".into()))),
            "field `lastTimestamp` is not an RFC 3339 timestamp: \"last tuesday\""
        );
        assert_eq!(
            payload_error(&edited("/involvedObject/name", Some(7.into()))),
            "field `involvedObject.name` must be a string, found a number"
        );
    }

    #[test]
    fn warning_events_without_a_valid_target_or_reason_are_rejected() {
        let reason = |body: &str| match parse(body) {
            Item::Rejected { reason } => reason,
            other => panic!("expected a rejection, got {other:?}"),
        };
        let r = reason(&edited("/involvedObject/name", Some("wéb-0".into())));
        assert!(
            r.starts_with("event: Pod name \"wéb-0\" is not a valid DNS-1123 subdomain"),
            "{r}"
        );
        let r = reason(&edited(
            "/involvedObject/namespace",
            Some("x".repeat(64).into()),
        ));
        assert!(r.contains("is not a valid DNS-1123 label"), "{r}");
        let r = reason(&edited("/reason", None));
        assert_eq!(r, "event about Pod \"web-0\": no reason");
        let r = reason(&edited("/reason", Some("B".repeat(254).into())));
        assert_eq!(
            r,
            "event about Pod \"web-0\": reason is 254 characters; a RemediationRequest allows \
             at most 253"
        );
        let s = signal(&edited("/reason", Some("é".repeat(253).into())));
        assert_eq!(s.name.chars().count(), 253, "characters, not bytes");
        let no_ns = {
            let mut v: Value = serde_json::from_str(&edited("/involvedObject/namespace", None))
                .unwrap_or_default();
            if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.remove("namespace");
            }
            v.to_string()
        };
        let r = reason(&no_ns);
        assert_eq!(
            r,
            "event: Pod \"web-0\" is namespaced but neither involvedObject.namespace nor metadata.namespace is set"
        );
    }

    #[test]
    fn event_labels_and_huge_values_are_kept() {
        let big = "é".repeat(5 * 1024);
        let body = edited(
            "/metadata/labels",
            Some(serde_json::json!({"app": "web", "reason": "overridden", "blob": big})),
        );
        let body = {
            let mut v: Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("message".into(), Value::String(big.clone()));
            }
            v.to_string()
        };
        let s = signal(&body);
        assert_eq!(s.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            s.labels.get("reason").map(String::as_str),
            Some("BackOff"),
            "the event's reason wins"
        );
        assert_eq!(s.labels.get("blob").map(String::len), Some(10 * 1024));
        assert_eq!(s.annotations.get("message"), Some(&big));
    }

    #[test]
    fn cluster_id_applies_to_events() {
        let with = ParseContext {
            cluster_id: Some("eu-1".into()),
            ..ctx()
        };
        let fp = match parse_event(BACKOFF.as_bytes(), &with) {
            Ok(Item::Signal(s)) => s.fingerprint,
            other => panic!("expected a signal, got {other:?}"),
        };
        // printf 'eu-1:prod:Pod:web-0' | sha256sum
        assert_eq!(
            fp.as_str(),
            "695282e3b5fc66c24daa6ea0e3d63e5033556b4433090e2bef0e1c76377f03bb"
        );
    }

    #[test]
    fn error_events_are_signals_with_their_type_as_severity() {
        let s = signal(ERROR);
        assert_eq!(s.name, "ReconcileError");
        assert_eq!(s.severity, "Error");
        assert_eq!(s.target.kind, "Deployment");
        assert_eq!(s.labels.get("type").map(String::as_str), Some("Error"));
        assert_eq!(s.firing_time, ts("2025-06-12T08:29:10Z"));
    }

    #[test]
    fn provider_data_and_the_original_payload_are_what_kubernaut_writes() {
        let s = signal(BACKOFF);
        assert_eq!(s.provider_data, r#"{"labels":null,"namespace":"prod"}"#);
        assert_eq!(s.original_payload.as_deref(), Some(BACKOFF));
        assert_eq!(s.cluster_id, None);
        let node = signal(NODE_OOM);
        assert_eq!(node.provider_data, r#"{"labels":null,"namespace":""}"#);
        let big = edited(
            "/message",
            Some("m".repeat(crate::ORIGINAL_PAYLOAD_MAX).into()),
        );
        assert_eq!(signal(&big).original_payload, None, "over the bound");
    }

    #[test]
    fn an_event_takes_the_configured_cluster() {
        let with = ParseContext {
            cluster_id: Some("eu-1".into()),
            ..ctx()
        };
        let body = edited(
            "/metadata/labels",
            Some(serde_json::json!({"cluster": "elsewhere"})),
        );
        match parse_event(body.as_bytes(), &with) {
            Ok(Item::Signal(s)) => assert_eq!(s.cluster_id.as_deref(), Some("eu-1")),
            other => panic!("expected a signal, got {other:?}"),
        }
    }

    #[test]
    fn the_freshness_check_reads_last_then_event_then_first_timestamp() {
        // ctx() receives at 08:30:00; the BackOff fixture's lastTimestamp is 08:14:22.
        assert_eq!(
            checked(BACKOFF).err().unwrap_or_default(),
            "event timestamp too old: possible stale event: field `lastTimestamp` is \
             \"2025-06-12T08:14:22Z\", 938 s old; the replay window is 300 s"
        );
        let fresh = edited("/lastTimestamp", Some("2025-06-12T08:25:00Z".into()));
        assert!(checked(&fresh).is_ok(), "300 s old is within the window");
        let ahead = edited("/lastTimestamp", Some("2025-06-12T08:32:01Z".into()));
        assert_eq!(
            checked(&ahead).err().unwrap_or_default(),
            "event timestamp in future: possible clock skew: field `lastTimestamp` is \
             \"2025-06-12T08:32:01Z\", 121 s ahead of the gateway's clock; at most 120 s is \
             tolerated"
        );
        let by_event_time = {
            let mut v: Value = serde_json::from_str(&edited("/lastTimestamp", Some(Value::Null)))
                .unwrap_or_default();
            v["eventTime"] = "2025-06-12T08:29:00.123456Z".into();
            v.to_string()
        };
        assert!(
            checked(&by_event_time).is_ok(),
            "eventTime before firstTimestamp"
        );
        let by_first = edited("/lastTimestamp", None);
        assert!(
            checked(&by_first)
                .is_err_and(|e| e.contains("field `firstTimestamp` is \"2025-06-12T08:09:51Z\""))
        );
        let none = {
            let mut v: Value = serde_json::from_str(&by_first).unwrap_or_default();
            v["firstTimestamp"] = "0001-01-01T00:00:00Z".into();
            v.to_string()
        };
        assert_eq!(
            checked(&none).err().unwrap_or_default(),
            "event missing lastTimestamp and firstTimestamp: none of `lastTimestamp`, \
             `eventTime`, `firstTimestamp` is set"
        );
        // Normal Events and Events that are rejected anyway are not checked; off, none is.
        assert!(matches!(checked(SCHEDULED), Ok(Item::Ignored { .. })));
        let nameless = edited("/reason", None);
        assert!(matches!(checked(&nameless), Ok(Item::Rejected { .. })));
        assert!(matches!(parse(&none), Item::Signal(_)));
        assert!(matches!(parse(&ahead), Item::Signal(_)));
    }
}

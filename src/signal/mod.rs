//! Signals: the normalized model, the Alertmanager and Event adapters, and the fingerprint.
//!
//! Adapters turn one HTTP payload into [`Item`]s. A payload that cannot be read
//! at all is a [`PayloadError`] (the HTTP layer answers 400); inside a readable
//! payload each alert or event becomes a [`Signal`], is [`Item::Ignored`]
//! (resolved alerts, Normal events), or is [`Item::Rejected`] with a reason.
//! Nothing here talks to Kubernetes.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::{RemediationRequestSpec, SignalType, TargetResource};

mod alertmanager;
mod event;

pub use alertmanager::parse_alertmanager;
pub use event::parse_event;

/// SOURCE_ALERTMANAGER is the `signalSource` of signals from Alertmanager webhooks.
pub const SOURCE_ALERTMANAGER: &str = "alertmanager";

/// SOURCE_KUBERNETES_EVENT is the `signalSource` of signals from Kubernetes Events.
pub const SOURCE_KUBERNETES_EVENT: &str = "kubernetes-event";

/// Fingerprint is the lowercase hex SHA-256 that identifies the resource a signal is about.
///
/// The hashed text is `namespace:Kind:name`, or `cluster_id:namespace:Kind:name`
/// when a cluster id is configured. `namespace` is empty for cluster-scoped
/// kinds. The alert name is deliberately not part of it, so that several alerts
/// about one workload lead to one remediation. The plain `:` join is
/// unambiguous because adapters only accept DNS-1123 names and namespaces and
/// alphanumeric kinds, none of which can contain `:`; a cluster id may contain
/// `:` because it is always the prefix before the last three fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// of computes the fingerprint of a target resource, optionally scoped to a cluster.
    ///
    /// An empty cluster id counts as no cluster id.
    #[must_use]
    pub fn of(cluster_id: Option<&str>, target: &TargetResource) -> Fingerprint {
        let mut hasher = Sha256::new();
        if let Some(cluster) = cluster_id.filter(|c| !c.is_empty()) {
            hasher.update(cluster.as_bytes());
            hasher.update(b":");
        }
        hasher.update(target.namespace.as_bytes());
        hasher.update(b":");
        hasher.update(target.kind.as_bytes());
        hasher.update(b":");
        hasher.update(target.name.as_bytes());
        Fingerprint(hex::encode(hasher.finalize()))
    }

    /// parse accepts exactly 64 lowercase hex characters.
    #[must_use]
    pub fn parse(s: &str) -> Option<Fingerprint> {
        let valid = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Fingerprint(s.to_owned()))
    }

    /// as_str returns the 64 hex characters.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Fingerprint {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Fingerprint> for String {
    fn from(fp: Fingerprint) -> String {
        fp.0
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Signal is one normalized alert or event about one target resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub fingerprint: Fingerprint,
    /// Alert name or event reason.
    pub name: String,
    pub severity: String,
    pub signal_type: SignalType,
    /// The adapter that produced the signal: [`SOURCE_ALERTMANAGER`] or [`SOURCE_KUBERNETES_EVENT`].
    pub source: String,
    pub target: TargetResource,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub firing_time: jiff::Timestamp,
    pub received_time: jiff::Timestamp,
}

impl Signal {
    /// to_spec builds the RemediationRequest spec for this signal.
    #[must_use]
    pub fn to_spec(&self) -> RemediationRequestSpec {
        RemediationRequestSpec {
            signal_fingerprint: self.fingerprint.as_str().to_owned(),
            signal_name: self.name.clone(),
            severity: self.severity.clone(),
            signal_type: self.signal_type,
            signal_source: self.source.clone(),
            target_resource: self.target.clone(),
            firing_time: Time(self.firing_time),
            received_time: Time(self.received_time),
            signal_labels: self.labels.clone(),
            signal_annotations: self.annotations.clone(),
        }
    }
}

/// Item is what one alert or event in a payload became.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every item is a signal, so boxing would only add an allocation"
)]
pub enum Item {
    /// A signal to deduplicate and possibly turn into a RemediationRequest.
    Signal(Signal),
    /// Nothing to do (resolved alert, Normal event); the fingerprint is set when a target could be derived.
    Ignored {
        fingerprint: Option<Fingerprint>,
        reason: String,
    },
    /// The alert or event can never become a signal; the reason names the problem.
    Rejected { reason: String },
}

impl Item {
    /// fingerprint returns the target's fingerprint when the item has one.
    #[must_use]
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        match self {
            Item::Signal(signal) => Some(&signal.fingerprint),
            Item::Ignored { fingerprint, .. } => fingerprint.as_ref(),
            Item::Rejected { .. } => None,
        }
    }
}

/// ParseContext carries what adapters need besides the payload itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseContext {
    /// Cluster id mixed into every fingerprint, when configured.
    pub cluster_id: Option<String>,
    /// When the gateway received the payload; also the fallback firing time.
    pub received_time: jiff::Timestamp,
}

impl ParseContext {
    /// now builds a context stamped with the current time.
    #[must_use]
    pub fn now(cluster_id: Option<String>) -> ParseContext {
        ParseContext {
            cluster_id,
            received_time: jiff::Timestamp::now(),
        }
    }
}

/// PayloadError says why a whole payload is unusable; it will never succeed on retry.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("payload must be a JSON object, found {found}")]
    NotObject { found: &'static str },
    #[error("field `{field}` is required")]
    MissingField { field: String },
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("field `{field}` must be {expected}, found {found}")]
    InvalidValue {
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error("field `alerts` is empty; an Alertmanager notification carries at least one alert")]
    NoAlerts,
    #[error("field `{field}` is not an RFC 3339 timestamp: {value}")]
    InvalidTimestamp {
        field: String,
        value: String,
        #[source]
        source: jiff::Error,
    },
}

/// KnownKind describes a kind whose API version and scope the adapters know.
struct KnownKind {
    kind: &'static str,
    api_version: &'static str,
    namespaced: bool,
}

/// KNOWN_KINDS lists the kinds whose scope and API version are filled in when a sender omits them.
const KNOWN_KINDS: &[KnownKind] = &[
    KnownKind {
        kind: "Pod",
        api_version: "v1",
        namespaced: true,
    },
    KnownKind {
        kind: "Deployment",
        api_version: "apps/v1",
        namespaced: true,
    },
    KnownKind {
        kind: "StatefulSet",
        api_version: "apps/v1",
        namespaced: true,
    },
    KnownKind {
        kind: "DaemonSet",
        api_version: "apps/v1",
        namespaced: true,
    },
    KnownKind {
        kind: "ReplicaSet",
        api_version: "apps/v1",
        namespaced: true,
    },
    KnownKind {
        kind: "Job",
        api_version: "batch/v1",
        namespaced: true,
    },
    KnownKind {
        kind: "CronJob",
        api_version: "batch/v1",
        namespaced: true,
    },
    KnownKind {
        kind: "HorizontalPodAutoscaler",
        api_version: "autoscaling/v2",
        namespaced: true,
    },
    KnownKind {
        kind: "PersistentVolumeClaim",
        api_version: "v1",
        namespaced: true,
    },
    KnownKind {
        kind: "Service",
        api_version: "v1",
        namespaced: true,
    },
    KnownKind {
        kind: "Node",
        api_version: "v1",
        namespaced: false,
    },
    KnownKind {
        kind: "Namespace",
        api_version: "v1",
        namespaced: false,
    },
    KnownKind {
        kind: "PersistentVolume",
        api_version: "v1",
        namespaced: false,
    },
];

/// known_kind looks a kind up case-insensitively, so that `pod` and `Pod` fingerprint alike.
fn known_kind(kind: &str) -> Option<&'static KnownKind> {
    KNOWN_KINDS
        .iter()
        .find(|k| k.kind.eq_ignore_ascii_case(kind))
}

/// is_dns1123_label reports whether `s` is a valid namespace (RFC 1123 label, at most 63 characters).
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// is_dns1123_subdomain reports whether `s` is a valid object name (dot-separated RFC 1123 labels, at most 253 characters).
fn is_dns1123_subdomain(s: &str) -> bool {
    (1..=253).contains(&s.len()) && s.split('.').all(is_dns1123_label)
}

/// is_kind reports whether `s` can be a Kubernetes kind: ASCII letters and digits, starting with a letter.
fn is_kind(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b.iter().all(u8::is_ascii_alphanumeric)
}

/// DISPLAY_CHARS is how many characters of an untrusted value an error message shows.
const DISPLAY_CHARS: usize = 64;

/// head returns the displayable start of `s` and whether anything was cut off.
fn head(s: &str) -> (&str, bool) {
    match s.char_indices().nth(DISPLAY_CHARS) {
        Some((end, _)) => (&s[..end], true),
        None => (s, false),
    }
}

/// shown renders an untrusted value for an error message, quoted and cut to a readable length.
fn shown(s: &str) -> String {
    match head(s) {
        (h, true) => format!("{h:?}... ({} bytes)", s.len()),
        (h, false) => format!("{h:?}"),
    }
}

/// short renders an untrusted value for an error message, unquoted and cut to a readable length.
fn short(s: &str) -> String {
    match head(s) {
        (h, true) => format!("{h}... ({} bytes)", s.len()),
        (h, false) => h.to_owned(),
    }
}

/// validate_target checks that a target can name a Kubernetes object and be fingerprinted unambiguously.
fn validate_target(target: &TargetResource) -> Result<(), String> {
    if !is_kind(&target.kind) {
        return Err(format!(
            "kind {} is not a valid Kubernetes kind (ASCII letters and digits, starting with a letter)",
            shown(&target.kind)
        ));
    }
    if !is_dns1123_subdomain(&target.name) {
        return Err(format!(
            "{} name {} is not a valid DNS-1123 subdomain (lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit, at most 253 characters)",
            target.kind,
            shown(&target.name)
        ));
    }
    if !target.namespace.is_empty() && !is_dns1123_label(&target.namespace) {
        return Err(format!(
            "namespace {} is not a valid DNS-1123 label (lowercase letters, digits and '-', \
             starting and ending with a letter or digit, at most 63 characters)",
            shown(&target.namespace)
        ));
    }
    Ok(())
}

/// parse_timestamp reads an RFC 3339 timestamp, treating Go's zero time as absent.
fn parse_timestamp(field: &str, value: &str) -> Result<Option<jiff::Timestamp>, PayloadError> {
    // Go's time.Time{} marshals as 0001-01-01T00:00:00Z; senders use it for "unset".
    const GO_ZERO_SECONDS: i64 = -62_135_596_800;
    if value.is_empty() {
        return Ok(None);
    }
    let ts: jiff::Timestamp = value
        .parse()
        .map_err(|source| PayloadError::InvalidTimestamp {
            field: field.to_owned(),
            value: shown(value),
            source,
        })?;
    Ok((ts.as_second() > GO_ZERO_SECONDS).then_some(ts))
}

/// json_kind names the JSON type of a value for error messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// parse_object decodes a payload that must be a JSON object.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, PayloadError> {
    match serde_json::from_slice::<Value>(body).map_err(PayloadError::NotJson)? {
        Value::Object(map) => Ok(map),
        other => Err(PayloadError::NotObject {
            found: json_kind(&other),
        }),
    }
}

/// opt_str reads an optional string field; absent and null both count as absent.
fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, PayloadError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(PayloadError::WrongType {
            field: path.to_owned(),
            expected: "a string",
            found: json_kind(other),
        }),
    }
}

/// opt_object reads an optional object field; absent and null both count as absent.
fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, PayloadError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(PayloadError::WrongType {
            field: path.to_owned(),
            expected: "an object",
            found: json_kind(other),
        }),
    }
}

/// string_map reads an optional object of string values, such as labels or annotations.
fn string_map(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<BTreeMap<String, String>, PayloadError> {
    let Some(map) = opt_object(obj, key, path)? else {
        return Ok(BTreeMap::new());
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(PayloadError::WrongType {
                field: format!("{path}.{k}"),
                expected: "a string",
                found: json_kind(other),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str) -> TargetResource {
        TargetResource {
            kind: "Pod".into(),
            name: name.into(),
            namespace: namespace.into(),
            api_version: "v1".into(),
        }
    }

    #[test]
    fn fingerprint_is_pinned_sha256_of_namespace_kind_name() {
        // printf 'prod:Pod:web-0' | sha256sum
        let fp = Fingerprint::of(None, &pod("prod", "web-0"));
        assert_eq!(
            fp.as_str(),
            "07b7277eee612d0d04d9791f58c16b342e0d1140b3eda071cd2a25a476777e3f"
        );
        // printf 'eu-1:prod:Pod:web-0' | sha256sum
        let fp = Fingerprint::of(Some("eu-1"), &pod("prod", "web-0"));
        assert_eq!(
            fp.as_str(),
            "695282e3b5fc66c24daa6ea0e3d63e5033556b4433090e2bef0e1c76377f03bb"
        );
    }

    #[test]
    fn fingerprint_is_64_lowercase_hex_and_round_trips() {
        let fp = Fingerprint::of(Some("c"), &pod("ns", "p"));
        assert_eq!(fp.as_str().len(), 64);
        assert!(
            fp.as_str()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(Fingerprint::parse(fp.as_str()), Some(fp.clone()));
        assert_eq!(fp.to_string(), fp.as_str());
        assert_eq!(
            serde_json::to_value(&fp).ok(),
            Some(Value::String(fp.to_string()))
        );
    }

    #[test]
    fn fingerprint_ignores_api_version_and_depends_on_identity() {
        let base = Fingerprint::of(None, &pod("prod", "web-0"));
        let mut other_version = pod("prod", "web-0");
        other_version.api_version = String::new();
        assert_eq!(Fingerprint::of(None, &other_version), base);
        assert_ne!(Fingerprint::of(None, &pod("prod", "web-1")), base);
        assert_ne!(Fingerprint::of(None, &pod("staging", "web-0")), base);
        assert_ne!(Fingerprint::of(Some("a"), &pod("prod", "web-0")), base);
        assert_ne!(
            Fingerprint::of(Some("a"), &pod("prod", "web-0")),
            Fingerprint::of(Some("b"), &pod("prod", "web-0"))
        );
        assert_eq!(Fingerprint::of(Some(""), &pod("prod", "web-0")), base);
    }

    #[test]
    fn fingerprint_parse_rejects_anything_but_64_lowercase_hex() {
        let upper = "07B7277EEE612D0D04D9791F58C16B342E0D1140B3EDA071CD2A25A476777E3F";
        for bad in [
            "",
            "abc",
            upper,
            &"g".repeat(64),
            &"a".repeat(63),
            &"a".repeat(65),
            &"é".repeat(32),
        ] {
            assert_eq!(Fingerprint::parse(bad), None, "{bad:?} must not parse");
        }
    }

    #[test]
    fn dns1123_rules() {
        for ok in ["a", "web-0", "a.b-c.d", "0abc", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok) || ok.contains('.'), "{ok:?}");
            assert!(is_dns1123_subdomain(ok), "{ok:?}");
        }
        assert!(is_dns1123_subdomain(&format!(
            "{}.{}",
            "a".repeat(63),
            "b".repeat(63)
        )));
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a:b",
            "wéb",
            "a..b",
            "a.-b",
            ".a",
            "a.",
            &"a".repeat(64),
        ] {
            assert!(
                !is_dns1123_subdomain(bad),
                "{bad:?} must not be a subdomain"
            );
        }
        let longest = ["a"; 127].join(".");
        assert_eq!(longest.len(), 253);
        assert!(
            is_dns1123_subdomain(&longest),
            "253 characters is the limit"
        );
        assert!(
            !is_dns1123_subdomain(&format!("{longest}.a")),
            "255 characters is too long"
        );
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn validate_target_names_the_problem_without_echoing_huge_values() {
        let mut t = pod("prod", &"x".repeat(10_000));
        let reason = validate_target(&t).err().unwrap_or_default();
        assert!(reason.contains("Pod name"), "{reason}");
        assert!(reason.contains("10000 bytes"), "{reason}");
        assert!(reason.len() < 400, "{reason}");
        t.name = "web-0".into();
        t.namespace = "Prod".into();
        let reason = validate_target(&t).err().unwrap_or_default();
        assert!(reason.starts_with("namespace \"Prod\""), "{reason}");
        t.namespace = "prod".into();
        t.kind = "Po:d".into();
        assert!(validate_target(&t).is_err());
        t.kind = "Pod".into();
        assert_eq!(validate_target(&t), Ok(()));
    }

    #[test]
    fn go_zero_time_counts_as_absent() {
        assert_eq!(
            parse_timestamp("startsAt", "0001-01-01T00:00:00Z").ok(),
            Some(None)
        );
        assert_eq!(parse_timestamp("startsAt", "").ok(), Some(None));
        let ts = parse_timestamp("startsAt", "2025-03-14T09:26:53.589793238+01:00")
            .ok()
            .flatten();
        assert_eq!(ts.map(|t| t.as_second()), Some(1_741_940_813));
        let err = parse_timestamp("startsAt", "yesterday")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("field `startsAt` is not an RFC 3339 timestamp: \"yesterday\""),
            "{err}"
        );
    }

    #[test]
    fn to_spec_copies_every_field() {
        let received =
            jiff::Timestamp::from_second(1_700_000_100).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let firing =
            jiff::Timestamp::from_second(1_700_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let target = pod("prod", "web-0");
        let signal = Signal {
            fingerprint: Fingerprint::of(None, &target),
            name: "KubePodCrashLooping".into(),
            severity: "critical".into(),
            signal_type: SignalType::Alert,
            source: SOURCE_ALERTMANAGER.into(),
            target: target.clone(),
            labels: BTreeMap::from([("team".into(), "web".into())]),
            annotations: BTreeMap::from([("summary".into(), "Pod is crash looping.".into())]),
            firing_time: firing,
            received_time: received,
        };
        let spec = signal.to_spec();
        assert_eq!(
            spec.signal_fingerprint,
            "07b7277eee612d0d04d9791f58c16b342e0d1140b3eda071cd2a25a476777e3f"
        );
        assert_eq!(spec.signal_name, "KubePodCrashLooping");
        assert_eq!(spec.severity, "critical");
        assert_eq!(spec.signal_type, SignalType::Alert);
        assert_eq!(spec.signal_source, "alertmanager");
        assert_eq!(spec.target_resource, target);
        assert_eq!(spec.firing_time, Time(firing));
        assert_eq!(spec.received_time, Time(received));
        assert_eq!(
            spec.signal_labels.get("team").map(String::as_str),
            Some("web")
        );
        assert_eq!(
            spec.signal_annotations.get("summary").map(String::as_str),
            Some("Pod is crash looping.")
        );
        let json = serde_json::to_value(&spec).unwrap_or_default();
        assert_eq!(json["firingTime"], "2023-11-14T22:13:20Z");
        assert_eq!(json["targetResource"]["apiVersion"], "v1");
    }
}

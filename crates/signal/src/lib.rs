//! The signal model of signal-gateway: the normalized form of an alert or event, the
//! Alertmanager and Event decoders, the fingerprint, the target kinds and their validation,
//! the names derived from a fingerprint, and the limits kubernaut's CRD puts on a signal.
//!
//! Adapters turn one HTTP payload into [`Item`]s. A payload that cannot be read
//! at all is a [`PayloadError`] (the HTTP layer answers 400); inside a readable
//! payload each alert or event becomes a [`Signal`], is [`Item::Ignored`]
//! (resolved alerts, Normal events), or is [`Item::Rejected`] with a reason.
//! Nothing here talks to Kubernetes or knows the custom resource.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde_json::{Map, Value};

mod alertmanager;
mod event;
mod fingerprint;
mod names;
mod target;

pub use alertmanager::parse_alertmanager;
pub use event::parse_event;
pub use fingerprint::Fingerprint;
pub use names::{generation_of, lease_name, rr_name};
pub use target::{KINDS, Kind, TargetResource, is_dns1123_label, is_object_name, known_kind};

/// Source is the adapter a signal came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Alertmanager webhooks (`POST /api/v1/signals/prometheus`).
    Alertmanager,
    /// Kubernetes Events (`POST /api/v1/signals/kubernetes-event`).
    KubernetesEvent,
}

impl Source {
    /// as_str names the adapter in logs and in the `source` metric attribute.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::KubernetesEvent => "kubernetes-event",
        }
    }

    /// signal_source is the `spec.signalSource` kubernaut's Gateway writes for this adapter.
    #[must_use]
    pub fn signal_source(self) -> &'static str {
        match self {
            Source::Alertmanager => "prometheus",
            Source::KubernetesEvent => "kubernetes-events",
        }
    }
}

/// Signal is one normalized alert or event about one target resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub fingerprint: Fingerprint,
    /// Alert name or event reason.
    pub name: String,
    pub severity: String,
    pub source: Source,
    pub target: TargetResource,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub firing_time: jiff::Timestamp,
    pub received_time: jiff::Timestamp,
    /// The cluster the signal is about (`spec.clusterID`, and part of the fingerprint): the
    /// alert's `cluster` label, else `GATEWAY_CLUSTER_ID`; None is the local cluster.
    pub cluster_id: Option<String>,
    /// `spec.providerData` as kubernaut's Gateway writes it: `{"labels":...,"namespace":...}`.
    pub provider_data: String,
    /// `spec.originalPayload`: the request body, or this alert's own object when the body is
    /// over [`ORIGINAL_PAYLOAD_MAX`]; None when that is over it too. Shared by the alerts of
    /// one notification.
    pub original_payload: Option<Arc<str>>,
}

impl Signal {
    /// retarget makes `target` (the workload behind the signal's target) what the signal
    /// is about, and fingerprints it in the signal's own cluster.
    pub fn retarget(&mut self, target: TargetResource) {
        self.fingerprint = Fingerprint::of(self.cluster_id.as_deref(), &target);
        self.target = target;
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

#[cfg(test)]
impl Item {
    /// fingerprint returns the target's fingerprint when the item has one.
    #[must_use]
    fn fingerprint(&self) -> Option<&Fingerprint> {
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
    /// `GATEWAY_CLUSTER_ID`: the cluster of signals that do not name their own.
    pub cluster_id: Option<String>,
    /// When the gateway received the payload; also the fallback firing time.
    pub received_time: jiff::Timestamp,
    /// Most alerts one Alertmanager notification may carry.
    pub max_alerts: usize,
    /// How old the timestamp a replay or freshness check reads may be
    /// (`GATEWAY_REPLAY_WINDOW_SECONDS`); None turns those checks off.
    pub replay_window: Option<Duration>,
    /// The request's `X-Timestamp` header as sent (Unix seconds), if any.
    pub timestamp_header: Option<String>,
}

impl ParseContext {
    /// now builds a context stamped with the current time, with the replay checks off.
    #[must_use]
    pub fn now(cluster_id: Option<String>) -> ParseContext {
        ParseContext {
            cluster_id,
            received_time: jiff::Timestamp::now(),
            max_alerts: MAX_ALERTS_DEFAULT,
            replay_window: None,
            timestamp_header: None,
        }
    }
}

/// MAX_ALERTS_DEFAULT is the default of `GATEWAY_MAX_ALERTS`.
pub const MAX_ALERTS_DEFAULT: usize = 1000;
/// MAX_MAP_ENTRIES bounds the labels (or annotations) of one alert or event.
pub const MAX_MAP_ENTRIES: usize = 256;
/// MAX_KEY_BYTES bounds a label or annotation name (a qualified name: 253-byte prefix, `/`, 63).
pub const MAX_KEY_BYTES: usize = 317;
/// MAX_VALUE_BYTES bounds one label or annotation value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// MAX_FUTURE is how far after the gateway's clock a firing time may lie (clock skew).
const MAX_FUTURE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);
/// REPLAY_WINDOW_DEFAULT is the default of `GATEWAY_REPLAY_WINDOW_SECONDS`: kubernaut's 5 minutes.
pub const REPLAY_WINDOW_DEFAULT: Duration = Duration::from_secs(300);
/// MAX_AHEAD_SECONDS is how far after the gateway's clock a timestamp the replay checks read
/// may lie: kubernaut's 2 minutes of tolerated clock skew.
const MAX_AHEAD_SECONDS: i64 = 120;
/// ORIGINAL_PAYLOAD_MAX bounds `spec.originalPayload`, in bytes (docs/api.md argues it).
pub const ORIGINAL_PAYLOAD_MAX: usize = 64 * 1024;
/// CLUSTER_ID_MAX is the longest `spec.clusterID` kubernaut's CRD accepts, in characters.
pub const CLUSTER_ID_MAX: usize = 253;
/// SEVERITY_MAX is the longest `spec.severity` kubernaut's CRD accepts, in characters.
pub const SEVERITY_MAX: usize = 50;
/// SIGNAL_NAME_MAX is the longest `spec.signalName` kubernaut's CRD accepts, in characters.
pub const SIGNAL_NAME_MAX: usize = 253;

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
    /// More alerts than `GATEWAY_MAX_ALERTS`; the HTTP layer answers 413.
    #[error(
        "{count} alerts in one notification, the limit is {limit}; lower Alertmanager's max_alerts"
    )]
    TooManyAlerts { count: usize, limit: usize },
    #[error("field `{field}` has {count} entries, the limit is {limit}")]
    TooManyEntries {
        field: String,
        count: usize,
        limit: usize,
    },
    #[error("field `{field}` is {len} bytes long, the limit is {limit}")]
    TooLong {
        field: String,
        len: usize,
        limit: usize,
    },
    #[error("field `{field}` is {value}, outside 1970-01-01 .. one day from now")]
    TimestampOutOfRange { field: String, value: String },
    #[error("field `{field}` is not an RFC 3339 timestamp: {value}")]
    InvalidTimestamp {
        field: String,
        value: String,
        #[source]
        source: jiff::Error,
    },
    /// The `X-Timestamp` header is not Unix seconds.
    #[error("invalid timestamp format: header `X-Timestamp` is {value}, expected {expected}")]
    InvalidTimestampHeader {
        value: String,
        expected: &'static str,
    },
    /// The payload carries no timestamp the replay window could check.
    #[error("{problem}: {detail}")]
    NoTimestamp {
        problem: &'static str,
        detail: &'static str,
    },
    /// The timestamp the replay window checks is older than the window.
    #[error("{problem}: {what} is {value}, {age} s old; the replay window is {window} s")]
    TooOld {
        problem: &'static str,
        what: String,
        value: String,
        age: i64,
        window: u64,
    },
    /// The timestamp the replay window checks lies further ahead than clock skew explains.
    #[error(
        "{problem}: {what} is {value}, {ahead} s ahead of the gateway's clock; at most {limit} \
         s is tolerated"
    )]
    TooNew {
        problem: &'static str,
        what: String,
        value: String,
        ahead: i64,
        limit: i64,
    },
}

/// check_fresh refuses `ts` (Unix seconds; `what` is `value` in the message) when it lies
/// more than [`MAX_AHEAD_SECONDS`] after `now` (saying `too_new`), or, given `too_old` (what
/// to say, the window), when it is older than the window.
fn check_fresh(
    too_old: Option<(&'static str, Duration)>,
    too_new: &'static str,
    what: &str,
    value: &str,
    ts: i64,
    now: jiff::Timestamp,
) -> Result<(), PayloadError> {
    let age = now.as_second().saturating_sub(ts);
    if age < -MAX_AHEAD_SECONDS {
        return Err(PayloadError::TooNew {
            problem: too_new,
            what: what.to_owned(),
            value: value.to_owned(),
            ahead: age.saturating_neg(),
            limit: MAX_AHEAD_SECONDS,
        });
    }
    if let Some((problem, window)) = too_old
        && age > i64::try_from(window.as_secs()).unwrap_or(i64::MAX)
    {
        return Err(PayloadError::TooOld {
            problem,
            what: what.to_owned(),
            value: value.to_owned(),
            age,
            window: window.as_secs(),
        });
    }
    Ok(())
}

/// cluster_of is the cluster a signal with `labels` is about: its non-empty `cluster` label,
/// else the configured one; a label longer than `spec.clusterID` allows is refused.
fn cluster_of(
    labels: Option<&BTreeMap<String, String>>,
    ctx: &ParseContext,
) -> Result<Option<String>, String> {
    let label = labels
        .and_then(|l| l.get("cluster"))
        .filter(|c| !c.is_empty());
    if let Some(cluster) = label {
        let chars = cluster.chars().count();
        if chars > CLUSTER_ID_MAX {
            return Err(format!(
                "label `cluster` is {chars} characters; a RemediationRequest allows at most \
                 {CLUSTER_ID_MAX}"
            ));
        }
        return Ok(Some(cluster.clone()));
    }
    Ok(ctx.cluster_id.clone().filter(|c| !c.is_empty()))
}

/// provider_data renders `spec.providerData` as kubernaut's Gateway marshals it: `labels`
/// (null for Events) and `namespace`, keys sorted as Go sorts a map's.
fn provider_data(labels: Option<&BTreeMap<String, String>>, namespace: &str) -> String {
    serde_json::json!({"labels": labels, "namespace": namespace}).to_string()
}

/// bounded returns `text` when it fits in [`ORIGINAL_PAYLOAD_MAX`] bytes.
fn bounded(text: &str) -> Option<Arc<str>> {
    (text.len() <= ORIGINAL_PAYLOAD_MAX).then(|| Arc::from(text))
}

/// body_text is the request body as text, when it fits in [`ORIGINAL_PAYLOAD_MAX`] bytes.
fn body_text(body: &[u8]) -> Option<Arc<str>> {
    if body.len() > ORIGINAL_PAYLOAD_MAX {
        return None;
    }
    // A body that parsed as JSON is UTF-8; the lossy form only guards the impossible case.
    bounded(&String::from_utf8_lossy(body))
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

/// parse_timestamp reads an RFC 3339 timestamp, treating Go's zero time as absent; a time
/// before 1970 or more than a day after `now` is refused.
fn parse_timestamp(
    field: &str,
    value: &str,
    now: jiff::Timestamp,
) -> Result<Option<jiff::Timestamp>, PayloadError> {
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
    if ts.as_second() <= GO_ZERO_SECONDS {
        return Ok(None);
    }
    let latest = now
        .saturating_add(MAX_FUTURE)
        .unwrap_or(jiff::Timestamp::MAX);
    if ts < jiff::Timestamp::UNIX_EPOCH || ts > latest {
        return Err(PayloadError::TimestampOutOfRange {
            field: field.to_owned(),
            value: shown(value),
        });
    }
    Ok(Some(ts))
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

/// string_map reads an optional object of string values, such as labels or annotations,
/// within the bounds on entries, name and value sizes.
fn string_map(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<BTreeMap<String, String>, PayloadError> {
    let Some(map) = opt_object(obj, key, path)? else {
        return Ok(BTreeMap::new());
    };
    if map.len() > MAX_MAP_ENTRIES {
        return Err(PayloadError::TooManyEntries {
            field: path.to_owned(),
            count: map.len(),
            limit: MAX_MAP_ENTRIES,
        });
    }
    map.iter()
        .map(|(k, v)| match v {
            _ if k.len() > MAX_KEY_BYTES => Err(PayloadError::TooLong {
                field: format!("{path}.{}", short(k)),
                len: k.len(),
                limit: MAX_KEY_BYTES,
            }),
            Value::String(s) if s.len() > MAX_VALUE_BYTES => Err(PayloadError::TooLong {
                field: format!("{path}.{}", short(k)),
                len: s.len(),
                limit: MAX_VALUE_BYTES,
            }),
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(PayloadError::WrongType {
                field: format!("{path}.{}", short(k)),
                expected: "a string",
                found: json_kind(other),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_zero_time_counts_as_absent() {
        let now = jiff::Timestamp::now();
        assert_eq!(
            parse_timestamp("startsAt", "0001-01-01T00:00:00Z", now).ok(),
            Some(None)
        );
        assert_eq!(parse_timestamp("startsAt", "", now).ok(), Some(None));
        let ts = parse_timestamp("startsAt", "2025-03-14T09:26:53.589793238+01:00", now)
            .ok()
            .flatten();
        assert_eq!(ts.map(|t| t.as_second()), Some(1_741_940_813));
        let err = parse_timestamp("startsAt", "yesterday", now)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("field `startsAt` is not an RFC 3339 timestamp: \"yesterday\""),
            "{err}"
        );
    }

    #[test]
    fn timestamps_before_1970_or_far_ahead_are_refused() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap_or_default();
        for bad in [
            "9999-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "0002-01-01T00:00:00Z",
            "2026-01-02T00:00:01Z",
        ] {
            let err = parse_timestamp("startsAt", bad, now).map_err(|e| e.to_string());
            assert!(
                matches!(&err, Err(e) if e.contains("outside 1970-01-01")),
                "{bad}: {err:?}"
            );
        }
        assert!(parse_timestamp("startsAt", "2026-01-01T23:00:00Z", now).is_ok());
    }

    #[test]
    fn label_maps_are_bounded_and_errors_stay_short() {
        let map = |entries: Vec<(String, Value)>| {
            let mut obj = Map::new();
            obj.insert(
                "labels".into(),
                Value::Object(entries.into_iter().collect()),
            );
            string_map(&obj, "labels", "labels").map_err(|e| e.to_string())
        };
        let many = (0..=MAX_MAP_ENTRIES)
            .map(|i| (format!("l{i}"), Value::String(String::new())))
            .collect();
        assert!(map(many).is_err_and(|e| e.contains("257 entries")));
        let long_key = vec![("k".repeat(100_000), Value::Bool(true))];
        assert!(map(long_key).is_err_and(|e| e.len() < 200));
        let long_value = vec![("k".into(), Value::String("v".repeat(MAX_VALUE_BYTES + 1)))];
        assert!(map(long_value).is_err_and(|e| e.contains("limit is 65536")));
        let ok = vec![("k".into(), Value::String("v".repeat(10_000)))];
        assert!(map(ok).is_ok());
    }
}

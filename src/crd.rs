//! Crd is the `RemediationRequest` custom resource (`kubernaut.ai/v1alpha1`).
//!
//! Field names follow kubernaut's RemediationRequest so that the rest of that
//! system can consume what this gateway writes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use crate::signal::TargetResource;
use crate::signal::{Signal, Source};

/// RemediationRequestSpec is the immutable description of one problem.
#[allow(
    clippy::duplicated_attributes,
    reason = "kube's printcolumn(...) repeats its keys by design"
)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubernaut.ai",
    version = "v1alpha1",
    kind = "RemediationRequest",
    plural = "remediationrequests",
    shortname = "rr",
    namespaced,
    status = "RemediationRequestStatus",
    selectable = ".spec.signalFingerprint",
    doc = "RemediationRequest asks for one problem, identified by its signal fingerprint, to be remediated.",
    printcolumn(
        name = "Fingerprint",
        type_ = "string",
        json_path = ".spec.signalFingerprint",
        description = "SHA-256 of the target resource identity"
    ),
    printcolumn(name = "Signal", type_ = "string", json_path = ".spec.signalName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.overallPhase"),
    printcolumn(
        name = "Occurrences",
        type_ = "integer",
        json_path = ".status.deduplication.occurrenceCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestSpec {
    /// Lowercase hex SHA-256 of the target resource identity.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"), length(max = 64))]
    pub signal_fingerprint: String,
    /// The kind of system the target lives in; this gateway writes `kubernetes`.
    pub target_type: TargetType,
    /// Alert name or event reason.
    #[schemars(length(max = SIGNAL_NAME_MAX))]
    pub signal_name: String,
    /// The sender's severity (`unknown` when it gave none).
    #[schemars(length(min = 1, max = SEVERITY_MAX))]
    pub severity: String,
    pub signal_type: SignalType,
    /// The adapter that received the signal (`alertmanager`, `kubernetes-event`).
    #[schemars(length(max = 63))]
    pub signal_source: String,
    pub target_resource: TargetResource,
    pub firing_time: Time,
    pub received_time: Time,
    #[serde(default)]
    pub signal_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub signal_annotations: BTreeMap<String, String>,
}

/// SignalType says which kind of sender produced the signal.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignalType {
    Alert,
    Event,
}

/// TargetType is the kind of system a target lives in: kubernaut's enum, of
/// which this gateway writes only `kubernetes`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    Kubernetes,
    Aws,
    Azure,
    Gcp,
    Datadog,
}

/// SEVERITY_MAX is the longest `spec.severity` kubernaut's CRD accepts, in characters.
pub const SEVERITY_MAX: usize = 50;

/// SIGNAL_NAME_MAX is the longest `spec.signalName` kubernaut's CRD accepts, in characters.
pub const SIGNAL_NAME_MAX: usize = 253;

impl From<Source> for SignalType {
    fn from(source: Source) -> SignalType {
        match source {
            Source::Alertmanager => SignalType::Alert,
            Source::KubernetesEvent => SignalType::Event,
        }
    }
}

impl From<&Signal> for RemediationRequestSpec {
    fn from(signal: &Signal) -> RemediationRequestSpec {
        RemediationRequestSpec {
            signal_fingerprint: signal.fingerprint.as_str().to_owned(),
            target_type: TargetType::Kubernetes,
            signal_name: signal.name.clone(),
            severity: signal.severity.clone(),
            signal_type: signal.source.into(),
            signal_source: signal.source.as_str().to_owned(),
            target_resource: signal.target.clone(),
            firing_time: Time(signal.firing_time),
            received_time: Time(signal.received_time),
            signal_labels: signal.labels.clone(),
            signal_annotations: signal.annotations.clone(),
        }
    }
}

/// RemediationRequestStatus is written by the gateway (deduplication) and by
/// the remediation controllers (phase).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestStatus {
    /// The phase kubernaut's controllers move the RR through.
    #[schemars(extend("enum" = PHASES))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication: Option<Deduplication>,
}

/// Deduplication counts how often the problem was signalled while this RR was active.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deduplication {
    pub first_seen_at: Time,
    pub last_seen_at: Time,
    /// How many signals were counted on this RR.
    // An int32 in the schema, as in kubernaut's CRD; the Rust field is wider so
    // that sums cannot overflow, and it is written saturated at `i32::MAX`.
    #[schemars(with = "i32")]
    #[serde(serialize_with = "saturating_i32")]
    pub occurrence_count: i64,
}

/// saturating_i32 writes a count as the nearest int32.
fn saturating_i32<S: serde::Serializer>(count: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    let clamped = i32::try_from(*count).unwrap_or(if *count < 0 { i32::MIN } else { i32::MAX });
    serializer.serialize_i32(clamped)
}

/// PHASES are the values of `status.overallPhase` in kubernaut's CRD.
pub const PHASES: [&str; 11] = [
    "Pending",
    "Processing",
    "Analyzing",
    "AwaitingApproval",
    "Executing",
    "Blocked",
    "Completed",
    "Failed",
    "TimedOut",
    "Skipped",
    "Cancelled",
];

/// TERMINAL_PHASES are the phases after which a new signal opens a new RR.
pub const TERMINAL_PHASES: [&str; 5] = ["Completed", "Failed", "TimedOut", "Skipped", "Cancelled"];

impl RemediationRequest {
    /// is_active reports whether the RR still stands for its problem.
    #[must_use]
    pub fn is_active(&self) -> bool {
        let phase = self
            .status
            .as_ref()
            .and_then(|s| s.overall_phase.as_deref());
        !phase.is_some_and(|p| TERMINAL_PHASES.contains(&p))
    }

    /// occurrence_count is the number of signals counted on this RR so far.
    #[must_use]
    pub fn occurrence_count(&self) -> i64 {
        self.status
            .as_ref()
            .and_then(|s| s.deduplication.as_ref())
            .map_or(0, |d| d.occurrence_count)
    }
}

/// crd_yaml renders the CustomResourceDefinition as YAML.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml_ng::to_string(&RemediationRequest::crd()).expect("a CRD always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Fingerprint;

    #[test]
    fn checked_in_crd_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/chart/files/remediationrequests.yaml"
        );
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == crd_yaml(),
            "{path} is stale: run `cargo run -- crd > chart/files/remediationrequests.yaml`"
        );
    }

    #[test]
    fn terminal_phases_end_activity() {
        let mut rr = RemediationRequest::new("x", sample_spec());
        assert!(rr.is_active());
        for phase in ["Pending", "Processing", ""] {
            rr.status = Some(RemediationRequestStatus {
                overall_phase: Some(phase.into()),
                deduplication: None,
            });
            assert!(rr.is_active(), "{phase} must count as active");
        }
        for phase in TERMINAL_PHASES {
            rr.status = Some(RemediationRequestStatus {
                overall_phase: Some(phase.into()),
                deduplication: None,
            });
            assert!(!rr.is_active(), "{phase} must count as terminal");
        }
    }

    #[test]
    fn counts_are_written_as_int32_saturated() {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let dedup = |count| Deduplication {
            first_seen_at: now.clone(),
            last_seen_at: now.clone(),
            occurrence_count: count,
        };
        let written = |count| {
            serde_json::to_value(dedup(count)).unwrap_or_default()["occurrenceCount"].clone()
        };
        assert_eq!(written(7), 7);
        assert_eq!(written(i64::from(i32::MAX)), i32::MAX);
        assert_eq!(written(i64::from(i32::MAX) + 1), i32::MAX);
        assert_eq!(written(i64::MAX), i32::MAX);
        let read: Deduplication = serde_json::from_value(serde_json::json!({
            "firstSeenAt": "2025-01-01T00:00:00Z",
            "lastSeenAt": "2025-01-01T00:00:00Z",
            "occurrenceCount": i32::MAX,
        }))
        .unwrap_or_else(|_| dedup(0));
        assert_eq!(
            read.occurrence_count.saturating_add(1),
            i64::from(i32::MAX) + 1
        );
    }

    #[test]
    fn the_schema_carries_kubernauts_constraints() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(RemediationRequest::crd()).unwrap_or_default();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        let spec = &schema["spec"]["properties"];
        assert_eq!(spec["severity"]["minLength"], 1);
        assert_eq!(spec["severity"]["maxLength"], SEVERITY_MAX);
        assert_eq!(spec["signalName"]["maxLength"], SIGNAL_NAME_MAX);
        assert_eq!(spec["signalSource"]["maxLength"], 63);
        assert_eq!(
            spec["targetType"]["enum"],
            serde_json::json!(["kubernetes", "aws", "azure", "gcp", "datadog"])
        );
        let status = &schema["status"]["properties"];
        assert_eq!(status["overallPhase"]["enum"], serde_json::json!(PHASES));
        let count = &status["deduplication"]["properties"]["occurrenceCount"];
        assert_eq!(count["type"], "integer");
        assert_eq!(count["format"], "int32");
    }

    fn sample_spec() -> RemediationRequestSpec {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        RemediationRequestSpec {
            signal_fingerprint: "a".repeat(64),
            signal_name: "KubePodCrashLooping".into(),
            severity: "critical".into(),
            target_type: TargetType::Kubernetes,
            signal_type: SignalType::Alert,
            signal_source: "alertmanager".into(),
            target_resource: TargetResource::pod("prod", "web-0"),
            firing_time: now.clone(),
            received_time: now,
            signal_labels: BTreeMap::new(),
            signal_annotations: BTreeMap::new(),
        }
    }
    #[test]
    fn the_spec_copies_every_field_of_the_signal() {
        let received =
            jiff::Timestamp::from_second(1_700_000_100).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let firing =
            jiff::Timestamp::from_second(1_700_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let target = TargetResource::pod("prod", "web-0");
        let signal = Signal {
            fingerprint: Fingerprint::of(None, &target),
            name: "KubePodCrashLooping".into(),
            severity: "critical".into(),
            source: Source::Alertmanager,
            target: target.clone(),
            labels: BTreeMap::from([("team".into(), "web".into())]),
            annotations: BTreeMap::from([("summary".into(), "Pod is crash looping.".into())]),
            firing_time: firing,
            received_time: received,
        };
        let spec = RemediationRequestSpec::from(&signal);
        assert_eq!(
            spec.signal_fingerprint,
            "07b7277eee612d0d04d9791f58c16b342e0d1140b3eda071cd2a25a476777e3f"
        );
        assert_eq!(spec.signal_name, "KubePodCrashLooping");
        assert_eq!(spec.severity, "critical");
        assert_eq!(spec.signal_type, SignalType::Alert);
        assert_eq!(spec.target_type, TargetType::Kubernetes);
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
        assert_eq!(json["targetType"], "kubernetes");
        assert_eq!(json["firingTime"], "2023-11-14T22:13:20Z");
        assert_eq!(json["targetResource"]["apiVersion"], "v1");
    }
}

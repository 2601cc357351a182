//! The `RemediationRequest` custom resource (`kubernaut.ai/v1alpha1`).
//!
//! Field names follow kubernaut's RemediationRequest so that the rest of that
//! system can consume what this gateway writes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

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
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub signal_fingerprint: String,
    /// Alert name or event reason.
    pub signal_name: String,
    pub severity: String,
    pub signal_type: SignalType,
    /// The adapter that received the signal (`alertmanager`, `kubernetes-event`).
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

/// TargetResource identifies the Kubernetes object the signal is about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetResource {
    pub kind: String,
    pub name: String,
    /// Empty for cluster-scoped resources such as nodes.
    #[serde(default)]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
}

/// RemediationRequestStatus is written by the gateway (deduplication) and by
/// the remediation controllers (phase).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestStatus {
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
    pub occurrence_count: i64,
}

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
    serde_yaml::to_string(&RemediationRequest::crd()).expect("a CRD always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/chart/crds/remediationrequests.yaml"
        );
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == crd_yaml(),
            "{path} is stale: run `cargo run -- crd > chart/crds/remediationrequests.yaml`"
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

    fn sample_spec() -> RemediationRequestSpec {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        RemediationRequestSpec {
            signal_fingerprint: "a".repeat(64),
            signal_name: "KubePodCrashLooping".into(),
            severity: "critical".into(),
            signal_type: SignalType::Alert,
            signal_source: "alertmanager".into(),
            target_resource: TargetResource {
                kind: "Pod".into(),
                name: "web-0".into(),
                namespace: "prod".into(),
                api_version: "v1".into(),
            },
            firing_time: now.clone(),
            received_time: now,
            signal_labels: BTreeMap::new(),
            signal_annotations: BTreeMap::new(),
        }
    }
}

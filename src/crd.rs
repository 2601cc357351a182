//! Crd is the `RemediationRequest` custom resource (`kubernaut.ai/v1alpha1`).
//!
//! Field names follow kubernaut's RemediationRequest so that the rest of that
//! system can consume what this gateway writes. The schema is a superset of
//! kubernaut's published CRD: it accepts and keeps every field kubernaut's
//! controllers write, and every status field is optional here so that reading
//! any RR they wrote never fails.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::signal::{self, CLUSTER_ID_MAX, SEVERITY_MAX, SIGNAL_NAME_MAX, Signal};

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
    selectable = ".spec.signalType",
    selectable = ".spec.severity",
    selectable = ".spec.clusterID",
    doc = "RemediationRequest asks for one problem, identified by its signal fingerprint, to be remediated.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.overallPhase"),
    printcolumn(
        name = "Outcome",
        type_ = "string",
        json_path = ".status.completionStatus.outcome"
    ),
    printcolumn(name = "Alert", type_ = "string", json_path = ".spec.signalName"),
    printcolumn(
        name = "RCA Target",
        type_ = "string",
        json_path = ".status.workflowSelection.targetDisplay"
    ),
    printcolumn(
        name = "Workflow",
        type_ = "string",
        json_path = ".status.workflowSelection.workflowDisplayName"
    ),
    printcolumn(
        name = "Confidence",
        type_ = "string",
        json_path = ".status.workflowSelection.confidence"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterID",
        priority = 1
    ),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.signalSource",
        priority = 1
    ),
    printcolumn(
        name = "Signal NS",
        type_ = "string",
        json_path = ".spec.targetResource.namespace",
        priority = 1
    ),
    printcolumn(
        name = "Signal Target",
        type_ = "string",
        json_path = ".status.workflowSelection.signalTargetDisplay",
        priority = 1
    ),
    printcolumn(
        name = "RCA NS",
        type_ = "string",
        json_path = ".status.workflowSelection.remediationTarget.namespace",
        priority = 1
    ),
    printcolumn(
        name = "Fingerprint",
        type_ = "string",
        json_path = ".spec.signalFingerprint",
        description = "SHA-256 of the target resource identity",
        priority = 1
    ),
    printcolumn(
        name = "Occurrences",
        type_ = "integer",
        json_path = ".status.deduplication.occurrenceCount",
        priority = 1
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable after creation (ADR-001)"))]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestSpec {
    /// Lowercase hex SHA-256 of the target resource identity.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"), length(max = 64))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("signalFingerprint is immutable"))]
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
    /// The adapter that received the signal (`prometheus`, `kubernetes-events`, as kubernaut writes).
    // Optional in kubernaut's CRD: empty when another writer left it out.
    #[schemars(length(max = 63))]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signal_source: String,
    pub target_resource: TargetResource,
    pub firing_time: Time,
    pub received_time: Time,
    #[serde(default)]
    pub signal_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub signal_annotations: BTreeMap<String, String>,
    /// The cluster the signal came from; unset means the local cluster.
    #[schemars(length(max = CLUSTER_ID_MAX))]
    #[serde(rename = "clusterID", default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Provider-specific fields of the signal, as raw JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_data: Option<String>,
    /// The webhook payload the signal came in, for debugging and audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_payload: Option<String>,
}

/// SignalType is the kind of sender that produced the signal; this gateway writes `alert`
/// for every signal, as kubernaut's Gateway does.
// A free string in the schema, as in kubernaut's CRD, so that an RR another writer
// made with another value is still read; `Other` keeps that value as it was.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(from = "String", into = "String")]
pub enum SignalType {
    Alert,
    Event,
    Other(String),
}

impl SignalType {
    /// as_str is the value written in `spec.signalType`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            SignalType::Alert => "alert",
            SignalType::Event => "event",
            SignalType::Other(other) => other,
        }
    }
}

impl From<String> for SignalType {
    fn from(value: String) -> SignalType {
        match value.as_str() {
            "alert" => SignalType::Alert,
            "event" => SignalType::Event,
            _ => SignalType::Other(value),
        }
    }
}

impl From<SignalType> for String {
    fn from(value: SignalType) -> String {
        match value {
            SignalType::Other(other) => other,
            known => known.as_str().to_owned(),
        }
    }
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

impl From<&signal::TargetResource> for TargetResource {
    fn from(target: &signal::TargetResource) -> TargetResource {
        TargetResource {
            kind: target.kind.clone(),
            name: target.name.clone(),
            namespace: target.namespace.clone(),
            api_version: target.api_version.clone(),
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
            // kubernaut's Gateway writes `alert` for Events too.
            signal_type: SignalType::Alert,
            signal_source: signal.source.signal_source().to_owned(),
            target_resource: TargetResource::from(&signal.target),
            firing_time: Time(signal.firing_time),
            received_time: Time(signal.received_time),
            signal_labels: signal.labels.clone(),
            signal_annotations: signal.annotations.clone(),
            cluster_id: signal.cluster_id.clone(),
            provider_data: Some(signal.provider_data.clone()),
            original_payload: signal.original_payload.as_deref().map(str::to_owned),
        }
    }
}

/// RemediationRequestStatus is written by the gateway (deduplication) and by
/// kubernaut's controllers (everything else).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestStatus {
    /// The phase kubernaut's controllers move the RR through.
    #[schemars(extend("enum" = PHASES))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall_phase: Option<String>,
    /// A human-readable account of the current status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// When the RR may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_expiry_time: Option<Time>,
    /// The generation of the RR the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How often the problem was signalled; written by the gateway alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication: Option<Deduplication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_status: Option<CompletionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_status: Option<RoutingStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_progress: Option<PhaseProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_selection: Option<WorkflowSelection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_audit: Option<OperatorAudit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_config: Option<TimeoutConfig>,
    /// Observations of the RR's state, one per condition type.
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// Deduplication counts how often the problem was signalled while this RR was active.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deduplication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<Time>,
    /// How many signals were counted on this RR.
    // An int32 in the schema, as in kubernaut's CRD; the Rust field is wider so
    // that sums cannot overflow, and it is written saturated at `i32::MAX`.
    #[schemars(with = "Option<i32>")]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "saturating_i32"
    )]
    pub occurrence_count: Option<i64>,
}

/// saturating_i32 writes a count as the nearest int32.
fn saturating_i32<S: serde::Serializer>(
    count: &Option<i64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    count
        .map(|c| i32::try_from(c).unwrap_or(if c < 0 { i32::MIN } else { i32::MAX }))
        .serialize(serializer)
}

/// CompletionStatus is how a remediation ended: outcome, failure or timeout, and
/// the notifications sent about it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_notification_sent: Option<bool>,
    /// The phase that failed, when the RR is `Failed`.
    #[schemars(extend("enum" = FAILURE_PHASES))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_request_refs: Option<Vec<ObjectReference>>,
    #[schemars(extend("enum" = NOTIFICATION_STATUSES))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_status: Option<String>,
    /// The result of the remediation, once it completed.
    #[schemars(extend("enum" = OUTCOMES))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_manual_review: Option<bool>,
    /// The phase that timed out, when the RR is `TimedOut`.
    #[schemars(extend("enum" = PHASES))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_time: Option<Time>,
}

/// RoutingStatus is what kubernaut's router decided: skip and block reasons,
/// duplicates, and the back-off after consecutive failures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_message: Option<String>,
    #[schemars(extend("enum" = BLOCK_REASONS))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_until: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking_workflow_execution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failure_count: Option<i32>,
    #[serde(
        rename = "deduplicatedByWE",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deduplicated_by_we: Option<String>,
    // A plain integer in kubernaut's schema (a Go int): no format.
    #[schemars(transform = without_format)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_refs: Option<Vec<String>>,
    /// When the RR may be retried after an exponential back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_allowed_execution: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_message: Option<String>,
    #[schemars(extend("enum" = SKIP_REASONS))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
}

/// without_format drops the `format` schemars gives a Rust integer.
fn without_format(schema: &mut schemars::Schema) {
    schema.remove("format");
}

/// PhaseProgress is when each phase started and which downstream objects it created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseProgress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_analysis_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyzing_start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_processing_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effectiveness_assessment_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executing_start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_processing_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_processing_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_deadline: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_execution_ref: Option<ObjectReference>,
}

/// WorkflowSelection is the workflow kubernaut's analysis chose, the resource it
/// targets, and the strings `kubectl get` shows for them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSelection {
    /// The analysis's confidence, as a display string such as `0.97`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_target: Option<RemediationTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_workflow_ref: Option<SelectedWorkflowRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_target_display: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_display: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_display_name: Option<String>,
}

/// RemediationTarget is the resource the analysis decided to remediate, which may
/// differ from the signal's target (a Deployment rather than its Pod).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationTarget {
    pub kind: String,
    pub name: String,
    /// Unset for cluster-scoped resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// SelectedWorkflowRef names the catalog workflow chosen for the remediation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectedWorkflowRef {
    pub workflow_id: String,
    pub version: String,
    pub execution_bundle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_bundle_digest: Option<String>,
}

/// OperatorAudit is who last changed the status, and the hash of the target's spec
/// taken before the remediation ran.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatorAudit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_by: Option<String>,
    #[x_kube(validation = Rule::new("oldSelf == '' || self == oldSelf").message("preRemediationSpecHash is immutable once set"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_remediation_spec_hash: Option<String>,
}

/// TimeoutConfig overrides the controllers' timeouts for this RR, as Go durations (`10m0s`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutConfig {
    #[schemars(extend("format" = "duration"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyzing: Option<String>,
    #[schemars(extend("format" = "duration"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executing: Option<String>,
    #[schemars(extend("format" = "duration"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<String>,
    #[schemars(extend("format" = "duration"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<String>,
}

/// ObjectReference points at another object, with the fields of Kubernetes'
/// `core/v1` ObjectReference; it is replaced whole, never merged.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Condition is one observation of the RR's state, as Kubernetes' `meta/v1` Condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type, in CamelCase or as foo.example.com/CamelCase.
    #[schemars(
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        ),
        length(max = 316)
    )]
    #[serde(rename = "type")]
    pub type_: String,
    #[schemars(extend("enum" = CONDITION_STATUSES))]
    pub status: String,
    #[schemars(
        regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
        length(min = 1, max = 1024)
    )]
    pub reason: String,
    #[schemars(length(max = 32768))]
    pub message: String,
    pub last_transition_time: Time,
    #[schemars(range(min = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// PHASES are the values of `status.overallPhase` in kubernaut's CRD.
pub const PHASES: [&str; 12] = [
    "Pending",
    "Processing",
    "Analyzing",
    "AwaitingApproval",
    "Executing",
    "Verifying",
    "Blocked",
    "Completed",
    "Failed",
    "TimedOut",
    "Skipped",
    "Cancelled",
];

/// TERMINAL_PHASES are the phases in which an RR holds its problem only by its outcome or
/// its backoff (`holds`).
pub const TERMINAL_PHASES: [&str; 5] = ["Completed", "Failed", "TimedOut", "Skipped", "Cancelled"];

/// HOLDING_OUTCOME is the completion outcome that holds a problem whatever the phase.
pub const HOLDING_OUTCOME: &str = "ManualReviewRequired";

/// holds is the one rule for whether an RR still holds its problem (new signals are counted
/// on it and no new RR is opened), kubernaut's Gateway's rule: its phase is not terminal
/// (unset, `Verifying` and `Blocked` included), or its outcome is `ManualReviewRequired`,
/// or its `nextAllowedExecution` is later than `now`. The gateway passes the API server's
/// clock at the read (`k8s::Rr`), never its own.
#[must_use]
pub fn holds(
    phase: Option<&str>,
    outcome: Option<&str>,
    next_allowed_execution: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> bool {
    !phase.is_some_and(|p| TERMINAL_PHASES.contains(&p))
        || outcome == Some(HOLDING_OUTCOME)
        || next_allowed_execution.is_some_and(|t| now < t)
}

/// OUTCOMES are the values of `status.completionStatus.outcome` in kubernaut's CRD.
pub const OUTCOMES: [&str; 6] = [
    "Remediated",
    "NoActionRequired",
    "ManualReviewRequired",
    "VerificationTimedOut",
    "Inconclusive",
    "DryRun",
];

/// FAILURE_PHASES are the values of `status.completionStatus.failurePhase` in kubernaut's CRD.
pub const FAILURE_PHASES: [&str; 7] = [
    "Configuration",
    "SignalProcessing",
    "AIAnalysis",
    "Approval",
    "WorkflowExecution",
    "Blocked",
    "Deduplicated",
];

/// NOTIFICATION_STATUSES are the values of `status.completionStatus.notificationStatus`
/// in kubernaut's CRD.
pub const NOTIFICATION_STATUSES: [&str; 5] =
    ["Pending", "InProgress", "Sent", "Failed", "Cancelled"];

/// BLOCK_REASONS are the values of `status.routingStatus.blockReason` in kubernaut's CRD.
pub const BLOCK_REASONS: [&str; 7] = [
    "ConsecutiveFailures",
    "DuplicateInProgress",
    "ResourceBusy",
    "RecentlyRemediated",
    "ExponentialBackoff",
    "UnmanagedResource",
    "IneffectiveChain",
];

/// SKIP_REASONS are the values of `status.routingStatus.skipReason` in kubernaut's CRD.
pub const SKIP_REASONS: [&str; 4] = [
    "RecentlyRemediated",
    "ResourceBusy",
    "ExhaustedRetries",
    "PreviousExecutionFailed",
];

/// CONDITION_STATUSES are the values of a condition's `status`.
pub const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

impl RemediationRequest {
    /// holds_at reports whether the RR holds its problem at `now` (`holds`).
    #[must_use]
    pub fn holds_at(&self, now: jiff::Timestamp) -> bool {
        let s = self.status.as_ref();
        holds(
            s.and_then(|s| s.overall_phase.as_deref()),
            s.and_then(|s| s.completion_status.as_ref())
                .and_then(|c| c.outcome.as_deref()),
            s.and_then(|s| s.routing_status.as_ref())
                .and_then(|r| r.next_allowed_execution.as_ref())
                .map(|t| t.0),
            now,
        )
    }

    /// is_active reports whether the RR holds its problem now, on this machine's clock (for
    /// tests and tools; the gateway judges on the API server's).
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.holds_at(jiff::Timestamp::now())
    }

    /// occurrence_count is the number of signals counted on this RR so far.
    #[must_use]
    pub fn occurrence_count(&self) -> i64 {
        self.status
            .as_ref()
            .and_then(|s| s.deduplication.as_ref())
            .and_then(|d| d.occurrence_count)
            .unwrap_or(0)
    }
}

/// crd_yaml renders the CustomResourceDefinition as YAML.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml_ng::to_string(&RemediationRequest::crd()).expect("a CRD always serializes")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::signal::Fingerprint;
    use crate::signal::Source;

    /// KUBERNAUT_CRD is kubernaut's published CRD, which CI keeps in `../shared` beside the checkout.
    const KUBERNAUT_CRD: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/kubernaut/remediationrequests.kubernaut.ai.yaml"
    );

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
        for phase in ["Pending", "Processing", "Verifying", ""] {
            rr.status = Some(RemediationRequestStatus {
                overall_phase: Some(phase.into()),
                ..RemediationRequestStatus::default()
            });
            assert!(rr.is_active(), "{phase} must count as active");
        }
        for phase in TERMINAL_PHASES {
            rr.status = Some(RemediationRequestStatus {
                overall_phase: Some(phase.into()),
                ..RemediationRequestStatus::default()
            });
            assert!(!rr.is_active(), "{phase} must count as terminal");
        }
    }

    #[test]
    fn counts_are_written_as_int32_saturated() {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let dedup = |count| Deduplication {
            first_seen_at: Some(now.clone()),
            last_seen_at: Some(now.clone()),
            occurrence_count: Some(count),
        };
        let written = |count| {
            serde_json::to_value(dedup(count)).unwrap_or_default()["occurrenceCount"].clone()
        };
        assert_eq!(written(7), 7);
        assert_eq!(written(i64::from(i32::MAX)), i32::MAX);
        assert_eq!(written(i64::from(i32::MAX) + 1), i32::MAX);
        assert_eq!(written(i64::MAX), i32::MAX);
        let read: Deduplication = serde_json::from_value(json!({
            "firstSeenAt": "2025-01-01T00:00:00Z",
            "lastSeenAt": "2025-01-01T00:00:00Z",
            "occurrenceCount": i32::MAX,
        }))
        .unwrap_or_else(|_| dedup(0));
        assert_eq!(
            read.occurrence_count.unwrap_or(0).saturating_add(1),
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
            json!(["kubernetes", "aws", "azure", "gcp", "datadog"])
        );
        let status = &schema["status"]["properties"];
        assert_eq!(status["overallPhase"]["enum"], json!(PHASES));
        let count = &status["deduplication"]["properties"]["occurrenceCount"];
        assert_eq!(count["type"], "integer");
        assert_eq!(count["format"], "int32");
    }

    #[test]
    fn the_crd_is_a_superset_of_kubernauts() {
        use kube::CustomResourceExt;
        let text = std::fs::read_to_string(KUBERNAUT_CRD).unwrap_or_else(|e| {
            panic!(
                "kubernaut's CRD must be at {KUBERNAUT_CRD} (../shared beside the checkout): {e}"
            )
        });
        let theirs: Value = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("parsing {KUBERNAUT_CRD}: {e}"));
        let ours = serde_json::to_value(RemediationRequest::crd()).unwrap_or_default();
        let mut problems = Vec::new();

        for key in ["group", "scope"] {
            same(&theirs["spec"][key], &ours["spec"][key], key, &mut problems);
        }
        for key in ["kind", "plural", "singular", "shortNames"] {
            same(
                &theirs["spec"]["names"][key],
                &ours["spec"]["names"][key],
                &format!("names.{key}"),
                &mut problems,
            );
        }
        let (theirs, ours) = (version(&theirs), version(&ours));
        same(
            &theirs["subresources"],
            &ours["subresources"],
            "subresources",
            &mut problems,
        );
        compare_columns(theirs, ours, &mut problems);
        for field in list(&theirs["selectableFields"]) {
            if !list(&ours["selectableFields"]).contains(field) {
                problems.push(format!("selectable field {field} is missing"));
            }
        }
        let schema = |v: &Value| v["schema"]["openAPIV3Schema"].clone();
        compare_schema(&schema(theirs), &schema(ours), "", &mut problems);

        assert!(
            problems.is_empty(),
            "our CRD does not accept all that kubernaut's does:\n{}",
            problems.join("\n")
        );
    }

    /// version is the `v1alpha1` entry of a CRD's versions.
    fn version(crd: &Value) -> &Value {
        list(&crd["spec"]["versions"])
            .iter()
            .find(|v| v["name"] == "v1alpha1")
            .unwrap_or(&Value::Null)
    }

    /// list is the array in `value`, or nothing.
    fn list(value: &Value) -> &[Value] {
        value.as_array().map_or(&[], Vec::as_slice)
    }

    /// same records a problem when two values differ.
    fn same(theirs: &Value, ours: &Value, what: &str, problems: &mut Vec<String>) {
        if theirs != ours {
            problems.push(format!("{what}: kubernaut's {theirs}, ours {ours}"));
        }
    }

    /// compare_columns checks that kubernaut's printer columns are ours too, in their order.
    fn compare_columns(theirs: &Value, ours: &Value, problems: &mut Vec<String>) {
        let key = |c: &Value| {
            json!([
                c["name"],
                c["jsonPath"],
                c["type"],
                c["format"],
                c["priority"].as_i64().unwrap_or(0)
            ])
        };
        let ours: Vec<Value> = list(&ours["additionalPrinterColumns"])
            .iter()
            .map(key)
            .collect();
        let mut last = None;
        for column in list(&theirs["additionalPrinterColumns"]).iter().map(key) {
            match ours.iter().position(|c| *c == column) {
                None => problems.push(format!("printer column {column} is missing")),
                Some(at) if last.is_some_and(|l| at < l) => {
                    problems.push(format!(
                        "printer column {column} is out of kubernaut's order"
                    ));
                }
                Some(at) => last = Some(at),
            }
        }
    }

    /// enum_values is the set of values a schema allows by `enum`, including
    /// controller-gen's `allOf: [{enum}, {enum}]`, or None when any value goes.
    fn enum_values(node: &Value) -> Option<Vec<Value>> {
        let mut allowed: Option<Vec<Value>> = node.get("enum").map(|e| list(e).to_vec());
        for part in list(&node["allOf"]) {
            if let Some(e) = part.get("enum") {
                let e = list(e);
                allowed = Some(match allowed {
                    None => e.to_vec(),
                    Some(a) => a.into_iter().filter(|v| e.contains(v)).collect(),
                });
            }
        }
        allowed
    }

    /// compare_schema walks kubernaut's schema and records, at each path, where ours
    /// lacks a field or is stricter.
    fn compare_schema(theirs: &Value, ours: &Value, path: &str, problems: &mut Vec<String>) {
        let at = if path.is_empty() { "<root>" } else { path };
        compare_node(theirs, ours, at, problems);
        // The root is kube's own struct: it always requires `spec`, which every RR
        // kubernaut writes has, and leaves out apiVersion, kind and metadata, which
        // the API server knows for every CRD without a schema.
        let implicit: &[&str] = if path.is_empty() {
            &["apiVersion", "kind", "metadata", "spec"]
        } else {
            &[]
        };
        for name in list(&ours["required"]).iter().filter_map(Value::as_str) {
            if !list(&theirs["required"]).iter().any(|r| r == name) && !implicit.contains(&name) {
                problems.push(format!("{at}: ours requires {name}"));
            }
        }
        if let Some(properties) = theirs["properties"].as_object() {
            for (name, t) in properties {
                match ours["properties"].get(name) {
                    Some(o) => compare_schema(t, o, &format!("{path}.{name}"), problems),
                    None if implicit.contains(&name.as_str()) => {}
                    None => problems.push(format!("{path}.{name}: missing in ours")),
                }
            }
        }
        for (key, suffix) in [("items", "[]"), ("additionalProperties", "{*}")] {
            if let Some(t) = theirs.get(key).filter(|t| t.is_object()) {
                match ours.get(key).filter(|o| o.is_object()) {
                    Some(o) => compare_schema(t, o, &format!("{path}{suffix}"), problems),
                    None => problems.push(format!("{at}: ours lacks {key}")),
                }
            }
        }
    }

    /// compare_node records where one schema node of ours (at `at`, its children aside)
    /// differs from kubernaut's in type, or is stricter in values, bounds, pattern, list
    /// and map handling, or CEL rules.
    fn compare_node(theirs: &Value, ours: &Value, at: &str, problems: &mut Vec<String>) {
        same_keys(&["type", "format"], theirs, ours, at, problems);
        match (enum_values(theirs), enum_values(ours)) {
            (_, None) => {}
            (None, Some(o)) => problems.push(format!("{at}: ours allows only {o:?}")),
            (Some(t), Some(o)) => {
                for value in t.iter().filter(|v| !o.contains(v)) {
                    problems.push(format!("{at}: ours lacks the value {value}"));
                }
            }
        }
        compare_bounds(theirs, ours, at, problems);
        if ours.get("pattern").is_some() && ours.get("pattern") != theirs.get("pattern") {
            problems.push(format!("{at}: ours has its own pattern"));
        }
        let lists_and_maps = [
            "x-kubernetes-list-type",
            "x-kubernetes-list-map-keys",
            "x-kubernetes-map-type",
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-int-or-string",
            "x-kubernetes-embedded-resource",
        ];
        same_keys(&lists_and_maps, theirs, ours, at, problems);
        for rule in list(&theirs["x-kubernetes-validations"]) {
            if !list(&ours["x-kubernetes-validations"]).contains(rule) {
                problems.push(format!("{at}: ours lacks the CEL rule {rule}"));
            }
        }
    }

    /// same_keys records each of `keys` whose value differs between the two nodes.
    fn same_keys(
        keys: &[&str],
        theirs: &Value,
        ours: &Value,
        at: &str,
        problems: &mut Vec<String>,
    ) {
        for key in keys {
            if theirs.get(key) != ours.get(key) {
                problems.push(format!(
                    "{at}: {key} is {:?} in kubernaut's, {:?} in ours",
                    theirs.get(key),
                    ours.get(key)
                ));
            }
        }
    }

    /// compare_bounds records each length, value, item and property bound of ours that is
    /// stricter than kubernaut's (or that kubernaut's does not have).
    fn compare_bounds(theirs: &Value, ours: &Value, at: &str, problems: &mut Vec<String>) {
        for (key, ours_may_be) in [
            ("maxLength", 1.0),
            ("maximum", 1.0),
            ("maxItems", 1.0),
            ("maxProperties", 1.0),
            ("minLength", -1.0),
            ("minimum", -1.0),
            ("minItems", -1.0),
            ("minProperties", -1.0),
        ] {
            let (t, o) = (
                theirs.get(key).and_then(Value::as_f64),
                ours.get(key).and_then(Value::as_f64),
            );
            let stricter = match (t, o) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(t), Some(o)) => (o - t) * ours_may_be < 0.0,
            };
            if stricter {
                problems.push(format!(
                    "{at}: {key} is {o:?} in ours, {t:?} in kubernaut's"
                ));
            }
        }
    }

    /// sample_theirs is a small schema with each kind of constraint the superset check reads.
    fn sample_theirs() -> Value {
        json!({
            "type": "object",
            "required": ["a"],
            "properties": {
                "a": {"type": "string", "maxLength": 10, "minLength": 2},
                "b": {"type": "string", "allOf": [{"enum": ["x", "y"]}, {"enum": ["x", "y"]}]},
                "c": {"type": "integer", "format": "int32"},
                "d": {"type": "string"},
                "e": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["k"],
                    "items": {"type": "object", "properties": {"k": {"type": "string"}}},
                },
                "f": {
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "m"}],
                },
            },
        })
    }

    /// sample_stricter is `sample_theirs` made stricter, or lacking, in each of them.
    fn sample_stricter() -> Value {
        json!({
            "type": "object",
            "required": ["a", "b"],
            "properties": {
                "a": {"type": "string", "maxLength": 5, "minLength": 3},
                "b": {"type": "string", "enum": ["x"]},
                "c": {"type": "integer", "format": "int64"},
                "d": {"type": "string", "enum": ["z"], "pattern": "^z$"},
                "e": {
                    "type": "array",
                    "items": {"type": "object", "properties": {}},
                },
                "f": {
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "other"}],
                },
            },
        })
    }

    #[test]
    fn the_superset_check_finds_what_ours_lacks() {
        let theirs = sample_theirs();
        let mut problems = Vec::new();
        compare_schema(&theirs, &theirs, "", &mut problems);
        assert_eq!(
            problems,
            Vec::<String>::new(),
            "a schema is a superset of itself"
        );

        let ours = sample_stricter();
        compare_schema(&theirs, &ours, "", &mut problems);
        let found = problems.join("\n");
        for expected in [
            "<root>: ours requires b",
            ".a: maxLength",
            ".a: minLength",
            ".b: ours lacks the value \"y\"",
            ".c: format",
            ".d: ours allows only",
            ".d: ours has its own pattern",
            ".e: x-kubernetes-list-type",
            ".e: x-kubernetes-list-map-keys",
            ".e[].k: missing in ours",
            ".f: ours lacks the CEL rule",
        ] {
            assert!(found.contains(expected), "{expected:?} not in:\n{found}");
        }
    }

    /// completion_status is a `status.completionStatus` with every field set.
    fn completion_status() -> Value {
        json!({
            "approvalNotificationSent": true,
            "failurePhase": "AIAnalysis",
            "failureReason": "analysis failed",
            "notificationRequestRefs": [reference("NotificationRequest")],
            "notificationStatus": "Sent",
            "outcome": "ManualReviewRequired",
            "requiresManualReview": true,
            "timeoutPhase": "Executing",
            "timeoutTime": "2025-01-01T00:30:00Z",
        })
    }

    /// routing_status is a `status.routingStatus` with every field set.
    fn routing_status() -> Value {
        json!({
            "blockMessage": "three failures in a row",
            "blockReason": "ConsecutiveFailures",
            "blockedUntil": "2025-01-01T02:00:00Z",
            "blockingWorkflowExecution": "we-1",
            "consecutiveFailureCount": 3,
            "deduplicatedByWE": "we-0",
            "duplicateCount": 2,
            "duplicateOf": "rr-0",
            "duplicateRefs": ["rr-2", "rr-3"],
            "nextAllowedExecution": "2025-01-01T03:00:00Z",
            "skipMessage": "recently remediated",
            "skipReason": "RecentlyRemediated",
        })
    }

    /// phase_progress is a `status.phaseProgress` with every field set.
    fn phase_progress() -> Value {
        json!({
            "aiAnalysisRef": reference("AIAnalysis"),
            "analyzingStartTime": "2025-01-01T00:05:00Z",
            "currentProcessingRef": reference("SignalProcessing"),
            "effectivenessAssessmentRef": reference("EffectivenessAssessment"),
            "executingStartTime": "2025-01-01T00:10:00Z",
            "processingStartTime": "2025-01-01T00:01:00Z",
            "remediationProcessingRef": reference("RemediationProcessing"),
            "signalProcessingRef": reference("SignalProcessing"),
            "verificationDeadline": "2025-01-01T00:40:00Z",
            "workflowExecutionRef": reference("WorkflowExecution"),
        })
    }

    /// workflow_selection is a `status.workflowSelection` with every field set.
    fn workflow_selection() -> Value {
        json!({
            "confidence": "0.97",
            "executionRef": reference("WorkflowExecution"),
            "remediationTarget": { "kind": "Node", "name": "node-1" },
            "selectedWorkflowRef": {
                "workflowId": "git-revert",
                "version": "v2",
                "executionBundle": "oci://example/bundle:v2",
                "executionBundleDigest": "sha256:00",
            },
            "signalTargetDisplay": "Pod/web-0",
            "targetDisplay": "Node/node-1",
            "workflowDisplayName": "GitRevertCommit:git-revert-v2",
        })
    }

    #[test]
    fn every_status_field_kubernaut_writes_is_read_and_kept() {
        let status = json!({
            "overallPhase": "Verifying",
            "message": "waiting for the effectiveness assessment",
            "startTime": "2025-01-01T00:00:00Z",
            "completedAt": "2025-01-01T01:00:00Z",
            "retentionExpiryTime": "2025-01-02T01:00:00Z",
            "observedGeneration": 3,
            "deduplication": { "occurrenceCount": 4 },
            "completionStatus": completion_status(),
            "routingStatus": routing_status(),
            "phaseProgress": phase_progress(),
            "workflowSelection": workflow_selection(),
            "operatorAudit": {
                "lastModifiedAt": "2025-01-01T00:20:00Z",
                "lastModifiedBy": "alice",
                "preRemediationSpecHash": "abc123",
            },
            "timeoutConfig": {
                "analyzing": "10m0s",
                "executing": "30m0s",
                "global": "1h0m0s",
                "processing": "5m0s",
            },
            "conditions": [{
                "type": "NotificationDelivered",
                "status": "True",
                "reason": "DeliverySucceeded",
                "message": "sent",
                "lastTransitionTime": "2025-01-01T00:50:00Z",
                "observedGeneration": 3,
            }],
        });
        let read: RemediationRequestStatus = serde_json::from_value(status.clone())
            .unwrap_or_else(|e| panic!("reading kubernaut's status: {e}"));
        assert_eq!(read.overall_phase.as_deref(), Some("Verifying"));
        assert_eq!(
            read.deduplication,
            Some(Deduplication {
                occurrence_count: Some(4),
                ..Deduplication::default()
            })
        );
        let written = serde_json::to_value(&read).unwrap_or_default();
        assert_eq!(written, status);
    }

    /// reference is an ObjectReference with every field set, to an object of `kind`.
    fn reference(kind: &str) -> Value {
        json!({
            "apiVersion": "kubernaut.ai/v1alpha1",
            "fieldPath": "spec",
            "kind": kind,
            "name": "x-1",
            "namespace": "kubernaut",
            "resourceVersion": "42",
            "uid": "00000000-0000-0000-0000-000000000001",
        })
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
            target_resource: TargetResource::from(&signal::TargetResource::pod("prod", "web-0")),
            firing_time: now.clone(),
            received_time: now,
            signal_labels: BTreeMap::new(),
            signal_annotations: BTreeMap::new(),
            cluster_id: None,
            provider_data: None,
            original_payload: None,
        }
    }

    #[test]
    fn signal_types_other_writers_use_are_kept() {
        let spec = serde_json::to_value(sample_spec()).unwrap_or_default();
        assert_eq!(spec["signalType"], "alert");
        let mut other = spec.clone();
        other["signalType"] = json!("prometheus-alert");
        other
            .as_object_mut()
            .map(|spec| spec.remove("signalSource"));
        let read: RemediationRequestSpec = serde_json::from_value(other.clone())
            .unwrap_or_else(|e| panic!("reading another writer's spec: {e}"));
        assert_eq!(
            read.signal_type,
            SignalType::Other("prometheus-alert".into())
        );
        assert_eq!(read.signal_source, "");
        assert_eq!(serde_json::to_value(&read).unwrap_or_default(), other);
    }

    #[test]
    fn the_spec_of_a_decoded_alert_names_its_target() {
        let body = include_str!("../tests/fixtures/alertmanager/v4-single-crashloop.json");
        let items = signal::parse_alertmanager(body.as_bytes(), &signal::ParseContext::now(None))
            .unwrap_or_default();
        let Some(signal::Item::Signal(s)) = items.first() else {
            panic!("the fixture's alert must be a signal: {items:?}");
        };
        let spec = RemediationRequestSpec::from(s);
        assert_eq!(spec.signal_fingerprint, s.fingerprint.as_str());
        assert_eq!(spec.target_resource.kind, "Pod");
    }

    /// BODY is the request body of `crash_looping`'s signal.
    const BODY: &str = r#"{"alerts":[{"labels":{"team":"web"}}]}"#;

    /// SPEC_KEYS are the fields of the spec written for `crash_looping`'s signal, in order.
    const SPEC_KEYS: [&str; 14] = [
        "clusterID",
        "firingTime",
        "originalPayload",
        "providerData",
        "receivedTime",
        "severity",
        "signalAnnotations",
        "signalFingerprint",
        "signalLabels",
        "signalName",
        "signalSource",
        "signalType",
        "targetResource",
        "targetType",
    ];

    /// at is the time `second` seconds after the Unix epoch.
    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// crash_looping is an alert's signal about Pod prod/web-0 in cluster eu-1, with every
    /// field set: it fired at `at(1_700_000_000)` and was received 100 s later.
    fn crash_looping() -> Signal {
        let target = signal::TargetResource::pod("prod", "web-0");
        Signal {
            fingerprint: Fingerprint::of(Some("eu-1"), &target),
            name: "KubePodCrashLooping".into(),
            severity: "critical".into(),
            source: Source::Alertmanager,
            target,
            labels: BTreeMap::from([("team".into(), "web".into())]),
            annotations: BTreeMap::from([("summary".into(), "Pod is crash looping.".into())]),
            firing_time: at(1_700_000_000),
            received_time: at(1_700_000_100),
            cluster_id: Some("eu-1".into()),
            provider_data: r#"{"labels":{"team":"web"},"namespace":"prod"}"#.into(),
            original_payload: Some(BODY.into()),
        }
    }

    #[test]
    fn the_spec_copies_every_field_of_the_signal() {
        let (firing, received, body) = (at(1_700_000_000), at(1_700_000_100), BODY);
        let mut signal = crash_looping();
        let spec = RemediationRequestSpec::from(&signal);
        // printf 'eu-1:prod:Pod:web-0' | sha256sum
        assert_eq!(
            spec.signal_fingerprint,
            "695282e3b5fc66c24daa6ea0e3d63e5033556b4433090e2bef0e1c76377f03bb"
        );
        assert_eq!(spec.signal_name, "KubePodCrashLooping");
        assert_eq!(spec.severity, "critical");
        assert_eq!(spec.signal_type, SignalType::Alert);
        assert_eq!(spec.target_type, TargetType::Kubernetes);
        assert_eq!(spec.signal_source, "prometheus", "kubernaut's value");
        assert_eq!(
            spec.target_resource,
            TargetResource {
                kind: "Pod".into(),
                name: "web-0".into(),
                namespace: "prod".into(),
                api_version: "v1".into(),
            }
        );
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
        assert_eq!(spec.cluster_id.as_deref(), Some("eu-1"));
        assert_eq!(
            spec.provider_data.as_deref(),
            Some(r#"{"labels":{"team":"web"},"namespace":"prod"}"#)
        );
        assert_eq!(spec.original_payload.as_deref(), Some(body));
        let json = serde_json::to_value(&spec).unwrap_or_default();
        assert_eq!(json["targetType"], "kubernetes");
        assert_eq!(json["signalType"], "alert");
        assert_eq!(json["clusterID"], "eu-1");
        assert_eq!(json["firingTime"], "2023-11-14T22:13:20Z");
        assert_eq!(json["targetResource"]["apiVersion"], "v1");
        let written: Vec<&str> = json
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(written, SPEC_KEYS);

        // An Event is an `alert` from `kubernetes-events`, as kubernaut writes it; the local
        // cluster and a payload over the bound are left out.
        signal.source = Source::KubernetesEvent;
        signal.cluster_id = None;
        signal.original_payload = None;
        let json = serde_json::to_value(RemediationRequestSpec::from(&signal)).unwrap_or_default();
        assert_eq!(json["signalType"], "alert");
        assert_eq!(json["signalSource"], "kubernetes-events");
        assert!(json.get("clusterID").is_none() && json.get("originalPayload").is_none());
    }
}

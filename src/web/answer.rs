//! Answer renders the success body: `results[]` (one entry per alert or event) and a
//! `summary`, and for a request that carried one signal, kubernaut's Gateway's top-level
//! fields too (`status`, `message`, `fingerprint`, `duplicate`, `remediationRequestName`,
//! `remediationRequestNamespace`, a duplicate's `metadata`, a refusal's `rejection`), so that
//! tools written for kubernaut read our answers unchanged.

use serde_json::{Map, Value, json};

use super::{SignalResult, Status};

/// body is the JSON answer for `results`.
pub(super) fn body(results: &[SignalResult]) -> Value {
    let mut body = Map::new();
    if let [one] = results {
        body = single(one);
    }
    body.insert("results".into(), json!(results));
    body.insert("summary".into(), summary(results));
    Value::Object(body)
}

/// single is kubernaut's answer for one signal.
fn single(r: &SignalResult) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("status".into(), json!(r.status));
    m.insert("message".into(), json!(message(r)));
    m.insert(
        "fingerprint".into(),
        json!(r.fingerprint.as_deref().unwrap_or_default()),
    );
    m.insert("duplicate".into(), json!(r.status == Status::Duplicate));
    if let Some((namespace, name)) = r
        .remediation_request
        .as_deref()
        .and_then(|rr| rr.split_once('/'))
    {
        m.insert("remediationRequestName".into(), json!(name));
        m.insert("remediationRequestNamespace".into(), json!(namespace));
        if r.status == Status::Duplicate {
            let (first, last) = r.seen.unzip();
            m.insert(
                "metadata".into(),
                json!({
                    "count": r.occurrence_count,
                    "remediationRequestRef": format!("{namespace}/{name}"),
                    "firstOccurrence": first.map(|t| t.to_string()),
                    "lastOccurrence": last.map(|t| t.to_string()),
                }),
            );
        }
    }
    if let Some(rejection) = &r.rejection {
        m.insert("rejection".into(), json!(rejection));
    }
    m
}

/// message is kubernaut's sentence for each outcome.
fn message(r: &SignalResult) -> String {
    match (r.status, &r.rejection) {
        (Status::Created, _) => "RemediationRequest CRD created successfully".into(),
        (Status::Duplicate, _) => "Duplicate signal (K8s status-based deduplication)".into(),
        (_, Some(rejection)) if rejection.reason == "unmanaged_resource" => format!(
            "Signal rejected: resource {} is not managed by Kubernaut",
            rejection.resource.as_deref().unwrap_or_default()
        ),
        _ => r.reason.clone().unwrap_or_default(),
    }
}

/// summary counts the results by outcome (kubernaut's 207 `summary`, with `ignored`).
fn summary(results: &[SignalResult]) -> Value {
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    json!({
        "total": results.len(),
        "created": count(Status::Created),
        "deduplicated": count(Status::Duplicate),
        "rejected": count(Status::Rejected),
        "failed": count(Status::Failed),
        "ignored": count(Status::Ignored),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::RejectionBody;

    fn result(status: Status) -> SignalResult {
        SignalResult {
            status,
            fingerprint: Some("f".repeat(64)),
            remediation_request: Some("kubernaut-system/rr-f-1".into()),
            occurrence_count: Some(3),
            reason: None,
            rejection: None,
            seen: Some((
                jiff::Timestamp::UNIX_EPOCH,
                jiff::Timestamp::from_second(60).unwrap_or_default(),
            )),
        }
    }

    #[test]
    fn one_duplicate_is_answered_as_kubernaut_answers_it() {
        let b = body(&[result(Status::Duplicate)]);
        assert_eq!(b["status"], "duplicate");
        assert_eq!(b["duplicate"], true);
        assert_eq!(b["fingerprint"], "f".repeat(64));
        assert_eq!(b["remediationRequestName"], "rr-f-1");
        assert_eq!(b["remediationRequestNamespace"], "kubernaut-system");
        assert_eq!(b["metadata"]["count"], 3);
        assert_eq!(
            b["metadata"]["remediationRequestRef"],
            "kubernaut-system/rr-f-1"
        );
        assert_eq!(b["metadata"]["firstOccurrence"], "1970-01-01T00:00:00Z");
        assert_eq!(b["metadata"]["lastOccurrence"], "1970-01-01T00:01:00Z");
        assert_eq!(
            b["message"],
            "Duplicate signal (K8s status-based deduplication)"
        );
        assert_eq!(b["results"][0]["status"], "duplicate");
        assert_eq!(b["summary"]["deduplicated"], 1);
    }

    #[test]
    fn one_created_signal_carries_the_rr_and_no_metadata() {
        let b = body(&[result(Status::Created)]);
        assert_eq!(b["status"], "created");
        assert_eq!(b["duplicate"], false);
        assert_eq!(b["message"], "RemediationRequest CRD created successfully");
        assert!(b.get("metadata").is_none());
    }

    #[test]
    fn an_unmanaged_signal_names_its_resource() {
        let mut r = result(Status::Rejected);
        r.remediation_request = None;
        r.rejection = Some(RejectionBody {
            status: "rejected",
            reason: "unmanaged_resource",
            message: "Resource prod:Deployment:web is not in Kubernaut's management scope".into(),
            resource: Some("prod:Deployment:web".into()),
            action: "label it".into(),
        });
        let b = body(&[r]);
        assert_eq!(
            b["message"],
            "Signal rejected: resource prod:Deployment:web is not managed by Kubernaut"
        );
        assert_eq!(b["rejection"]["reason"], "unmanaged_resource");
        assert!(b.get("remediationRequestName").is_none());
    }

    #[test]
    fn several_signals_keep_only_results_and_a_summary() {
        let b = body(&[
            result(Status::Created),
            result(Status::Duplicate),
            result(Status::Ignored),
        ]);
        assert!(b.get("status").is_none() && b.get("fingerprint").is_none());
        assert_eq!(
            b["summary"],
            json!({"total": 3, "created": 1, "deduplicated": 1, "rejected": 0, "failed": 0, "ignored": 1})
        );
    }
}

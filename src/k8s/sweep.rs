//! Sweep deletes fence records that no longer fence anything, so that Leases do not pile
//! up for fingerprints that never recur.
//!
//! It lists only the records labelled with its own RR namespace (`record::RR_NAMESPACE`):
//! releases that share a lock namespace never judge each other's records.
//! A record may go when nobody holds it (or the holder's lease expired), its last write is
//! older than `min_age` on the API server's clock, and the RR it names does not exist. The
//! delete carries the record's uid and resourceVersion, so a writer that claimed it after
//! the sweep read it keeps it. A writer claims only with a view it read, and a record
//! deleted and re-created starts again at generation 1; `min_age` (an hour in the server)
//! is the bound on how long a paused writer may sit between its claim and its create.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ListMeta, ManagedFieldsEntry, ObjectMeta, Time,
};
use kube::{
    Resource,
    api::{DeleteParams, ListParams, Preconditions},
};
use serde::Deserialize;

use super::{
    MANAGED_BY,
    calls::{ApiCalls, KubeError, Op, code},
    clock,
    record::{REMEDIATION_REQUEST, RR_NAMESPACE, Records},
    rrs::RemediationRequests,
};
use crate::crd::RemediationRequest;

/// PAGE is the page size of the sweep's lists.
const PAGE: u32 = 500;

/// sweep deletes the records of `records` that fence nothing, and returns how many.
pub async fn sweep(
    records: &Records,
    rrs: &RemediationRequests,
    min_age: Duration,
    calls: &ApiCalls,
) -> Result<usize, KubeError> {
    let existing = rr_names(rrs, records.client.clone(), calls).await?;
    let url = Lease::url_path(&(), Some(&records.namespace));
    // Only this release's records: another release may share the lock namespace, and its
    // records name RRs this sweep cannot see.
    let selector = format!(
        "{}={},{RR_NAMESPACE}={}",
        MANAGED_BY.0,
        MANAGED_BY.1,
        records.rr_namespace()
    );
    let mut lp = ListParams::default().labels(&selector).limit(PAGE);
    let mut removed = 0;
    loop {
        let req = kube::core::Request::new(&url)
            .list(&lp)
            .map_err(|e| Op::ListLeases.failed("", kube::Error::BuildRequest(e)))?;
        // Each page is judged on the server's clock of its own answer: the deletes carry
        // the resourceVersion read, so a record written since then is kept.
        let (page, now) =
            clock::get_dated::<Page<Swept>>(&records.client, req, Op::ListLeases, "", calls)
                .await?;
        let page = page.unwrap_or_default();
        for lease in page.items.into_iter().flatten().map(Lease::from) {
            removed += remove_if_unused(records, &lease, now, min_age, &existing, calls).await?;
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(removed),
        }
    }
}

/// remove_if_unused deletes one record that nobody holds, that was last written at least
/// `min_age` ago and whose RR does not exist; it returns 1 when it deleted it.
async fn remove_if_unused(
    records: &Records,
    lease: &Lease,
    now: jiff::Timestamp,
    min_age: Duration,
    existing: &HashSet<String>,
    calls: &ApiCalls,
) -> Result<usize, KubeError> {
    let held = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .is_some_and(|h| !h.is_empty())
        && !clock::is_expired(lease, now, records.duration);
    let old = clock::age(lease, now).is_some_and(|age| age >= min_age);
    let names_existing = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REMEDIATION_REQUEST))
        .is_some_and(|rr| existing.contains(rr));
    if held || !old || names_existing {
        return Ok(0);
    }
    let name = lease.metadata.name.clone().unwrap_or_default();
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: lease.metadata.uid.clone(),
            resource_version: lease.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match calls
        .run(Op::DeleteLease, &name, records.api.delete(&name, &dp))
        .await?
    {
        Ok(_) => Ok(1),
        Err(e) if matches!(code(&e), Some(404 | 409)) => Ok(0),
        Err(e) => Err(Op::DeleteLease.failed(&name, e)),
    }
}

/// rr_names lists the names of every RR in the namespace, page by page, metadata only, and
/// decodes nothing but the names.
async fn rr_names(
    rrs: &RemediationRequests,
    client: kube::Client,
    calls: &ApiCalls,
) -> Result<HashSet<String>, KubeError> {
    let url = RemediationRequest::url_path(&(), Some(rrs.namespace()));
    let mut names = HashSet::new();
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let req = kube::core::Request::new(&url)
            .list_metadata(&lp)
            .map_err(|e| Op::ListRrs.failed("", kube::Error::BuildRequest(e)))?;
        let page: Page<Named> = calls
            .read(Op::ListRrs, "", || client.request(req.clone()))
            .await?
            .map_err(|e| Op::ListRrs.failed("", e))?;
        names.extend(
            page.items
                .into_iter()
                .flatten()
                .filter_map(|n| n.metadata.name),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(names),
        }
    }
}

/// Page is one page of a list, decoded into the slim item type the sweep needs. Lists are
/// decoded slim because every object carries its managed fields, a tree per writer that the
/// sweep never reads: decoded whole, a page of 500 RRs took about 10 MiB.
#[derive(Deserialize)]
struct Page<T> {
    /// items is null in an empty list.
    items: Option<Vec<T>>,
    #[serde(default)]
    metadata: ListMeta,
}

impl<T> Default for Page<T> {
    fn default() -> Page<T> {
        Page {
            items: None,
            metadata: ListMeta::default(),
        }
    }
}

/// Named is a listed object's name, and nothing else of it.
#[derive(Deserialize)]
struct Named {
    metadata: Name,
}

#[derive(Deserialize)]
struct Name {
    name: Option<String>,
}

/// Swept is what the sweep reads of a record: its identity, its annotations, its spec and
/// the times of its writes (`clock::age`), without the managed fields' trees.
#[derive(Deserialize)]
struct Swept {
    metadata: SweptMeta,
    spec: Option<LeaseSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SweptMeta {
    name: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    annotations: Option<BTreeMap<String, String>>,
    managed_fields: Option<Vec<WriteTime>>,
}

#[derive(Deserialize)]
struct WriteTime {
    time: Option<Time>,
}

impl From<Swept> for Lease {
    fn from(s: Swept) -> Lease {
        let m = s.metadata;
        let writes = m.managed_fields.unwrap_or_default().into_iter();
        Lease {
            metadata: ObjectMeta {
                name: m.name,
                uid: m.uid,
                resource_version: m.resource_version,
                creation_timestamp: m.creation_timestamp,
                annotations: m.annotations,
                managed_fields: Some(
                    writes
                        .map(|w| ManagedFieldsEntry {
                            time: w.time,
                            ..ManagedFieldsEntry::default()
                        })
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: s.spec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ObjectList;

    /// A record as the API server lists it: the managed fields carry a tree per write.
    const LISTED: &str = r#"{
      "metadata": {"continue": "next"},
      "items": [{
        "metadata": {
          "name": "sg-abc", "namespace": "signal-gateway", "uid": "u-1",
          "resourceVersion": "42", "creationTimestamp": "2026-01-01T00:00:00Z",
          "labels": {"app.kubernetes.io/managed-by": "signal-gateway"},
          "annotations": {"signal-gateway.kubernaut.ai/remediation-request": "rr-abc-1"},
          "managedFields": [
            {"manager": "signal-gateway", "operation": "Update", "time": "2026-01-01T00:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:holderIdentity": {}}}},
            {"manager": "signal-gateway", "operation": "Update", "time": "2026-01-01T00:05:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {}}}}
          ]
        },
        "spec": {"holderIdentity": "gw-0", "leaseDurationSeconds": 15}
      }]
    }"#;

    #[test]
    fn a_slim_record_judges_as_the_whole_one() {
        let slim: Page<Swept> = serde_json::from_str(LISTED).unwrap();
        assert_eq!(slim.metadata.continue_.as_deref(), Some("next"));
        let whole: ObjectList<Lease> = serde_json::from_str(LISTED).unwrap();
        let (slim, whole) = (
            Lease::from(slim.items.into_iter().flatten().next().unwrap()),
            &whole.items[0],
        );
        let now: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        assert_eq!(clock::age(&slim, now), clock::age(whole, now));
        assert_eq!(clock::age(&slim, now), Some(Duration::from_secs(55 * 60)));
        let ttl = Duration::from_secs(15);
        assert_eq!(
            clock::is_expired(&slim, now, ttl),
            clock::is_expired(whole, now, ttl)
        );
        assert_eq!(slim.spec, whole.spec);
        assert_eq!(slim.metadata.annotations, whole.metadata.annotations);
        for (a, b) in [
            (&slim.metadata.name, &whole.metadata.name),
            (&slim.metadata.uid, &whole.metadata.uid),
            (
                &slim.metadata.resource_version,
                &whole.metadata.resource_version,
            ),
        ] {
            assert_eq!(a, b);
        }
    }

    #[test]
    fn a_name_page_keeps_only_names_and_the_continue_token() {
        let page: Page<Named> = serde_json::from_str(
            r#"{"metadata": {}, "items": [{"metadata": {"name": "rr-1", "managedFields": [{"fieldsV1": {"f:spec": {}}}]}}, {"metadata": {}}]}"#,
        )
        .unwrap();
        let names: Vec<_> = page
            .items
            .into_iter()
            .flatten()
            .map(|n| n.metadata.name)
            .collect();
        assert_eq!(names, [Some("rr-1".to_owned()), None]);
        assert_eq!(page.metadata.continue_, None);
        let empty: Page<Named> =
            serde_json::from_str(r#"{"metadata": {}, "items": null}"#).unwrap();
        assert_eq!(empty.items.into_iter().flatten().count(), 0);
    }
}

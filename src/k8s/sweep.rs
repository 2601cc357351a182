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

use std::{collections::HashSet, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Resource as _,
    api::{DeleteParams, ListParams, Preconditions},
    core::{ObjectList, PartialObjectMeta},
};

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
    let lp = ListParams::default().labels(&format!(
        "{}={},{RR_NAMESPACE}={}",
        MANAGED_BY.0,
        MANAGED_BY.1,
        records.rr_namespace()
    ));
    let req = kube::core::Request::new(url)
        .list(&lp)
        .map_err(|e| Op::ListLeases.failed("", kube::Error::BuildRequest(e)))?;
    let (list, now) =
        clock::get_dated::<ObjectList<Lease>>(&records.client, req, Op::ListLeases, "", calls)
            .await?;
    let mut removed = 0;
    for lease in list.map(|l| l.items).unwrap_or_default() {
        let held = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| !h.is_empty())
            && !clock::is_expired(&lease, now, records.duration);
        let old = clock::age(&lease, now).is_some_and(|age| age >= min_age);
        let names_existing = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REMEDIATION_REQUEST))
            .is_some_and(|rr| existing.contains(rr));
        if held || !old || names_existing {
            continue;
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
            Ok(_) => removed += 1,
            Err(e) if matches!(code(&e), Some(404 | 409)) => {}
            Err(e) => return Err(Op::DeleteLease.failed(&name, e)),
        }
    }
    Ok(removed)
}

/// rr_names lists the names of every RR in the namespace, page by page, metadata only.
async fn rr_names(
    rrs: &RemediationRequests,
    client: kube::Client,
    calls: &ApiCalls,
) -> Result<HashSet<String>, KubeError> {
    let api: Api<RemediationRequest> = Api::namespaced(client, rrs.namespace());
    let mut names = HashSet::new();
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let page: ObjectList<PartialObjectMeta<RemediationRequest>> = calls
            .read(Op::ListRrs, "", || api.list_metadata(&lp))
            .await?
            .map_err(|e| Op::ListRrs.failed("", e))?;
        names.extend(page.items.into_iter().filter_map(|m| m.metadata.name));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(names),
        }
    }
}

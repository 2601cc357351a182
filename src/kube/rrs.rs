//! Rrs reads, creates and counts RemediationRequests, one object at a time by name: no
//! request here grows with the number of RRs in the namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{
    FIELD_MANAGER,
    calls::{ApiCalls, KubeError, backoff, code},
};
use crate::crd::{Deduplication, RemediationRequest};

/// MAX_COUNT is the largest occurrenceCount the CRD stores (int32): the count written
/// and the count answered stop there alike.
const MAX_COUNT: i64 = i32::MAX as i64;

/// MAX_STATUS_ATTEMPTS bounds the status writes of one count that lose to concurrent writers.
const MAX_STATUS_ATTEMPTS: u32 = 10;

/// Counted is the outcome of adding occurrences to an RR.
#[derive(Debug)]
pub enum Counted {
    /// The count now includes the signals: `occurrence_count` is the new total.
    Yes { occurrence_count: i64 },
    /// The RR turned terminal before the write: the signals belong to a new RR.
    Terminal,
    /// The RR is gone (deleted, or it was never there).
    Missing,
    /// Every attempt lost to a concurrent writer.
    Contended,
}

/// Rrs is the RemediationRequest client of the gateway's namespace.
#[derive(Clone)]
pub struct Rrs {
    api: Api<RemediationRequest>,
    namespace: String,
}

impl Rrs {
    /// new builds the client for `namespace`.
    #[must_use]
    pub fn new(client: kube::Client, namespace: &str) -> Rrs {
        Rrs {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// namespace is where the RRs live.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// get reads one RR by name, consistently (never from the API server's cache).
    pub async fn get(
        &self,
        name: &str,
        calls: &ApiCalls,
    ) -> Result<Option<RemediationRequest>, KubeError> {
        calls
            .read("reading remediationrequest", name, || {
                self.api.get_opt(name)
            })
            .await?
            .map_err(|e| KubeError::failed("reading remediationrequest", name, e))
    }

    /// create creates `rr`; None means an RR of that name already exists.
    pub async fn create(
        &self,
        rr: &RemediationRequest,
        calls: &ApiCalls,
    ) -> Result<Option<RemediationRequest>, KubeError> {
        let name = rr.metadata.name.as_deref().unwrap_or_default();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match calls
            .run(
                "creating remediationrequest",
                name,
                self.api.create(&pp, rr),
            )
            .await?
        {
            Ok(created) => Ok(Some(created)),
            Err(e) if code(&e) == Some(409) => Ok(None),
            Err(e) => Err(KubeError::failed("creating remediationrequest", name, e)),
        }
    }

    /// add_occurrences adds `k` to the RR's count with a status patch carrying the
    /// resourceVersion it read, so that no concurrent increment is lost; on conflict
    /// it re-reads and tries again, at most `MAX_STATUS_ATTEMPTS` times.
    pub async fn add_occurrences(
        &self,
        mut rr: RemediationRequest,
        k: i64,
        calls: &ApiCalls,
    ) -> Result<Counted, KubeError> {
        let name = rr.metadata.name.clone().unwrap_or_default();
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        for attempt in 0..MAX_STATUS_ATTEMPTS {
            if !rr.is_active() {
                return Ok(Counted::Terminal);
            }
            let now = Time(jiff::Timestamp::now());
            let dedup = match rr.status.as_ref().and_then(|s| s.deduplication.as_ref()) {
                Some(d) => Deduplication {
                    first_seen_at: d.first_seen_at.clone(),
                    last_seen_at: now,
                    occurrence_count: d.occurrence_count.saturating_add(k).min(MAX_COUNT),
                },
                None => Deduplication {
                    first_seen_at: now.clone(),
                    last_seen_at: now,
                    occurrence_count: k.min(MAX_COUNT),
                },
            };
            let occurrence_count = dedup.occurrence_count;
            let patch = json!({
                "metadata": { "resourceVersion": rr.metadata.resource_version },
                "status": { "deduplication": dedup },
            });
            let sent = calls
                .run(
                    "updating remediationrequest status",
                    &name,
                    self.api.patch_status(&name, &pp, &Patch::Merge(&patch)),
                )
                .await?;
            match sent {
                Ok(_) => return Ok(Counted::Yes { occurrence_count }),
                Err(e) if code(&e) == Some(409) => {
                    tokio::time::sleep(backoff(attempt, std::time::Duration::from_millis(5))).await;
                    match self.get(&name, calls).await? {
                        Some(fresh) => rr = fresh,
                        None => return Ok(Counted::Missing),
                    }
                }
                Err(e) if code(&e) == Some(404) => return Ok(Counted::Missing),
                Err(e) => {
                    return Err(KubeError::failed(
                        "updating remediationrequest status",
                        &name,
                        e,
                    ));
                }
            }
        }
        Ok(Counted::Contended)
    }
}

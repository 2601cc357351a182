//! RemediationRequests reads, creates and counts RemediationRequests, one object at a time by name: no
//! request here grows with the number of RRs in the namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{
    Api, Resource as _,
    api::{Patch, PatchParams, PostParams},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    FIELD_MANAGER,
    calls::{ApiCalls, KubeError, Op, backoff, code},
    clock,
};
#[cfg(test)]
use crate::crd::TERMINAL_PHASES;
use crate::crd::{Deduplication, RemediationRequest, holds};

/// CREATE_RR names the create of an RR: the one call whose refusal refuses the signal.
pub const CREATE_RR: &str = Op::CreateRr.words();

/// MAX_COUNT is the largest occurrenceCount the CRD stores (int32): the count written
/// and the count answered stop there alike.
const MAX_COUNT: i64 = i32::MAX as i64;

/// MAX_STATUS_ATTEMPTS bounds the status writes of one count that lose to concurrent writers.
const MAX_STATUS_ATTEMPTS: u32 = 10;

/// Counted is the outcome of adding occurrences to an RR.
#[derive(Debug)]
pub enum Counted {
    /// The count now includes the signals.
    Yes(Tally),
    /// The RR no longer holds its problem (`holds`): the signals belong to a new RR.
    Released,
    /// The RR is gone (deleted, or it was never there).
    Missing,
    /// Every attempt lost to a concurrent writer.
    Contended,
}

/// Tally is an RR's deduplication status as a count left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    /// occurrence_count is the new total.
    pub occurrence_count: i64,
    pub first_seen: jiff::Timestamp,
    pub last_seen: jiff::Timestamp,
}

/// Rr is what the writer knows of one RR: read leniently, so that an RR another writer
/// made (kubernaut's own Gateway, a person) is counted on, never refused.
#[derive(Clone, Debug)]
pub struct Rr {
    pub name: String,
    resource_version: Option<String>,
    status: Status,
    /// server_now is the API server's clock when this was read.
    server_now: jiff::Timestamp,
    /// own says this batch created the RR: it is counted on even if it no longer holds.
    own: bool,
}

/// Status is the part of an RR's status the writer reads; every field is optional and
/// unknown fields are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    overall_phase: Option<String>,
    completion_status: Option<CompletionStatus>,
    routing_status: Option<RoutingStatus>,
    deduplication: Option<Dedup>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct CompletionStatus {
    outcome: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoutingStatus {
    next_allowed_execution: Option<Time>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dedup {
    first_seen_at: Option<Time>,
    occurrence_count: Option<i64>,
}

/// ReadList is the wire form of a list of RRs.
#[derive(Deserialize)]
struct ReadList {
    #[serde(default)]
    items: Vec<Read>,
}

/// Read is the wire form of an RR as `Rr` reads it.
#[derive(Deserialize)]
struct Read {
    metadata: ObjectMeta,
    #[serde(default)]
    status: Option<Status>,
}

impl Rr {
    fn from_read(read: Read, server_now: jiff::Timestamp) -> Rr {
        Rr {
            name: read.metadata.name.unwrap_or_default(),
            resource_version: read.metadata.resource_version,
            status: read.status.unwrap_or_default(),
            server_now,
            own: false,
        }
    }

    /// holds reports whether this RR still holds its problem (`holds`).
    #[must_use]
    pub fn holds(&self) -> bool {
        let s = &self.status;
        holds(
            s.overall_phase.as_deref(),
            s.completion_status
                .as_ref()
                .and_then(|c| c.outcome.as_deref()),
            s.routing_status
                .as_ref()
                .and_then(|r| r.next_allowed_execution.as_ref())
                .map(|t| t.0),
            self.server_now,
        )
    }

    /// occurrence_count is the number of signals counted on this RR so far.
    #[must_use]
    pub fn occurrence_count(&self) -> i64 {
        self.status
            .deduplication
            .as_ref()
            .and_then(|d| d.occurrence_count)
            .unwrap_or(0)
    }
}

/// RemediationRequests is the RemediationRequest client of the gateway's namespace.
#[derive(Clone)]
pub struct RemediationRequests {
    client: kube::Client,
    api: Api<RemediationRequest>,
    namespace: String,
}

impl RemediationRequests {
    /// new builds the client for `namespace`.
    #[must_use]
    pub fn new(client: kube::Client, namespace: &str) -> RemediationRequests {
        RemediationRequests {
            api: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_owned(),
        }
    }

    /// namespace is where the RRs live.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// get reads one RR by name, consistently (never from the API server's cache), with the
    /// API server's clock at the answer.
    pub async fn get(&self, name: &str, calls: &ApiCalls) -> Result<Option<Rr>, KubeError> {
        let op = Op::ReadRr;
        let url = RemediationRequest::url_path(&(), Some(&self.namespace));
        let req = kube::core::Request::new(url)
            .get(name, &Default::default())
            .map_err(|e| op.failed(name, kube::Error::BuildRequest(e)))?;
        let (read, now) = clock::get_dated::<Read>(&self.client, req, op, name, calls).await?;
        Ok(read.map(|r| Rr::from_read(r, now)))
    }

    /// find lists the RRs of fingerprint `fp` (a consistent read, selected by the
    /// `spec.signalFingerprint` field, whoever made them). It runs only when the
    /// fingerprint's fence record is missing: once per new fingerprint, never per signal.
    pub async fn find(&self, fp: &str, calls: &ApiCalls) -> Result<Vec<Rr>, KubeError> {
        let op = Op::ListRrs;
        let url = RemediationRequest::url_path(&(), Some(&self.namespace));
        let lp = kube::api::ListParams::default().fields(&format!("spec.signalFingerprint={fp}"));
        let req = kube::core::Request::new(url)
            .list(&lp)
            .map_err(|e| op.failed(fp, kube::Error::BuildRequest(e)))?;
        let (list, now) = clock::get_dated::<ReadList>(&self.client, req, op, fp, calls).await?;
        Ok(list
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .map(|r| Rr::from_read(r, now))
            .collect())
    }

    /// create creates `rr`; None means an RR of that name already exists.
    pub async fn create(
        &self,
        rr: &RemediationRequest,
        calls: &ApiCalls,
    ) -> Result<Option<Rr>, KubeError> {
        let name = rr.metadata.name.as_deref().unwrap_or_default();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match calls
            .run(Op::CreateRr, name, self.api.create(&pp, rr))
            .await?
        {
            // A new RR has no status, so it holds whatever the clock says.
            Ok(created) => Ok(Some(Rr {
                name: created.metadata.name.clone().unwrap_or_default(),
                resource_version: created.metadata.resource_version.clone(),
                status: Status::default(),
                server_now: created
                    .metadata
                    .creation_timestamp
                    .map_or_else(jiff::Timestamp::now, |t| t.0),
                own: true,
            })),
            Err(e) if code(&e) == Some(409) => Ok(None),
            Err(e) => Err(Op::CreateRr.failed(name, e)),
        }
    }

    /// add_occurrences adds `k` to the RR's count with a status patch carrying the
    /// resourceVersion it read, so that no concurrent increment is lost; on conflict
    /// it re-reads and tries again, at most `MAX_STATUS_ATTEMPTS` times. The patch sets
    /// only `status.deduplication`: every other field is left as it was. An RR that no
    /// longer holds its problem is not counted on (`Counted::Released`), unless this batch
    /// created it: an orchestrator that ends a new RR at once still sees the signals that
    /// opened it counted, and the batch never opens a second RR.
    pub async fn add_occurrences(
        &self,
        mut rr: Rr,
        k: i64,
        calls: &ApiCalls,
    ) -> Result<Counted, KubeError> {
        let name = rr.name.clone();
        let own = rr.own;
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        for attempt in 0..MAX_STATUS_ATTEMPTS {
            if !own && !rr.holds() {
                return Ok(Counted::Released);
            }
            let now = jiff::Timestamp::now();
            let seen = rr.status.deduplication.as_ref();
            let tally = Tally {
                occurrence_count: rr.occurrence_count().saturating_add(k).min(MAX_COUNT),
                first_seen: seen
                    .and_then(|d| d.first_seen_at.as_ref())
                    .map_or(now, |t| t.0),
                last_seen: now,
            };
            let dedup = Deduplication {
                first_seen_at: Some(Time(tally.first_seen)),
                last_seen_at: Some(Time(now)),
                occurrence_count: Some(tally.occurrence_count),
            };
            let patch = json!({
                "metadata": { "resourceVersion": rr.resource_version },
                "status": { "deduplication": dedup },
            });
            let sent = calls
                .run(
                    Op::UpdateRrStatus,
                    &name,
                    self.api.patch_status(&name, &pp, &Patch::Merge(&patch)),
                )
                .await?;
            match sent {
                Ok(_) => return Ok(Counted::Yes(tally)),
                Err(e) if code(&e) == Some(409) => {
                    tokio::time::sleep(backoff(attempt, std::time::Duration::from_millis(5))).await;
                    match self.get(&name, calls).await? {
                        Some(fresh) => rr = fresh,
                        None => return Ok(Counted::Missing),
                    }
                }
                Err(e) if code(&e) == Some(404) => return Ok(Counted::Missing),
                Err(e) => return Err(Op::UpdateRrStatus.failed(&name, e)),
            }
        }
        Ok(Counted::Contended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn active_phases_hold_and_terminal_ones_release() {
        let now = at(1000);
        for phase in [
            None,
            Some(""),
            Some("Pending"),
            Some("Verifying"),
            Some("Blocked"),
        ] {
            assert!(holds(phase, None, None, now), "{phase:?} holds");
        }
        for phase in TERMINAL_PHASES {
            assert!(!holds(Some(phase), None, None, now), "{phase} releases");
            assert!(
                holds(Some(phase), Some("ManualReviewRequired"), None, now),
                "{phase} with ManualReviewRequired holds"
            );
            assert!(!holds(Some(phase), Some("Remediated"), None, now));
        }
    }

    #[test]
    fn a_backoff_holds_until_the_servers_clock_passes_it() {
        let until = Some(at(1000));
        assert!(holds(Some("Failed"), None, until, at(999)));
        assert!(
            !holds(Some("Failed"), None, until, at(1000)),
            "strictly before"
        );
        assert!(!holds(
            Some("Completed"),
            Some("NoActionRequired"),
            until,
            at(1001)
        ));
    }

    #[test]
    fn reads_are_lenient() {
        let minimal: Read = serde_json::from_value(json!({
            "metadata": {"name": "rr-x-1", "resourceVersion": "7"},
            "spec": {"signalType": "custom-adapter"},
            "status": {"deduplication": {"occurrenceCount": 3}, "someNewField": [1]},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let rr = Rr::from_read(minimal, at(0));
        assert_eq!((rr.name.as_str(), rr.occurrence_count()), ("rr-x-1", 3));
        assert!(rr.holds());
        let held: Read = serde_json::from_value(json!({
            "metadata": {"name": "rr-x-2"},
            "status": {"overallPhase": "Failed",
                       "routingStatus": {"nextAllowedExecution": "1970-01-01T00:16:40Z"}},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(Rr::from_read(held, at(999)).holds());
        let bare: Read =
            serde_json::from_value(json!({"metadata": {}})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Rr::from_read(bare, at(0)).occurrence_count(), 0);
    }
}

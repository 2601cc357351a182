//! Record is the durable fence of one fingerprint, and its lock: the Lease `sg-<fingerprint>`.
//!
//! Its annotations name the generation of the fingerprint's current RR and that RR's name;
//! its `holderIdentity` is the lock, judged expired on the API server's clock (`clock`).
//! Every write is a compare-and-swap on the resourceVersion of a view. A claim whose RR
//! exists ends without a write; only a claim that produced no RR is released. The steps
//! here carry the names of the model's (`pipeline::model`, `Pc`).
//! The protocol: docs/protocol.md.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::{
    Api, Resource as _,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::telemetry::{self, kv};

use super::{
    FIELD_MANAGER, MANAGED_BY,
    calls::{ApiCalls, KubeError, Op, backoff, code},
    clock,
    rrs::RemediationRequests,
};

/// GENERATION annotates the record with the generation of the fingerprint's current RR.
pub const GENERATION: &str = "signal-gateway.kubernaut.ai/generation";
/// RR_NAMESPACE labels a record with the namespace of the RRs it fences, so that a sweep
/// touches only its own records when several releases share a lock namespace.
pub const RR_NAMESPACE: &str = "signal-gateway.kubernaut.ai/rr-namespace";
/// REMEDIATION_REQUEST annotates the record with the name of that RR.
pub const REMEDIATION_REQUEST: &str = "signal-gateway.kubernaut.ai/remediation-request";

/// View is what a writer knows of one record; it may be stale, and every write made from
/// it is a compare-and-swap against the resourceVersion it was read at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// resource_version is None when no record exists.
    resource_version: Option<String>,
    /// generation of the current RR; 0 before the first.
    pub generation: u64,
    /// rr is the name of the current RR.
    pub rr: Option<String>,
    holder: Option<String>,
    /// holder_expired is the holder's lease expiry, judged on the server's clock at the read.
    holder_expired: bool,
    transitions: i32,
}

impl View {
    /// discovered is this view (of a missing record, or of one that names no RR it can
    /// trust) with what the RRs that exist say: `generation` is the highest fenced one
    /// found, `rr` the RR to read first (the one that holds the problem, else that highest
    /// one). Claims made from it create the record, or repair it by compare-and-swap.
    #[must_use]
    pub fn discovered(self, generation: u64, rr: Option<String>) -> View {
        View {
            generation,
            rr,
            ..self
        }
    }

    /// held reports whether another writer held the record, unexpired, when it was read.
    #[must_use]
    pub fn held(&self) -> bool {
        self.holder.is_some() && !self.holder_expired
    }

    fn from_lease(lease: &Lease, server_now: Option<jiff::Timestamp>, duration: Duration) -> View {
        let annotation = |key| lease.metadata.annotations.as_ref()?.get(key);
        let spec = lease.spec.as_ref();
        let holder = spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        View {
            resource_version: lease.metadata.resource_version.clone(),
            generation: annotation(GENERATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(0),
            rr: annotation(REMEDIATION_REQUEST).cloned(),
            holder_expired: holder.is_some()
                && server_now.is_some_and(|now| clock::is_expired(lease, now, duration)),
            holder,
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        }
    }
}

/// Claim is a won compare-and-swap of the record: the right to create `rr`.
#[derive(Debug)]
pub struct Claim {
    pub lease: String,
    /// rr is the RR name this claim allows to create.
    pub rr: String,
    pub generation: u64,
    /// view is the record as this claim left it.
    pub view: View,
    /// sent is when the claiming request left, on this process' monotonic clock.
    sent: Instant,
    holder: Option<String>,
}

/// Claimed is the outcome of one attempt to claim a record.
#[derive(Debug)]
pub enum Claimed {
    Won(Claim),
    /// The record changed since the view was read: decide again from the fresh view.
    Changed(View),
    /// Another writer held it for the whole wait budget.
    Busy {
        view: View,
        waited: Duration,
    },
    Cancelled,
}

/// Bid is what a claim asks to write over a view: generation `generation`, whose RR is
/// named `rr`. `settled` says the caller read the RR the view names, consistently, and
/// found it: that RR's claim is over, so the view's holder does not block.
#[derive(Clone, Copy, Debug)]
pub struct Bid<'a> {
    pub generation: u64,
    pub rr: &'a str,
    pub settled: bool,
}

impl Bid<'_> {
    /// new bids for generation `generation` named `rr`, not settled.
    #[must_use]
    pub fn new(generation: u64, rr: &str) -> Bid<'_> {
        Bid {
            generation,
            rr,
            settled: false,
        }
    }
}

/// Records reads, claims and releases the fence records in one namespace.
#[derive(Clone)]
pub struct Records {
    pub(super) client: kube::Client,
    pub(super) api: Api<Lease>,
    pub(super) namespace: String,
    instance: String,
    pub(super) duration: Duration,
    wait_budget: Duration,
    /// rrs reads the RR a held record names (in the RR namespace, which may differ from
    /// the records'): once it exists, the hold is over.
    rrs: RemediationRequests,
    /// locking says whether claims take the lock; off is the rollback switch.
    locking: bool,
}

pub use crate::signal::{generation_of, lease_name, rr_name};

/// trusted reports whether a record's annotations are ones a writer of `fp` wrote: the RR
/// name is the fenced name of its generation (or, with fencing off in the chaos tests, an
/// unfenced name of this fingerprint).
fn trusted(fp: &str, view: &View) -> bool {
    match &view.rr {
        None => true,
        Some(name) => {
            generation_of(fp, name) == Some(view.generation)
                || name.starts_with(&format!("rr-{fp}-u"))
        }
    }
}

impl Claim {
    /// holder is the identity this claim holds the lock as; None without locking.
    #[must_use]
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }
}

impl Records {
    /// new builds the record client for records in `namespace`, whose RRs live in
    /// `rr_namespace`; `instance` (the pod name) prefixes holder identities.
    #[must_use]
    pub fn new(
        client: kube::Client,
        namespace: &str,
        rr_namespace: &str,
        instance: &str,
        duration: Duration,
        wait_budget: Duration,
        locking: bool,
    ) -> Records {
        Records {
            api: Api::namespaced(client.clone(), namespace),
            rrs: RemediationRequests::new(client.clone(), rr_namespace),
            client,
            namespace: namespace.to_owned(),
            instance: instance.to_owned(),
            duration,
            wait_budget,
            locking,
        }
    }

    /// rr_namespace is where the RRs this client's records fence live.
    #[must_use]
    pub fn rr_namespace(&self) -> &str {
        self.rrs.namespace()
    }

    /// read gets the latest record of `fp` (a consistent read), judging its holder's
    /// expiry on the server's clock. model: Pc::GetRecord
    pub async fn read(&self, fp: &str, calls: &ApiCalls) -> Result<View, KubeError> {
        let name = lease_name(fp);
        let url = Lease::url_path(&(), Some(&self.namespace));
        let req = kube::core::Request::new(url)
            .get(&name, &Default::default())
            .map_err(|e| Op::ReadLease.failed(&name, kube::Error::BuildRequest(e)))?;
        let (lease, now) =
            clock::get_dated::<Lease>(&self.client, req, Op::ReadLease, &name, calls).await?;
        let view = lease.map_or_else(View::default, |l| {
            View::from_lease(&l, Some(now), self.duration)
        });
        if trusted(fp, &view) {
            return Ok(view);
        }
        // A hand-edited record (another fingerprint's RR, a name that is not its
        // generation's) is never trusted: it names nothing, and the writer looks for the
        // fingerprint's RRs and repairs it with its next claim.
        tracing::warn!(lease = %name, rr = ?view.rr, generation = view.generation, "fence record annotations do not match its fingerprint; ignoring them");
        Ok(View {
            generation: 0,
            rr: None,
            ..view
        })
    }

    /// claim compare-and-swaps the record from `view` to `bid`, holding it when locking is on.
    /// While another writer holds the record, claim waits (jittered backoff within the wait
    /// budget, re-reading the record and the RR it names) and then reports the fresh view.
    pub async fn claim(
        &self,
        fp: &str,
        view: &View,
        bid: Bid<'_>,
        cancelled: &(dyn Fn() -> bool + Sync),
        calls: &ApiCalls,
    ) -> Result<Claimed, KubeError> {
        let mut claiming = Claiming {
            records: self,
            fp,
            bid,
            cancelled,
            calls,
            start: Instant::now(),
            attempt: 0,
            seen: false,
            contended: false,
        };
        let claimed = claiming.run(view.clone()).await;
        if self.locking {
            count_claim(&claiming, &claimed);
        }
        claimed
    }

    /// write is the compare-and-swap: create the record if the view saw none, else a
    /// merge patch carrying the view's resourceVersion. None means someone else wrote first.
    async fn write(
        &self,
        fp: &str,
        view: &View,
        bid: Bid<'_>,
        holder: Option<&str>,
        calls: &ApiCalls,
    ) -> Result<Option<Lease>, KubeError> {
        let name = lease_name(fp);
        // renewTime changes on every claim, held or not: a claim is always a real write, so
        // that resourceVersion and the write time move and the sweep sees a fresh record
        // (with locking off, a claim of the same generation would otherwise change nothing).
        let now = MicroTime(jiff::Timestamp::now());
        let result = match &view.resource_version {
            None => {
                let lease = self.new_lease(&name, bid, holder, now);
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                let create = self.api.create(&pp, &lease);
                calls.run(Op::CreateLease, &name, create).await?
            }
            Some(rv) => {
                let patch = Patch::Merge(self.claim_patch(rv, view, bid, holder, now));
                let pp = patch_params();
                let sent = self.api.patch(&name, &pp, &patch);
                calls.run(Op::ClaimLease, &name, sent).await?
            }
        };
        match result {
            Ok(lease) => Ok(Some(lease)),
            // A create answered 404 means the namespace itself is missing: a configuration
            // error (its message names the namespace), never a race to retry.
            Err(e) if code(&e) == Some(404) && view.resource_version.is_none() => {
                Err(Op::CreateLease.failed(&name, e))
            }
            Err(e) if matches!(code(&e), Some(404 | 409)) => Ok(None),
            Err(e) => Err(Op::ClaimLease.failed(&name, e)),
        }
    }

    /// new_lease is the record a claim creates.
    fn new_lease(&self, name: &str, bid: Bid<'_>, holder: Option<&str>, now: MicroTime) -> Lease {
        let labels = [
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            (RR_NAMESPACE.to_owned(), self.rrs.namespace().to_owned()),
        ];
        let annotations = [
            (GENERATION.to_owned(), bid.generation.to_string()),
            (REMEDIATION_REQUEST.to_owned(), bid.rr.to_owned()),
        ];
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels.into()),
                annotations: Some(annotations.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(self.duration_secs()),
                acquire_time: holder.map(|_| now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    /// claim_patch is the merge patch a claim of an existing record sends, carrying `rv`.
    fn claim_patch(
        &self,
        rv: &str,
        view: &View,
        bid: Bid<'_>,
        holder: Option<&str>,
        now: MicroTime,
    ) -> serde_json::Value {
        let transitions = if holder.is_some() && view.holder.is_some() {
            view.transitions.saturating_add(1)
        } else {
            view.transitions
        };
        json!({
            "metadata": {
                "resourceVersion": rv,
                "labels": { RR_NAMESPACE: self.rrs.namespace() },
                "annotations": { GENERATION: bid.generation.to_string(), REMEDIATION_REQUEST: bid.rr },
            },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": self.duration_secs(),
                "acquireTime": holder.map(|_| now.clone()),
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        })
    }

    /// finish ends a claim whose RR exists, without a write: whoever reads that RR may
    /// claim the record. It returns the record as the claim left it. model: Pc::Done
    #[must_use]
    pub fn finish(&self, claim: Claim) -> View {
        self.record_hold(&claim);
        claim.view
    }

    fn record_hold(&self, claim: &Claim) {
        if claim.holder.is_some() {
            telemetry::metrics().lock_held(claim.sent.elapsed().as_secs_f64());
        }
    }

    /// release clears the holder of a claim that produced no RR, if the record is still as
    /// the claim left it, and returns the record's new view. A record taken over meanwhile
    /// is left alone (None). model: Pc::Release
    pub async fn release(
        &self,
        claim: &Claim,
        calls: &ApiCalls,
    ) -> Result<Option<View>, KubeError> {
        if claim.holder.is_none() {
            return Ok(Some(claim.view.clone()));
        }
        self.record_hold(claim);
        let Some(rv) = &claim.view.resource_version else {
            return Ok(None);
        };
        let patch = Patch::Merge(json!({
            "metadata": { "resourceVersion": rv },
            "spec": { "holderIdentity": null },
        }));
        let pp = patch_params();
        let release = self.api.patch(&claim.lease, &pp, &patch);
        let sent = calls.run(Op::ReleaseLease, &claim.lease, release).await?;
        match sent {
            Ok(lease) => Ok(Some(View::from_lease(&lease, None, self.duration))),
            Err(e) if matches!(code(&e), Some(404 | 409)) => {
                tracing::warn!(lease = %claim.lease, "lease was taken over before release; left alone");
                Ok(None)
            }
            Err(e) => Err(Op::ReleaseLease.failed(&claim.lease, e)),
        }
    }

    /// abandon releases a claim whose answer was lost, if it landed after all, so that the
    /// fingerprint is not blocked until the lease expires: model: Pc::GetRecord, then
    /// Pc::Release.
    async fn abandon(&self, fp: &str, holder: &str, calls: &ApiCalls) {
        let Ok(view) = self.read(fp, calls).await else {
            return;
        };
        if view.holder.as_deref() != Some(holder) {
            return;
        }
        let claim = Claim {
            lease: lease_name(fp),
            rr: view.rr.clone().unwrap_or_default(),
            generation: view.generation,
            view,
            sent: Instant::now(),
            holder: Some(holder.to_owned()),
        };
        if let Err(e) = self.release(&claim, calls).await {
            tracing::warn!(lease = %claim.lease, error = %e, "could not release a lease whose claim failed");
        }
    }

    /// fits reports whether a request bounded by `needed` still ends before the claim's
    /// lease can expire, on this process' monotonic clock from before the claim was sent.
    /// Without locking there is no lease, and it always fits.
    #[must_use]
    pub fn fits(&self, claim: &Claim, needed: Duration) -> bool {
        claim.holder.is_none() || claim.sent.elapsed() + needed < self.duration
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Claiming is one claim in progress: what it asks for, and how long it has waited.
struct Claiming<'a> {
    records: &'a Records,
    fp: &'a str,
    bid: Bid<'a>,
    cancelled: &'a (dyn Fn() -> bool + Sync),
    calls: &'a ApiCalls,
    start: Instant,
    /// attempt counts the pauses of the wait, for its backoff.
    attempt: u32,
    /// seen: the view is a read of this claim's, not the caller's (maybe cached) view.
    seen: bool,
    /// contended: the claim paused for another writer's hold.
    contended: bool,
}

impl Claiming<'_> {
    /// run claims from the caller's view, or waits first while another writer holds it.
    async fn run(&mut self, view: View) -> Result<Claimed, KubeError> {
        if self.blocked(&view, self.bid.settled) {
            return self.wait(view).await;
        }
        self.claim_record(view).await
    }

    /// blocked: with locking on, a holder in the view whose lease has not expired, and
    /// whose RR was not read existing (`settled`), makes the claim wait.
    fn blocked(&self, view: &View, settled: bool) -> bool {
        self.records.locking && view.held() && !settled
    }

    /// wait re-reads the record, and the RR it names, until its holder is done, then
    /// reports the fresh view: what the holder did decides whether anything is left to
    /// create. model: Pc::ClaimRecord while blocked, whose only step is Pc::GetRecord
    async fn wait(&mut self, mut view: View) -> Result<Claimed, KubeError> {
        loop {
            if self.seen {
                self.contended = true;
                if (self.cancelled)() {
                    return Ok(Claimed::Cancelled);
                }
                let now = Instant::now();
                let deadline = self.start + self.records.wait_budget;
                if now >= deadline {
                    let waited = now - self.start;
                    return Ok(Claimed::Busy { view, waited });
                }
                let pause = backoff(self.attempt, Duration::from_millis(25)).min(deadline - now);
                tokio::time::sleep(pause).await;
                self.attempt += 1;
            }
            view = self.get_record().await?;
            let settled = self.get_rr(&view).await?;
            if !self.blocked(&view, settled) {
                return Ok(Claimed::Changed(view));
            }
        }
    }

    /// get_record reads the record. model: Pc::GetRecord
    async fn get_record(&mut self) -> Result<View, KubeError> {
        self.seen = true;
        self.records.read(self.fp, self.calls).await
    }

    /// get_rr reads the RR a held view names: if it exists, the hold is over, though its
    /// holder wrote nothing (settled). model: Pc::GetRr
    async fn get_rr(&self, view: &View) -> Result<bool, KubeError> {
        match &view.rr {
            Some(name) if view.held() => {
                Ok(self.records.rrs.get(name, self.calls).await?.is_some())
            }
            _ => Ok(false),
        }
    }

    /// claim_record writes the bid over `view`. On a conflict it reads the record again,
    /// and waits for the writer that beat it if that one holds it. model: Pc::ClaimRecord
    async fn claim_record(&mut self, view: View) -> Result<Claimed, KubeError> {
        let records = self.records;
        let holder = records
            .locking
            .then(|| format!("{}/{:016x}", records.instance, rand::random::<u64>()));
        let sent = Instant::now();
        let written = records.write(self.fp, &view, self.bid, holder.as_deref(), self.calls);
        match written.await {
            Ok(Some(lease)) => Ok(Claimed::Won(self.won(&view, &lease, sent, holder))),
            Ok(None) => {
                let fresh = self.get_record().await?;
                if self.blocked(&fresh, false) {
                    return self.wait(fresh).await;
                }
                Ok(Claimed::Changed(fresh))
            }
            Err(e) => {
                if let Some(holder) = &holder {
                    records.abandon(self.fp, holder, self.calls).await;
                }
                Err(e)
            }
        }
    }

    /// won is the claim a written `lease` grants; over an expired holder it is a takeover.
    fn won(&self, view: &View, lease: &Lease, sent: Instant, holder: Option<String>) -> Claim {
        let records = self.records;
        let expired = records.locking && !self.bid.settled;
        if let Some(previous) = view.holder.as_deref().filter(|_| expired) {
            telemetry::metrics().lock_takeovers.add(1, &[]);
            tracing::info!(lease = %lease_name(self.fp), previous, holder = ?holder, "took over expired lease");
        }
        Claim {
            lease: lease_name(self.fp),
            rr: self.bid.rr.to_owned(),
            generation: self.bid.generation,
            view: View::from_lease(lease, None, records.duration),
            sent,
            holder,
        }
    }
}

/// count_claim records one claim of the lock in the lock metrics.
fn count_claim(claiming: &Claiming<'_>, claimed: &Result<Claimed, KubeError>) {
    let m = telemetry::metrics();
    m.lock_attempts.add(1, &[]);
    if claiming.contended {
        m.lock_contention.add(1, &[]);
    }
    m.lock_wait
        .record(claiming.start.elapsed().as_secs_f64(), &[]);
    let reason = match claimed {
        Ok(Claimed::Won(_)) => {
            m.lock_success.add(1, &[]);
            return;
        }
        Ok(Claimed::Changed(_)) => "superseded",
        Ok(Claimed::Busy { .. }) => "timeout",
        Ok(Claimed::Cancelled) => "cancelled",
        Err(_) => "api_error",
    };
    m.lock_failures.add(1, &[kv("reason", reason)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn only_annotations_of_the_fingerprint_are_trusted() {
        let fp = "ab".repeat(32);
        let view = |generation, rr: &str| View {
            generation,
            rr: Some(rr.to_owned()),
            ..View::default()
        };
        assert!(trusted(&fp, &View::default()));
        assert!(trusted(&fp, &view(3, &rr_name(&fp, 3))));
        assert!(trusted(&fp, &view(1, &format!("rr-{fp}-u00ff"))));
        assert!(!trusted(&fp, &view(3, &rr_name(&fp, 2))), "a lowered name");
        let other = "cd".repeat(32);
        assert!(
            !trusted(&fp, &view(3, &rr_name(&other, 3))),
            "another fingerprint's RR"
        );
    }

    #[test]
    fn a_view_reads_generation_name_and_holder() {
        let lease = Lease {
            metadata: ObjectMeta {
                resource_version: Some("42".into()),
                annotations: Some(BTreeMap::from([
                    (GENERATION.to_owned(), "3".to_owned()),
                    (REMEDIATION_REQUEST.to_owned(), "rr-x-3".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                ..LeaseSpec::default()
            }),
        };
        let v = View::from_lease(&lease, None, Duration::from_secs(30));
        assert_eq!(v.generation, 3);
        assert_eq!(v.rr.as_deref(), Some("rr-x-3"));
        assert!(!v.held(), "an empty holder is free");
        assert_eq!(View::default().generation, 0);
    }
}

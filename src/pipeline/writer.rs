//! Writer counts a batch of one fingerprint's signals on its active RR, or creates the next
//! RR under a claim of the fingerprint's fence record (`k8s::Records`).
//!
//! A batch is a run of steps (`Step`), each one API call named after the model's program
//! counter (`model::Pc`). A duplicate takes no lock: it reads the RR the record names and
//! counts on it. Otherwise the writer claims the record for generation g+1 if that RR is
//! terminal, or for the same generation if it is missing, and creates the RR of the
//! claimed name. A claim that produced its RR is not released; only one that produced
//! nothing is. The protocol: docs/protocol.md.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lru::LruCache;
use tracing::{Instrument as _, info_span};

use super::Error;
pub use crate::k8s::rr_name;
use crate::{
    chaos::Pauser,
    config::PausePoint,
    crd::RemediationRequest,
    k8s::{
        ApiCalls, Bid, Claim, Claimed, Counted, MANAGED_BY, Records, RemediationRequests, Rr,
        Tally, View, generation_of, lease_name,
    },
    signal::Signal,
    telemetry,
};

/// MAX_ROUNDS bounds how often one batch starts over after losing a race.
const MAX_ROUNDS: usize = 8;
/// CACHE_LIMIT bounds the views remembered per process (least recently used go first).
const CACHE_LIMIT: NonZeroUsize = NonZeroUsize::new(16_384).expect("non-zero");

/// Written is what one batch did.
#[derive(Debug)]
pub(crate) struct Written {
    pub created: bool,
    pub rr: String,
    pub tally: Tally,
}

/// Writer holds the clients and the per-process cache of record views.
pub(crate) struct Writer {
    pub records: Records,
    pub rrs: RemediationRequests,
    pub pauser: Arc<Pauser>,
    /// views caches the last record view per fingerprint; a stale one costs a retry.
    views: Mutex<LruCache<String, View>>,
}

/// Job is one batch: its first signal, how many signals it counts, and its request context.
struct Job<'a> {
    signal: &'a Signal,
    k: i64,
    calls: &'a ApiCalls,
    cancelled: &'a (dyn Fn() -> bool + Sync),
}

impl Job<'_> {
    fn fp(&self) -> &str {
        self.signal.fingerprint.as_str()
    }
}

/// Step is the next step of a batch, named after the model's.
enum Step {
    /// model: Pc::GetRecord; `cached`: the batch's first look, which the cache may serve.
    GetRecord { cached: bool },
    /// model: Pc::ListRrs; `missing` is the RR the record names, found missing, or None
    /// when the view names no RR (no record, or one that names no RR it can trust).
    ListRrs { view: View, missing: Option<String> },
    /// A new round from a view (model: `Fence::step2`).
    Round(View),
    /// model: Pc::GetRr, then Pc::PatchStatus: count on the RR the view names.
    GetRr { view: View, name: String },
    /// model: Pc::ClaimRecord for generation `next`.
    ClaimRecord {
        view: View,
        next: u64,
        settled: bool,
    },
    /// model: Pc::CreateRr, after the fit check (Action::GiveUp when it fails).
    CreateRr(Claim),
    /// model: Pc::GetRr under a claim: the create collided with the RR of the claimed name.
    GetClaimedRr(Claim),
    /// model: Pc::PatchStatusAfterCreate; `created` says this batch created `rr`.
    PatchStatusAfterCreate { claim: Claim, rr: Rr, created: bool },
    /// model: Pc::Release, then start over, or fail with `failed`.
    Release { claim: Claim, failed: Option<Error> },
    /// model: Pc::Done
    Done(Written),
}

impl Writer {
    pub(crate) fn new(records: Records, rrs: RemediationRequests, pauser: Arc<Pauser>) -> Writer {
        Writer {
            records,
            rrs,
            pauser,
            views: Mutex::new(LruCache::new(CACHE_LIMIT)),
        }
    }

    /// write counts `k` occurrences of `signal`, creating the next RR if none is active.
    pub(crate) async fn write(
        &self,
        signal: &Signal,
        k: i64,
        calls: &ApiCalls,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Written, Error> {
        let job = Job {
            signal,
            k,
            calls,
            cancelled,
        };
        let mut rounds = 0;
        let mut step = Step::GetRecord { cached: true };
        loop {
            step = match step {
                Step::GetRecord { cached } => self.get_record(&job, cached).await?,
                Step::ListRrs { view, missing } => self.list_rrs(&job, view, missing).await?,
                Step::Round(_) if rounds == MAX_ROUNDS => return Err(exhausted(job.fp())),
                Step::Round(view) => {
                    rounds += 1;
                    round(view)
                }
                Step::GetRr { view, name } => self.get_rr(&job, view, name).await?,
                Step::ClaimRecord {
                    view,
                    next,
                    settled,
                } => self.claim_record(&job, view, next, settled).await?,
                Step::CreateRr(claim) => self.create_rr(&job, claim).await,
                Step::GetClaimedRr(claim) => self.get_claimed_rr(&job, claim).await,
                Step::PatchStatusAfterCreate { claim, rr, created } => {
                    self.patch_status_after_create(&job, claim, rr, created)
                        .await
                }
                Step::Release { claim, failed } => self.release(&job, claim, failed).await?,
                Step::Done(written) => return Ok(written),
            };
        }
    }

    /// get_record reads the fingerprint's record (traced as `record read`), unless the
    /// batch's first look finds it cached. model: Pc::GetRecord
    async fn get_record(&self, job: &Job<'_>, cached: bool) -> Result<Step, Error> {
        let fp = job.fp();
        if cached && let Some(view) = self.cached(fp) {
            return Ok(Step::Round(view));
        }
        let view = self
            .records
            .read(fp, job.calls)
            .instrument(info_span!("record read"))
            .await?;
        Ok(looked(view))
    }

    /// list_rrs lists the fingerprint's RRs (one field-selected LIST, traced as `rr
    /// discovery`), so that a lost record (deleted by a person, a restore, a changed lock
    /// namespace) never restarts the fingerprint at generation 1 beside an RR that holds
    /// the problem. Without a record (`missing` None) the view names the RR that holds the
    /// problem, else the highest fenced generation found, and the next claim re-creates
    /// (or repairs) the record from there. When the RR the record names is missing, the
    /// batch goes on from another RR that holds the problem, past a later generation (a
    /// record edited back, or restored from an old backup), or else re-claims the same
    /// generation, to collide with a writer that claimed it. model: Pc::ListRrs
    async fn list_rrs(
        &self,
        job: &Job<'_>,
        view: View,
        missing: Option<String>,
    ) -> Result<Step, Error> {
        let fp = job.fp();
        let found = self
            .rrs
            .find(fp, job.calls)
            .instrument(info_span!("rr discovery"))
            .await?;
        let highest = found
            .iter()
            .filter_map(|rr| generation_of(fp, &rr.name))
            .max()
            .unwrap_or(0);
        let holding = found.iter().find(|rr| rr.holds()).map(|rr| rr.name.clone());
        let Some(missing) = missing else {
            if let Some(name) = &holding {
                tracing::info!(fingerprint = fp, rr = %name, "no fence record: adopting the RR that holds the problem");
            }
            let rr = holding.or_else(|| (highest > 0).then(|| rr_name(fp, highest)));
            return Ok(Step::Round(view.discovered(highest, rr)));
        };
        let generation = view.generation;
        Ok(match holding {
            Some(other) if other != missing => {
                Step::Round(view.discovered(generation, Some(other)))
            }
            _ if highest > generation => claim(view, highest + 1, false),
            _ => claim(view, generation.max(1), false),
        })
    }

    /// get_rr counts the batch on the RR the view names if it holds its problem. A terminal
    /// RR leads to a claim of the next generation (settled: its claim is over), a missing one
    /// to the list of the fingerprint's RRs. model: Pc::GetRr, then Pc::PatchStatus
    async fn get_rr(&self, job: &Job<'_>, view: View, name: String) -> Result<Step, Error> {
        Ok(match self.count_on(&name, job).await? {
            Counted::Yes(tally) => {
                self.remember(job.fp(), view);
                Step::Done(Written {
                    created: false,
                    rr: name,
                    tally,
                })
            }
            Counted::Released => {
                let next = view.generation.saturating_add(1);
                claim(view, next, true)
            }
            Counted::Missing => Step::ListRrs {
                view,
                missing: Some(name),
            },
            Counted::Contended => return Err(contended(&name)),
        })
    }

    /// claim_record claims the record for generation `next` (traced as `lock wait`). A lost
    /// race starts a new round from the fresh view; a holder that outlasts the wait budget
    /// fails the batch, unless its RR is active by now. model: Pc::ClaimRecord
    async fn claim_record(
        &self,
        job: &Job<'_>,
        view: View,
        next: u64,
        settled: bool,
    ) -> Result<Step, Error> {
        let fp = job.fp();
        let name = if self.pauser.fencing() {
            rr_name(fp, next)
        } else {
            format!("rr-{fp}-u{:016x}", rand::random::<u64>())
        };
        let bid = Bid {
            generation: next,
            rr: &name,
            settled,
        };
        let claimed = self
            .records
            .claim(fp, &view, bid, job.cancelled, job.calls)
            .instrument(info_span!("lock wait", generation = next))
            .await?;
        Ok(match claimed {
            Claimed::Won(claim) => {
                self.pauser.pause(PausePoint::AfterLock).await;
                Step::CreateRr(claim)
            }
            Claimed::Changed(fresh) => looked(fresh),
            Claimed::Cancelled => return Err(Error::Cancelled),
            Claimed::Busy { view, waited } => {
                // The holder may have finished just now: count on its RR if it is active.
                if let Some(name) = view.rr.clone()
                    && let Counted::Yes(tally) = self.count_on(&name, job).await?
                {
                    let rr = name;
                    return Ok(Step::Done(Written {
                        created: false,
                        rr,
                        tally,
                    }));
                }
                let lease = lease_name(fp);
                return Err(Error::LockBusy { lease, waited });
            }
        })
    }

    /// create_rr creates the claimed RR (traced as `create`), if the claim's lease outlasts
    /// the request. model: Pc::CreateRr, after the fit check (Action::GiveUp)
    async fn create_rr(&self, job: &Job<'_>, claim: Claim) -> Step {
        if !self.records.fits(&claim, job.calls.timeout()) {
            let lease = claim.lease.clone();
            let failed = Some(Error::LeaseExpiring { lease });
            return Step::Release { claim, failed };
        }
        self.pauser.pause(PausePoint::BeforeCreate).await;
        let rr = RemediationRequest {
            metadata: ObjectMeta {
                name: Some(claim.rr.clone()),
                namespace: Some(self.rrs.namespace().to_owned()),
                labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: job.signal.into(),
            status: None,
        };
        let made = self
            .rrs
            .create(&rr, job.calls)
            .instrument(info_span!("create", rr = %claim.rr))
            .await;
        match made {
            Ok(Some(rr)) => {
                telemetry::metrics().crd_created(job.signal.source);
                self.pauser.pause(PausePoint::AfterCreate).await;
                let created = true;
                Step::PatchStatusAfterCreate { claim, rr, created }
            }
            Ok(None) => {
                telemetry::metrics().fence_collisions.add(1, &[]);
                tracing::info!(rr = %claim.rr, "create collided with another writer of the claimed name");
                Step::GetClaimedRr(claim)
            }
            Err(e) => {
                telemetry::metrics().crd_creation_failed("k8s_api_error");
                let failed = Some(e.into());
                Step::Release { claim, failed }
            }
        }
    }

    /// get_claimed_rr reads the RR of the claimed name that another writer created (traced
    /// as `dedup read`), to count on it. model: Pc::GetRr under a claim
    async fn get_claimed_rr(&self, job: &Job<'_>, claim: Claim) -> Step {
        let winner = self
            .rrs
            .get(&claim.rr, job.calls)
            .instrument(info_span!("dedup read", rr = %claim.rr))
            .await;
        match winner {
            Ok(Some(rr)) => {
                let created = false;
                Step::PatchStatusAfterCreate { claim, rr, created }
            }
            Ok(None) => Step::Release {
                claim,
                failed: None,
            },
            Err(e) => {
                telemetry::metrics().crd_creation_failed("fetch_existing_failed");
                let failed = Some(e.into());
                Step::Release { claim, failed }
            }
        }
    }

    /// patch_status_after_create counts the batch on the claimed RR, and ends the claim
    /// without a write: the RR exists. An RR another writer created that no longer holds
    /// its problem, or is gone, makes the batch start over. model: Pc::PatchStatusAfterCreate
    async fn patch_status_after_create(
        &self,
        job: &Job<'_>,
        claim: Claim,
        rr: Rr,
        created: bool,
    ) -> Step {
        let failed = match self.status_write(rr, job).await {
            Ok(Counted::Yes(tally)) => {
                let rr = claim.rr.clone();
                let left = self.records.finish(claim);
                self.remember(job.fp(), left);
                return Step::Done(Written { created, rr, tally });
            }
            Ok(Counted::Released | Counted::Missing) => None,
            Ok(Counted::Contended) => Some(contended(&claim.rr)),
            Err(e) => Some(e),
        };
        Step::Release { claim, failed }
    }

    /// release gives back the lock of a claim that produced no RR, and remembers the record
    /// as it left it; then the batch reads the record again, or fails. model: Pc::Release
    async fn release(
        &self,
        job: &Job<'_>,
        claim: Claim,
        failed: Option<Error>,
    ) -> Result<Step, Error> {
        let fp = job.fp();
        match self.records.release(&claim, job.calls).await {
            Ok(Some(view)) => self.remember(fp, view),
            Ok(None) => self.forget(fp),
            Err(e) => {
                // The lease expires on its own; the next writer takes it over.
                tracing::warn!(lease = %claim.lease, error = %e, "releasing lease failed");
                self.forget(fp);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(Step::GetRecord { cached: false }),
        }
    }

    /// count_on reads the RR `name` (traced as `dedup read`) and adds the batch to it if it
    /// exists and holds its problem.
    async fn count_on(&self, name: &str, job: &Job<'_>) -> Result<Counted, Error> {
        let read = self
            .rrs
            .get(name, job.calls)
            .instrument(info_span!("dedup read", rr = name))
            .await?;
        Ok(match read {
            Some(rr) => self.status_write(rr, job).await?,
            None => Counted::Missing,
        })
    }

    /// status_write adds the batch to the count of `rr` (traced as `status write`).
    async fn status_write(&self, rr: Rr, job: &Job<'_>) -> Result<Counted, Error> {
        let name = rr.name.clone();
        Ok(self
            .rrs
            .add_occurrences(rr, job.k, job.calls)
            .instrument(info_span!("status write", rr = name))
            .await?)
    }

    fn cached(&self, fp: &str) -> Option<View> {
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(fp)
            .cloned()
    }

    fn remember(&self, fp: &str, view: View) {
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(fp.to_owned(), view);
    }

    fn forget(&self, fp: &str) {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).pop(fp);
    }
}

/// looked goes on from a view the batch read: list the fingerprint's RRs if it names none,
/// else start a round from it.
fn looked(view: View) -> Step {
    if view.rr.is_none() {
        return Step::ListRrs {
            view,
            missing: None,
        };
    }
    Step::Round(view)
}

/// round starts a round from `view`: count on the RR it names, or claim the first
/// generation it has not used. model: `Fence::step2`
fn round(view: View) -> Step {
    match view.rr.clone() {
        Some(name) => Step::GetRr { view, name },
        None => {
            let next = view.generation.max(1);
            claim(view, next, false)
        }
    }
}

fn claim(view: View, next: u64, settled: bool) -> Step {
    Step::ClaimRecord {
        view,
        next,
        settled,
    }
}

fn exhausted(fp: &str) -> Error {
    Error::Contention(format!(
        "fingerprint {fp}: the current RemediationRequest changed {MAX_ROUNDS} times while this signal was processed"
    ))
}

fn contended(name: &str) -> Error {
    Error::Contention(format!(
        "remediationrequest {name}: its status changed concurrently on every attempt"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rr_names_are_valid_and_carry_the_generation() {
        let fp = "ab".repeat(32);
        let n = rr_name(&fp, 12);
        assert_eq!(n, format!("rr-{fp}-12"));
        assert!(n.len() <= 253);
        assert_ne!(rr_name(&fp, 1), rr_name(&fp, 11));
        assert_eq!(generation_of(&fp, &n), Some(12));
        assert_eq!(generation_of(&fp, &format!("rr-{fp}-u00ff")), None);
        assert_eq!(generation_of(&fp, "rr-ab12cd34ef56-0c1d2e3f"), None);
    }
}

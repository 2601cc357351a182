//! Writer counts a batch of one fingerprint's signals on its active RR, or creates the next
//! RR under a claim of the fingerprint's fence record (`k8s::Records`).
//!
//! The record names the current RR. If that RR is active, the batch is counted on it with
//! a status write carrying its resourceVersion: duplicates take no lock. Otherwise the
//! writer claims the record (compare-and-swap, holding the lock when locking is on) for
//! generation g+1 if the named RR is terminal, or for the same generation if it is missing
//! (a writer that claimed that name may still create it: collide with it rather than race
//! it), and creates the RR of the claimed name. A name can only be created by a writer that
//! claimed it, so two writers acting on different views cannot both create an active RR.
//!
//! A claim that produced its RR is not released: the RR existing ends the hold, so the lock
//! adds no request to a new RR. Only a claim that produced nothing is released.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::{Instrument as _, info_span};

use super::Error;
use crate::{
    chaos::Pauser,
    config::PausePoint,
    crd::RemediationRequest,
    k8s::{
        ApiCalls, Claim, Claimed, Counted, MANAGED_BY, Records, RemediationRequests, Rr, Tally,
        View, lease_name,
    },
    signal::Signal,
    telemetry,
};

/// MAX_ROUNDS bounds how often one batch starts over after losing a race.
const MAX_ROUNDS: usize = 8;
/// CACHE_LIMIT bounds the views remembered per process; the cache is emptied when full.
const CACHE_LIMIT: usize = 16_384;

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
    views: Mutex<HashMap<String, View>>,
}

use crate::k8s::generation_of;
pub use crate::k8s::rr_name;

impl Writer {
    pub(crate) fn new(records: Records, rrs: RemediationRequests, pauser: Arc<Pauser>) -> Writer {
        Writer {
            records,
            rrs,
            pauser,
            views: Mutex::new(HashMap::new()),
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
        let fp = signal.fingerprint.as_str();
        let mut view = match self.cached(fp) {
            Some(view) => view,
            None => self.read(fp, calls).await?,
        };
        for _ in 0..MAX_ROUNDS {
            // settled: the view's RR exists, so whoever claimed it is done with the record.
            let (next, settled) = match view.rr.clone() {
                None => (view.generation.max(1), false),
                Some(name) => match self.count_on(&name, k, calls).await? {
                    Counted::Yes(tally) => {
                        self.remember(fp, view);
                        return Ok(Written {
                            created: false,
                            rr: name,
                            tally,
                        });
                    }
                    Counted::Released => (view.generation.saturating_add(1), true),
                    // The RR the record names is gone. The RRs that exist say whether
                    // another holds the problem, or a later generation exists (a record
                    // edited back, or restored from an old backup); else re-claim the same
                    // generation, to collide with a writer that claimed it.
                    Counted::Missing => match self.survey(fp, calls).await? {
                        (_, Some(other)) if other != name => {
                            let generation = view.generation;
                            view = view.discovered(generation, Some(other));
                            continue;
                        }
                        (highest, _) if highest > view.generation => (highest + 1, false),
                        _ => (view.generation.max(1), false),
                    },
                    Counted::Contended => return Err(contended(&name)),
                },
            };
            let name = if self.pauser.fencing() {
                rr_name(fp, next)
            } else {
                format!("rr-{fp}-u{:016x}", rand::random::<u64>())
            };
            match self
                .records
                .claim(fp, &view, settled, next, &name, cancelled, calls)
                .instrument(info_span!("lock wait", generation = next))
                .await?
            {
                Claimed::Changed(fresh) => view = self.discover(fp, fresh, calls).await?,
                Claimed::Cancelled => return Err(Error::Cancelled),
                Claimed::Busy { view, waited } => {
                    // The holder may have finished just now: count on its RR if it is active.
                    if let Some(name) = view.rr.clone()
                        && let Counted::Yes(tally) = self.count_on(&name, k, calls).await?
                    {
                        return Ok(Written {
                            created: false,
                            rr: name,
                            tally,
                        });
                    }
                    return Err(Error::LockBusy {
                        lease: lease_name(fp),
                        waited,
                    });
                }
                Claimed::Won(claim) => {
                    self.pauser.pause(PausePoint::AfterLock).await;
                    match self.create(signal, k, &claim, calls).await {
                        Ok(Some((created, tally))) => {
                            let rr = claim.rr.clone();
                            let left = self.records.finish(claim);
                            self.remember(fp, left);
                            return Ok(Written { created, rr, tally });
                        }
                        Ok(None) => {
                            self.release(fp, claim, calls).await;
                            view = self.read(fp, calls).await?;
                        }
                        Err(e) => {
                            self.release(fp, claim, calls).await;
                            return Err(e);
                        }
                    }
                }
            }
        }
        Err(Error::Contention(format!(
            "fingerprint {fp}: the current RemediationRequest changed {MAX_ROUNDS} times while this signal was processed"
        )))
    }

    /// read gets the fingerprint's record (traced as `record read`), and when it is missing,
    /// what the RRs that exist say (`discover`).
    async fn read(&self, fp: &str, calls: &ApiCalls) -> Result<View, Error> {
        let view = self
            .records
            .read(fp, calls)
            .instrument(info_span!("record read"))
            .await?;
        self.discover(fp, view, calls).await
    }

    /// discover makes the view of a fingerprint whose record is missing (or names no RR it
    /// can trust) from its RRs, so that a lost record (deleted by a person, a restore, a
    /// changed lock namespace) never restarts the fingerprint at generation 1 beside an RR
    /// that holds the problem: the view names the RR that holds it, else the highest fenced
    /// generation found, and the next claim re-creates (or repairs) the record from there.
    /// A view that names an RR is returned as is.
    async fn discover(&self, fp: &str, view: View, calls: &ApiCalls) -> Result<View, Error> {
        if view.rr.is_some() {
            return Ok(view);
        }
        let (highest, holding) = self.survey(fp, calls).await?;
        if let Some(name) = &holding {
            tracing::info!(fingerprint = fp, rr = %name, "no fence record: adopting the RR that holds the problem");
        }
        let rr = holding.or_else(|| (highest > 0).then(|| rr_name(fp, highest)));
        Ok(view.discovered(highest, rr))
    }

    /// survey lists the fingerprint's RRs (one field-selected LIST) and returns the highest
    /// fenced generation among them and the RR that holds the problem, if one does.
    async fn survey(&self, fp: &str, calls: &ApiCalls) -> Result<(u64, Option<String>), Error> {
        let found = self
            .rrs
            .find(fp, calls)
            .instrument(info_span!("rr discovery"))
            .await?;
        let fenced = |rr: &Rr| generation_of(fp, &rr.name);
        let highest = found.iter().filter_map(fenced).max().unwrap_or(0);
        let holding = found.iter().find(|rr| rr.holds()).map(|rr| rr.name.clone());
        Ok((highest, holding))
    }

    /// count_on adds `k` to the RR `name` if it exists and holds its problem.
    async fn count_on(&self, name: &str, k: i64, calls: &ApiCalls) -> Result<Counted, Error> {
        let read = self
            .rrs
            .get(name, calls)
            .instrument(info_span!("dedup read", rr = name))
            .await?;
        Ok(match read {
            Some(rr) => self.status_write(rr, k, calls).await?,
            None => Counted::Missing,
        })
    }

    /// status_write adds `k` to the count of `rr` (traced as `status write`).
    async fn status_write(&self, rr: Rr, k: i64, calls: &ApiCalls) -> Result<Counted, Error> {
        let name = rr.name.clone();
        Ok(self
            .rrs
            .add_occurrences(rr, k, calls)
            .instrument(info_span!("status write", rr = name))
            .await?)
    }

    /// create makes the claimed RR and counts the batch on it, or counts on the RR another
    /// writer made under the same name. None means "start over": that RR is terminal or gone.
    async fn create(
        &self,
        signal: &Signal,
        k: i64,
        claim: &Claim,
        calls: &ApiCalls,
    ) -> Result<Option<(bool, Tally)>, Error> {
        if !self.records.fits(claim, calls.timeout()) {
            return Err(Error::LeaseExpiring {
                lease: claim.lease.clone(),
            });
        }
        self.pauser.pause(PausePoint::BeforeCreate).await;
        let rr = RemediationRequest {
            metadata: ObjectMeta {
                name: Some(claim.rr.clone()),
                namespace: Some(self.rrs.namespace().to_owned()),
                labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: signal.into(),
            status: None,
        };
        let made = self
            .rrs
            .create(&rr, calls)
            .instrument(info_span!("create", rr = %claim.rr))
            .await
            .inspect_err(|_| telemetry::metrics().crd_creation_failed("k8s_api_error"))?;
        let (created, rr) = match made {
            Some(created) => {
                telemetry::metrics().crd_created(signal.source);
                self.pauser.pause(PausePoint::AfterCreate).await;
                (true, created)
            }
            // The writer we collided with won: count on its RR.
            None => {
                telemetry::metrics().fence_collisions.add(1, &[]);
                tracing::info!(rr = %claim.rr, "create collided with another writer of the claimed name");
                let winner = self
                    .rrs
                    .get(&claim.rr, calls)
                    .instrument(info_span!("dedup read", rr = %claim.rr))
                    .await
                    .inspect_err(|_| {
                        telemetry::metrics().crd_creation_failed("fetch_existing_failed");
                    })?;
                match winner {
                    Some(winner) => (false, winner),
                    None => return Ok(None),
                }
            }
        };
        match self.status_write(rr, k, calls).await? {
            Counted::Yes(tally) => Ok(Some((created, tally))),
            Counted::Released | Counted::Missing => Ok(None),
            Counted::Contended => Err(contended(&claim.rr)),
        }
    }

    /// release gives back the lock of a claim that produced no RR, and remembers the record
    /// as it left it.
    async fn release(&self, fp: &str, claim: Claim, calls: &ApiCalls) {
        match self.records.release(&claim, calls).await {
            Ok(Some(view)) => self.remember(fp, view),
            Ok(None) => self.forget(fp),
            Err(e) => {
                // The lease expires on its own; the next writer takes it over.
                tracing::warn!(lease = %claim.lease, error = %e, "releasing lease failed");
                self.forget(fp);
            }
        }
    }

    fn cached(&self, fp: &str) -> Option<View> {
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(fp)
            .cloned()
    }

    fn remember(&self, fp: &str, view: View) {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if views.len() >= CACHE_LIMIT && !views.contains_key(fp) {
            views.clear();
        }
        views.insert(fp.to_owned(), view);
    }

    fn forget(&self, fp: &str) {
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(fp);
    }
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

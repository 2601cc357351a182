//! Pipeline processes signals: coalesce per fingerprint, deduplicate, lock, create or count.
//!
//! Per fingerprint, at most one batch is in flight in a process: signals that
//! arrive while it runs are queued and handled together by the next batch,
//! which writes their count in one status update. The API requests of a batch:
//!
//! | path | requests |
//! |---|---|
//! | duplicate (an active RR exists) | list, status patch |
//! | new RR, locking on | list, lease create, RR create, status patch, lease delete |
//! | new RR, locking off | list, RR create, status patch |
//!
//! Fencing: a new RR is named `rr-<fingerprint>-<generation>`, where the
//! generation is one more than the highest generation among the RRs of this
//! fingerprint that the writer saw. Two writers that acted on the same view
//! pick the same name, so the second create fails with AlreadyExists and its
//! signals are counted on the winner instead: a lock holder that paused past
//! the lease's expiry cannot create a second active RR.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{
    api::{Deduplication, RemediationRequest},
    apicall::{ApiCalls, api_code},
    error::Error,
    lock::{FIELD_MANAGER, LeaseLock, MANAGED_BY},
    signal::{Fingerprint, Signal},
    telemetry, testhook,
};

/// Disposition says what became of one accepted signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Created,
    Duplicate,
}

/// Outcome is the durable result of one signal.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub disposition: Disposition,
    /// `<namespace>/<name>` of the RR that counts this signal.
    pub remediation_request: String,
    pub occurrence_count: i64,
}

/// Settings are the pipeline's knobs, taken from `Config`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub api_timeout: Duration,
    /// batch_timeout bounds the whole processing of one batch.
    pub batch_timeout: Duration,
    pub max_in_flight: usize,
    pub fencing: bool,
}

struct Waiter {
    signal: Signal,
    reply: oneshot::Sender<Result<Outcome, Error>>,
    _permit: OwnedSemaphorePermit,
}

/// Pipeline is shared by all requests of one process.
pub struct Pipeline {
    client: Client,
    rrs: Api<RemediationRequest>,
    settings: Settings,
    lock: Option<LeaseLock>,
    permits: Arc<Semaphore>,
    /// queued holds, per fingerprint with a batch in flight, the signals waiting for the next batch.
    queued: Mutex<HashMap<Fingerprint, Vec<Waiter>>>,
}

/// BatchResult is what one batch did, before it is split among its signals.
struct BatchResult {
    created: bool,
    rr: String,
    count: i64,
}

const MAX_ROUNDS: usize = 4;
const MAX_STATUS_ATTEMPTS: usize = 10;

impl Pipeline {
    /// new builds the pipeline; `lock` is None when distributed locking is switched off.
    #[must_use]
    pub fn new(client: Client, settings: Settings, lock: Option<LeaseLock>) -> Arc<Pipeline> {
        Arc::new(Pipeline {
            rrs: Api::namespaced(client.clone(), &settings.namespace),
            client,
            permits: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            lock,
            queued: Mutex::new(HashMap::new()),
        })
    }

    /// submit processes one signal and returns once its effect is durable.
    pub async fn submit(self: &Arc<Self>, signal: Signal) -> Result<Outcome, Error> {
        let permit =
            Arc::clone(&self.permits)
                .try_acquire_owned()
                .map_err(|_| Error::Overloaded {
                    limit: self.settings.max_in_flight,
                })?;
        let (reply, rx) = oneshot::channel();
        let fp = signal.fingerprint.clone();
        let waiter = Waiter {
            signal,
            reply,
            _permit: permit,
        };
        let lead = {
            let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
            match queued.get_mut(&fp) {
                Some(waiting) => {
                    waiting.push(waiter);
                    false
                }
                None => {
                    queued.insert(fp.clone(), vec![waiter]);
                    true
                }
            }
        };
        if lead {
            // The batch runs in its own task so that a caller that disconnects
            // does not abandon the signals of the others in its batch.
            tokio::spawn(Arc::clone(self).drain(fp));
        }
        rx.await.unwrap_or(Err(Error::Cancelled))
    }

    /// drain runs batches for `fp` until no signal is waiting.
    async fn drain(self: Arc<Self>, fp: Fingerprint) {
        // Should this task ever end abnormally, the guard removes the entry so
        // that queued callers get an error and later signals start a new task.
        let mut guard = DrainGuard {
            pipeline: Arc::clone(&self),
            fp: fp.clone(),
            armed: true,
        };
        loop {
            let batch = {
                let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
                let taken = queued.get_mut(&fp).map(std::mem::take).unwrap_or_default();
                if taken.is_empty() {
                    queued.remove(&fp);
                    guard.armed = false;
                    return;
                }
                taken
            };
            let calls = ApiCalls::new(self.settings.api_timeout);
            let cancelled = || batch.iter().all(|w| w.reply.is_closed());
            let signals = batch.len();
            let result = if cancelled() {
                Err(Error::Cancelled)
            } else {
                // Every call and wait inside is bounded; this bounds their sum.
                let work = self.process(&batch[0].signal, signals as i64, &calls, &cancelled);
                tokio::time::timeout(self.settings.batch_timeout, work)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::timeout(
                            "processing signals",
                            fp.as_str(),
                            self.settings.batch_timeout,
                        ))
                    })
            };
            let path = match &result {
                Ok(r) if r.created => "created",
                Ok(_) => "duplicate",
                Err(_) => "failed",
            };
            telemetry::metrics()
                .kube_api_requests
                .add(u64::from(calls.count()), &[telemetry::kv("path", path)]);
            match &result {
                Ok(r) => tracing::info!(
                    fingerprint = %fp, rr = %r.rr, created = r.created, signals,
                    occurrence_count = r.count, api_calls = calls.count(), "batch processed"
                ),
                Err(e) => tracing::warn!(
                    fingerprint = %fp, signals, api_calls = calls.count(), error = %e,
                    kind = e.metric_label(), "batch failed"
                ),
            }
            for (i, w) in batch.into_iter().enumerate() {
                let outcome = result.as_ref().map_err(Clone::clone).map(|r| Outcome {
                    disposition: if r.created && i == 0 {
                        Disposition::Created
                    } else {
                        Disposition::Duplicate
                    },
                    remediation_request: r.rr.clone(),
                    occurrence_count: r.count,
                });
                let _ = w.reply.send(outcome);
            }
        }
    }

    /// process counts `k` occurrences of `signal` on its active RR, creating the RR if needed.
    async fn process(
        &self,
        signal: &Signal,
        k: i64,
        calls: &ApiCalls,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<BatchResult, Error> {
        let fp = &signal.fingerprint;
        for round in 0..MAX_ROUNDS {
            // The first look may come from the API server's cache; a round that
            // follows a surprise reads the latest state.
            let seen = self.list(fp, calls, round > 0).await?;
            if let Some(active) = seen.iter().find(|rr| rr.is_active()) {
                if let Some(r) = self.add_occurrences(active.clone(), k, calls).await? {
                    return Ok(r);
                }
                continue; // it turned terminal under us: the signal opens a new RR
            }
            let guard = match &self.lock {
                None => None,
                Some(lock) => match lock.acquire(fp, calls, cancelled).await {
                    Ok(g) => {
                        testhook::pause(testhook::AFTER_LOCK).await;
                        Some(g)
                    }
                    Err(Error::LockBusy { lease, waited }) => {
                        // The holder may have finished just now: count on its RR if it did.
                        let seen = self.list(fp, calls, true).await?;
                        if let Some(active) = seen.iter().find(|rr| rr.is_active())
                            && let Some(r) = self.add_occurrences(active.clone(), k, calls).await?
                        {
                            return Ok(r);
                        }
                        return Err(Error::LockBusy { lease, waited });
                    }
                    Err(e) => return Err(e),
                },
            };
            let result = self
                .create_locked(signal, k, seen, guard.as_ref(), calls)
                .await;
            if let (Some(lock), Some(g)) = (&self.lock, &guard)
                && let Err(e) = lock.release(g, calls).await
            {
                // The lease expires on its own; the next writer takes it over.
                tracing::warn!(lease = %g.name, error = %e, "releasing lease failed");
            }
            if let Some(r) = result? {
                return Ok(r);
            }
        }
        Err(Error::Contention(format!(
            "fingerprint {fp}: the active RemediationRequest changed {MAX_ROUNDS} times while this signal was processed"
        )))
    }

    /// create_locked runs the critical section: re-read if the lease was
    /// contended, then create the next generation of RR. None means "start over".
    async fn create_locked(
        &self,
        signal: &Signal,
        k: i64,
        mut seen: Vec<RemediationRequest>,
        guard: Option<&crate::lock::Guard>,
        calls: &ApiCalls,
    ) -> Result<Option<BatchResult>, Error> {
        let fp = &signal.fingerprint;
        if guard.is_some_and(|g| g.waited) {
            seen = self.list(fp, calls, false).await?;
            if let Some(active) = seen.iter().find(|rr| rr.is_active()) {
                return self.add_occurrences(active.clone(), k, calls).await;
            }
        }
        if let Some(g) = guard
            && !g.fits(calls.timeout())
        {
            return Err(Error::Transient {
                op: "creating remediationrequest",
                name: fp.to_string(),
                message: format!(
                    "lease {} would expire before the write could finish",
                    g.name
                ),
            });
        }
        let name = if self.settings.fencing {
            rr_name(fp, next_generation(fp, &seen))
        } else {
            format!("rr-{fp}-u{:016x}", rand::random::<u64>())
        };
        let rr = RemediationRequest {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: signal.to_spec(),
            status: None,
        };
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        testhook::pause(testhook::BEFORE_CREATE).await;
        match calls
            .run(
                "creating remediationrequest",
                &name,
                self.rrs.create(&pp, &rr),
            )
            .await?
        {
            Ok(created) => {
                let r = self.add_occurrences(created, k, calls).await?;
                Ok(r.map(|r| BatchResult { created: true, ..r }))
            }
            Err(e) if api_code(&e) == Some(409) => {
                // Another writer acted on the same view first: count on its RR.
                let winner = calls
                    .read("reading remediationrequest", &name, || {
                        self.rrs.get_opt(&name)
                    })
                    .await?;
                match winner {
                    Some(winner) if winner.is_active() => {
                        self.add_occurrences(winner, k, calls).await
                    }
                    _ => Ok(None), // terminal, or deleted meanwhile: start over
                }
            }
            Err(e) => Err(Error::kube("creating remediationrequest", &name, &e)),
        }
    }

    /// list reads the RRs of a fingerprint. Unless `latest`, the API server may
    /// answer from its watch cache without waiting for it to catch up with
    /// etcd: a consistent list costs up to ~100 ms right after a Lease write,
    /// because the cache must first confirm it has seen every newer write.
    /// Stale answers are safe here: every status write carries the
    /// resourceVersion it read, phases only move forward, and the create is
    /// fenced by its name, so a stale view costs a retry, never a duplicate.
    async fn list(
        &self,
        fp: &Fingerprint,
        calls: &ApiCalls,
        latest: bool,
    ) -> Result<Vec<RemediationRequest>, Error> {
        let mut lp = ListParams::default().fields(&format!("spec.signalFingerprint={fp}"));
        if !latest {
            lp = lp.match_any();
        }
        let list = calls
            .read("listing remediationrequests", fp.as_str(), || {
                self.rrs.list(&lp)
            })
            .await?;
        Ok(list.items)
    }

    /// add_occurrences adds `k` to the RR's count under its resourceVersion,
    /// re-reading on conflict. None means the RR became terminal, or was
    /// deleted, meanwhile.
    async fn add_occurrences(
        &self,
        mut rr: RemediationRequest,
        k: i64,
        calls: &ApiCalls,
    ) -> Result<Option<BatchResult>, Error> {
        let name = rr.metadata.name.clone().unwrap_or_default();
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        for attempt in 0..MAX_STATUS_ATTEMPTS {
            if !rr.is_active() {
                return Ok(None);
            }
            let now = Time(jiff::Timestamp::now());
            let dedup = match rr.status.as_ref().and_then(|s| s.deduplication.as_ref()) {
                Some(d) => Deduplication {
                    first_seen_at: d.first_seen_at.clone(),
                    last_seen_at: now,
                    occurrence_count: d.occurrence_count.saturating_add(k),
                },
                None => Deduplication {
                    first_seen_at: now.clone(),
                    last_seen_at: now,
                    occurrence_count: k,
                },
            };
            let count = dedup.occurrence_count;
            let patch = json!({
                "metadata": { "resourceVersion": rr.metadata.resource_version },
                "status": { "deduplication": dedup },
            });
            match calls
                .run(
                    "updating remediationrequest status",
                    &name,
                    self.rrs.patch_status(&name, &pp, &Patch::Merge(&patch)),
                )
                .await?
            {
                Ok(_) => {
                    return Ok(Some(BatchResult {
                        created: false,
                        rr: format!("{}/{name}", self.settings.namespace),
                        count,
                    }));
                }
                Err(e) if api_code(&e) == Some(409) => {
                    tokio::time::sleep(Duration::from_millis(rand::random_range(
                        1..=5u64 << attempt.min(4),
                    )))
                    .await;
                    match calls
                        .read("reading remediationrequest", &name, || {
                            self.rrs.get_opt(&name)
                        })
                        .await?
                    {
                        Some(fresh) => rr = fresh,
                        None => return Ok(None),
                    }
                }
                // Deleted since it was read (possibly from a stale cache): start over.
                Err(e) if api_code(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(Error::kube("updating remediationrequest status", &name, &e)),
            }
        }
        Err(Error::Contention(format!(
            "remediationrequest {name}: status changed concurrently {MAX_STATUS_ATTEMPTS} times in a row"
        )))
    }
}

/// DrainGuard clears a fingerprint's queue when its drain task ends.
struct DrainGuard {
    pipeline: Arc<Pipeline>,
    fp: Fingerprint,
    armed: bool,
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut queued = self
            .pipeline
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        queued.remove(&self.fp);
    }
}

/// rr_name is the fenced name of generation `generation` of a fingerprint's RR.
#[must_use]
pub fn rr_name(fp: &Fingerprint, generation: u64) -> String {
    format!("rr-{fp}-{generation}")
}

/// next_generation is one more than the highest generation among `seen`.
#[must_use]
pub fn next_generation(fp: &Fingerprint, seen: &[RemediationRequest]) -> u64 {
    let prefix = format!("rr-{fp}-");
    seen.iter()
        .filter_map(|rr| {
            rr.metadata
                .name
                .as_deref()?
                .strip_prefix(&prefix)?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map_or(1, |g| g.saturating_add(1))
}

impl Pipeline {
    /// api_reachable asks the API server for its version, bounded by the call timeout.
    pub async fn api_reachable(&self) -> Result<(), Error> {
        let calls = ApiCalls::new(self.settings.api_timeout);
        calls
            .read("reading version", "apiserver", || {
                self.client.apiserver_version()
            })
            .await
            .map(drop)
    }
}

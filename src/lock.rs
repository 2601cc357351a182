//! Lock is a per-fingerprint Kubernetes Lease held around the check-then-create of an RR.
//!
//! Rules (each fixes a defect of the original plan, see DESIGN.md):
//! - the Lease name is derived from the whole fingerprint (`sg-<64 hex>`);
//! - every acquisition has its own holder identity (`<instance>/<nonce>`), so two
//!   requests of one process never both "hold" the lock;
//! - expiry is judged on the API server's clock only: the age of the Lease's
//!   last server-side write (`creationTimestamp`, `managedFields[].time`) is
//!   measured against the `Date` header of the response that read it, so a
//!   holder with a skewed clock can neither steal nor keep a lease;
//! - an expired Lease is taken over only by an update carrying the
//!   resourceVersion that was read; release deletes with uid and
//!   resourceVersion preconditions, so it never removes someone else's Lease;
//! - waiting is bounded by a budget, jittered, and cancellable.
//!
//! The lock is not renewed: a holder checks before its write that the write's
//! timeout still fits inside the lease, and the RR create itself is fenced
//! (see `pipeline`), so a holder that pauses past expiry cannot duplicate.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams, Preconditions},
};

use crate::{
    apicall::{ApiCalls, api_code},
    error::Error,
    signal::Fingerprint,
};

/// MANAGED_BY labels the Leases this gateway creates, for the sweeper and operators.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "signal-gateway");

/// FIELD_MANAGER is the field manager of every write the gateway makes.
pub const FIELD_MANAGER: &str = "signal-gateway";

/// LeaseLock acquires and releases per-fingerprint Leases in one namespace.
#[derive(Clone)]
pub struct LeaseLock {
    client: Client,
    namespace: String,
    instance: String,
    duration: Duration,
    wait_budget: Duration,
}

/// Guard is proof of one acquisition; release it with `LeaseLock::release`.
#[derive(Debug)]
pub struct Guard {
    pub name: String,
    pub holder: String,
    uid: String,
    resource_version: String,
    acquired: Instant,
    duration: Duration,
    /// waited is true when another writer held the lease first, so the
    /// caller's earlier reads are stale and must be repeated.
    pub waited: bool,
}

impl Guard {
    /// fits reports whether an operation bounded by `needed` still ends
    /// before the lease can expire, judged on this process' monotonic clock
    /// from a moment before the acquiring request was sent.
    #[must_use]
    pub fn fits(&self, needed: Duration) -> bool {
        self.acquired.elapsed() + needed < self.duration
    }
}

/// lease_name is the Lease name for a fingerprint: always a valid DNS-1123 name.
#[must_use]
pub fn lease_name(fp: &Fingerprint) -> String {
    format!("sg-{}", fp.as_str())
}

impl LeaseLock {
    /// new builds a lock client; `instance` (the pod name) prefixes holder identities.
    #[must_use]
    pub fn new(
        client: Client,
        namespace: &str,
        instance: &str,
        duration: Duration,
        wait_budget: Duration,
    ) -> LeaseLock {
        LeaseLock {
            client,
            namespace: namespace.to_owned(),
            instance: instance.to_owned(),
            duration,
            wait_budget,
        }
    }

    fn api(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// acquire takes the Lease for `fp`, waiting at most the wait budget.
    /// `cancelled` is polled between attempts.
    pub async fn acquire(
        &self,
        fp: &Fingerprint,
        calls: &ApiCalls,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Guard, Error> {
        let name = lease_name(fp);
        let holder = format!("{}/{:016x}", self.instance, rand::random::<u64>());
        let start = Instant::now();
        let deadline = start + self.wait_budget;
        let mut waited = false;
        let mut attempt = 0u32;
        loop {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let now = Instant::now();
            if attempt > 0 && now >= deadline {
                return Err(Error::LockBusy {
                    lease: name,
                    waited: now - start,
                });
            }
            attempt += 1;
            let sent = Instant::now();
            let stamp = MicroTime(jiff::Timestamp::now());
            let fresh = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(holder.clone()),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(stamp.clone()),
                    renew_time: Some(stamp),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            match calls
                .run("creating lease", &name, self.api().create(&pp, &fresh))
                .await
            {
                Ok(Ok(lease)) => return Ok(self.guard(lease, holder, sent, waited)),
                Ok(Err(e)) if api_code(&e) == Some(409) => waited = true,
                Ok(Err(e)) if api_code(&e).is_some() => {
                    return Err(Error::kube("creating lease", &name, &e));
                }
                // No answer: the create may still have landed. Do not leave
                // a lease behind that blocks this fingerprint until it expires.
                Ok(Err(e)) => {
                    return Err(self
                        .abandon(
                            &name,
                            &holder,
                            calls,
                            Error::kube("creating lease", &name, &e),
                        )
                        .await);
                }
                Err(e) => return Err(self.abandon(&name, &holder, calls, e).await),
            }

            let Some((current, server_now)) = self.read(&name, calls).await? else {
                continue; // released between our create and our read: try again
            };
            if is_expired(&current, server_now, self.duration) {
                let sent = Instant::now();
                match self.take_over(current, &holder, calls).await {
                    Ok(Some(lease)) => {
                        tracing::info!(lease = %name, holder = %holder, "took over expired lease");
                        return Ok(self.guard(lease, holder, sent, true));
                    }
                    Ok(None) => continue, // someone else changed it first
                    Err(e) => return Err(self.abandon(&name, &holder, calls, e).await),
                }
            }
            let now = Instant::now();
            if now < deadline {
                tokio::time::sleep(backoff(attempt).min(deadline - now)).await;
            }
        }
    }

    /// abandon deletes the Lease if a write whose answer was lost made us its
    /// holder after all, and returns the original error.
    async fn abandon(&self, name: &str, holder: &str, calls: &ApiCalls, err: Error) -> Error {
        let ours = match self.read(name, calls).await {
            Ok(Some((lease, _))) => {
                let held = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref());
                (held == Some(holder)).then_some(lease)
            }
            _ => None,
        };
        if let Some(lease) = ours {
            let guard = Guard {
                name: name.to_owned(),
                holder: holder.to_owned(),
                uid: lease.metadata.uid.unwrap_or_default(),
                resource_version: lease.metadata.resource_version.unwrap_or_default(),
                acquired: Instant::now(),
                duration: self.duration,
                waited: false,
            };
            if let Err(e) = self.release(&guard, calls).await {
                tracing::warn!(lease = %name, error = %e, "could not remove a lease whose acquisition failed");
            }
        }
        err
    }

    fn guard(&self, lease: Lease, holder: String, sent: Instant, waited: bool) -> Guard {
        Guard {
            name: lease.metadata.name.unwrap_or_default(),
            holder,
            uid: lease.metadata.uid.unwrap_or_default(),
            resource_version: lease.metadata.resource_version.unwrap_or_default(),
            acquired: sent,
            duration: self.duration,
            waited,
        }
    }

    async fn take_over(
        &self,
        mut lease: Lease,
        holder: &str,
        calls: &ApiCalls,
    ) -> Result<Option<Lease>, Error> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        let now = MicroTime(jiff::Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(holder.to_owned());
        spec.lease_duration_seconds = Some(self.duration_secs());
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        // `lease` still carries the resourceVersion we read: a concurrent change makes this 409.
        match calls
            .run(
                "taking over lease",
                &name,
                self.api().replace(&name, &pp, &lease),
            )
            .await?
        {
            Ok(lease) => Ok(Some(lease)),
            Err(e) if matches!(api_code(&e), Some(409 | 404)) => Ok(None),
            Err(e) => Err(Error::kube("taking over lease", &name, &e)),
        }
    }

    /// release deletes the Lease if, and only if, it is still the one we acquired.
    /// Releasing twice, or after a takeover, is harmless.
    pub async fn release(&self, guard: &Guard, calls: &ApiCalls) -> Result<(), Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(guard.uid.clone()),
                resource_version: Some(guard.resource_version.clone()),
            }),
            ..DeleteParams::default()
        };
        match calls
            .run(
                "releasing lease",
                &guard.name,
                self.api().delete(&guard.name, &dp),
            )
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => {
                tracing::warn!(lease = %guard.name, holder = %guard.holder, "lease was taken over before release; left alone");
                Ok(())
            }
            Err(e) => Err(Error::kube("releasing lease", &guard.name, &e)),
        }
    }

    /// read gets a Lease together with the API server's clock at the time of the read.
    async fn read(
        &self,
        name: &str,
        calls: &ApiCalls,
    ) -> Result<Option<(Lease, jiff::Timestamp)>, Error> {
        let url = format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        );
        let req = kube::core::Request::new(url)
            .get(name, &Default::default())
            .map_err(|e| Error::kube("reading lease", name, &kube::Error::BuildRequest(e)))?;
        let (lease, now) = self
            .send_with_date::<Lease>(req, "reading lease", name, calls)
            .await?;
        Ok(lease.map(|l| (l, now)))
    }

    /// sweep deletes expired Leases of this gateway, so that the Leases of
    /// crashed holders do not pile up for fingerprints that never recur.
    pub async fn sweep(&self, calls: &ApiCalls) -> Result<usize, Error> {
        let url = format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        );
        let lp =
            kube::api::ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let req = kube::core::Request::new(url)
            .list(&lp)
            .map_err(|e| Error::kube("listing leases", "", &kube::Error::BuildRequest(e)))?;
        let (list, now) = self
            .send_with_date::<kube::api::ObjectList<Lease>>(req, "listing leases", "", calls)
            .await?;
        let mut removed = 0;
        for lease in list.map(|l| l.items).unwrap_or_default() {
            if !is_expired(&lease, now, self.duration) {
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
                .run(
                    "deleting expired lease",
                    &name,
                    self.api().delete(&name, &dp),
                )
                .await?
            {
                Ok(_) => removed += 1,
                Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
                Err(e) => return Err(Error::kube("deleting expired lease", &name, &e)),
            }
        }
        Ok(removed)
    }

    async fn send_with_date<T: serde::de::DeserializeOwned>(
        &self,
        req: http::Request<Vec<u8>>,
        op: &'static str,
        name: &str,
        calls: &ApiCalls,
    ) -> Result<(Option<T>, jiff::Timestamp), Error> {
        use http_body_util::BodyExt;
        let fut = async {
            let res = self.client.send(req.map(kube::client::Body::from)).await?;
            let status = res.status();
            let date = res.headers().get(http::header::DATE).cloned();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, kube::Error>((status, date, body))
        };
        let (status, date, body) = calls.call(op, name, fut).await?;
        if status == http::StatusCode::NOT_FOUND {
            return Ok((None, server_time(date.as_ref())?));
        }
        if !status.is_success() {
            let st = serde_json::from_slice::<kube::core::Status>(&body).unwrap_or_else(|_| {
                kube::core::Status::failure(&String::from_utf8_lossy(&body), "")
                    .with_code(status.as_u16())
            });
            return Err(Error::kube(op, name, &kube::Error::Api(st.boxed())));
        }
        let value = serde_json::from_slice(&body).map_err(|e| Error::Transient {
            op,
            name: name.to_owned(),
            message: format!("decoding response: {e}"),
        })?;
        Ok((Some(value), server_time(date.as_ref())?))
    }
}

fn server_time(date: Option<&http::HeaderValue>) -> Result<jiff::Timestamp, Error> {
    let parsed = date
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .and_then(|t| jiff::Timestamp::try_from(t).ok());
    parsed.ok_or_else(|| Error::Transient {
        op: "reading lease",
        name: String::new(),
        message: "the API server's response has no valid Date header".into(),
    })
}

/// last_server_write is the API server's time of the Lease's newest write.
fn last_server_write(lease: &Lease) -> Option<jiff::Timestamp> {
    let created = lease.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let managed = lease
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.time.as_ref().map(|t| t.0));
    created.into_iter().chain(managed).max()
}

/// is_expired judges expiry on the API server's clock alone. Both times have
/// one-second resolution, so a lease counts as expired only when the rounded
/// age is at least one second beyond its duration.
#[must_use]
pub fn is_expired(lease: &Lease, server_now: jiff::Timestamp, default: Duration) -> bool {
    let holder_empty = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .is_none_or(str::is_empty);
    if holder_empty {
        return true;
    }
    let secs = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .map_or(default.as_secs() as i64, i64::from);
    let Some(written) = last_server_write(lease) else {
        return false;
    };
    let age = server_now.as_second() - written.as_second();
    age > secs
}

/// backoff is the jittered exponential wait before attempt `attempt + 1`:
/// uniform in [d/2, d] with d = 25 ms * 2^attempt, capped at 1 s.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 25u64.saturating_mul(1 << attempt.min(6)).min(1000);
    Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

    fn lease(created: i64, updated: Option<i64>, duration: i32, holder: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).unwrap())),
                managed_fields: updated.map(|u| {
                    vec![ManagedFieldsEntry {
                        time: Some(Time(jiff::Timestamp::from_second(u).unwrap())),
                        ..ManagedFieldsEntry::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(duration),
                // A holder with a clock far in the future cannot keep its lease by this.
                renew_time: Some(MicroTime(
                    jiff::Timestamp::from_second(created + 10_000).unwrap(),
                )),
                ..LeaseSpec::default()
            }),
        }
    }

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn expiry_uses_server_write_times_not_renew_time() {
        let l = lease(1000, None, 10, "a/1");
        assert!(!is_expired(&l, at(1010), Duration::from_secs(30)));
        assert!(is_expired(&l, at(1011), Duration::from_secs(30)));
    }

    #[test]
    fn a_takeover_write_restarts_the_clock() {
        let l = lease(1000, Some(2000), 10, "b/2");
        assert!(!is_expired(&l, at(2005), Duration::from_secs(30)));
        assert!(is_expired(&l, at(2011), Duration::from_secs(30)));
    }

    #[test]
    fn an_empty_holder_is_free() {
        let l = lease(1000, None, 10, "");
        assert!(is_expired(&l, at(1000), Duration::from_secs(30)));
    }

    #[test]
    fn lease_names_are_whole_and_valid() {
        let a = Fingerprint::parse(&"ab".repeat(32)).unwrap();
        let b = Fingerprint::parse(&format!("{}cd", "ab".repeat(31))).unwrap();
        assert_ne!(
            lease_name(&a),
            lease_name(&b),
            "a shared prefix must not collide"
        );
        let n = lease_name(&a);
        assert!(
            n.len() <= 253
                && n.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            assert!(d <= Duration::from_secs(1));
            assert!(d >= Duration::from_millis(12));
        }
        assert!(backoff(0) <= Duration::from_millis(25));
    }
}

//! Soak runs a steady open-loop mix over three replicas while a fault schedule runs,
//! then checks every problem: at most one active RR, and every acknowledged signal counted.
//!
//! Time is cut into windows; each window's signals are about Pods of its own
//! (`soak-<window>-<j>`, new fingerprints then their repeats), so that what a window's
//! fault did shows in that window's problems alone. The faults, in [`SCHEDULE`]'s order,
//! one per window, a fifth into it: `kill` (SIGKILL replica 0 and start it again: every
//! other window), `pause` (SIGSTOP replica 1 past its lease, then SIGCONT), `retention`
//! (complete and delete the window's RRs so far, as kubernaut's retention would, keeping
//! their final counts), `record` (delete the fence record of one of the window's live
//! problems) and `apiserver` (restart kube-apiserver). Replica 2 is never touched: its RSS
//! and open file descriptors at the start and the end show whether they are flat.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::GroupVersionKind;
use serde_json::json;
use testenv::gateway::Gateway;

use crate::load::{firing, spawn, timed_post, warm_up};
use crate::{Bench, BoxError, rrs};

/// Fault is one kind of trouble the soak makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Pause,
    Retention,
    Record,
    ApiServer,
}

impl Fault {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Retention => "retention",
            Fault::Record => "record",
            Fault::ApiServer => "apiserver",
        }
    }
}

/// SCHEDULE is the faults of consecutive windows, repeated.
pub const SCHEDULE: [Fault; 8] = [
    Fault::Kill,
    Fault::Pause,
    Fault::Kill,
    Fault::Retention,
    Fault::Kill,
    Fault::Record,
    Fault::Kill,
    Fault::ApiServer,
];

/// PODS is the number of problems of one window.
const PODS: usize = 10;
/// LOCK_SECONDS is the soak's lease duration; a paused replica stays stopped past it.
const LOCK_SECONDS: u64 = 3;

/// FaultRow sums the windows of one fault kind.
#[derive(Clone, Debug, Default)]
pub struct FaultRow {
    pub kind: &'static str,
    pub windows: u64,
    pub sent: u64,
    pub ok: u64,
    pub unavailable: u64,
    /// other is every answer neither 2xx nor 503, and no answer at all (a killed replica).
    pub other: u64,
    pub duplicates: u64,
    pub not_counted: u64,
    /// statuses counts the answers by status (0: no answer).
    pub statuses: BTreeMap<u16, u64>,
}

/// ReplicaUse is one replica's RSS and open file descriptors before the third fault and
/// before the last, both under the soak's load.
#[derive(Clone, Debug)]
pub struct ReplicaUse {
    pub name: String,
    pub restarts: u64,
    pub rss_kib: (u64, u64),
    pub fds: (u64, u64),
}

/// Soak is what one soak measured.
#[derive(Clone, Debug)]
pub struct Soak {
    pub window: Duration,
    pub windows: usize,
    pub rate: f64,
    pub rows: Vec<FaultRow>,
    pub replicas: Vec<ReplicaUse>,
}

impl Soak {
    /// total sums every fault kind.
    #[must_use]
    pub fn total(&self) -> FaultRow {
        self.rows.iter().fold(FaultRow::default(), |a, r| FaultRow {
            kind: "all",
            windows: a.windows + r.windows,
            sent: a.sent + r.sent,
            ok: a.ok + r.ok,
            unavailable: a.unavailable + r.unavailable,
            other: a.other + r.other,
            duplicates: a.duplicates + r.duplicates,
            not_counted: a.not_counted + r.not_counted,
            statuses: r.statuses.iter().fold(a.statuses, |mut m, (k, v)| {
                *m.entry(*k).or_default() += v;
                m
            }),
        })
    }
}

fn fds(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ledger is what the load saw and what the faults deleted.
#[derive(Default)]
struct Ledger {
    /// answers are (window, pod, status) per signal sent.
    answers: Vec<(usize, String, u16)>,
    /// deleted sums the final counts of the RRs the retention fault deleted, per pod.
    deleted: BTreeMap<String, u64>,
}

impl Bench {
    /// soak runs `windows` windows of `window` at `rate` signals/s over three replicas.
    pub(crate) async fn soak(&mut self) -> Result<Soak, BoxError> {
        let (window, windows, rate) = (
            self.options.soak_window,
            self.options.soak_windows,
            self.options.soak_rate,
        );
        eprintln!(
            "bench: soak: {windows} windows of {window:?} at {rate}/s over 3 replicas, faults {:?}",
            SCHEDULE.map(Fault::name)
        );
        let ns = self.cp.new_namespace().await?;
        let lock_seconds = LOCK_SECONDS.to_string();
        let env: Vec<(&str, &str)> = vec![
            ("GATEWAY_LOCK_DURATION_SECONDS", lock_seconds.as_str()),
            ("GATEWAY_API_TIMEOUT_MS", "2000"),
            ("GATEWAY_LOCK_WAIT_MS", "3000"),
        ];
        let mut gws = Vec::new();
        for i in 0..3 {
            let g = spawn(
                &self.options.gateway,
                &self.cp,
                ns.name(),
                &format!("soak-{i}"),
                &env,
            )?;
            warm_up(&self.http, &g, firing(&format!("warmup-soak-{i}"))).await?;
            gws.push(g);
        }
        let addrs = Arc::new(Mutex::new(
            gws.iter().map(Gateway::addr).collect::<Vec<_>>(),
        ));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let start = Instant::now();
        let n = (rate * (window * windows as u32).as_secs_f64()) as usize;

        let load = {
            let (http, addrs, ledger) =
                (self.http.clone(), Arc::clone(&addrs), Arc::clone(&ledger));
            tokio::spawn(async move {
                let mut tasks = Vec::with_capacity(n);
                for i in 0..n {
                    let at = Duration::from_secs_f64(i as f64 / rate);
                    let intended = start + at;
                    tokio::time::sleep_until(intended.into()).await;
                    let k = (at.as_secs_f64() / window.as_secs_f64()) as usize;
                    let pod = format!("soak-{k}-{}", i % PODS);
                    let to: SocketAddr = lock(&addrs)[i % 3];
                    let (http, ledger) = (http.clone(), Arc::clone(&ledger));
                    tasks.push(tokio::spawn(async move {
                        let a = timed_post(&http, to, firing(&pod), intended).await;
                        lock(&ledger).answers.push((k, pod, a.status));
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        };

        let mut restarts = [0u64; 3];
        // Use is sampled just before each fault, under the same load each time.
        let mut samples: Vec<Vec<(u64, u64)>> = Vec::new();
        for k in 0..windows {
            let at = start + window * k as u32 + window / 5;
            tokio::time::sleep_until(at.into()).await;
            samples.push(gws.iter().map(|g| (g.memory().0, fds(g.pid()))).collect());
            let fault = SCHEDULE[k % SCHEDULE.len()];
            match fault {
                Fault::Kill => {
                    gws[0].kill();
                    let g = spawn(&self.options.gateway, &self.cp, ns.name(), "soak-0", &env)?;
                    lock(&addrs)[0] = g.addr();
                    gws[0] = g;
                    restarts[0] += 1;
                }
                Fault::Pause => {
                    gws[1].signal(libc::SIGSTOP);
                    tokio::time::sleep(Duration::from_secs(LOCK_SECONDS + 1)).await;
                    gws[1].signal(libc::SIGCONT);
                }
                Fault::Retention => {
                    let deleted = retire(&self.cp.admin_client(), ns.name(), k).await?;
                    let mut l = lock(&ledger);
                    for (pod, count) in deleted {
                        *l.deleted.entry(pod).or_default() += count;
                    }
                }
                Fault::Record => {
                    lose_record(&self.cp.admin_client(), ns.name(), k).await?;
                }
                Fault::ApiServer => {
                    self.cp.stop_apiserver();
                    self.cp.start_apiserver().await?;
                }
            }
        }
        load.await?;

        // From before the third fault (the first kill and pause are behind, their idle
        // connections closed) to before the last.
        let start_use = samples[2.min(samples.len() - 1)].clone();
        let end_use = samples[samples.len() - 1].clone();
        let listed = rrs::list(&self.cp.admin_client(), ns.name()).await?;
        let by_pod = listed.by_target();
        let ledger = std::mem::take(&mut *lock(&ledger));
        let mut acked: BTreeMap<(usize, String), u64> = BTreeMap::new();
        let mut rows: BTreeMap<&'static str, FaultRow> = BTreeMap::new();
        for (k, pod, status) in &ledger.answers {
            let kind = SCHEDULE[k % SCHEDULE.len()].name();
            let row = rows.entry(kind).or_insert_with(|| FaultRow {
                kind,
                ..FaultRow::default()
            });
            row.sent += 1;
            *row.statuses.entry(*status).or_default() += 1;
            match status {
                200..=299 => {
                    row.ok += 1;
                    *acked.entry((*k, pod.clone())).or_default() += 1;
                }
                503 => row.unavailable += 1,
                _ => row.other += 1,
            }
        }
        for k in 0..windows {
            let kind = SCHEDULE[k % SCHEDULE.len()].name();
            let row = rows.entry(kind).or_insert_with(|| FaultRow {
                kind,
                ..FaultRow::default()
            });
            row.windows += 1;
            for j in 0..PODS {
                let pod = format!("soak-{k}-{j}");
                let (active, counted) = by_pod.get(&pod).copied().unwrap_or((0, 0));
                let counted = counted + ledger.deleted.get(&pod).copied().unwrap_or(0);
                let acked = acked.get(&(k, pod)).copied().unwrap_or(0);
                row.duplicates += active.saturating_sub(1);
                row.not_counted += acked.saturating_sub(counted);
            }
        }
        let replicas = gws
            .iter()
            .zip(start_use.iter().zip(&end_use))
            .zip(restarts)
            .map(|((g, (s, e)), restarts)| ReplicaUse {
                name: g.name().to_owned(),
                restarts,
                rss_kib: (s.0, e.0),
                fds: (s.1, e.1),
            })
            .collect();
        for g in &gws {
            g.signal(libc::SIGTERM);
        }
        tokio::task::block_in_place(|| {
            for g in &mut gws {
                let _ = g.wait();
            }
        });
        let soak = Soak {
            window,
            windows,
            rate,
            rows: SCHEDULE
                .iter()
                .filter_map(|f| rows.remove(f.name()))
                .collect(),
            replicas,
        };
        let t = soak.total();
        eprintln!(
            "bench: soak: {} sent, {} 2xx, {} 503, {} other, {} duplicates, {} acknowledged not counted",
            t.sent, t.ok, t.unavailable, t.other, t.duplicates, t.not_counted
        );
        Ok(soak)
    }
}

fn rr_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kubernaut.ai", "v1alpha1", "RemediationRequest");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "remediationrequests");
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// retire completes and deletes the RRs of window `k`'s Pods, as retention would, and
/// returns each one's final count: the delete is conditional on the resourceVersion the
/// count was read at, so a count that lands in between is read again, never lost.
async fn retire(client: &kube::Client, ns: &str, k: usize) -> Result<Vec<(String, u64)>, BoxError> {
    let api = rr_api(client, ns);
    let prefix = format!("soak-{k}-");
    let mut out = Vec::new();
    for rr in api.list(&Default::default()).await?.items {
        let target = rr.data["spec"]["targetResource"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !target.starts_with(&prefix) {
            continue;
        }
        let name = rr.metadata.name.clone().unwrap_or_default();
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"overallPhase": "Completed"}})),
        )
        .await?;
        for attempt in 0.. {
            let now = api.get(&name).await?;
            let count = now.data["status"]["deduplication"]["occurrenceCount"]
                .as_u64()
                .unwrap_or(0);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: now.metadata.resource_version.clone(),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {
                    out.push((target.clone(), count));
                    break;
                }
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < 20 => continue,
                Err(e) => return Err(format!("deleting {name}: {e}").into()),
            }
        }
    }
    Ok(out)
}

/// lose_record deletes the fence record of one live problem of window `k`.
async fn lose_record(client: &kube::Client, ns: &str, k: usize) -> Result<(), BoxError> {
    let prefix = format!("soak-{k}-");
    let live = rr_api(client, ns)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .find(|rr| {
            rr.data["spec"]["targetResource"]["name"]
                .as_str()
                .is_some_and(|t| t.starts_with(&prefix))
        });
    let Some(rr) = live else {
        return Ok(());
    };
    let fp = rr.data["spec"]["signalFingerprint"]
        .as_str()
        .unwrap_or_default();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns);
    match leases
        .delete(&format!("sg-{fp}"), &DeleteParams::default())
        .await
    {
        Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

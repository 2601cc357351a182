//! bench measures signal-gateway processes against a real control plane and
//! writes `report.json`, `report.md` and `latency_cdf.svg`; it asserts nothing
//! about timing. `hack/bench.sh` runs the full bench; the end-to-end tests run
//! [`Options::smoke`] so that it cannot rot.
//!
//! It starts etcd and kube-apiserver (testenv) and an OpenTelemetry Collector,
//! spawns gateway processes, drives them over plain HTTP/1 on loopback, counts
//! API requests with the API server's `apiserver_request_total`, duplicates
//! from the RRs it lists, and lock outcomes from the gateways' own OTLP
//! metrics. Every number of one report comes from the same run, so that
//! ratios are taken under the same load on a shared machine.

#![deny(rust_2018_idioms)]

mod apiserver;
mod cpu;
mod load;
mod otel;
mod profile;
mod raw;
mod report;
mod rrs;
mod soak;
mod stats;
mod svg;
mod workloads;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use testenv::ControlPlane;
use testenv::collector::Collector;
use testenv::gateway::Gateway;

use crate::apiserver::ApiServer;
use crate::load::{
    Http, LambdaStart, Phase, Schedule, cold_start, firing, firing_in, http, lambda_start,
    run_phase, spawn, warm_up,
};
use crate::otel::LockCounts;
use crate::raw::Raw;

pub use crate::report::{LOCK_ON_ONLY_SCENARIOS, OWNER_SCENARIOS, Report, SCENARIOS};

/// BoxError is any error of the bench.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// IDLE_WINDOW is how long the API server's background traffic is observed.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// ROUNDS is how many turns the lock settings take in `new` and `duplicate`.
const ROUNDS: usize = 4;
/// EXPORT_INTERVAL_MS is the gateways' OTLP export period.
const EXPORT_INTERVAL_MS: &str = "2000";

/// Options are the counts and rates of one run.
#[derive(Clone, Debug)]
pub struct Options {
    /// gateway is the signal-gateway binary to run.
    pub gateway: PathBuf,
    /// out is where the report files go.
    pub out: PathBuf,
    /// rate is the arrival rate of the open-loop scenarios, per second.
    pub rate: f64,
    /// signals is the number of signals of each `new`, `duplicate` and `crowded` phase.
    pub signals: usize,
    /// plan_signals is the number of signals of the `plan` scenario.
    pub plan_signals: usize,
    /// storm is the number of identical signals of the `storm` and `storm_split` scenarios.
    pub storm: usize,
    /// crowd is the number of other RRs in the `crowded` namespace.
    pub crowd: usize,
    /// owners is the number of Deployments (two Pods each) of the `owners` scenario,
    /// and so the number of signals of each of its phases.
    pub owners: usize,
    /// rollout_pods is the number of Pods of the `rollout_storm` Deployment, one signal each.
    pub rollout_pods: usize,
    /// scale_signals and scale_fingerprints shape each `scale` run.
    pub scale_signals: usize,
    pub scale_fingerprints: usize,
    /// in_flight is the closed loop's concurrency in `scale`.
    pub in_flight: usize,
    /// cold_starts is the number of cold starts measured.
    pub cold_starts: usize,
    /// lambda_starts is the number of Lambda cold starts measured under AWS's Runtime
    /// Interface Emulator (the package `SIGNAL_GATEWAY_LAMBDA_ZIP` names, hack/bench.sh
    /// builds it).
    pub lambda_starts: usize,
    /// soak_windows windows of soak_window each, at soak_rate signals/s, make the soak
    /// (`hack/bench.sh --soak MINUTES`: two windows a minute).
    pub soak_windows: usize,
    pub soak_window: Duration,
    pub soak_rate: f64,
    /// profile samples the gateway's CPU with perf during the saturated `new` phase.
    pub profile: bool,
    /// idle_window is how long the API server's background traffic is observed.
    pub idle_window: Duration,
}

impl Options {
    /// full is the full bench (about six minutes on two cores).
    #[must_use]
    pub fn full(gateway: PathBuf, out: PathBuf) -> Options {
        Options {
            gateway,
            out,
            rate: 50.0,
            signals: 1000,
            plan_signals: 1000,
            storm: 1000,
            crowd: 10_000,
            owners: 200,
            rollout_pods: 50,
            scale_signals: 2000,
            scale_fingerprints: 500,
            in_flight: 64,
            cold_starts: 5,
            lambda_starts: 5,
            soak_windows: 8,
            soak_window: Duration::from_secs(30),
            soak_rate: 20.0,
            profile: true,
            idle_window: IDLE_WINDOW,
        }
    }

    /// smoke has tiny counts: every scenario runs, in seconds.
    #[must_use]
    pub fn smoke(gateway: PathBuf, out: PathBuf) -> Options {
        Options {
            rate: 100.0,
            signals: 5,
            plan_signals: 12,
            storm: 12,
            crowd: 20,
            owners: 4,
            rollout_pods: 6,
            scale_signals: 12,
            scale_fingerprints: 4,
            in_flight: 4,
            cold_starts: 1,
            lambda_starts: 1,
            soak_windows: 8,
            soak_window: Duration::from_millis(1500),
            profile: false,
            idle_window: Duration::from_secs(1),
            ..Options::full(gateway, out)
        }
    }
}

/// Run is one scenario with one lock setting.
pub struct Run {
    pub scenario: String,
    pub locking: bool,
    /// owners says whether the gateways resolved Pods to their Deployments.
    pub owners: bool,
    pub replicas: usize,
    pub phase: Phase,
    /// duplicates counts active RRs beyond one per fingerprint, listed after the phase.
    pub duplicates: u64,
    /// resolved is what the RRs say about the scenario's Deployments (owner resolution on).
    pub resolved: Option<Resolved>,
    /// split is what `storm_split` left in its two namespaces (None for the other runs).
    pub split: Option<Split>,
    /// fleet names the gateways that served it (their lock metrics).
    pub fleet: String,
}

/// Split checks, after `storm_split` (fence records in a lock namespace of their own),
/// where the fence records went and that one RR counted the whole burst.
pub struct Split {
    /// lock_records counts the fence records (Leases `sg-*`) in the lock namespace: the
    /// storm's fingerprint's and the warm-ups'.
    pub lock_records: u64,
    /// rr_records counts those in the RRs' namespace: none.
    pub rr_records: u64,
    /// rrs counts the RRs about the storm's Pod: one.
    pub rrs: u64,
    /// occurrences sums their occurrence counts: every signal of the burst, once.
    pub occurrences: u64,
}

/// Resolved checks, after a phase with owner resolution on, that the signals about Pods
/// were counted on RRs about their Deployments.
pub struct Resolved {
    /// deployments is the number of Deployments the scenario's Pods belong to.
    pub deployments: u64,
    /// rrs counts the RRs about those Deployments: one each.
    pub rrs: u64,
    /// occurrences sums their occurrence counts: every signal so far, once.
    pub occurrences: u64,
    /// pod_rrs counts the RRs of the namespace about a Pod: none.
    pub pod_rrs: u64,
}

/// Count checks the occurrence counts of one namespace: every 2xx answer
/// must be counted on an RR.
pub struct Count {
    pub fleet: String,
    pub acknowledged: u64,
    pub counted: u64,
}

/// FleetMemory is the memory of a fleet's replicas when it stopped.
pub struct FleetMemory {
    pub fleet: String,
    pub replicas: usize,
    pub rss_kib_max: u64,
    pub hwm_kib_max: u64,
}

/// Baseline is one load run twice: through a gateway, and as the raw requests alone
/// (`raw`), against the same API server.
pub struct Baseline {
    /// kind is `new` or `duplicate`.
    pub kind: &'static str,
    pub gateway: Phase,
    pub raw: Phase,
}

/// Results is everything one run measured.
pub struct Results {
    pub options: Options,
    pub facts: Vec<(&'static str, String)>,
    pub scrape_cost: f64,
    pub background: (f64, f64),
    pub runs: Vec<Run>,
    pub counts: Vec<Count>,
    /// locks are the lock counters by fleet, for the fleets with locking on.
    pub locks: Vec<(String, LockCounts)>,
    /// crowd_created is how long creating the crowd took.
    pub crowd_created: Duration,
    pub idle_rss_kib: Vec<u64>,
    pub peak_hwm_kib: u64,
    /// memory is each fleet's largest RSS per replica, at its end and at its peak.
    pub memory: Vec<FleetMemory>,
    pub cold: Vec<Duration>,
    pub lambda: Vec<LambdaStart>,
    pub baseline: Vec<Baseline>,
    /// raw_crowded is the raw client's `new` in the crowded namespace, open loop.
    pub raw_crowded: Option<Phase>,
    pub profile: Option<profile::Profile>,
    pub soak: soak::Soak,
    /// binary_bytes is the gateway binary's size stripped, as the image ships it (None if
    /// `strip` failed); binary_bytes_benchmarked is the file the bench ran.
    pub binary_bytes: Option<u64>,
    pub binary_bytes_benchmarked: u64,
}

/// Bench is the shared state of one run.
struct Bench {
    options: Options,
    cp: ControlPlane,
    http: Http,
    api: ApiServer,
    collector: Collector,
    runs: Vec<Run>,
    counts: Vec<Count>,
    /// fleets are the fleet names with locking on and their instances.
    fleets: Vec<(String, Vec<String>)>,
    idle_rss_kib: Vec<u64>,
    peak_hwm_kib: u64,
    memory: Vec<FleetMemory>,
    /// raw is the raw baseline's client, once it has run.
    raw: Option<Raw>,
}

/// Fleet is the gateways of one scenario and lock setting.
struct Fleet {
    name: String,
    locking: bool,
    /// owners says whether owner resolution is on.
    owners: bool,
    gws: Vec<Gateway>,
    /// acknowledged counts the 2xx answers they gave, warm-ups included.
    acknowledged: u64,
    ns: String,
    /// deployments are the Deployments whose Pods the scenario's signals are about.
    deployments: Vec<String>,
}

/// run measures everything and writes the report files into `options.out`.
pub async fn run(options: Options) -> Result<Report, BoxError> {
    let started = Instant::now();
    let mut facts = facts(&options);
    if !options.gateway.is_file() {
        return Err(format!(
            "{} not found; build it with `cargo build --release` (hack/bench.sh does)",
            options.gateway.display()
        )
        .into());
    }
    eprintln!("bench: starting the control plane and the collector");
    let cp = ControlPlane::start().await?;
    let crd = testenv::read_crd(&repo_root().join("chart/crds/remediationrequests.yaml"))?;
    cp.install_crd(crd).await?;
    facts.push((
        "control plane",
        format!(
            "kube-apiserver + etcd from `{}` (testenv, loopback, TLS)",
            testenv::binaries_dir()?.display()
        ),
    ));
    let collector = tokio::task::block_in_place(Collector::start);
    let mut api = ApiServer::new(cp.admin_client()).await?;
    eprintln!("bench: measuring the API server's background traffic");
    api.measure_background(options.idle_window).await?;
    let mut b = Bench {
        options: options.clone(),
        cp,
        http: http(),
        api,
        collector,
        runs: Vec::new(),
        counts: Vec::new(),
        fleets: Vec::new(),
        idle_rss_kib: Vec::new(),
        peak_hwm_kib: 0,
        memory: Vec::new(),
        raw: None,
    };

    b.new_and_duplicate("", None).await?;
    let (baseline, profile) = b.raw_baseline().await?;
    eprintln!("bench: crowding a namespace with {} RRs", options.crowd);
    let crowded = b.cp.new_namespace().await?;
    let t = Instant::now();
    rrs::crowd(&b.cp.admin_client(), crowded.name(), options.crowd).await?;
    let crowd_created = t.elapsed();
    b.new_and_duplicate("crowded_", Some(crowded.name()))
        .await?;
    let raw_crowded = b.raw_crowded(crowded.name()).await?;
    for locking in [true, false] {
        b.plan(3, locking).await?;
    }
    for locking in [true, false] {
        b.storm(3, locking).await?;
    }
    b.storm_split().await?;
    b.owners().await?;
    b.rollout_storm(3).await?;
    // The original plan's production shape: ten replicas, locking on.
    b.plan(TEN, true).await?;
    b.storm(TEN, true).await?;
    b.rollout_storm(TEN).await?;
    for replicas in 1..=3 {
        for locking in [true, false] {
            b.scale(replicas, locking).await?;
        }
    }

    eprintln!("bench: cold starts");
    let ns = b.cp.new_namespace().await?;
    let mut cold = Vec::new();
    for i in 0..options.cold_starts {
        cold.push(cold_start(&options.gateway, &b.cp, ns.name(), &b.http, i).await?);
    }

    eprintln!("bench: Lambda cold starts under the Runtime Interface Emulator");
    let mut lambda = Vec::new();
    for i in 0..options.lambda_starts {
        lambda.push(lambda_start(&b.cp, ns.name(), i).await?);
    }

    // Last: it restarts the API server.
    let soak = b.soak().await?;

    eprintln!("bench: reading the gateways' lock metrics");
    let instances: Vec<String> = b.fleets.iter().flat_map(|(_, i)| i.clone()).collect();
    let by_instance = otel::wait_locks(&b.collector, &instances).await;
    let locks = b
        .fleets
        .iter()
        .map(|(fleet, instances)| {
            let mut sum = LockCounts::default();
            for i in instances {
                if let Some(c) = by_instance.get(i) {
                    sum.add(c);
                }
            }
            (fleet.clone(), sum)
        })
        .collect();

    facts.push(("load average at end (1/5/15 min)", loadavg()));
    facts.push((
        "bench duration",
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    ));
    let results = Results {
        binary_bytes: stripped_size(&options.gateway),
        binary_bytes_benchmarked: std::fs::metadata(&options.gateway).map_or(0, |m| m.len()),
        options,
        facts,
        scrape_cost: b.api.scrape_cost,
        background: b.api.background,
        runs: b.runs,
        counts: b.counts,
        locks,
        crowd_created,
        idle_rss_kib: b.idle_rss_kib,
        peak_hwm_kib: b.peak_hwm_kib,
        memory: b.memory,
        cold,
        lambda,
        baseline,
        raw_crowded,
        profile,
        soak,
    };
    report::write(&results)
}

impl Bench {
    /// raw_baseline runs `new` and `duplicate` on one gateway and as the raw requests
    /// (`raw`), open loop at the bench's rate and closed loop at its concurrency, each in a
    /// namespace of its own. The two sides take turns in [`ROUNDS`] rounds (gateway, raw, raw,
    /// gateway, ...), so that the machine's drift falls on both alike, and the CPU of every
    /// process is accounted to the side whose round it was. The raw templates are the
    /// warm-up's RR and record. The profile samples one more saturated round of new RRs on
    /// its own, counted in no ratio: perf's own CPU would weigh on the gateway's side.
    async fn raw_baseline(
        &mut self,
    ) -> Result<(Vec<Baseline>, Option<profile::Profile>), BoxError> {
        let gw_ns = self.cp.new_namespace().await?;
        let raw_ns = self.cp.new_namespace().await?;
        let mut fleet = self.fleet("baseline", gw_ns.name(), 1, true, false).await?;
        let warm = rrs::list(&self.cp.admin_client(), gw_ns.name()).await?;
        let fp = (*warm
            .fingerprints()
            .first()
            .ok_or("the warm-up made no RR to copy")?)
        .to_owned();
        let raw_client =
            Raw::from_gateway(&self.cp.gateway_client(), gw_ns.name(), &fp, raw_ns.name()).await?;
        let n = self.options.signals;
        let rounds = ROUNDS.min(n);
        let mut out = Vec::new();
        let loads = [
            (
                "open",
                1u32,
                Schedule::Rate {
                    per_s: self.options.rate,
                },
            ),
            (
                "closed",
                2,
                Schedule::Closed {
                    in_flight: self.options.in_flight,
                },
            ),
        ];
        // Warm the raw client's connections as the fleet's warm-up did the gateway's.
        let warmup = format!("{:08x}{:056x}", 0, 0);
        raw_client.new_rr(&warmup, Instant::now()).await;
        for (load, tag, schedule) in loads {
            let fps: Vec<String> = (0..n).map(|i| format!("{tag:08x}{i:056x}")).collect();
            for kind in ["new", "duplicate"] {
                let mut sides: [Option<Phase>; 2] = [None, None];
                for round in 0..rounds {
                    let part = round * n / rounds..(round + 1) * n / rounds;
                    let label = format!("baseline {kind}, {load} loop {}/{rounds}", round + 1);
                    let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                    for side in order {
                        let phase = if side == 0 {
                            let bodies = part
                                .clone()
                                .map(|i| firing(&format!("baseline-{load}-{i}")))
                                .collect();
                            self.measure(&label, &mut fleet, bodies, schedule).await?
                        } else {
                            self.raw_phase(&label, &raw_client, kind, &fps[part.clone()], schedule)
                                .await?
                        };
                        match &mut sides[side] {
                            Some(p) => p.merge(phase),
                            slot => *slot = Some(phase),
                        }
                    }
                }
                let [Some(gateway), Some(raw)] = sides else {
                    return Err("the raw baseline ran no round".into());
                };
                out.push(Baseline { kind, gateway, raw });
            }
        }
        let sampled = if self.options.profile {
            let bodies = (0..n / rounds)
                .map(|i| firing(&format!("baseline-profiled-{i}")))
                .collect();
            let closed = Schedule::Closed {
                in_flight: self.options.in_flight,
            };
            match profile::start(fleet.gws[0].pid(), &self.options.out) {
                Some(recording) => {
                    let label = "baseline new, closed loop, profiled";
                    self.measure(label, &mut fleet, bodies, closed).await?;
                    Some(recording.finish()?)
                }
                None => None,
            }
        } else {
            None
        };
        self.stop(fleet).await?;
        self.raw = Some(raw_client);
        Ok((out, sampled))
    }

    /// raw_crowded sends the raw requests of `new` into the crowded namespace `ns`, open loop
    /// at the bench's rate: what the API server alone costs with the crowd. None before the
    /// raw baseline.
    async fn raw_crowded(&self, ns: &str) -> Result<Option<Phase>, BoxError> {
        let Some(raw) = &self.raw else {
            return Ok(None);
        };
        let raw = raw.retargeted(&self.cp.gateway_client(), ns);
        let fps: Vec<String> = (0..self.options.signals)
            .map(|i| format!("{:08x}{i:056x}", 3))
            .collect();
        let rate = Schedule::Rate {
            per_s: self.options.rate,
        };
        let phase = self
            .raw_phase("crowded_new", &raw, "new", &fps, rate)
            .await?;
        Ok(Some(phase))
    }

    /// raw_phase makes the raw requests of `kind` for `fps` as `schedule` says.
    async fn raw_phase(
        &self,
        label: &str,
        raw: &Raw,
        kind: &str,
        fps: &[String],
        schedule: Schedule,
    ) -> Result<Phase, BoxError> {
        let (raw, fps, new) = (raw.clone(), Arc::new(fps.to_vec()), kind == "new");
        let n = fps.len();
        let send: load::Send = Arc::new(move |i, from| {
            let (raw, fps) = (raw.clone(), Arc::clone(&fps));
            Box::pin(async move {
                if new {
                    raw.new_rr(&fps[i], from).await
                } else {
                    raw.duplicate(&fps[i], from).await
                }
            })
        });
        let before = self.api.scrape().await?;
        let used = cpu::sample();
        let started = Instant::now();
        let answers = load::drive_with(n, schedule, send).await?;
        let wall = started.elapsed();
        let cpu = cpu::sample().since(&used);
        let phase = Phase {
            answers,
            schedule,
            wall,
            signals: n as u64,
            logged: testenv::gateway::Batches::default(),
            server: self.api.since(&before).await?,
            cpu,
        };
        eprintln!(
            "bench: raw {label}: {} in {:.2?} ({:.0}/s), p50 {:.1} ms, API/signal {:.2}, answers {:?}",
            phase.signals,
            phase.wall,
            phase.signals_per_s(),
            stats::stats(&phase.latencies()).p50,
            phase.requests_per_signal(),
            phase.by_status()
        );
        Ok(phase)
    }

    /// fleet is [`Bench::fleet_in`] with the fence records beside the RRs, in `ns`.
    async fn fleet(
        &mut self,
        name: &str,
        ns: &str,
        replicas: usize,
        locking: bool,
        owners: bool,
    ) -> Result<Fleet, BoxError> {
        self.fleet_in(name, ns, None, replicas, locking, owners)
            .await
    }

    /// fleet_in starts `replicas` gateways in `ns` and warms each up. With
    /// `lock_ns` they keep their fence records there (`GATEWAY_LOCK_NAMESPACE`). With owner
    /// resolution on (`owners`) the warm-up signal is about the one Pod of a
    /// Deployment of its own, `warmup-<instance>`, created here: the gateway
    /// refuses a Pod that does not exist, and the scenario's own Deployments stay
    /// unresolved until it measures them. `ns` then needs its `default` ServiceAccount.
    async fn fleet_in(
        &mut self,
        name: &str,
        ns: &str,
        lock_ns: Option<&str>,
        replicas: usize,
        locking: bool,
        owners: bool,
    ) -> Result<Fleet, BoxError> {
        let endpoint = self.collector.endpoint();
        let instances: Vec<String> = (0..replicas).map(|i| format!("{name}-{i}")).collect();
        let warmups: Vec<Bytes> = if owners {
            let names: Vec<String> = instances.iter().map(|i| format!("warmup-{i}")).collect();
            workloads::deployments(&self.cp.admin_client(), ns, &names, 1)
                .await?
                .iter()
                .map(|pods| firing_in(ns, &pods[0]))
                .collect()
        } else {
            instances
                .iter()
                .map(|i| firing(&format!("warmup-{i}")))
                .collect()
        };
        let mut gws = Vec::new();
        for instance in &instances {
            let resource = format!("service.instance.id={instance}");
            let mut env = vec![
                ("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", on_true(locking)),
                ("GATEWAY_OWNER_RESOLUTION", on_true(owners)),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_METRIC_EXPORT_INTERVAL", EXPORT_INTERVAL_MS),
                ("OTEL_RESOURCE_ATTRIBUTES", resource.as_str()),
            ];
            if let Some(lock_ns) = lock_ns {
                env.push(("GATEWAY_LOCK_NAMESPACE", lock_ns));
            }
            gws.push(spawn(&self.options.gateway, &self.cp, ns, instance, &env)?);
        }
        for (g, body) in gws.iter().zip(warmups) {
            warm_up(&self.http, g, body).await?;
            self.idle_rss_kib.push(g.memory().0);
        }
        if locking {
            self.fleets.push((
                name.to_owned(),
                gws.iter().map(|g| g.name().to_owned()).collect(),
            ));
        }
        Ok(Fleet {
            name: name.to_owned(),
            locking,
            owners,
            acknowledged: gws.len() as u64,
            gws,
            ns: ns.to_owned(),
            deployments: Vec::new(),
        })
    }

    /// phase runs one scenario on `fleet` and lists the RRs after it.
    async fn phase(
        &mut self,
        scenario: &str,
        fleet: &mut Fleet,
        bodies: Vec<Bytes>,
        schedule: Schedule,
    ) -> Result<(), BoxError> {
        let phase = self.measure(scenario, fleet, bodies, schedule).await?;
        self.record(scenario, fleet, phase).await
    }

    /// measure runs `bodies` on `fleet`.
    async fn measure(
        &mut self,
        scenario: &str,
        fleet: &mut Fleet,
        bodies: Vec<Bytes>,
        schedule: Schedule,
    ) -> Result<Phase, BoxError> {
        let label = format!("{scenario}, locking {}", on_off(fleet.locking));
        let gws: Vec<&Gateway> = fleet.gws.iter().collect();
        let phase = run_phase(&label, &self.api, &self.http, &gws, bodies, schedule).await?;
        fleet.acknowledged += phase.signals - phase.errors();
        Ok(phase)
    }

    /// record lists the RRs after `phase` and keeps it as a run.
    async fn record(
        &mut self,
        scenario: &str,
        fleet: &Fleet,
        phase: Phase,
    ) -> Result<(), BoxError> {
        let listed = rrs::list(&self.cp.admin_client(), &fleet.ns).await?;
        let resolved = fleet.owners.then(|| {
            let names: BTreeSet<&str> = fleet.deployments.iter().map(String::as_str).collect();
            let (rrs, occurrences) = listed.about(&names);
            Resolved {
                deployments: names.len() as u64,
                rrs,
                occurrences,
                pod_rrs: listed.of_kind("Pod"),
            }
        });
        self.runs.push(Run {
            scenario: scenario.to_owned(),
            locking: fleet.locking,
            owners: fleet.owners,
            replicas: fleet.gws.len(),
            phase,
            duplicates: listed.duplicates(),
            resolved,
            split: None,
            fleet: fleet.name.clone(),
        });
        Ok(())
    }

    /// stop checks the fleet's occurrence counts, then stops its gateways with
    /// SIGTERM so that they flush their last metrics.
    async fn stop(&mut self, mut fleet: Fleet) -> Result<(), BoxError> {
        let listed = rrs::list(&self.cp.admin_client(), &fleet.ns).await?;
        self.counts.push(Count {
            fleet: fleet.name.clone(),
            acknowledged: fleet.acknowledged,
            counted: listed.occurrences_of(&fleet.name),
        });
        let memory: Vec<(u64, u64)> = fleet.gws.iter().map(Gateway::memory).collect();
        self.memory.push(FleetMemory {
            fleet: fleet.name.clone(),
            replicas: fleet.gws.len(),
            rss_kib_max: memory.iter().map(|m| m.0).max().unwrap_or(0),
            hwm_kib_max: memory.iter().map(|m| m.1).max().unwrap_or(0),
        });
        for (g, (_, hwm)) in fleet.gws.iter().zip(memory) {
            self.peak_hwm_kib = self.peak_hwm_kib.max(hwm);
            g.signal(libc::SIGTERM);
        }
        tokio::task::block_in_place(|| {
            for g in &mut fleet.gws {
                let _ = g.wait();
            }
        });
        Ok(())
    }

    /// new_and_duplicate runs `new` (one signal for each of N new
    /// fingerprints) then `duplicate` (the same N again) on one gateway per
    /// lock setting, in `ns` or a fresh namespace each. The two settings take
    /// turns in [`ROUNDS`] rounds (on, off, off, on, ...), so that the
    /// machine's drift falls on both alike.
    async fn new_and_duplicate(&mut self, prefix: &str, ns: Option<&str>) -> Result<(), BoxError> {
        let mut fleets = Vec::new();
        let mut namespaces = Vec::new();
        for locking in [true, false] {
            let ns = match ns {
                Some(ns) => ns.to_owned(),
                None => {
                    let fresh = self.cp.new_namespace().await?;
                    let name = fresh.name().to_owned();
                    namespaces.push(fresh);
                    name
                }
            };
            // Pod names must be DNS labels: the fleet's name goes into them.
            let name = format!("{}new-{}", prefix.replace('_', "-"), on_off(locking));
            fleets.push(self.fleet(&name, &ns, 1, locking, false).await?);
        }
        let n = self.options.signals;
        let rounds = ROUNDS.min(n);
        let rate = Schedule::Rate {
            per_s: self.options.rate,
        };
        for stage in ["new", "duplicate"] {
            let scenario = format!("{prefix}{stage}");
            let mut phases: [Option<Phase>; 2] = [None, None];
            for round in 0..rounds {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for k in order {
                    let fleet = &mut fleets[k];
                    let bodies = (round * n / rounds..(round + 1) * n / rounds)
                        .map(|i| firing(&format!("{}-{i}", fleet.name)))
                        .collect();
                    let label = format!("{scenario} {}/{rounds}", round + 1);
                    let phase = self.measure(&label, fleet, bodies, rate).await?;
                    match &mut phases[k] {
                        Some(p) => p.merge(phase),
                        slot => *slot = Some(phase),
                    }
                }
            }
            for (k, phase) in phases.into_iter().enumerate() {
                if let Some(phase) = phase {
                    self.record(&scenario, &fleets[k], phase).await?;
                }
            }
        }
        for fleet in fleets {
            self.stop(fleet).await?;
        }
        drop(namespaces);
        Ok(())
    }

    /// plan is the original plan's run: signals at the plan's rate over three
    /// replicas, a skewed mix of new and repeated fingerprints.
    async fn plan(&mut self, replicas: usize, locking: bool) -> Result<(), BoxError> {
        let ns = self.cp.new_namespace().await?;
        let (scenario, name) = sized("plan", replicas, locking);
        let mut fleet = self
            .fleet(&name, ns.name(), replicas, locking, false)
            .await?;
        let bodies = plan_mix(self.options.plan_signals)
            .into_iter()
            .map(|f| firing(&format!("{name}-{f}")))
            .collect();
        let rate = Schedule::Rate {
            per_s: self.options.rate,
        };
        self.phase(&scenario, &mut fleet, bodies, rate).await?;
        self.stop(fleet).await
    }

    /// storm sends identical signals all at once over `replicas` replicas.
    async fn storm(&mut self, replicas: usize, locking: bool) -> Result<(), BoxError> {
        let ns = self.cp.new_namespace().await?;
        let (scenario, name) = sized("storm", replicas, locking);
        let mut fleet = self
            .fleet(&name, ns.name(), replicas, locking, false)
            .await?;
        let body = firing(&format!("{name}-0"));
        let bodies = vec![body; self.options.storm];
        self.phase(&scenario, &mut fleet, bodies, Schedule::Burst)
            .await?;
        self.stop(fleet).await
    }

    /// storm_split is `storm` with locking on and the fence records in a lock namespace of
    /// their own (`GATEWAY_LOCK_NAMESPACE`), created like the RRs' one so that the gateway
    /// identity holds the chart's Role there. A waiter must find the holder's RR in the RRs'
    /// namespace, not in the lock namespace, or it sits out its whole `GATEWAY_LOCK_WAIT_MS`.
    async fn storm_split(&mut self) -> Result<(), BoxError> {
        let ns = self.cp.new_namespace().await?;
        let lock_ns = self.cp.new_namespace().await?;
        let name = "storm-split-on";
        let mut fleet = self
            .fleet_in(name, ns.name(), Some(lock_ns.name()), 3, true, false)
            .await?;
        let pod = format!("{name}-0");
        let bodies = vec![firing(&pod); self.options.storm];
        self.phase("storm_split", &mut fleet, bodies, Schedule::Burst)
            .await?;
        let client = self.cp.admin_client();
        let (rrs, occurrences) = rrs::list(&client, ns.name()).await?.about_pod(&pod);
        let split = Split {
            lock_records: rrs::fence_records(&client, lock_ns.name()).await?,
            rr_records: rrs::fence_records(&client, ns.name()).await?,
            rrs,
            occurrences,
        };
        if let Some(run) = self.runs.last_mut() {
            run.split = Some(split);
        }
        self.stop(fleet).await
    }

    /// owners measures what owner resolution adds to a signal, with locking on, on one
    /// gateway: N Deployments, each with a ReplicaSet and two Pods, and three phases of N
    /// signals at the open-loop rate. `owners_new`: the first Pod of each Deployment, never
    /// seen (reads the Pod and its ReplicaSet, and creates the Deployment's RR);
    /// `owners_sibling`: the second Pod of each (reads the Pod only: its ReplicaSet is
    /// known; counts on the RR); `owners_duplicate`: the first Pods again (no read; counts).
    async fn owners(&mut self) -> Result<(), BoxError> {
        let ns = self.cp.new_namespace().await?;
        let client = self.cp.admin_client();
        let n = self.options.owners;
        eprintln!("bench: creating {n} Deployments with a ReplicaSet and 2 Pods each");
        workloads::service_account(&client, ns.name()).await?;
        let name = "owners-on";
        let names: Vec<String> = (0..n).map(|i| format!("{name}-app{i}")).collect();
        let made = workloads::deployments(&client, ns.name(), &names, 2).await?;
        let mut fleet = self.fleet(name, ns.name(), 1, true, true).await?;
        fleet.deployments = names;
        let rate = Schedule::Rate {
            per_s: self.options.rate,
        };
        let pods = |k: usize| -> Vec<Bytes> {
            made.iter()
                .map(|pods| firing_in(ns.name(), &pods[k]))
                .collect()
        };
        self.phase("owners_new", &mut fleet, pods(0), rate).await?;
        self.phase("owners_sibling", &mut fleet, pods(1), rate)
            .await?;
        self.phase("owners_duplicate", &mut fleet, pods(0), rate)
            .await?;
        self.stop(fleet).await
    }

    /// rollout_storm is a rollout gone wrong: every Pod of one Deployment alerts once, all
    /// at once, over three replicas with owner resolution and locking on; one RR must hold
    /// them all.
    async fn rollout_storm(&mut self, replicas: usize) -> Result<(), BoxError> {
        let ns = self.cp.new_namespace().await?;
        let client = self.cp.admin_client();
        workloads::service_account(&client, ns.name()).await?;
        let (scenario, name) = sized("rollout_storm", replicas, true);
        let name = name.replace("rollout-storm", "rollout");
        let deployment = format!("{name}-web");
        let made = workloads::deployments(
            &client,
            ns.name(),
            std::slice::from_ref(&deployment),
            self.options.rollout_pods,
        )
        .await?;
        let mut fleet = self.fleet(&name, ns.name(), replicas, true, true).await?;
        fleet.deployments = vec![deployment];
        let bodies = made
            .iter()
            .flatten()
            .map(|p| firing_in(ns.name(), p))
            .collect();
        self.phase(&scenario, &mut fleet, bodies, Schedule::Burst)
            .await?;
        self.stop(fleet).await
    }

    /// scale measures throughput over `replicas` gateways with a closed loop.
    async fn scale(&mut self, replicas: usize, locking: bool) -> Result<(), BoxError> {
        let ns = self.cp.new_namespace().await?;
        let name = format!("scale{replicas}-{}", on_off(locking));
        let mut fleet = self
            .fleet(&name, ns.name(), replicas, locking, false)
            .await?;
        let f = self.options.scale_fingerprints.max(1);
        let bodies = (0..self.options.scale_signals)
            .map(|i| firing(&format!("{name}-{}", i % f)))
            .collect();
        let closed = Schedule::Closed {
            in_flight: self.options.in_flight,
        };
        self.phase(&format!("scale_{replicas}"), &mut fleet, bodies, closed)
            .await?;
        self.stop(fleet).await
    }
}

/// plan_mix picks a fingerprint index for each of `n` signals from a fixed
/// pseudo-random sequence skewed towards a few busy fingerprints, as alerts
/// are: a few problems repeat often, most fire a few times.
fn plan_mix(n: usize) -> Vec<usize> {
    let fingerprints = (n / 5).max(1);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            ((u * u * fingerprints as f64) as usize).min(fingerprints - 1)
        })
        .collect()
}

/// TEN is the original plan's production shape.
const TEN: usize = 10;

/// sized names a scenario run on `replicas` gateways: the three-replica one keeps its
/// name (`plan`), others carry the count (`plan_10`); the fleet's name follows (Pod names
/// are DNS labels, so `_` becomes `-`).
fn sized(scenario: &str, replicas: usize, locking: bool) -> (String, String) {
    let scenario = if replicas == 3 {
        scenario.to_owned()
    } else {
        format!("{scenario}_{replicas}")
    };
    let fleet = format!("{}-{}", scenario.replace('_', "-"), on_off(locking));
    (scenario, fleet)
}

fn on_off(locking: bool) -> &'static str {
    if locking { "on" } else { "off" }
}

fn on_true(on: bool) -> &'static str {
    if on { "true" } else { "false" }
}

fn facts(options: &Options) -> Vec<(&'static str, String)> {
    let dirty =
        !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    vec![
        (
            "date (UTC)",
            command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        ),
        ("cores (nproc)", command_output("nproc", &[])),
        ("CPU", cpu_model()),
        ("load average at start (1/5/15 min)", loadavg()),
        (
            "git commit",
            format!(
                "{}{}",
                command_output("git", &["rev-parse", "--short", "HEAD"]),
                if dirty {
                    " (working tree has uncommitted changes)"
                } else {
                    ""
                }
            ),
        ),
        ("gateway binary", format!("`{}`", options.gateway.display())),
        ("gateway build profile", release_profile()),
    ]
}

/// stripped_size is the size of `binary` without symbols and debug information, measured
/// on a stripped copy (binutils' `strip`, which the Rust toolchain's linking needs anyway).
fn stripped_size(binary: &std::path::Path) -> Option<u64> {
    let dir = tempfile::tempdir().ok()?;
    let copy = dir.path().join("stripped");
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&copy)
        .arg(binary)
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    std::fs::metadata(&copy).ok().map(|m| m.len())
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// repo_root is the repository, without the `tests/testenv/../..` detour.
#[must_use]
pub fn repo_root() -> PathBuf {
    let root = testenv::repo_root();
    root.canonicalize().unwrap_or(root)
}

/// target_dir is Cargo's target directory.
#[must_use]
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// release_profile describes the `[profile.release]` settings of the workspace.
fn release_profile() -> String {
    let toml = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap_or_default();
    let mut lines = toml
        .lines()
        .skip_while(|l| l.trim() != "[profile.release]")
        .skip(1);
    let settings: Vec<&str> = lines
        .by_ref()
        .take_while(|l| !l.trim_start().starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if settings.is_empty() {
        "release (Cargo defaults)".into()
    } else {
        format!("release ({})", settings.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_mix_repeats_some_fingerprints_and_not_others() {
        let mix = plan_mix(1000);
        let mut seen = std::collections::BTreeMap::<usize, usize>::new();
        for f in &mix {
            *seen.entry(*f).or_default() += 1;
        }
        assert!(mix.iter().all(|f| *f < 200));
        let once = seen.values().filter(|n| **n == 1).count();
        let busiest = seen.values().max().copied().unwrap_or(0);
        assert!(seen.len() > 100 && once > 10 && busiest > 20, "{seen:?}");
    }
}

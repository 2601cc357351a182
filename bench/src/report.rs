//! Report writes the results of one run as `report.json`, `report.md` (every
//! figure next to its target), `latency_cdf.svg` and `performance.md`, the page that
//! `hack/bench.sh --publish` puts at `docs/performance.md`.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::cpu::{self, Cpu};
use crate::load::{Phase, Schedule};
use crate::otel::LockCounts;
use crate::stats::{Stats, ms, stats};
use crate::svg::{self, Series};
use crate::{BoxError, Options, Results, Run};

/// SCENARIOS are the scenario names in the order they are reported.
pub const SCENARIOS: [&str; 17] = [
    "new",
    "duplicate",
    "crowded_new",
    "crowded_duplicate",
    "plan",
    "storm",
    "storm_split",
    "owners_new",
    "owners_sibling",
    "owners_duplicate",
    "rollout_storm",
    "plan_10",
    "storm_10",
    "rollout_storm_10",
    "scale_1",
    "scale_2",
    "scale_3",
];

/// OWNER_SCENARIOS are the scenarios run with owner resolution on, with locking on only;
/// every other one runs with owner resolution off, with locking on and off.
pub const OWNER_SCENARIOS: [&str; 5] = [
    "owners_new",
    "owners_sibling",
    "owners_duplicate",
    "rollout_storm",
    "rollout_storm_10",
];

/// LOCK_ON_ONLY_SCENARIOS are the scenarios run with locking on only: `storm_split`, the
/// ten-replica ones (owner resolution off) and the [`OWNER_SCENARIOS`].
pub const LOCK_ON_ONLY_SCENARIOS: [&str; 8] = [
    "storm_split",
    "plan_10",
    "storm_10",
    "owners_new",
    "owners_sibling",
    "owners_duplicate",
    "rollout_storm",
    "rollout_storm_10",
];

/// Report is what one run wrote.
pub struct Report {
    pub json: Value,
    pub markdown: String,
    /// performance is `docs/performance.md` for this run: the bench's explanation, the
    /// figures, and what they say, all generated from the numbers.
    pub performance: String,
    pub dir: PathBuf,
}

fn find<'a>(r: &'a Results, scenario: &str, locking: bool) -> Option<&'a Run> {
    r.runs
        .iter()
        .find(|x| x.scenario == scenario && x.locking == locking)
}

fn st(run: Option<&Run>) -> Option<Stats> {
    run.map(|r| stats(&r.phase.latencies()))
}

fn setting(locking: bool) -> &'static str {
    if locking { "lock_on" } else { "lock_off" }
}

/// run_json is one scenario and lock setting.
fn run_json(run: &Run) -> Value {
    let s = stats(&run.phase.latencies());
    let answers: Map<String, Value> = run
        .phase
        .by_status()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut v = json!({
        "p50_ms": round(s.p50),
        "p95_ms": round(s.p95),
        "p99_ms": round(s.p99),
        "signals": run.phase.signals,
        "signals_per_s": round(run.phase.signals_per_s()),
        "errors": run.phase.errors(),
        "api_requests_per_signal": round(run.phase.requests_per_signal()),
        "duplicates": run.duplicates,
        "api_writes_per_signal": round(run.phase.writes_per_signal()),
        "replicas": run.replicas,
        "load": run.phase.schedule.describe(),
        "answers": answers,
        "owner_resolution": run.owners,
    });
    if let Some(r) = &run.resolved {
        v["deployments"] = json!(r.deployments);
        v["rrs_for_deployments"] = json!(r.rrs);
        v["occurrence_count"] = json!(r.occurrences);
        v["pod_rrs"] = json!(r.pod_rrs);
    }
    if let Some(x) = &run.split {
        v["fence_records_lock_namespace"] = json!(x.lock_records);
        v["fence_records_rr_namespace"] = json!(x.rr_records);
        v["rrs_for_fingerprint"] = json!(x.rrs);
        v["occurrence_count"] = json!(x.occurrences);
    }
    v
}

/// OWNER_ROWS pair each `owners` phase with the phase of the same kind with owner
/// resolution off (locking on in both): what resolution adds is their difference.
const OWNER_ROWS: [(&str, &str, &str, &str); 3] = [
    (
        "new",
        "owners_new",
        "new",
        "new RR: the first signal of a Pod never seen (cold cache), whose Deployment has no RR",
    ),
    (
        "sibling",
        "owners_sibling",
        "duplicate",
        "the first signal of a new Pod of a known ReplicaSet, counted on its Deployment's RR",
    ),
    (
        "duplicate",
        "owners_duplicate",
        "duplicate",
        "duplicate in a warm process: a Pod seen before",
    ),
];

/// Added is what owner resolution adds to one kind of signal: (off, on) of each figure.
struct Added<'a> {
    key: &'static str,
    on: &'a Run,
    off: &'a Run,
    what: &'static str,
}

impl Added<'_> {
    fn p50(&self) -> (f64, f64) {
        (
            st(Some(self.off)).map_or(f64::NAN, |s| s.p50),
            st(Some(self.on)).map_or(f64::NAN, |s| s.p50),
        )
    }

    fn p95(&self) -> (f64, f64) {
        (
            st(Some(self.off)).map_or(f64::NAN, |s| s.p95),
            st(Some(self.on)).map_or(f64::NAN, |s| s.p95),
        )
    }

    fn requests(&self) -> (f64, f64) {
        (
            self.off.phase.requests_per_signal(),
            self.on.phase.requests_per_signal(),
        )
    }
}

/// added pairs the `owners` runs with their counterparts, for those that ran.
fn added(r: &Results) -> Vec<Added<'_>> {
    OWNER_ROWS
        .iter()
        .filter_map(|(key, on, off, what)| {
            Some(Added {
                key,
                on: find(r, on, true)?,
                off: find(r, off, true)?,
                what,
            })
        })
        .collect()
}

/// difference is `on − off`, with a rounding error of the background estimate shown as 0.
fn difference((off, on): (f64, f64)) -> f64 {
    match on - off {
        d if d.abs() < 0.005 => 0.0,
        d => d,
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Summary is the run's headline figures.
struct Summary {
    overhead_p95_ms: f64,
    overhead_p95_ratio: f64,
    overhead_p99_ms: f64,
    locks: LockCounts,
    locks_without_storm: LockCounts,
    rss_idle: f64,
    rss_peak: f64,
    cold_start_ms: f64,
    lambda_cold_ms: f64,
    lambda_warm_ms: f64,
    lambda_rss_peak: f64,
    binary_mib: f64,
    binary_mib_benchmarked: f64,
}

fn summary(r: &Results) -> Summary {
    let (on, off) = (st(find(r, "new", true)), st(find(r, "new", false)));
    let (p95, p99, p95_ratio) = match (on, off) {
        (Some(on), Some(off)) => (on.p95 - off.p95, on.p99 - off.p99, on.p95 / off.p95),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    };
    let mut locks = LockCounts::default();
    let mut locks_without_storm = LockCounts::default();
    for (fleet, c) in &r.locks {
        locks.add(c);
        if !fleet.starts_with("storm") && !fleet.starts_with("rollout") {
            locks_without_storm.add(c);
        }
    }
    Summary {
        overhead_p95_ms: p95,
        overhead_p95_ratio: p95_ratio,
        overhead_p99_ms: p99,
        locks,
        locks_without_storm,
        rss_idle: median(r.idle_rss_kib.iter().map(|k| *k as f64 / 1024.0).collect()),
        rss_peak: r.peak_hwm_kib as f64 / 1024.0,
        cold_start_ms: median(r.cold.iter().map(|d| ms(*d)).collect()),
        lambda_cold_ms: median(r.lambda.iter().map(|l| ms(l.first)).collect()),
        lambda_warm_ms: median(r.lambda.iter().map(|l| ms(l.warm)).collect()),
        lambda_rss_peak: r.lambda.iter().map(|l| l.hwm_kib).max().unwrap_or(0) as f64 / 1024.0,
        binary_mib: r
            .binary_bytes
            .map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0)),
        binary_mib_benchmarked: r.binary_bytes_benchmarked as f64 / (1024.0 * 1024.0),
    }
}

fn to_json(r: &Results, s: &Summary, goals: &[Goal]) -> Value {
    let mut scenarios = Map::new();
    for name in SCENARIOS {
        let mut by = Map::new();
        for locking in [true, false] {
            if let Some(run) = find(r, name, locking) {
                by.insert(setting(locking).into(), run_json(run));
            }
        }
        scenarios.insert(name.into(), Value::Object(by));
    }
    let machine: Map<String, Value> = r
        .facts
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let o = &r.options;
    let ratio = |a: &str, b: &str| match (st(find(r, a, true)), st(find(r, b, true))) {
        (Some(a), Some(b)) => json!(round(a.p95 / b.p95)),
        _ => Value::Null,
    };
    json!({
        "scenarios": scenarios,
        "storm_split_p95_ratio": ratio("storm_split", "storm"),
        "raw_baseline": against_json(r),
        "raw_crowded_new": r.raw_crowded.as_ref().map(|p| json!({
            "p50_ms": round(stats(&p.latencies()).p50),
            "api_requests_per_signal": round(p.requests_per_signal()),
            "errors": p.errors(),
        })),
        "soak": soak_json(r),
        "profile": r.profile.as_ref().map(|p| json!({
            "samples": p.samples,
            "places": p.categories.iter().map(|(k, v)| (k.clone(), json!(round(*v)))).collect::<Map<String, Value>>(),
        })),
        "rss_per_replica": r.memory.iter().map(|m| json!({
            "fleet": m.fleet, "replicas": m.replicas,
            "rss_mib_max": round(m.rss_kib_max as f64 / 1024.0),
            "peak_mib_max": round(m.hwm_kib_max as f64 / 1024.0),
        })).collect::<Vec<_>>(),
        "goals": goals.iter().map(|x| json!({
            "figure": x.figure, "value": x.value, "target": x.target, "source": x.source,
            "met": x.met,
        })).collect::<Vec<_>>(),
        "lock_overhead_p95_ms": round(s.overhead_p95_ms),
        "lock_overhead_p95_ratio": round(s.overhead_p95_ratio),
        "lock_overhead_p99_ms": round(s.overhead_p99_ms),
        "lock_acquisition_success_rate": s.locks.success_rate(),
        "lock_contention_rate": s.locks.contention_rate(),
        "rss_mib_idle": round(s.rss_idle),
        "rss_mib_peak": round(s.rss_peak),
        "cold_start_ms": round(s.cold_start_ms),
        "lambda_cold_start_ms": round(s.lambda_cold_ms),
        "lambda_warm_duplicate_ms": round(s.lambda_warm_ms),
        "lambda_rss_mib_peak": round(s.lambda_rss_peak),
        "binary_mib": round(s.binary_mib),
        "binary_mib_benchmarked": round(s.binary_mib_benchmarked),
        "lock_counts": {
            "attempts": s.locks.attempts,
            "success": s.locks.success,
            "contention": s.locks.contention,
            "failures": s.locks.failures,
        },
        "owner_resolution_added": added(r).iter().map(|a| (a.key.to_owned(), json!({
            "compared_with": a.off.scenario,
            "p50_ms": round(difference(a.p50())),
            "p95_ms": round(difference(a.p95())),
            "api_requests_per_signal": round(difference(a.requests())),
        }))).collect::<Map<String, Value>>(),
        "occurrences": r.counts.iter().map(|c| json!({
            "fleet": c.fleet, "acknowledged": c.acknowledged, "counted": c.counted,
        })).collect::<Vec<_>>(),
        "machine": machine,
        "options": {
            "rate_per_s": o.rate,
            "signals": o.signals,
            "plan_signals": o.plan_signals,
            "storm": o.storm,
            "crowd": o.crowd,
            "owners": o.owners,
            "rollout_pods": o.rollout_pods,
            "scale_signals": o.scale_signals,
            "scale_fingerprints": o.scale_fingerprints,
            "in_flight": o.in_flight,
            "cold_starts": o.cold_starts,
            "lambda_starts": o.lambda_starts,
        },
    })
}

/// Goal is one figure next to its target.
struct Goal {
    figure: String,
    value: String,
    target: &'static str,
    source: &'static str,
    met: bool,
    why: String,
}

fn pct(v: f64) -> String {
    format!("{:.3} %", v * 100.0)
}

fn per_signal(run: Option<&Run>) -> f64 {
    run.map_or(f64::NAN, |r| r.phase.requests_per_signal())
}

/// lists counts the LIST requests for RRs over every run.
fn rr_lists(r: &Results) -> f64 {
    r.runs
        .iter()
        .filter(|x| x.scenario.contains("duplicate"))
        .map(|x| {
            x.phase
                .server
                .breakdown
                .get("LIST remediationrequests")
                .copied()
                .unwrap_or(0.0)
        })
        .sum()
}

/// Against is the gateway next to the raw requests for one kind: latency from the open
/// loop, throughput from the closed loop.
struct Against {
    kind: &'static str,
    gateway: Stats,
    raw: Stats,
    gateway_per_s: f64,
    raw_per_s: f64,
    gateway_requests: f64,
    raw_requests: f64,
    /// gateway_cpu and raw_cpu are each side's CPU in the closed loop, by process.
    gateway_cpu: Cpu,
    raw_cpu: Cpu,
    gateway_signals: u64,
    raw_signals: u64,
}

impl Against {
    fn p50(&self) -> f64 {
        self.gateway.p50 / self.raw.p50
    }
    fn p95(&self) -> f64 {
        self.gateway.p95 / self.raw.p95
    }
    fn throughput(&self) -> f64 {
        self.gateway_per_s / self.raw_per_s
    }
    /// gateway_ms and raw_ms are the CPU milliseconds per signal of the process the report
    /// calls `name` (None: every accounted process) on each side of the closed loop.
    fn gateway_ms(&self, name: Option<&str>) -> f64 {
        per_signal_ms(&self.gateway_cpu, name, self.gateway_signals)
    }
    fn raw_ms(&self, name: Option<&str>) -> f64 {
        per_signal_ms(&self.raw_cpu, name, self.raw_signals)
    }
    /// why_throughput says where the gateway side's CPU went beyond the raw side's.
    fn why_throughput(&self) -> String {
        let (gateway, raw) = (|n| self.gateway_ms(Some(n)), |n| self.raw_ms(Some(n)));
        format!(
            "On the {} shared cores throughput follows CPU. Per signal, closed loop, every \
             process counted (table \"CPU per signal\"): the gateway's side used {:.2} ms, the \
             raw side {:.2} ms ({:.2} of it). Of the gateway side's, the gateway process took \
             {:.2} ms, kube-apiserver and etcd {:.2} ms (raw side {:.2}: the same requests), the \
             load generator's HTTP {:.2} ms (the raw client's own work {:.2}), the collector \
             {:.2} ms. The profile below says where the gateway process' share goes.",
            std::thread::available_parallelism().map_or(0, usize::from),
            self.gateway_ms(None),
            self.raw_ms(None),
            self.raw_ms(None) / self.gateway_ms(None),
            gateway(cpu::GATEWAY),
            gateway(cpu::APISERVER) + gateway(cpu::ETCD),
            raw(cpu::APISERVER) + raw(cpu::ETCD),
            gateway(cpu::BENCH),
            raw(cpu::BENCH),
            gateway(cpu::COLLECTOR),
        )
    }
}

fn per_signal_ms(c: &Cpu, name: Option<&str>, signals: u64) -> f64 {
    let s = name.map_or_else(|| c.total(), |n| c.seconds(n));
    s * 1000.0 / signals.max(1) as f64
}

fn against(r: &Results) -> Vec<Against> {
    let of = |kind: &str, open: bool| {
        r.baseline
            .iter()
            .find(|b| b.kind == kind && matches!(b.gateway.schedule, Schedule::Rate { .. }) == open)
    };
    ["new", "duplicate"]
        .into_iter()
        .filter_map(|kind| {
            let (open, closed) = (of(kind, true)?, of(kind, false)?);
            Some(Against {
                kind,
                gateway: stats(&open.gateway.latencies()),
                raw: stats(&open.raw.latencies()),
                gateway_per_s: closed.gateway.signals_per_s(),
                raw_per_s: closed.raw.signals_per_s(),
                gateway_requests: open.gateway.requests_per_signal(),
                raw_requests: open.raw.requests_per_signal(),
                gateway_cpu: closed.gateway.cpu.clone(),
                raw_cpu: closed.raw.cpu.clone(),
                gateway_signals: closed.gateway.signals,
                raw_signals: closed.raw.signals,
            })
        })
        .collect()
}

fn against_json(r: &Results) -> Value {
    against(r)
        .iter()
        .map(|a| {
            (
                a.kind.to_owned(),
                json!({
                    "gateway_over_raw_p50": round(a.p50()),
                    "gateway_over_raw_p95": round(a.p95()),
                    "gateway_over_raw_throughput": round(a.throughput()),
                    "gateway_p50_ms": round(a.gateway.p50),
                    "raw_p50_ms": round(a.raw.p50),
                    "gateway_p95_ms": round(a.gateway.p95),
                    "raw_p95_ms": round(a.raw.p95),
                    "gateway_signals_per_s": round(a.gateway_per_s),
                    "raw_signals_per_s": round(a.raw_per_s),
                    "gateway_api_requests_per_signal": round(a.gateway_requests),
                    "raw_api_requests_per_signal": round(a.raw_requests),
                    "cpu_ms_per_signal": {
                        "gateway_side": cpu_json(&a.gateway_cpu, a.gateway_signals),
                        "raw_side": cpu_json(&a.raw_cpu, a.raw_signals),
                    },
                }),
            )
        })
        .collect::<Map<String, Value>>()
        .into()
}

/// raw_crowded says, for `crowded_new`, how the raw client's own new RRs fared in the
/// crowded namespace against the raw baseline's (both open loop): the API server's share.
fn raw_crowded(r: &Results, scenario: &str) -> String {
    let empty = r
        .baseline
        .iter()
        .find(|b| b.kind == "new" && matches!(b.raw.schedule, Schedule::Rate { .. }));
    let (Some(crowded), Some(empty), "crowded_new") = (&r.raw_crowded, empty, scenario) else {
        return String::new();
    };
    let (c, e) = (
        stats(&crowded.latencies()).p50,
        stats(&empty.raw.latencies()).p50,
    );
    format!(
        " Without the gateway, the raw client's own requests for new RRs (the same {:.2} per \
         signal, the LIST by fingerprint among them) took p50 {c:.1} ms in the crowded namespace \
         against {e:.1} ms in an empty one ({:.2}x): the growth is the API server's.",
        crowded.requests_per_signal(),
        c / e
    )
}

fn cpu_json(c: &Cpu, signals: u64) -> Value {
    let mut m: Map<String, Value> = cpu::PROCESSES
        .iter()
        .map(|(_, name)| {
            (
                (*name).to_owned(),
                json!(round(per_signal_ms(c, Some(name), signals))),
            )
        })
        .collect();
    m.insert(
        "total".into(),
        json!(round(per_signal_ms(c, None, signals))),
    );
    m.into()
}

/// cpu_markdown is the table of each baseline side's CPU per signal, by process.
fn cpu_markdown(out: &mut String, r: &Results) {
    let a = against(r);
    if a.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "\n## CPU per signal\n\nThe raw baseline's closed loop, milliseconds of CPU per signal \
         (user + system, from `/proc`) of every process on the machine that takes part, on each \
         side: through the gateway, and the raw requests sent by the bench itself.\n\n| process |"
    );
    for x in &a {
        let _ = write!(out, " {0}: gateway side | {0}: raw side |", x.kind);
    }
    let _ = write!(out, "\n|---|");
    for _ in &a {
        let _ = write!(out, "---|---|");
    }
    let rows = cpu::PROCESSES.iter().map(|(_, n)| Some(*n)).chain([None]);
    for name in rows {
        let _ = write!(out, "\n| {} |", name.unwrap_or("**all**"));
        for x in &a {
            let _ = write!(out, " {:.2} | {:.2} |", x.gateway_ms(name), x.raw_ms(name));
        }
    }
    let _ = writeln!(out);
}

fn soak_json(r: &Results) -> Value {
    let k = &r.soak;
    let row = |x: &crate::soak::FaultRow| {
        json!({
            "fault": x.kind, "windows": x.windows, "sent": x.sent, "answered_2xx": x.ok,
            "answered_503": x.unavailable, "other": x.other, "duplicates": x.duplicates,
            "acknowledged_not_counted": x.not_counted,
            "answers": x.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<String, Value>>(),
        })
    };
    json!({
        "window_s": k.window.as_secs_f64(),
        "windows": k.windows,
        "rate_per_s": k.rate,
        "schedule": crate::soak::SCHEDULE.map(crate::soak::Fault::name),
        "faults": k.rows.iter().map(row).collect::<Vec<_>>(),
        "total": row(&k.total()),
        "replicas": k.replicas.iter().map(|u| json!({
            "replica": u.name, "restarts": u.restarts,
            "rss_mib_start": round(u.rss_kib.0 as f64 / 1024.0),
            "rss_mib_end": round(u.rss_kib.1 as f64 / 1024.0),
            "fds_start": u.fds.0, "fds_end": u.fds.1,
        })).collect::<Vec<_>>(),
    })
}

/// SOAK_PODS is the number of problems (Pods) of one soak window.
const SOAK_PODS: usize = 10;

fn soak_markdown(out: &mut String, r: &Results) {
    let k = &r.soak;
    let _ = writeln!(
        out,
        "\n## Soak under faults\n\n{} windows of {:.1} s at {:.0} signals/s over 3 replicas \
         ({:.1} minutes); each window's signals are about {} Pods of its own, and one fault \
         strikes a fifth into it, in this order, repeated: {}. `kill`: SIGKILL replica 0 and \
         start it again; `pause`: SIGSTOP replica 1 for its lease ({} s) and one second more; \
         `retention`: complete and delete the window's RRs so far (their final counts kept); \
         `record`: delete the fence record of one of the window's live problems; \
         `apiserver`: restart kube-apiserver. A signal is acknowledged when answered 2xx; \
         \"not counted\" sums, per problem, the acknowledged signals beyond its RRs' counts.\n\n\
         | fault | windows | sent | 2xx | 503 | other answers (status: count; 0 is none) | duplicates | acknowledged, not counted |\n\
         |---|---|---|---|---|---|---|---|",
        k.windows,
        k.window.as_secs_f64(),
        k.rate,
        k.window.as_secs_f64() * k.windows as f64 / 60.0,
        SOAK_PODS,
        crate::soak::SCHEDULE
            .map(crate::soak::Fault::name)
            .join(", "),
        3
    );
    for x in k.rows.iter().chain(std::iter::once(&k.total())) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            x.kind,
            x.windows,
            x.sent,
            x.ok,
            x.unavailable,
            x.statuses
                .iter()
                .filter(|(k, _)| !(200..300).contains(*k) && **k != 503)
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            x.duplicates,
            x.not_counted
        );
    }
    let _ = writeln!(
        out,
        "\nRSS and open file descriptors per replica, sampled before the third fault and before \
         the last, under the same load:\n\n\
         | replica | restarts | RSS MiB | open fds |\n|---|---|---|---|"
    );
    for u in &k.replicas {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} → {:.1} | {} → {} |",
            u.name,
            u.restarts,
            u.rss_kib.0 as f64 / 1024.0,
            u.rss_kib.1 as f64 / 1024.0,
            u.fds.0,
            u.fds.1
        );
    }
}

/// KUBERNAUT is kubernaut's own Gateway's API requests per signal (new RR, duplicate),
/// measured on this kind of machine with both gateways on one control plane.
const KUBERNAUT: (f64, f64) = (12.0, 10.0);

fn kubernaut_markdown(out: &mut String, r: &Results) {
    let per = |name: &str| find(r, name, true).map_or(f64::NAN, |x| x.phase.requests_per_signal());
    let _ = writeln!(
        out,
        "\nAPI server load per signal, next to kubernaut's own Gateway (its figures measured on \
         this kind of machine with both gateways on one control plane; ours from this run, \
         locking on):\n\n\
         | signal | signal-gateway | kubernaut's Gateway |\n|---|---|---|\n\
         | new RR | {:.2} | {:.0} |\n\
         | new RR from a Pod never seen (owner resolution: + the Pod and its ReplicaSet) | {:.2} | |\n\
         | duplicate | {:.2} | {:.0} |",
        per("new"),
        KUBERNAUT.0,
        per("owners_new"),
        per("duplicate"),
        KUBERNAUT.1
    );
}

fn profile_markdown(out: &mut String, r: &Results) {
    let Some(p) = &r.profile else {
        return;
    };
    let _ = writeln!(
        out,
        "\n## Where the gateway's CPU goes at saturation\n\n`perf record -e cpu-clock` of the \
         gateway during a closed-loop `new` round of its own after the raw baseline ({} samples; the whole \
         report is `{}`), self time by place:\n\n| place | share of the gateway's CPU |\n|---|---|",
        p.samples,
        p.report
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    );
    for (place, pct) in &p.categories {
        let _ = writeln!(out, "| {place} | {pct:.1} % |");
    }
    let _ = writeln!(out, "\nLargest symbols:\n\n| self | symbol |\n|---|---|");
    for (pct, symbol) in &p.top {
        let _ = writeln!(out, "| {pct:.1} % | `{}` |", symbol.replace('|', "\\|"));
    }
}

fn soak_goals(r: &Results, g: &mut Vec<Goal>) {
    let t = r.soak.total();
    g.push(Goal {
        figure: format!(
            "soak: duplicates, acknowledged signals not counted ({} signals, {} faults)",
            t.sent, t.windows
        ),
        value: format!("{} / {}", t.duplicates, t.not_counted),
        target: "0 / 0",
        source: "the limit",
        met: t.duplicates == 0 && t.not_counted == 0,
        why: "A duplicate or a lost count is a correctness bug: see the fault kind's row in \
              \"Soak under faults\"."
            .into(),
    });
    // The replica never restarted that grew most is the one judged.
    let growth = |u: &&crate::soak::ReplicaUse| u.rss_kib.1.saturating_sub(u.rss_kib.0);
    if let Some(u) = r
        .soak
        .replicas
        .iter()
        .filter(|u| u.restarts == 0)
        .max_by_key(growth)
    {
        let (rss0, rss1) = (u.rss_kib.0 as f64 / 1024.0, u.rss_kib.1 as f64 / 1024.0);
        g.push(Goal {
            figure: format!(
                "soak: RSS and open fds of {} (never restarted), start → end",
                u.name
            ),
            value: format!("{rss0:.1} → {rss1:.1} MiB, {} → {} fds", u.fds.0, u.fds.1),
            target: "flat (RSS within +25 % + 4 MiB, fds within +8)",
            source: "the limit",
            met: rss1 <= rss0 * 1.25 + 4.0 && u.fds.1 <= u.fds.0 + 8,
            why: "The caches are bounded (LRU) and every connection has a limit; growth past the \
                  warm-up would be a leak."
                .into(),
        });
    }
}

fn goals(r: &Results, s: &Summary) -> Vec<Goal> {
    let mut g = Vec::new();
    soak_goals(r, &mut g);
    for a in against(r) {
        let why = format!(
            "Both sides send the same requests (`raw_baseline` in report.json counts them per \
             signal) with the same client library to the same API server, and share {} cores \
             with it; the gateway adds its HTTP hop, the JSON decoding of the webhook and its \
             own scheduling. See the CPU profile of the gateway at saturation in \
             docs/performance.md.",
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        g.push(Goal {
            figure: format!("gateway / raw, p50 ({}, open loop)", a.kind),
            value: format!(
                "{:.2} ({:.1} / {:.1} ms; p95 {:.2})",
                a.p50(),
                a.gateway.p50,
                a.raw.p50,
                a.p95()
            ),
            target: "<= 1.15",
            source: "the limit",
            met: a.p50() <= 1.15,
            why,
        });
        g.push(Goal {
            figure: format!("gateway / raw, throughput ({}, closed loop)", a.kind),
            value: format!(
                "{:.2} ({:.0} / {:.0} signals/s)",
                a.throughput(),
                a.gateway_per_s,
                a.raw_per_s
            ),
            target: ">= 0.85",
            source: "the limit",
            met: a.throughput() >= 0.85,
            why: a.why_throughput(),
        });
    }
    let new_on = find(r, "new", true);
    let new_off = find(r, "new", false);
    let (son, soff) = (st(new_on), st(new_off));
    let lock_round_trip = format!(
        "With the lock on a new RR makes {:.2} API requests, with it off {:.2}. The \
         lock is taken by the same compare-and-swap that writes the fence record, and a claim \
         whose RR exists ends without a release, so both settings send the same requests; a \
         difference is this machine's drift between the phases: the gateway, kube-apiserver, \
         etcd and the load generator share {} cores, and under a fixed arrival rate a request \
         that waits for a core delays the ones due after it.",
        per_signal(new_on),
        per_signal(new_off),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    g.push(Goal {
        figure: "lock overhead, p95 (new RR, on − off)".into(),
        value: format!("{:.1} ms", s.overhead_p95_ms),
        target: "< 20 ms",
        source: "original plan",
        met: s.overhead_p95_ms < 20.0,
        why: lock_round_trip.clone(),
    });
    g.push(Goal {
        figure: "lock overhead, p99 (new RR, on − off)".into(),
        value: format!("{:.1} ms", s.overhead_p99_ms),
        target: "< 30 ms",
        source: "original plan",
        met: s.overhead_p99_ms < 30.0,
        why: format!(
            "{lock_round_trip} The p99 of {} samples is decided by a handful of requests.",
            r.options.signals
        ),
    });
    if let (Some(on), Some(off)) = (st(find(r, "plan", true)), st(find(r, "plan", false))) {
        g.push(Goal {
            figure: "lock overhead in `plan`, p95 / p99 (on − off)".into(),
            value: format!("{:.1} / {:.1} ms", on.p95 - off.p95, on.p99 - off.p99),
            target: "< 20 / < 30 ms",
            source: "original plan",
            met: on.p95 - off.p95 < 20.0 && on.p99 - off.p99 < 30.0,
            why: "Most of `plan` is duplicates, which take no lock; what remains is the new \
                  fingerprints' claim and the noise of three replicas sharing two cores."
                .into(),
        });
    }
    g.push(Goal {
        figure: "lock overhead ratio, p95 (new RR, on / off)".into(),
        value: format!(
            "{:.2} ({:.1} / {:.1} ms)",
            s.overhead_p95_ratio,
            son.map_or(f64::NAN, |x| x.p95),
            soff.map_or(f64::NAN, |x| x.p95)
        ),
        target: "<= 1.3",
        source: "lock cost",
        met: s.overhead_p95_ratio <= 1.3,
        why: lock_round_trip.clone(),
    });
    // Both are estimates net of background traffic: do not print a rounding error as -0.00.
    let added = match per_signal(new_on) - per_signal(new_off) {
        d if d.abs() < 0.005 => 0.0,
        d => d,
    };
    g.push(Goal {
        figure: "API requests the lock adds to a new RR (`new`, on − off)".into(),
        value: format!("{added:.2}"),
        target: "<= 1",
        source: "lock cost",
        // The background traffic taken out is an estimate: allow it 2 % of a signal's budget.
        met: added <= 1.08,
        why: "The API table breaks both settings' requests down by verb and resource.".into(),
    });
    let l = &s.locks;
    g.push(Goal {
        figure: "lock acquisition success rate".into(),
        value: format!(
            "{} ({} of {} claims; {} superseded claims left out)",
            pct(l.success_rate()),
            l.success,
            l.attempts - l.superseded(),
            l.superseded()
        ),
        target: "> 99.9 %",
        source: "original plan",
        met: l.success_rate() > 0.999,
        why: format!(
            "Failed claims by reason: {}. A `timeout` is a claim that waited the whole \
             `GATEWAY_LOCK_WAIT_MS` budget behind another holder; the signal then counts on the RR \
             the holder created, or gets a 503 (see the errors column).",
            failures_text(l)
        ),
    });
    g.push(Goal {
        figure: "lock contention rate".into(),
        value: format!(
            "{} ({} of {} claims); without `storm`, `storm_split` and `rollout_storm`: {}",
            pct(l.contention_rate()),
            l.contention,
            l.attempts,
            pct(s.locks_without_storm.contention_rate())
        ),
        target: "< 5 %",
        source: "original plan",
        met: l.contention_rate() < 0.05,
        why: "Contention is what `storm`, `storm_split` and `rollout_storm` are made of: every replica meets one \
              new fingerprint at the same moment, and all but one claim find the record held \
              (within one process the signals are coalesced first, so at most one claim per \
              replica). The rate without them is the one the original plan's mixed load would see."
            .into(),
    });
    let signals: u64 = r.runs.iter().map(|x| x.phase.signals).sum();
    let dups: u64 = r.runs.iter().map(|x| x.duplicates).sum();
    g.push(Goal {
        figure: "duplicate rate (active RRs beyond one per fingerprint / signals)".into(),
        value: format!(
            "{} ({dups} in {signals} signals)",
            pct(dups as f64 / signals as f64)
        ),
        target: "< 0.001 %",
        source: "original plan",
        met: dups == 0,
        why: "A duplicate is a correctness bug: see the runs with a non-zero duplicates column."
            .into(),
    });
    for name in ["storm", "storm_10"] {
        let Some(storm) = find(r, name, true) else {
            continue;
        };
        let w = storm.phase.writes_per_signal();
        g.push(Goal {
            figure: format!(
                "{name}: API writes per signal (locking on, {} replicas)",
                storm.replicas
            ),
            value: format!(
                "{w:.3} ({:.0} writes; all requests: {})",
                storm.phase.server.writes,
                storm.phase.server.breakdown_text()
            ),
            target: "<= 0.1",
            source: "lock cost",
            met: w <= 0.1,
            why: "Each replica coalesces the storm's signals per fingerprint into batches; every \
                  batch after the first is one status write, and a write that races another \
                  replica's is retried after a 409."
                .into(),
        });
    }
    split_goals(r, &mut g);
    for (crowded, empty) in [("crowded_new", "new"), ("crowded_duplicate", "duplicate")] {
        for locking in [true, false] {
            let (c, e) = (find(r, crowded, locking), find(r, empty, locking));
            let (Some(cs), Some(es)) = (st(c), st(e)) else {
                continue;
            };
            let ratio = cs.p50 / es.p50;
            g.push(Goal {
                figure: format!(
                    "`{crowded}` p50 / `{empty}` p50, locking {}",
                    if locking { "on" } else { "off" }
                ),
                value: format!("{ratio:.2} ({:.1} / {:.1} ms)", cs.p50, es.p50),
                target: "<= 1.5",
                source: "request budget, lock cost",
                met: ratio <= 1.5,
                why: format!(
                    "API requests per signal are {:.2} with {} other RRs and {:.2} without, so the \
                     gateway's work does not grow; what differs is the API server's and etcd's \
                     time per request with a bigger keyspace, and this machine's drift between \
                     the two phases.{}",
                    per_signal(c),
                    r.options.crowd,
                    per_signal(e),
                    raw_crowded(r, crowded)
                ),
            });
        }
    }
    for (scenario, locking, budget) in [
        ("new", true, 5.0),
        ("new", false, 5.0),
        ("duplicate", true, 2.0),
        ("duplicate", false, 2.0),
        ("crowded_new", true, 5.0),
        ("crowded_new", false, 5.0),
        ("crowded_duplicate", true, 2.0),
        ("crowded_duplicate", false, 2.0),
    ] {
        let run = find(r, scenario, locking);
        let v = per_signal(run);
        g.push(Goal {
            figure: format!(
                "API requests per signal, `{scenario}`, locking {}",
                if locking { "on" } else { "off" }
            ),
            value: format!(
                "{v:.2} ({})",
                run.map(|x| x.phase.server.breakdown_text())
                    .unwrap_or_default()
            ),
            target: if budget == 5.0 { "<= 5" } else { "<= 2" },
            source: "request budget",
            // The background traffic taken out is an estimate: allow it 2 %.
            met: v <= budget * 1.02,
            why: "The breakdown shows which requests exceed the budget; 409 retries between \
                  writers of one RR add requests."
                .into(),
        });
    }
    owner_goals(r, &mut g);
    let lists = rr_lists(r);
    g.push(Goal {
        figure: "LIST of RRs in the duplicate phases".into(),
        value: format!("{lists:.0}"),
        target: "0",
        source: "request budget",
        met: lists == 0.0,
        why: "Something on the hot path lists RRs (only a fingerprint without a fence record \
              lists, once)."
            .into(),
    });
    g
}

/// LOCK_WAIT_MS is the gateways' default `GATEWAY_LOCK_WAIT_MS`, in milliseconds.
const LOCK_WAIT_MS: f64 = 5000.0;

/// split_goals are the figures of `storm_split`: its p95 against `storm`'s (both locking
/// on), and its correctness.
fn split_goals(r: &Results, g: &mut Vec<Goal>) {
    let Some(split) = find(r, "storm_split", true) else {
        return;
    };
    if let (Some(sp), Some(so)) = (st(Some(split)), st(find(r, "storm", true))) {
        let ratio = sp.p95 / so.p95;
        let locks = r
            .locks
            .iter()
            .find(|(fleet, _)| *fleet == split.fleet)
            .map_or_else(|| "none reported".into(), |(_, c)| failures_text(c));
        g.push(Goal {
            figure: "`storm_split` p95 / `storm` p95 (locking on)".into(),
            value: format!("{ratio:.2} ({:.1} / {:.1} ms)", sp.p95, so.p95),
            target: "<= 1.5",
            source: "lock namespace",
            met: ratio <= 1.5,
            why: if sp.p95 >= LOCK_WAIT_MS {
                format!(
                    "With the fence records in a namespace of their own, a replica that finds \
                     the record held waits for the holder's RR, which lives in the RRs' \
                     namespace: a waiter that looks for it in the lock namespace never finds it \
                     and sits out its whole `GATEWAY_LOCK_WAIT_MS` (5 s by default), so the p95 \
                     is seconds. Failed claims of `{}` by reason: {locks} (a `timeout` is such a \
                     wait).",
                    split.fleet
                )
            } else {
                format!(
                    "The p95 is below the 5 s `GATEWAY_LOCK_WAIT_MS`, so no waiter sat out its \
                     whole wait looking for the holder's RR in the lock namespace (the fault this \
                     figure watches for); the two bursts ran minutes apart on a shared machine. \
                     The lock metrics of report.md give the claims of `{}` by reason.",
                    split.fleet
                )
            },
        });
    }
    if let Some(x) = &split.split {
        let p = &split.phase;
        g.push(Goal {
            figure: format!(
                "`storm_split`: RRs for the fingerprint, its occurrenceCount, errors, duplicates \
                 ({} identical signals at once over {} replicas, fence records in a lock \
                 namespace of their own)",
                p.signals, split.replicas
            ),
            value: format!(
                "{} RR, occurrenceCount {}, {} errors, {} duplicates; fence records: {} in the \
                 lock namespace, {} beside the RRs",
                x.rrs,
                x.occurrences,
                p.errors(),
                split.duplicates,
                x.lock_records,
                x.rr_records
            ),
            target: "1 RR, = signals, 0, 0",
            source: "lock namespace",
            met: x.rrs == 1
                && x.occurrences == p.signals
                && p.errors() == 0
                && split.duplicates == 0
                && x.lock_records > 0
                && x.rr_records == 0,
            why: "The replicas contend for one fingerprint as in `storm`, their fence records \
                  in the lock namespace and the RR in the gateways' own: one RR must count every \
                  signal, with no error and no second RR. Fence records beside the RRs, or none \
                  in the lock namespace, mean `GATEWAY_LOCK_NAMESPACE` was not honoured."
                .into(),
        });
    }
}

/// owner_goals are the figures of the scenarios with owner resolution on.
fn owner_goals(r: &Results, g: &mut Vec<Goal>) {
    for a in added(r) {
        let (off, on) = a.requests();
        let d = difference((off, on));
        let (target, budget, scenario) = match a.key {
            "new" => ("<= 2", 2.0, "owners_new"),
            "sibling" => ("<= 1", 1.0, "owners_sibling"),
            _ => ("0", 0.0, "owners_duplicate"),
        };
        g.push(Goal {
            figure: format!(
                "API requests owner resolution adds, `{scenario}` − `{}` (locking on)",
                a.off.scenario
            ),
            value: format!(
                "{d:.2} ({on:.2} − {off:.2}; {})",
                a.on.phase.server.breakdown_text()
            ),
            target,
            source: "owner resolution",
            // Both are estimates net of background traffic: allow 2 % of a new RR's budget.
            met: d <= budget + 0.08,
            why: "A cold cache reads the Pod and then its ReplicaSet (metadata only), once each; a new Pod of a known ReplicaSet reads the Pod; a Pod seen in the last 10 minutes reads nothing. The breakdown shows what else was sent."
                .into(),
        });
    }
    let owners: Vec<&Run> = ["owners_new", "owners_sibling", "owners_duplicate"]
        .iter()
        .filter_map(|s| find(r, s, true))
        .collect();
    if let Some(last) = owners.last()
        && let Some(res) = &last.resolved
    {
        let signals: u64 = owners.iter().map(|x| x.phase.signals).sum();
        let pod_rrs: u64 = owners
            .iter()
            .filter_map(|x| x.resolved.as_ref())
            .map(|x| x.pod_rrs)
            .sum();
        g.push(Goal {
            figure: "`owners`: RRs per Deployment, RRs about a Pod, occurrences".into(),
            value: format!(
                "{} RRs for {} Deployments, {pod_rrs} about a Pod, {} occurrences of {signals} \
                 signals",
                res.rrs, res.deployments, res.occurrences
            ),
            target: "1 each, 0, all",
            source: "owner resolution",
            met: res.rrs == res.deployments && pod_rrs == 0 && res.occurrences == signals,
            why: "Each Deployment's two Pods must be one problem: a second RR, or one about a \
                  Pod, means a signal was not resolved to its Deployment."
                .into(),
        });
    }
    for name in ["rollout_storm", "rollout_storm_10"] {
        let Some(storm) = find(r, name, true) else {
            continue;
        };
        let Some(res) = &storm.resolved else {
            continue;
        };
        let p = &storm.phase;
        g.push(Goal {
            figure: format!(
                "`{name}`: RRs for the Deployment, and its occurrenceCount ({} Pods at \
                 once over {} replicas)",
                p.signals, storm.replicas
            ),
            value: format!(
                "{} RR, occurrenceCount {} ({} errors, {} duplicates)",
                res.rrs,
                res.occurrences,
                p.errors(),
                storm.duplicates
            ),
            target: "1 RR, = Pods",
            source: "owner resolution",
            met: res.rrs == 1
                && storm.duplicates == 0
                && res.pod_rrs == 0
                && res.occurrences == p.signals,
            why: "Every Pod's signal resolves to the one Deployment, on whichever replica it \
                  lands; the replicas then contend for one fingerprint as in `storm`. A count \
                  short of the Pods is a signal answered with an error (see the errors column)."
                .into(),
        });
    }
}

fn failures_text(l: &LockCounts) -> String {
    if l.failures.is_empty() {
        return "none".into();
    }
    l.failures
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn scenario_row(out: &mut String, run: &Run) {
    let p: &Phase = &run.phase;
    let s = stats(&p.latencies());
    let answers = p
        .by_status()
        .iter()
        .map(|(k, v)| match k {
            0 => format!("{v} x none"),
            k => format!("{v} x {k}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} | {:.3} | {:.2} | {answers} |",
        run.scenario,
        if run.locking { "on" } else { "off" },
        if run.owners { "on" } else { "off" },
        run.replicas,
        p.schedule.describe(),
        p.signals,
        p.signals_per_s(),
        s.p50,
        s.p95,
        s.p99,
        p.errors(),
        run.duplicates,
        p.requests_per_signal(),
        p.writes_per_signal(),
        p.logged_per_signal(),
    );
}

/// owner_section compares each `owners` phase with its counterpart with owner resolution
/// off, and lists what the RRs say about the Deployments.
fn owner_section(out: &mut String, r: &Results) {
    let rows = added(r);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## What owner resolution adds\n\n\
         Each `owners` phase (owner resolution on) beside the phase of the same kind with it \
         off, both with locking on, one gateway, the same arrival rate, in this run. The \
         request figures are exact counts. The latencies are not taken side by side: the \
         phases run minutes apart, and an `owners` phase has {own} samples against {n} for \
         `new` and `duplicate`, so its p95 rests on its slowest 5 % ({tail} of them) and one stall of \
         this shared machine (a run of slow answers in a row, which the phases without owner resolution \
         show too) moves it; the p50 is the steadier comparison. The gateways' own count \
         (`api_calls` of their batch log lines) leaves out the owner reads, which happen before \
         a signal joins a batch; the API server's count has them (`GET pods`, `GET \
         replicasets`).\n\n\
         | signal | off: run | p50 ms off / on (+) | p95 ms off / on (+) | API req/signal off / on (+) | requests with owner resolution on |\n\
         |---|---|---|---|---|---|",
        own = r.options.owners,
        n = r.options.signals,
        tail = r.options.owners.div_ceil(20),
    );
    for a in &rows {
        let (p50, p95, req) = (a.p50(), a.p95(), a.requests());
        let _ = writeln!(
            out,
            "| {} (`{}`) | `{}` | {:.1} / {:.1} ({:+.1}) | {:.1} / {:.1} ({:+.1}) | {:.2} / {:.2} ({:+.2}) | {} |",
            a.what,
            a.on.scenario,
            a.off.scenario,
            p50.0,
            p50.1,
            difference(p50),
            p95.0,
            p95.1,
            difference(p95),
            req.0,
            req.1,
            difference(req),
            a.on.phase.server.breakdown_text()
        );
    }
    let _ = writeln!(
        out,
        "\nWhat the RRs say after each phase with owner resolution on (listed with the admin \
         client):\n\n\
         | scenario | replicas | signals | errors | Deployments | RRs for them | occurrenceCount (sum) | RRs about a Pod | duplicates |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for name in OWNER_SCENARIOS {
        let Some(run) = find(r, name, true) else {
            continue;
        };
        let Some(res) = &run.resolved else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.replicas,
            run.phase.signals,
            run.phase.errors(),
            res.deployments,
            res.rrs,
            res.occurrences,
            res.pod_rrs,
            run.duplicates
        );
    }
    let _ = writeln!(out);
}

fn markdown(r: &Results, s: &Summary, goals: &[Goal]) -> String {
    let o = &r.options;
    let mut out = String::new();
    let _ = writeln!(out, "# signal-gateway benchmark\n");
    let _ = writeln!(
        out,
        "Written by `hack/bench.sh`. All numbers are from one run on a shared machine: compare \
         them within this report. Latency is measured by the client over HTTP/1 keep-alive on \
         loopback; in the open-loop scenarios it runs from the **intended** send time (request \
         `i` is due at `start + i / rate` whatever happened to the others, as wrk2 and vegeta \
         do), so queueing is not hidden. Quantiles are linearly interpolated.\n"
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    for (k, v) in &r.facts {
        let _ = writeln!(out, "| {k} | {v} |");
    }

    let _ = writeln!(out, "\n## Figures and targets\n");
    figures(&mut out, s, goals);
    let _ = writeln!(
        out,
        "\nOther figures: RSS {:.1} MiB idle (median over every gateway after its warm-up), \
         {:.1} MiB peak (largest VmHWM of any gateway); cold start {:.1} ms (median of {}, \
         spawn to the first `GET /readyz` 200); binary {:.1} MiB stripped, as the image \
         ships it ({:.1} MiB as benchmarked, with line tables).\n\n\
         Lambda cold path (the package under AWS's Runtime Interface Emulator, median of {}): \
         {:.1} ms from the first invocation sent (the emulator then starts `bootstrap`) to its \
         answer, a new RR; {:.1} ms for its duplicate on the warm function; peak RSS of the \
         function {:.1} MiB.",
        s.rss_idle,
        s.rss_peak,
        s.cold_start_ms,
        r.cold.len(),
        s.binary_mib,
        s.binary_mib_benchmarked,
        r.lambda.len(),
        s.lambda_cold_ms,
        s.lambda_warm_ms,
        s.lambda_rss_peak
    );

    kubernaut_markdown(&mut out, r);
    soak_markdown(&mut out, r);
    cpu_markdown(&mut out, r);
    profile_markdown(&mut out, r);
    let _ = writeln!(
        out,
        "\nMemory per replica when each fleet stopped (largest of its replicas):\n\n\
         | fleet | replicas | RSS MiB | peak (VmHWM) MiB |\n|---|---|---|---|"
    );
    for m in &r.memory {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} |",
            m.fleet,
            m.replicas,
            m.rss_kib_max as f64 / 1024.0,
            m.hwm_kib_max as f64 / 1024.0
        );
    }

    let _ = writeln!(
        out,
        "\n## Scenarios\n\n\
         - `new`: {n} signals for {n} new fingerprints at {rate:.0}/s, one gateway; `duplicate`: \
         the same {n} again on the same gateway (its cache knows them).\n\
         - the raw baseline (`raw_baseline` in the JSON, the `gateway / raw` rows above): \
         `new` and `duplicate` again on one gateway, and as the raw requests alone from the \
         bench process (bench/src/raw.rs: the same requests, the same client library and \
         identity, bodies copied from the gateway's own RR and record), taking turns in four \
         rounds, open loop at {rate:.0}/s (latency) and closed loop at {inf} in flight \
         (throughput), the CPU of every process accounted to the side whose round it was; and \
         the raw `new` once more in the crowded namespace (`raw_crowded_new`).\n\
         - `crowded_new`, `crowded_duplicate`: the same in a namespace holding {crowd} other RRs \
         (created with the admin client, {c} at a time, in {ct:.1} s).\n\
         - `plan`: the original plan's run, {plan} signals at {rate:.0}/s over 3 replicas \
         (round robin), fingerprints drawn from {pf} with a skew (a few repeat often, many once).\n\
         - `storm`: {storm} identical signals sent at once over 3 replicas.\n\
         - `plan_10`, `storm_10`, `rollout_storm_10` (locking on): `plan`, `storm` and \
         `rollout_storm` over ten replicas, the original plan's production shape.\n\
         - `storm_split` (locking on only): the same burst, with the gateways' fence records in \
         a lock namespace of their own (`GATEWAY_LOCK_NAMESPACE`, a second fresh namespace \
         where the gateway identity holds the chart's Role); the RRs stay in the gateways' \
         namespace. Compared with `storm`, locking on.\n\
         - `owners_new`, `owners_sibling`, `owners_duplicate` (owner resolution on, locking on \
         only): {own} Deployments, each with a ReplicaSet and 2 Pods (real objects, created with \
         the admin client; nothing runs them), one gateway, {own} signals per phase at \
         {rate:.0}/s. `owners_new`: the first Pod of each Deployment, never seen by the gateway, \
         so each signal reads the Pod and its ReplicaSet and creates its Deployment's RR; \
         `owners_sibling`: the second Pod of each, whose ReplicaSet is known (reads the Pod, \
         counts on the RR); `owners_duplicate`: the first Pods again (reads nothing, counts). \
         Several Deployments rather than one, so that a new RR is measured {own} times.\n\
         - `rollout_storm` (owner resolution on, locking on only): one Deployment with {rp} \
         Pods, every Pod alerting once, all at once, over 3 replicas (round robin), none of \
         which has seen the Deployment: one RR must count them all.\n\
         - `scale_R`: {ss} signals over {sf} fingerprints (each {rep} times), closed loop with \
         {inf} in flight, over R replicas; signals/s is the throughput.\n\n\
         Each with locking on and off unless said otherwise, in a fresh namespace (the crowded \
         one is shared by both settings), each gateway warmed up with one signal first (with \
         owner resolution on, about a Pod of a Deployment of its own). Owner resolution is off \
         unless said otherwise. API requests are the API \
         server's `apiserver_request_total`, scraped before and after each phase (after the \
         gateways logged every batch), minus the scrape itself \
         ({sc:.0}) and the API server's background traffic ({bg:.2} requests/s, {bw:.2} writes/s, \
         measured idle); writes are POST, PUT, PATCH, DELETE and APPLY. The gateways' own count \
         (`api_calls` of their batch log lines) is shown beside it. Duplicates are counted from a \
         list of the RRs after each phase.\n",
        n = o.signals,
        rate = o.rate,
        crowd = o.crowd,
        c = crate::rrs::CROWD_CONCURRENCY,
        ct = r.crowd_created.as_secs_f64(),
        plan = o.plan_signals,
        pf = (o.plan_signals / 5).max(1),
        storm = o.storm,
        own = o.owners,
        rp = o.rollout_pods,
        ss = o.scale_signals,
        sf = o.scale_fingerprints,
        rep = o.scale_signals / o.scale_fingerprints.max(1),
        inf = o.in_flight,
        sc = r.scrape_cost,
        bg = r.background.0,
        bw = r.background.1,
    );
    let _ = writeln!(
        out,
        "| scenario | lock | owners | replicas | load | signals | signals/s | p50 ms | p95 ms | p99 ms | errors | duplicates | API req/signal | API writes/signal | API req/signal (gateway logs) | answers |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for name in SCENARIOS {
        for locking in [true, false] {
            if let Some(run) = find(r, name, locking) {
                scenario_row(&mut out, run);
            }
        }
    }
    let _ = writeln!(out, "\n![latency CDF, lock on vs off](latency_cdf.svg)\n");
    owner_section(&mut out, r);

    let _ = writeln!(
        out,
        "## Lock metrics (the gateways' own, over OTLP)\n\n\
         Read from a real OpenTelemetry Collector that received every gateway's OTLP export \
         (cumulative; the last values are flushed when the gateway stops on SIGTERM). The \
         success rate is `success / (attempts − superseded)`: a `superseded` claim found the \
         record already moved on, because another writer created the RR meanwhile, so there was \
         nothing left to lock and the signal counted on that RR; it is neither a success nor a \
         failure to acquire. Counted raw, `success / attempts` is {raw}. The contention rate is \
         `contention / attempts`.\n",
        raw = pct(s.locks.success / s.locks.attempts)
    );
    let _ = writeln!(
        out,
        "| gateways (locking on) | attempts | success | superseded | other failures | contention | mean hold |\n|---|---|---|---|---|---|---|"
    );
    for (fleet, c) in &r.locks {
        let other: f64 = c
            .failures
            .iter()
            .filter(|(k, _)| *k != "superseded")
            .map(|(_, v)| v)
            .fold(0.0, |a, b| a + b);
        let _ = writeln!(
            out,
            "| {fleet} | {} | {} | {} | {other} | {} | {:.1} ms |",
            c.attempts,
            c.success,
            c.superseded(),
            c.contention,
            c.hold_sum / c.hold_count * 1e3
        );
    }

    let _ = writeln!(
        out,
        "\n## Every acknowledged signal is counted\n\n\
         Per set of gateways: 2xx answers (warm-ups included) and the sum of `occurrenceCount` \
         over the RRs they wrote. Counted may exceed acknowledged (a signal answered 503 may \
         still have been counted), never the reverse.\n\n\
         | gateways | acknowledged | counted |\n|---|---|---|"
    );
    for c in &r.counts {
        let _ = writeln!(out, "| {} | {} | {} |", c.fleet, c.acknowledged, c.counted);
    }

    let _ = writeln!(
        out,
        "\n## API requests by verb and resource\n\n| scenario | lock | requests | server time per request |\n|---|---|---|---|"
    );
    for run in &r.runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            run.scenario,
            if run.locking { "on" } else { "off" },
            run.phase.server.breakdown_text(),
            run.phase.server.server_ms_text()
        );
    }
    out
}

/// figures writes every figure next to its target, the figures that have none, and why
/// each missed target is missed: the one table of `report.md` and `performance.md`.
fn figures(out: &mut String, s: &Summary, goals: &[Goal]) {
    let _ = writeln!(
        out,
        "| figure | this run | target | from | met |\n|---|---|---|---|---|"
    );
    for goal in goals {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            goal.figure,
            goal.value,
            goal.target,
            goal.source,
            if goal.met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(
        out,
        "| RSS idle / peak | {:.1} / {:.1} MiB | | | |\n\
         | cold start (spawn to ready) | {:.1} ms | | | |\n\
         | Lambda cold start (first invocation to its answer, a new RR) / warm duplicate | {:.1} / {:.1} ms | | | |\n\
         | Lambda peak RSS | {:.1} MiB | | | |\n\
         | binary (stripped, as in the image) | {:.1} MiB | | | |",
        s.rss_idle,
        s.rss_peak,
        s.cold_start_ms,
        s.lambda_cold_ms,
        s.lambda_warm_ms,
        s.lambda_rss_peak,
        s.binary_mib
    );
    let missed: Vec<&Goal> = goals.iter().filter(|x| !x.met).collect();
    if !missed.is_empty() {
        let _ = writeln!(out, "\nWhy the missed ones are missed:\n");
        for goal in missed {
            let _ = writeln!(out, "- **{}**: {}", goal.figure, goal.why);
        }
    }
}

/// thousands writes `n` with a comma between groups of three digits.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// fact is one of the run's facts (date, cores, ...), or "unknown".
fn fact<'a>(r: &'a Results, key: &str) -> &'a str {
    r.facts
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("unknown", |(_, v)| v.as_str())
}

/// intro is how the bench works, with the run's counts and rates.
fn intro(out: &mut String, o: &Options) {
    let _ = writeln!(
        out,
        "`hack/bench.sh` (about twelve minutes on two cores with its default four-minute soak; \
         `hack/bench.sh --help` lists the counts and the rate) builds the release gateway and its \
         Lambda package, starts its own kube-apiserver + etcd, a real OpenTelemetry Collector and \
         gateway processes, and drives them with an open-loop load generator (request `i` is due \
         at `start + i / rate`; latency runs from that intended time, so queueing is not hidden, \
         as wrk2 and vegeta measure). It writes `target/bench/report.json`, `report.md` (every \
         figure next to its target, and why any is missed), `latency_cdf.svg` (lock on vs off), \
         `profile.txt` and this page, which `hack/bench.sh --publish` also copies to \
         `docs/performance.md`: every word and number here is generated from one run by \
         `bench/src/report.rs`, none is edited by hand. Scenarios:\n\n\
         - each with `GATEWAY_ENABLE_DISTRIBUTED_LOCKING` true and false in the same run: `new` \
         ({n} new fingerprints at {rate}/s, one gateway) and `duplicate` (the same again), the \
         two settings taking turns in four rounds so that the machine's drift falls on both; \
         `crowded_new` and `crowded_duplicate` (the same with {crowd} other RRs in the \
         namespace); `plan` (the original plan's {plan} signals at {rate}/s over 3 replicas, a \
         skewed mix of new and repeated fingerprints); `storm` ({storm} identical signals at \
         once over 3 replicas); `scale_1..3` ({ss} signals over {sf} fingerprints, closed loop \
         with {inf} in flight);\n\
         - locking on only: `storm_split` (the fence records in a lock namespace of their own), \
         the owner-resolution phases and `rollout_storm` ({rp} Pods of one Deployment at once), \
         and the original plan's production shape, **ten replicas**: `plan_10`, `storm_10`, \
         `rollout_storm_10`, with the memory of every replica;\n\
         - **the raw baseline**: `new` and `duplicate` once more through one gateway, and as the \
         raw requests alone (`bench/src/raw.rs`: exactly the requests the gateway sends, the \
         same client library and identity, bodies copied from the gateway's own RR and fence \
         record), taking turns in four rounds, open loop at {rate}/s and closed loop at {inf} \
         in flight: `gateway / raw` is what the gateway costs beyond the API server's own work, \
         and the CPU of every process (the gateway, kube-apiserver, etcd, the collector, the \
         bench) is accounted to the side whose round it was; `perf` samples the gateway's CPU \
         in one more saturated `new` round, counted in no ratio, and sorts it into TLS, JSON, \
         HTTP, kube client, tokio, memory, telemetry, its own code and the kernel; the raw `new` \
         runs once more in the crowded namespace, to tell the API server's growth from the \
         gateway's;\n\
         - **the Lambda cold path**: the release package under AWS's Runtime Interface Emulator, \
         from the first invocation (the emulator then starts `bootstrap`) to its answer, a new \
         RR; the warm duplicate; the function's peak RSS;\n\
         - **the soak under faults** (last: it restarts the API server): a steady mix at \
         {soak}/s over 3 replicas while, window after window, replica 0 is SIGKILLed and \
         restarted (every other window), replica 1 is SIGSTOPped past its lease, kube-apiserver \
         restarts, retention completes and deletes the RRs, and a live problem's fence record \
         is deleted; per fault kind: signals sent, 2xx, 503, other answers, duplicates and \
         acknowledged signals not counted, and the replicas' RSS and open file descriptors. \
         `--soak MINUTES` sets its length (two windows a minute).\n\n\
         API requests come from the API server's `apiserver_request_total` (its idle background \
         traffic taken out), duplicates from a list of the RRs after each phase, and the lock \
         rates from the gateways' own OTLP lock metrics as the collector received them (success \
         rate = success / (attempts − superseded): a superseded claim found the RR already \
         created by another writer, nothing was left to lock). The tests never run the full \
         bench; `bench/tests/smoke.rs` runs every scenario with tiny counts, the soak for twelve \
         seconds (each fault kind once), and checks the report's structure, zero errors, zero \
         duplicates, that every acknowledged signal is counted and that the raw client sends \
         what the gateway sends, never a latency.",
        n = thousands(o.signals),
        rate = o.rate,
        crowd = thousands(o.crowd),
        plan = thousands(o.plan_signals),
        storm = thousands(o.storm),
        ss = thousands(o.scale_signals),
        sf = thousands(o.scale_fingerprints),
        inf = o.in_flight,
        rp = o.rollout_pods,
        soak = o.soak_rate,
    );
}

/// scenarios writes one row per scenario and lock setting: latency, throughput, API
/// requests and writes per signal, errors and duplicates.
fn scenarios(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "| scenario | lock | replicas | load | p50 ms | p95 ms | p99 ms | signals/s | API req/signal | API writes/signal | errors | duplicates |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for name in SCENARIOS {
        for locking in [true, false] {
            let Some(run) = find(r, name, locking) else {
                continue;
            };
            let p = &run.phase;
            let st = stats(&p.latencies());
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {} | {} |",
                if locking { "on" } else { "off" },
                run.replicas,
                p.schedule.describe(),
                st.p50,
                st.p95,
                st.p99,
                p.signals_per_s(),
                p.requests_per_signal(),
                p.writes_per_signal(),
                p.errors(),
                run.duplicates
            );
        }
    }
}

/// FAULTS describe each soak fault kind in the reading, by its name.
const FAULTS: [(&str, &str); 5] = [
    ("kill", "SIGKILLs and restarts"),
    ("pause", "pauses past the lease"),
    ("apiserver", "API server restarts"),
    ("retention", "retention sweeps"),
    ("record", "lost fence records"),
];

/// ALLOCATOR_TRIAL is a trial made on earlier runs, kept beside the profile it acted on.
const ALLOCATOR_TRIAL: &str = "Acting on the allocation share, a trial swapped glibc's \
    allocator for mimalloc (two shorter runs taking turns, same bench binary): the allocation \
    share stayed at 23 % and the gateway/raw throughput ratios moved within this machine's \
    run-to-run spread (0.90 / 0.96 with glibc, 0.78 / 0.93 with mimalloc), so it did not land; \
    what costs is the number of allocations and copies per request, which is where the next \
    change belongs.";

/// reading says what the run's numbers mean: correctness, the soak, the gateway against
/// the raw requests, where the CPU goes, the API server's load and the Lambda cold path.
fn reading(out: &mut String, r: &Results, s: &Summary) {
    let new_p50 = st(find(r, "new", true)).map_or(f64::NAN, |x| x.p50);
    let _ = write!(
        out,
        "One run on {} cores shared by the gateways, kube-apiserver, etcd and the load \
         generator, whose plain `new` p50 was {new_p50:.1} ms this time: compare within it.",
        fact(r, "cores (nproc)")
    );

    let errors: u64 = r.runs.iter().map(|x| x.phase.errors()).sum();
    let duplicates: u64 = r.runs.iter().map(|x| x.duplicates).sum();
    let uncounted = r
        .counts
        .iter()
        .filter(|c| c.counted < c.acknowledged)
        .count();
    let soak = r.soak.total();
    if errors == 0 && duplicates == 0 && uncounted == 0 {
        let _ = write!(
            out,
            " **Correctness held in every scenario**: 0 errors and 0 duplicates, every \
             acknowledged signal counted"
        );
    } else {
        let _ = write!(
            out,
            " **Correctness did not hold in every scenario**: {errors} errors and {duplicates} \
             duplicates over the scenarios, {uncounted} sets of gateways with acknowledged \
             signals not counted (see report.md)"
        );
    }
    if let Some(x) = find(r, "storm_10", true) {
        let _ = write!(
            out,
            "; over ten replicas `storm_10` ({} identical signals at once) left {} duplicates \
             with {:.2} API writes per signal",
            thousands(x.phase.signals as usize),
            x.duplicates,
            x.phase.writes_per_signal()
        );
    }
    if let Some(res) = find(r, "rollout_storm_10", true).and_then(|x| x.resolved.as_ref()) {
        let _ = write!(
            out,
            ", and `rollout_storm_10` made {} RR counted {} times",
            res.rrs, res.occurrences
        );
    }
    let _ = write!(out, ".");

    let k = &r.soak;
    let kinds: Vec<String> = FAULTS
        .iter()
        .filter_map(|(name, what)| {
            let row = k.rows.iter().find(|x| x.kind == *name)?;
            Some(format!("{} {what}", row.windows))
        })
        .collect();
    let _ = write!(
        out,
        "\n\n**The {:.0}-minute soak** sent {} signals through {} faults ({}): {} duplicates, {} \
         acknowledged signals not counted",
        k.window.as_secs_f64() * k.windows as f64 / 60.0,
        thousands(soak.sent as usize),
        soak.windows,
        kinds.join(", "),
        soak.duplicates,
        soak.not_counted
    );
    let others: Vec<String> = k
        .rows
        .iter()
        .flat_map(|x| {
            x.statuses
                .iter()
                .filter(|(status, _)| !(200..300).contains(*status))
                .map(move |(status, n)| match status {
                    0 => format!("{n} without an answer in `{}` windows", x.kind),
                    status => format!("{n} answered {status} in `{}` windows", x.kind),
                })
        })
        .collect();
    if others.is_empty() {
        let _ = write!(out, "; every signal was answered 2xx.");
    } else {
        let _ = write!(out, "; the non-2xx answers were {}", others.join(", "));
        let restarts_500 = k
            .rows
            .iter()
            .any(|x| x.kind == "apiserver" && x.statuses.get(&500).is_some_and(|n| *n > 0));
        if restarts_500 {
            let _ = write!(
                out,
                " (the first requests after an API server restart meet its CRD and RBAC caches \
                 not yet synced, answered 404/403, which the gateway reports as needing an \
                 operator: 500; Alertmanager retries 5xx)"
            );
        }
        let _ = write!(out, ".");
    }
    let kept: Vec<&crate::soak::ReplicaUse> =
        k.replicas.iter().filter(|u| u.restarts == 0).collect();
    if !kept.is_empty() {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let fds_flat = kept.iter().all(|u| u.fds.1 <= u.fds.0 + 8);
        let rss_flat = kept
            .iter()
            .all(|u| mib(u.rss_kib.1) <= mib(u.rss_kib.0) * 1.25 + 4.0);
        let growth: Vec<String> = kept
            .iter()
            .map(|u| {
                format!(
                    "from {:.1} to {:.1} MiB ({})",
                    mib(u.rss_kib.0),
                    mib(u.rss_kib.1),
                    u.name
                )
            })
            .collect();
        let _ = write!(
            out,
            " Open file descriptors {}; RSS of the replicas never restarted went {} over the \
             soak",
            if fds_flat { "stayed flat" } else { "grew" },
            growth.join(", ")
        );
        if rss_flat {
            let _ = write!(out, ", within the bound of the memory goal.");
        } else {
            let _ = write!(
                out,
                " (every problem ever seen, {} of them, passes through the caches, and glibc \
                 keeps freed arenas), so flatness is {}.",
                thousands(k.windows * SOAK_PODS),
                if fds_flat {
                    "shown for descriptors, not yet for memory"
                } else {
                    "not shown"
                }
            );
        }
    }

    let against = against(r);
    let of = |kind: &str| against.iter().find(|a| a.kind == kind);
    if let (Some(new), Some(dup)) = (of("new"), of("duplicate")) {
        let _ = write!(
            out,
            "\n\n**Against the raw API server** the gateway's p50 is {:.2}x the raw client's for a \
             new RR ({:.1} against {:.1} ms{}) and {:.2}x for a duplicate ({:.1} against {:.1} \
             ms); at saturation it reaches {:.2}x the raw client's throughput for new RRs and \
             {:.2}x for duplicates",
            new.p50(),
            new.gateway.p50,
            new.raw.p50,
            if new.p50() < 1.0 {
                "; the raw client's own open loop queues behind its sequential requests"
            } else {
                ""
            },
            dup.p50(),
            dup.gateway.p50,
            dup.raw.p50,
            new.throughput(),
            dup.throughput()
        );
        if new.throughput() < 0.85 || dup.throughput() < 0.85 {
            let _ = write!(
                out,
                ": the {} cores are shared by the gateway, kube-apiserver, etcd and the load \
                 generator, and every cycle the gateway spends is one the API server does not \
                 get.",
                fact(r, "cores (nproc)")
            );
        } else {
            let _ = write!(out, ".");
        }
    }
    if let Some(p) = &r.profile {
        let shares: Vec<String> = p
            .categories
            .iter()
            .map(|(place, pct)| format!("{pct:.0} % {place}"))
            .collect();
        let _ = write!(
            out,
            " The profile says where the gateway's cycles go (self time): {}. {ALLOCATOR_TRIAL}",
            shares.join(", ")
        );
    }
    let per = |name: &str| find(r, name, true).map_or(f64::NAN, |x| x.phase.requests_per_signal());
    let _ = write!(
        out,
        "\n\nAPI server load is {:.2} requests for a new RR and {:.2} for a duplicate, against {:.0} \
         and {:.0} for kubernaut's own Gateway. The Lambda cold path is {:.1} ms from the first \
         invocation to its answer (a new RR), {:.1} ms for a warm duplicate, with a peak RSS of \
         {:.1} MiB",
        per("new"),
        per("duplicate"),
        KUBERNAUT.0,
        KUBERNAUT.1,
        s.lambda_cold_ms,
        s.lambda_warm_ms,
        s.lambda_rss_peak
    );
    if s.lambda_rss_peak < 128.0 {
        let _ = writeln!(out, ": the template's 256 MB is for CPU, not memory.");
    } else {
        let _ = writeln!(out, ".");
    }
}

/// performance is `docs/performance.md`: how the bench works, the run's scenarios and
/// figures against their targets, the comparison with kubernaut's Gateway, the soak, the
/// CPU profile, and what they say.
fn performance(r: &Results, s: &Summary, goals: &[Goal]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Performance\n");
    intro(&mut out, &r.options);
    let _ = writeln!(
        out,
        "\n## One run\n\nOne run of `hack/bench.sh` ({}; {} cores, {}; load average {} at the \
         start; release build), from `target/bench/report.json`:\n",
        fact(r, "date (UTC)"),
        fact(r, "cores (nproc)"),
        fact(r, "CPU"),
        fact(r, "load average at start (1/5/15 min)")
    );
    scenarios(&mut out, r);
    let _ = writeln!(out, "\n## Figures and targets\n");
    figures(&mut out, s, goals);
    kubernaut_markdown(&mut out, r);
    soak_markdown(&mut out, r);
    cpu_markdown(&mut out, r);
    profile_markdown(&mut out, r);
    let _ = writeln!(out, "\n## What it says\n");
    reading(&mut out, r, s);
    out
}

fn series(r: &Results) -> Vec<Series> {
    let mut out = Vec::new();
    for (scenario, color) in [
        ("new", "#1f77b4"),
        ("crowded_new", "#2ca02c"),
        ("plan", "#ff7f0e"),
    ] {
        for locking in [true, false] {
            if let Some(run) = find(r, scenario, locking) {
                out.push(Series {
                    label: format!("{scenario}, lock {}", if locking { "on" } else { "off" }),
                    color,
                    dashed: !locking,
                    ms: run.phase.latencies().into_iter().map(ms).collect(),
                });
            }
        }
    }
    out
}

/// write renders the report files into `r.options.out`.
pub fn write(r: &Results) -> Result<Report, BoxError> {
    let s = summary(r);
    let goals = goals(r, &s);
    let json = to_json(r, &s, &goals);
    let markdown = markdown(r, &s, &goals);
    let performance = performance(r, &s, &goals);
    let svg = svg::cdf(
        "Latency CDF, lock on (solid) vs off (dashed), open loop",
        &series(r),
    );
    let dir = r.options.out.clone();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (name, text) in [
        ("report.json", serde_json::to_string_pretty(&json)? + "\n"),
        ("report.md", markdown.clone()),
        ("latency_cdf.svg", svg),
        ("performance.md", performance.clone()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(Report {
        json,
        markdown,
        performance,
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(500), "500");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(36_000), "36,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

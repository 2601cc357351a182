//! The bench in smoke mode: every scenario with tiny counts against a real
//! control plane, so that the bench cannot rot. It checks the report's
//! structure and its correctness figures, never a latency.
//!
//! It runs the gateway binary Cargo built beside this test: `cargo test
//! --workspace` (hack/test.sh) builds it, because the gateway's own end-to-end
//! tests need it.

use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;

/// RUN_FIELDS are the fields of every scenario and lock setting.
const RUN_FIELDS: [&str; 8] = [
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "signals",
    "signals_per_s",
    "errors",
    "api_requests_per_signal",
    "duplicates",
];

/// TOP_FIELDS are the report's top-level figures.
const TOP_FIELDS: [&str; 12] = [
    "lock_overhead_p95_ms",
    "lock_overhead_p95_ratio",
    "lock_overhead_p99_ms",
    "lock_acquisition_success_rate",
    "lock_contention_rate",
    "rss_mib_idle",
    "rss_mib_peak",
    "cold_start_ms",
    "lambda_cold_start_ms",
    "lambda_warm_duplicate_ms",
    "lambda_rss_mib_peak",
    "binary_mib",
];

/// gateway_binary is the signal-gateway binary of this target directory, which
/// must be newer than every source file of the gateway.
fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("signal-gateway");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo test --workspace` (hack/test.sh) or `cargo build` first",
                bin.display()
            )
        });
    let newest = newest(&bench::repo_root().join("src"));
    assert!(
        built >= newest,
        "{} is older than the gateway's sources: run `cargo test --workspace` (hack/test.sh) or `cargo build` first",
        bin.display()
    );
    bin
}

/// owners_counted checks a run with owner resolution on: every answer accepted (a Pod
/// that does not exist is answered 200 `rejected`), one RR per Deployment and none about a
/// Pod, and every signal so far counted on them.
fn owners_counted(name: &str, options: &bench::Options, run: &Value) {
    let answers = run["answers"].as_object().expect("answers");
    assert!(
        answers.keys().all(|k| k == "201" || k == "202"),
        "{name}: every signal counted on an RR, none refused: {run}"
    );
    let (deployments, occurrences) = match name {
        "rollout_storm" | "rollout_storm_10" => (1, options.rollout_pods),
        "owners_new" => (options.owners, options.owners),
        "owners_sibling" => (options.owners, 2 * options.owners),
        _ => (options.owners, 3 * options.owners),
    };
    assert_eq!(run["deployments"], deployments, "{name}: {run}");
    assert_eq!(
        run["rrs_for_deployments"], deployments,
        "{name}: one RR per Deployment: {run}"
    );
    assert_eq!(run["pod_rrs"], 0, "{name}: no RR about a Pod: {run}");
    assert_eq!(
        run["occurrence_count"], occurrences,
        "{name}: every signal counted: {run}"
    );
}

/// split_counted checks `storm_split`: every answer accepted, its fence records in the lock
/// namespace and none beside the RRs, and one RR counting every signal of the burst.
fn split_counted(options: &bench::Options, run: &Value) {
    let answers = run["answers"].as_object().expect("answers");
    assert!(
        answers.keys().all(|k| k == "201" || k == "202"),
        "storm_split: every signal counted on an RR, none refused: {run}"
    );
    assert!(
        run["fence_records_lock_namespace"].as_u64() > Some(0),
        "storm_split: the fence records are in the lock namespace: {run}"
    );
    assert_eq!(
        run["fence_records_rr_namespace"], 0,
        "storm_split: no fence record beside the RRs: {run}"
    );
    assert_eq!(
        run["rrs_for_fingerprint"], 1,
        "storm_split: one RR for the fingerprint: {run}"
    );
    assert_eq!(
        run["occurrence_count"], options.storm,
        "storm_split: every signal counted: {run}"
    );
}

fn newest(dir: &std::path::Path) -> SystemTime {
    let mut t = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let m = if path.is_dir() {
            newest(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        t = t.max(m);
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_bench_reports_every_scenario_without_errors_or_duplicates() {
    let out = tempfile::tempdir().expect("a temp dir");
    let options = bench::Options::smoke(gateway_binary(), out.path().to_owned());
    let report = bench::run(options.clone())
        .await
        .unwrap_or_else(|e| panic!("the smoke bench failed: {e}"));
    let md = assert_the_files_are_the_report(out.path(), &report.json);
    let j = &report.json;
    assert_every_scenario_ran_cleanly(&options, j);
    assert_the_goals_and_top_figures(&md, j);
    assert_the_soak_struck_every_fault(j);
    assert_memory_baseline_and_size_are_measured(j);
    assert_the_lock_figures_and_occurrences(j);
}

/// assert_the_files_are_the_report checks report.json against the report, and report.md
/// and the latency SVG for their contents; it returns report.md.
fn assert_the_files_are_the_report(out: &std::path::Path, report: &Value) -> String {
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    // serde_json's default float parser may land one ULP off the written value,
    // so the report is compared as it reads back from its own text.
    let written: Value =
        serde_json::from_str(&serde_json::to_string_pretty(report).expect("the report serializes"))
            .expect("the report reads back");
    assert_eq!(on_disk, written);
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("## Figures and targets") && md.contains("latency_cdf.svg"));
    let svg = std::fs::read_to_string(out.join("latency_cdf.svg")).expect("the SVG");
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    md
}

/// assert_every_scenario_ran_cleanly checks every scenario and lock setting: all fields,
/// no error or duplicate, the signals it was to send, and its own correctness figures.
fn assert_every_scenario_ran_cleanly(options: &bench::Options, j: &Value) {
    for name in bench::SCENARIOS {
        let owners = bench::OWNER_SCENARIOS.contains(&name);
        let lock_on_only = bench::LOCK_ON_ONLY_SCENARIOS.contains(&name);
        assert!(
            !owners || lock_on_only,
            "{name}: owner resolution runs with locking on only"
        );
        let settings: &[&str] = if lock_on_only {
            &["lock_on"]
        } else {
            &["lock_on", "lock_off"]
        };
        if lock_on_only {
            assert!(
                j["scenarios"][name].get("lock_off").is_none(),
                "{name} runs with locking on only: {}",
                j["scenarios"][name]
            );
        }
        for setting in settings {
            let run = &j["scenarios"][name][setting];
            for field in RUN_FIELDS {
                assert!(run[field].is_number(), "{name}.{setting}.{field}: {run}");
            }
            assert_eq!(run["errors"], 0, "{name}.{setting}: {run}");
            assert_eq!(run["duplicates"], 0, "{name}.{setting}: {run}");
            assert_eq!(run["owner_resolution"], owners, "{name}.{setting}: {run}");
            let want = match name {
                "plan" | "plan_10" => options.plan_signals,
                "storm" | "storm_split" | "storm_10" => options.storm,
                "rollout_storm" | "rollout_storm_10" => options.rollout_pods,
                n if n.starts_with("owners") => options.owners,
                n if n.starts_with("scale") => options.scale_signals,
                _ => options.signals,
            };
            assert_eq!(run["signals"], want, "{name}.{setting}: {run}");
            assert!(
                run["api_requests_per_signal"].as_f64() > Some(0.0),
                "{name}.{setting}: {run}"
            );
            if owners {
                owners_counted(name, options, run);
            }
            if name == "storm_split" {
                split_counted(options, run);
            }
        }
    }
    for kind in ["new", "sibling", "duplicate"] {
        let added = &j["owner_resolution_added"][kind];
        for field in ["p50_ms", "p95_ms", "api_requests_per_signal"] {
            assert!(
                added[field].is_number(),
                "owner_resolution_added.{kind}: {added}"
            );
        }
    }
}

/// assert_the_goals_and_top_figures checks the `storm_split` goals, in both files, and that
/// every top-level figure is a number.
fn assert_the_goals_and_top_figures(md: &str, j: &Value) {
    assert!(
        md.contains("| storm_split | on |"),
        "report.md has a `storm_split` row"
    );
    let goals = j["goals"].as_array().expect("goals");
    let goal = |prefix: &str| {
        assert!(md.contains(prefix), "report.md has the goal {prefix}");
        goals
            .iter()
            .find(|x| x["figure"].as_str().is_some_and(|f| f.starts_with(prefix)))
            .unwrap_or_else(|| panic!("report.json has the goal {prefix}: {goals:?}"))
    };
    // Its latency is not checked: only that the ratio is reported against its target.
    let ratio = goal("`storm_split` p95 / `storm` p95 (locking on)");
    assert_eq!(ratio["target"], "<= 1.5", "{ratio}");
    assert!(ratio["met"].is_boolean(), "{ratio}");
    assert!(
        j["storm_split_p95_ratio"].is_number(),
        "{}",
        j["storm_split_p95_ratio"]
    );
    let split = goal("`storm_split`: RRs for the fingerprint");
    assert_eq!(split["met"], true, "storm_split's correctness: {split}");
    for field in TOP_FIELDS {
        assert!(j[field].is_number(), "{field}: {}", j[field]);
    }
}

/// assert_the_soak_struck_every_fault checks the soak: every fault kind struck, nothing
/// duplicated, nothing acknowledged lost.
fn assert_the_soak_struck_every_fault(j: &Value) {
    let soak = &j["soak"];
    let kinds: Vec<&str> = soak["faults"]
        .as_array()
        .expect("soak.faults")
        .iter()
        .filter(|f| f["windows"].as_u64() > Some(0) && f["sent"].as_u64() > Some(0))
        .filter_map(|f| f["fault"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["kill", "pause", "retention", "record", "apiserver"],
        "{soak}"
    );
    assert_eq!(soak["total"]["duplicates"], 0, "{soak}");
    assert_eq!(soak["total"]["acknowledged_not_counted"], 0, "{soak}");
    assert!(soak["total"]["answered_2xx"].as_u64() > Some(0), "{soak}");
}

/// assert_memory_baseline_and_size_are_measured checks the memory per replica (the
/// ten-replica fleets among them), that the raw baseline sends what the gateway sends and
/// both are measured, and the binary's sizes.
fn assert_memory_baseline_and_size_are_measured(j: &Value) {
    let memory = j["rss_per_replica"].as_array().expect("rss_per_replica");
    assert!(
        memory
            .iter()
            .any(|m| m["replicas"] == 10 && m["peak_mib_max"].as_f64() > Some(0.0)),
        "{memory:?}"
    );
    let crowded = &j["raw_crowded_new"];
    assert!(
        crowded["errors"] == 0 && crowded["api_requests_per_signal"].as_f64() >= Some(4.5),
        "the raw client's new RRs in the crowded namespace: {crowded}"
    );
    for kind in ["new", "duplicate"] {
        let b = &j["raw_baseline"][kind];
        for field in [
            "gateway_over_raw_p50",
            "gateway_over_raw_p95",
            "gateway_over_raw_throughput",
        ] {
            assert!(b[field].as_f64() > Some(0.0), "{kind} {field}: {b}");
        }
        let (gw, raw) = (
            b["gateway_api_requests_per_signal"]
                .as_f64()
                .unwrap_or(-1.0),
            b["raw_api_requests_per_signal"].as_f64().unwrap_or(9.0),
        );
        assert!(
            (gw - raw).abs() < 0.5 && raw >= 1.5,
            "{kind}: the raw client mirrors the gateway's requests: {b}"
        );
        // Each side's CPU is accounted by process (a few signals may cost the gateway less
        // than one clock tick, so only the sides' totals must show).
        let cpu = &b["cpu_ms_per_signal"];
        for side in ["gateway_side", "raw_side"] {
            let ms = |process: &str| cpu[side][process].as_f64().unwrap_or(-1.0);
            assert!(
                ["gateway", "kube-apiserver", "etcd"]
                    .iter()
                    .all(|p| (0.0..=ms("total")).contains(&ms(p)))
                    && ms("total") > 0.0,
                "{kind} {side}: {cpu}"
            );
        }
    }
    let (stripped, ran) = (
        j["binary_mib"].as_f64(),
        j["binary_mib_benchmarked"].as_f64(),
    );
    assert!(
        stripped > Some(0.0) && stripped <= ran,
        "the shipped (stripped) size is measured, and no larger than the binary run: {stripped:?} {ran:?}"
    );
}

/// assert_the_lock_figures_and_occurrences checks the lock rates and counts, and that every
/// acknowledged signal was counted.
fn assert_the_lock_figures_and_occurrences(j: &Value) {
    for field in ["lock_acquisition_success_rate", "lock_contention_rate"] {
        let rate = j[field].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&rate), "{field}: {rate}");
    }
    assert!(j["lock_counts"]["attempts"].as_f64() > Some(0.0));
    for c in j["occurrences"].as_array().expect("occurrences") {
        assert!(
            c["counted"].as_u64() >= c["acknowledged"].as_u64(),
            "an acknowledged signal was not counted: {c}"
        );
    }
}

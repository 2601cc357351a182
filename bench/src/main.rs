//! bench measures signal-gateway against a real control plane and writes a
//! report; it asserts nothing about timing. Run it through `hack/bench.sh`.
//!
//! It starts etcd and kube-apiserver (testenv), spawns release builds of the
//! gateway as processes (`target/release/signal-gateway`), drives them over
//! plain HTTP/1 on loopback, and writes `target/bench/report.md`. Every
//! number of one report comes from the same run, so that ratios are taken
//! under the same load on a shared machine.
//!
//! Usage: `bench [--n N] [--cold-starts K]` (defaults 200 and 5).

#![deny(rust_2018_idioms)]

mod apiserver;
mod load;
mod report;
mod stats;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testenv::ControlPlane;
use testenv::gateway::Gateway;

use crate::apiserver::ApiServer;
use crate::load::{Load, alert, cold_start, http, run_phase, spawn, warm_up};
use crate::report::{Results, Single};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// IDLE_WINDOW is how long the API server's background traffic is observed.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

struct Args {
    n: usize,
    cold_starts: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n: 200,
        cold_starts: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key.as_str() {
            "--n" => args.n = value()?.parse().map_err(|e| format!("--n: {e}"))?,
            "--cold-starts" => {
                args.cold_starts = value()?
                    .parse()
                    .map_err(|e| format!("--cold-starts: {e}"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: bench [--n N] [--cold-starts K]"
                ));
            }
        }
    }
    if args.n == 0 || args.cold_starts == 0 {
        return Err("--n and --cold-starts must be positive".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let started = Instant::now();
    let mut facts: Vec<(&str, String)> = vec![
        (
            "date (UTC)",
            command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        ),
        ("nproc", command_output("nproc", &[])),
        ("load average at start (1/5/15 min)", loadavg()),
    ];
    let dirty =
        !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    facts.push((
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
    ));
    let bin = target_dir().join("release/signal-gateway");
    if !bin.is_file() {
        return Err(format!(
            "{} not found; build it with `cargo build --release` (hack/bench.sh does)",
            bin.display()
        )
        .into());
    }
    facts.push(("gateway binary", format!("`{}`", bin.display())));
    facts.push(("gateway build profile", release_profile()));
    facts.push(("samples per sequential phase (N)", args.n.to_string()));

    eprintln!("bench: starting the control plane");
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
    let http = http();
    let api = ApiServer::new(cp.admin_client()).await?;

    eprintln!("bench: measuring the API server's background traffic");
    let before = api.scrape().await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = api.since(&before).await?;

    // 1. One process per mode, sequential new-RR and duplicate signals.
    let mut single = Vec::new();
    for locking in [true, false] {
        let mode = if locking { "on" } else { "off" };
        let ns = cp.new_namespace().await?;
        let gw = spawn(&bin, &cp, ns.name(), &format!("bench-{mode}"), locking)?;
        warm_up(&http, &gw, &format!("warmup-{mode}")).await?;
        let pods: Vec<String> = (0..args.n).map(|i| format!("seq-{mode}-{i}")).collect();
        let bodies = || pods.iter().map(|p| (0, alert(p))).collect::<Vec<_>>();
        let new = run_phase(
            &format!("new RR, locking {mode}"),
            &api,
            &http,
            &[&gw],
            bodies(),
            Load::Sequential,
            &[201],
        )
        .await?;
        let dup = run_phase(
            &format!("duplicate, locking {mode}"),
            &api,
            &http,
            &[&gw],
            bodies(),
            Load::Sequential,
            &[202],
        )
        .await?;
        single.push(Single {
            locking,
            new,
            dup,
            memory: gw.memory(),
        });
    }

    // 2 and 3. Three processes with locking on.
    let ns = cp.new_namespace().await?;
    let mut gws = Vec::new();
    for i in 0..3 {
        gws.push(spawn(
            &bin,
            &cp,
            ns.name(),
            &format!("bench-replica-{i}"),
            true,
        )?);
    }
    for (i, g) in gws.iter().enumerate() {
        warm_up(&http, g, &format!("warmup-replica-{i}")).await?;
    }
    let refs: Vec<&Gateway> = gws.iter().collect();
    let storm_bodies = (0..100).map(|i| (i, alert("storm-0"))).collect();
    let storm = run_phase(
        "storm (3 processes, 100 identical)",
        &api,
        &http,
        &refs,
        storm_bodies,
        Load::Concurrent { limit: 100 },
        &[201, 202],
    )
    .await?;
    let mut tp_bodies = Vec::new();
    for round in 0..20 {
        for f in 0..50 {
            tp_bodies.push((round + f, alert(&format!("tp-{f}"))));
        }
    }
    let throughput = run_phase(
        "throughput (3 processes, 50 x 20)",
        &api,
        &http,
        &refs,
        tp_bodies,
        Load::Concurrent { limit: 64 },
        &[201, 202],
    )
    .await?;
    let replica_memory: Vec<(u64, u64)> = gws.iter().map(Gateway::memory).collect();
    drop(refs);
    drop(gws);

    // 5. Cold starts.
    let mut cold = Vec::new();
    for i in 0..args.cold_starts {
        cold.push(cold_start(&bin, &cp, ns.name(), &http, i).await?);
    }

    facts.push(("load average at end (1/5/15 min)", loadavg()));
    facts.push((
        "bench duration",
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    ));
    let text = report::render(&Results {
        facts,
        n: args.n,
        scrape_cost: api.scrape_cost,
        idle,
        single,
        storm,
        throughput,
        replica_memory,
        cold,
    });
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("report.md");
    std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("{text}");
    eprintln!("bench: wrote {}", path.display());
    Ok(())
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

/// repo_root is the repository, without the `tests/testenv/../..` detour.
fn repo_root() -> PathBuf {
    let root = testenv::repo_root();
    root.canonicalize().unwrap_or(root)
}

fn target_dir() -> PathBuf {
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

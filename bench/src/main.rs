//! bench runs the benchmark of signal-gateway and writes `target/bench/report.json`,
//! `report.md`, `latency_cdf.svg` and `performance.md`; with `--publish` it also writes
//! `performance.md` to `docs/performance.md`. Run it through `hack/bench.sh`.

#![deny(rust_2018_idioms)]

use std::path::PathBuf;

use bench::{BoxError, Options};

const USAGE: &str = "usage: bench [--smoke] [--publish] [--gateway PATH] [--out DIR] [--rate PER_S] \
[--signals N] [--plan-signals N] [--storm N] [--crowd N] [--owners N] [--rollout-pods N] \
[--scale-signals N] \
[--scale-fingerprints N] [--in-flight N] [--cold-starts N] [--soak MINUTES] [--profile (on unless --smoke)]";

/// PUBLISHED is where `--publish` writes the generated performance page, from the
/// repository's root.
const PUBLISHED: &str = "docs/performance.md";

/// parse_args reads the options of one run, and whether to publish its performance page.
fn parse_args() -> Result<(Options, bool), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gateway = bench::target_dir().join("release/signal-gateway");
    let out = bench::target_dir().join("bench");
    let mut o = if args.iter().any(|a| a == "--smoke") {
        Options::smoke(gateway, out)
    } else {
        Options::full(gateway, out)
    };
    let mut publish = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--smoke" {
            continue;
        }
        if a == "--publish" {
            publish = true;
            continue;
        }
        if a == "--profile" {
            o.profile = true;
            continue;
        }
        if a == "--help" || a == "-h" {
            return Err(USAGE.into());
        }
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (a.clone(), None),
        };
        let value = inline
            .or_else(|| it.next())
            .ok_or_else(|| format!("{key} needs a value; {USAGE}"))?;
        let count = |v: &str| -> Result<usize, String> {
            match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{key}: {v:?} is not a positive count")),
            }
        };
        match key.as_str() {
            "--gateway" => o.gateway = PathBuf::from(value),
            "--out" => o.out = PathBuf::from(value),
            "--rate" => {
                o.rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0)
                    .ok_or_else(|| format!("--rate: {value:?} is not a positive rate"))?;
            }
            "--signals" => o.signals = count(&value)?,
            "--plan-signals" => o.plan_signals = count(&value)?,
            "--storm" => o.storm = count(&value)?,
            "--crowd" => o.crowd = count(&value)?,
            "--owners" => o.owners = count(&value)?,
            "--rollout-pods" => o.rollout_pods = count(&value)?,
            "--scale-signals" => o.scale_signals = count(&value)?,
            "--scale-fingerprints" => o.scale_fingerprints = count(&value)?,
            "--in-flight" => o.in_flight = count(&value)?,
            "--cold-starts" => o.cold_starts = count(&value)?,
            "--soak" => {
                o.soak_windows = count(&value)? * 2;
                o.soak_window = std::time::Duration::from_secs(30);
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok((o, publish))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (options, publish) = parse_args()?;
    let report = bench::run(options).await?;
    println!("{}", report.markdown);
    eprintln!(
        "bench: wrote report.json, report.md, latency_cdf.svg and performance.md in {}",
        report.dir.display()
    );
    if publish {
        let path = bench::repo_root().join(PUBLISHED);
        std::fs::write(&path, &report.performance)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("bench: published {}", path.display());
    }
    Ok(())
}

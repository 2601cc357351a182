//! Profile samples one gateway's CPU with `perf` (Debian's linux-perf, `hack/tool.sh
//! perf`) while it is saturated, and sorts the self time of its symbols into the places
//! a request's time can go: TLS, JSON, HTTP, the kube client, tokio's scheduling, memory,
//! the kernel (system calls, the loopback network) and the gateway's own code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::BoxError;

/// CATEGORIES maps a substring of a symbol (or its DSO) to where its time goes; the
/// first match wins.
const CATEGORIES: [(&str, &[&str]); 9] = [
    (
        "TLS (rustls, ring)",
        &[
            "rustls",
            "ring::",
            "ring_core",
            "aes_",
            "gcm_",
            "chacha",
            "sha256_block",
            "x25519",
        ],
    ),
    ("JSON (serde_json)", &["serde_json", "serde::"]),
    (
        "HTTP (hyper, h2, http)",
        &["hyper", "h2::", "http::", "httparse", "axum", "tower"],
    ),
    (
        "kube client",
        &["kube_client", "kube::", "kube_core", "k8s_openapi"],
    ),
    ("tokio scheduling and timers", &["tokio::"]),
    (
        "memory (allocation, copies)",
        &[
            "malloc", "free", "alloc::", "memcpy", "memmove", "memset", "realloc", "_int_",
        ],
    ),
    (
        "telemetry (tracing, OpenTelemetry)",
        &["tracing", "opentelemetry"],
    ),
    ("the gateway's own code", &["signal_gateway"]),
    ("kernel (system calls, loopback TCP)", &["[k]"]),
];

/// Profile is where one gateway's CPU went.
#[derive(Clone, Debug)]
pub struct Profile {
    /// report is the `perf report` text kept beside the report.
    pub report: PathBuf,
    pub samples: u64,
    /// categories are (place, percent of samples), largest first.
    pub categories: Vec<(String, f64)>,
    /// top are the largest symbols by self time: (percent, symbol).
    pub top: Vec<(f64, String)>,
}

fn perf() -> PathBuf {
    std::env::var_os("PERF").map_or_else(|| PathBuf::from("perf"), PathBuf::from)
}

/// Recording is a running `perf record` of one process.
pub struct Recording {
    child: Child,
    data: PathBuf,
}

/// start samples process `pid` at 999 Hz on the CPU clock (a software event, so that it
/// works in a VM), into `dir`; None when perf cannot run here.
#[must_use]
pub fn start(pid: i32, dir: &Path) -> Option<Recording> {
    std::fs::create_dir_all(dir).ok()?;
    let data = dir.join("perf.data");
    let child = Command::new(perf())
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "999",
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Recording { child, data })
}

impl Recording {
    /// finish stops the recording and sorts its samples.
    pub fn finish(mut self) -> Result<Profile, BoxError> {
        // SAFETY: signalling our own child; perf writes its data on SIGINT.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        let out = Command::new(perf())
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,sym",
                "-i",
            ])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let report = self.data.with_file_name("profile.txt");
        std::fs::write(&report, &text)?;
        Ok(sort(&text, report))
    }
}

/// count reads perf's rounded counts: `812`, `12K`, `1M`.
fn count(n: &str) -> u64 {
    let (digits, scale) = match n.strip_suffix('K') {
        Some(d) => (d, 1000.0),
        None => match n.strip_suffix('M') {
            Some(d) => (d, 1_000_000.0),
            None => (n, 1.0),
        },
    };
    digits.parse::<f64>().map_or(0, |v| (v * scale) as u64)
}

/// sort reads `perf report --sort dso,sym` lines (`  3.21%  dso  [.] symbol`).
fn sort(text: &str, report: PathBuf) -> Profile {
    let mut samples = 0;
    let mut by: Vec<(String, f64)> = CATEGORIES
        .iter()
        .map(|(name, _)| ((*name).to_owned(), 0.0))
        .chain(std::iter::once(("other".to_owned(), 0.0)))
        .collect();
    let mut top = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("# Samples: ") {
            samples = n.split_whitespace().next().map_or(0, count);
        }
        let Some((pct, rest)) = line.split_once('%') else {
            continue;
        };
        let Ok(pct) = pct.trim().parse::<f64>() else {
            continue;
        };
        let rest = rest.trim();
        let slot = CATEGORIES
            .iter()
            .position(|(_, keys)| keys.iter().any(|k| rest.contains(k)))
            .unwrap_or(CATEGORIES.len());
        by[slot].1 += pct;
        if top.len() < 15 {
            let symbol = rest
                .split_once(" [.] ")
                .or_else(|| rest.split_once(" [k] "))
                .map_or(rest, |(_, s)| s);
            top.push((pct, symbol.chars().take(120).collect()));
        }
    }
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    Profile {
        report,
        samples,
        categories: by.into_iter().filter(|(_, p)| *p > 0.0).collect(),
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_sorted_into_their_places() {
        let text = "# Samples: 1K of event 'cpu-clock'\n\
            \n    20.00%  [kernel.kallsyms]  [k] tcp_sendmsg\n\
            \x20   10.00%  signal-gateway     [.] ring_core_0_17_aes_gcm_encrypt\n\
            \x20    5.00%  signal-gateway     [.] serde_json::de::Deserializer::parse\n\
            \x20    2.50%  libc.so.6          [.] malloc\n\
            \x20    1.00%  signal-gateway     [.] signal_gateway::signal::fingerprint\n\
            \x20    0.50%  signal-gateway     [.] something_else\n";
        let p = sort(text, PathBuf::from("x"));
        assert_eq!(p.samples, 1000);
        let got = |name: &str| {
            p.categories
                .iter()
                .find(|(n, _)| n.starts_with(name))
                .map(|(_, v)| *v)
        };
        assert_eq!(got("kernel"), Some(20.0));
        assert_eq!(got("TLS"), Some(10.0));
        assert_eq!(got("JSON"), Some(5.0));
        assert_eq!(got("memory"), Some(2.5));
        assert_eq!(got("the gateway"), Some(1.0));
        assert_eq!(got("other"), Some(0.5));
        assert_eq!(p.categories[0].0, "kernel (system calls, loopback TCP)");
        assert_eq!(p.top[0], (20.0, "tcp_sendmsg".to_owned()));
    }
}

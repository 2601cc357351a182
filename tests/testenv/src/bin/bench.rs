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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use testenv::{ControlPlane, Identity};

type Http = Client<HttpConnector, Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// REQUEST_TIMEOUT bounds one HTTP request to a gateway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// START_TIMEOUT bounds a gateway's start-up (spawn to `listening`, and to `/readyz`).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// LOG_TIMEOUT bounds the wait for a gateway's `batch processed` lines.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// SCRAPE_TIMEOUT bounds one `/metrics` scrape of the API server.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);
/// IDLE_WINDOW is how long the API server's background traffic is observed.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// LOCK_BUDGET is the latency the original plan allowed the lock.
const LOCK_BUDGET_MS: f64 = 20.0;

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

// ---------------------------------------------------------------------------
// Gateway processes

/// Gateway is one signal-gateway process; it is killed when dropped, and by
/// the kernel when this process dies (`PR_SET_PDEATHSIG`).
struct Gateway {
    child: Child,
    addr: SocketAddr,
    spawned: Instant,
    listening: Instant,
    /// logs holds every stderr line, parsed as JSON when it is.
    logs: Arc<Mutex<Vec<Option<Value>>>>,
}

impl Gateway {
    async fn spawn(
        bin: &Path,
        cp: &ControlPlane,
        ns: &str,
        name: &str,
        locking: bool,
    ) -> Result<Gateway, BoxError> {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", cp.kubeconfig_path(Identity::Gateway))
            .env("GATEWAY_NAMESPACE", ns)
            .env("GATEWAY_LISTEN_ADDR", "127.0.0.1:0")
            .env("GATEWAY_AUTH", "none")
            .env("GATEWAY_LOG_FORMAT", "json")
            .env(
                "GATEWAY_ENABLE_DISTRIBUTED_LOCKING",
                if locking { "true" } else { "false" },
            )
            .env("POD_NAME", name)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl and getppid are async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            let parent = libc::getpid();
            cmd.pre_exec(move || {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no stderr pipe".into());
        };
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let at = Instant::now();
                let json = serde_json::from_str::<Value>(&line).ok();
                if let Some(v) = &json
                    && v["message"] == "listening"
                {
                    let _ = tx.send((at, v["addr"].as_str().unwrap_or_default().to_owned()));
                }
                lock(&sink).push(json);
            }
        });
        // The child is owned by a Gateway from here on, so that an error kills it.
        let mut gw = Gateway {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            spawned,
            listening: spawned,
            logs,
        };
        match tokio::time::timeout(START_TIMEOUT, rx.recv()).await {
            Ok(Some((at, addr))) => {
                gw.addr = addr
                    .parse()
                    .map_err(|e| format!("{name}: listening on {addr:?}: {e}"))?;
                gw.listening = at;
                Ok(gw)
            }
            Ok(None) => {
                Err(format!("{name} exited before listening: {:?}", gw.child.try_wait()).into())
            }
            Err(_) => {
                Err(format!("{name} did not log `listening` within {START_TIMEOUT:?}").into())
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_len(&self) -> usize {
        lock(&self.logs).len()
    }

    /// batches sums `api_calls` and `signals` of the batch lines (processed
    /// and failed) logged from line `from` on.
    fn batches(&self, from: usize) -> (u64, u64) {
        let logs = lock(&self.logs);
        logs.iter()
            .skip(from)
            .filter_map(Option::as_ref)
            .filter(|v| v["message"] == "batch processed" || v["message"] == "batch failed")
            .fold((0, 0), |(c, s), v| {
                (
                    c + v["api_calls"].as_u64().unwrap_or(0),
                    s + v["signals"].as_u64().unwrap_or(0),
                )
            })
    }

    /// memory reads VmRSS and VmHWM (peak) of the process, in KiB.
    fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// wait_signals waits (bounded) until the gateways have logged batches for
/// `want` signals since `marks`, and returns (api_calls, signals).
async fn wait_signals(gws: &[&Gateway], marks: &[usize], want: u64) -> (u64, u64) {
    let deadline = Instant::now() + LOG_TIMEOUT;
    loop {
        let (calls, signals) = gws
            .iter()
            .zip(marks)
            .map(|(g, &m)| g.batches(m))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        if signals >= want || Instant::now() > deadline {
            return (calls, signals);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// HTTP

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

fn alert(pod: &str) -> Bytes {
    json!({
        "version": "4", "status": "firing", "receiver": "sg", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "KubePodCrashLooping", "namespace": "prod", "pod": pod, "severity": "critical"},
            "annotations": {}, "startsAt": "2026-11-27T08:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090", "fingerprint": "0123456789abcdef"
        }]
    })
    .to_string()
    .into()
}

/// Answer is the outcome of one request: status (0 if none) and latency.
#[derive(Clone, Copy)]
struct Answer {
    status: u16,
    latency: Duration,
}

async fn post(http: &Http, to: SocketAddr, body: Bytes) -> Answer {
    let started = Instant::now();
    let status = async {
        let req = http::Request::post(format!("http://{to}/api/v1/signals/prometheus"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .ok()?;
        let res = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let res = http.request(req).await.ok()?;
            let status = res.status().as_u16();
            res.into_body().collect().await.ok()?;
            Some(status)
        })
        .await
        .ok()??;
        Some(res)
    }
    .await
    .unwrap_or(0);
    Answer {
        status,
        latency: started.elapsed(),
    }
}

async fn get_status(http: &Http, url: &str) -> u16 {
    let Ok(req) = http::Request::get(url).body(Full::new(Bytes::new())) else {
        return 0;
    };
    match tokio::time::timeout(Duration::from_secs(2), http.request(req)).await {
        Ok(Ok(res)) => {
            let status = res.status().as_u16();
            let _ = res.into_body().collect().await;
            status
        }
        _ => 0,
    }
}

// ---------------------------------------------------------------------------
// The API server's own request counter

/// Scrape is what one `/metrics` scrape of the API server says about requests:
/// the `apiserver_request_total` samples keyed by their label set, and the
/// sum and count of `apiserver_request_duration_seconds` by verb and resource.
#[derive(Clone, Default)]
struct Scrape {
    total: BTreeMap<String, f64>,
    duration: BTreeMap<String, (f64, f64)>,
}

impl Scrape {
    async fn take(client: &kube::Client) -> Result<Scrape, BoxError> {
        let req = http::Request::get("/metrics").body(Vec::new())?;
        let text = tokio::time::timeout(SCRAPE_TIMEOUT, client.request_text(req))
            .await
            .map_err(|_| format!("/metrics took longer than {SCRAPE_TIMEOUT:?}"))??;
        let mut scrape = Scrape::default();
        for line in text.lines() {
            let Some((name, rest)) = line.split_once('{') else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            match name {
                "apiserver_request_total" => {
                    scrape.total.insert(labels.to_owned(), v);
                }
                "apiserver_request_duration_seconds_sum" => {
                    scrape.duration.entry(what(labels)).or_default().0 += v;
                }
                "apiserver_request_duration_seconds_count" => {
                    scrape.duration.entry(what(labels)).or_default().1 += v;
                }
                _ => {}
            }
        }
        if scrape.total.is_empty() {
            return Err("/metrics has no apiserver_request_total samples".into());
        }
        Ok(scrape)
    }
}

fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    labels
        .split(',')
        .find_map(|kv| kv.strip_prefix(&key))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or("")
}

/// what names a request sample "VERB resource[/subresource]".
fn what(labels: &str) -> String {
    let (verb, resource, sub) = (
        label(labels, "verb"),
        label(labels, "resource"),
        label(labels, "subresource"),
    );
    match (resource, sub) {
        ("", "") => format!("{verb} (non-resource)"),
        ("", s) => format!("{verb} {s}"),
        (r, "") => format!("{verb} {r}"),
        (r, s) => format!("{verb} {r}/{s}"),
    }
}

/// Delta is what the API server counted between two scrapes.
struct Delta {
    /// total is every request counted, the scrapes excluded.
    total: f64,
    /// breakdown counts requests by "VERB resource[/subresource]".
    breakdown: BTreeMap<String, f64>,
    /// server_ms is the mean time the API server took per request, by
    /// "VERB resource[/subresource]", with the number of requests.
    server_ms: BTreeMap<String, (f64, f64)>,
}

impl Delta {
    /// between subtracts `before` from `after`, and `scrape_cost` requests
    /// for the scrape `before` (which [`calibrate`] measured).
    fn between(before: &Scrape, after: &Scrape, scrape_cost: f64) -> Delta {
        let mut breakdown = BTreeMap::new();
        let mut total = 0.0;
        for (labels, v) in &after.total {
            let d = v - before.total.get(labels).copied().unwrap_or(0.0);
            if d <= 0.0 {
                continue;
            }
            total += d;
            *breakdown.entry(what(labels)).or_insert(0.0) += d;
        }
        let mut server_ms = BTreeMap::new();
        for (k, (sum, count)) in &after.duration {
            let (sum0, count0) = before.duration.get(k).copied().unwrap_or_default();
            let n = count - count0;
            if n > 0.0 {
                server_ms.insert(k.clone(), ((sum - sum0) / n * 1e3, n));
            }
        }
        Delta {
            total: total - scrape_cost,
            breakdown,
            server_ms,
        }
    }

    fn breakdown_text(&self) -> String {
        let mut parts: Vec<(String, f64)> = self
            .breakdown
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        parts
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn server_ms_text(&self) -> String {
        self.server_ms
            .iter()
            .filter(|(k, _)| k.contains("leases") || k.contains("remediationrequests"))
            .map(|(k, (mean, n))| format!("{k} {mean:.1} ms (x{n:.0})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// calibrate measures how many requests the API server counts for one
/// `/metrics` scrape: the smallest delta over back-to-back scrape pairs
/// (background traffic can only add to a pair).
/// ApiServer is the admin client that scrapes `/metrics`, with the number of
/// requests one scrape adds to the counter.
struct ApiServer {
    client: kube::Client,
    scrape_cost: f64,
}

async fn calibrate(client: &kube::Client) -> Result<f64, BoxError> {
    let mut cost = f64::INFINITY;
    for _ in 0..3 {
        let a = Scrape::take(client).await?;
        let b = Scrape::take(client).await?;
        cost = cost.min(Delta::between(&a, &b, 0.0).total);
    }
    Ok(cost)
}

// ---------------------------------------------------------------------------
// Statistics

/// Stats summarises latencies in milliseconds.
struct Stats {
    n: usize,
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn stats(latencies: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Stats {
        n: ms.len(),
        min: ms.first().copied().unwrap_or(f64::NAN),
        p50: quantile(&ms, 0.5),
        p90: quantile(&ms, 0.9),
        p99: quantile(&ms, 0.99),
        max: ms.last().copied().unwrap_or(f64::NAN),
        mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
    }
}

// ---------------------------------------------------------------------------
// Phases

/// Phase is one measured stretch of load.
struct Phase {
    name: String,
    answers: Vec<Answer>,
    expected_status: &'static [u16],
    wall: Duration,
    signals: u64,
    log_calls: u64,
    log_signals: u64,
    server: Delta,
}

impl Phase {
    fn unexpected(&self) -> String {
        let mut by_status = BTreeMap::<u16, usize>::new();
        for a in &self.answers {
            if !self.expected_status.contains(&a.status) {
                *by_status.entry(a.status).or_default() += 1;
            }
        }
        if by_status.is_empty() {
            "none".into()
        } else {
            by_status
                .iter()
                .map(|(s, n)| {
                    format!(
                        "{n} x {}",
                        if *s == 0 {
                            "no answer".to_owned()
                        } else {
                            s.to_string()
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    fn count(&self, status: u16) -> usize {
        self.answers.iter().filter(|a| a.status == status).count()
    }

    fn latencies(&self) -> Vec<Duration> {
        self.answers.iter().map(|a| a.latency).collect()
    }

    fn log_per_signal(&self) -> f64 {
        self.log_calls as f64 / self.signals as f64
    }

    fn server_per_signal(&self) -> f64 {
        self.server.total / self.signals as f64
    }
}

/// Load is how the requests of a phase are sent.
enum Load {
    /// Sequential sends the bodies one after another to the first gateway.
    Sequential,
    /// Concurrent sends them at once, at most `limit` in flight, round robin
    /// over the gateways.
    Concurrent { limit: usize },
}

async fn run_phase(
    name: &str,
    api: &ApiServer,
    http: &Http,
    gws: &[&Gateway],
    bodies: Vec<(usize, Bytes)>,
    load: Load,
    expected_status: &'static [u16],
) -> Result<Phase, BoxError> {
    let signals = bodies.len() as u64;
    let marks: Vec<usize> = gws.iter().map(|g| g.log_len()).collect();
    let before = Scrape::take(&api.client).await?;
    let started = Instant::now();
    let answers = match load {
        Load::Sequential => {
            let mut answers = Vec::with_capacity(bodies.len());
            for (_, body) in bodies {
                answers.push(post(http, gws[0].addr, body).await);
            }
            answers
        }
        Load::Concurrent { limit } => {
            let limit = Arc::new(tokio::sync::Semaphore::new(limit));
            let mut tasks = Vec::with_capacity(bodies.len());
            for (target, body) in bodies {
                let (http, to, limit) = (
                    http.clone(),
                    gws[target % gws.len()].addr,
                    Arc::clone(&limit),
                );
                tasks.push(tokio::spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    post(&http, to, body).await
                }));
            }
            let mut answers = Vec::with_capacity(tasks.len());
            for t in tasks {
                answers.push(t.await?);
            }
            answers
        }
    };
    let wall = started.elapsed();
    let (log_calls, log_signals) = wait_signals(gws, &marks, signals).await;
    let after = Scrape::take(&api.client).await?;
    let phase = Phase {
        name: name.to_owned(),
        answers,
        expected_status,
        wall,
        signals,
        log_calls,
        log_signals,
        server: Delta::between(&before, &after, api.scrape_cost),
    };
    eprintln!(
        "bench: {name}: {} requests in {:.2?}, p50 {:.1} ms, API/signal {:.2} (logs) {:.2} (server), unexpected: {}",
        phase.signals,
        phase.wall,
        stats(&phase.latencies()).p50,
        phase.log_per_signal(),
        phase.server_per_signal(),
        phase.unexpected()
    );
    Ok(phase)
}

/// warm_up sends one signal outside any measurement, so that the first
/// measured request finds a warm connection on both sides.
async fn warm_up(http: &Http, gw: &Gateway, pod: &str) -> Result<(), BoxError> {
    let a = post(http, gw.addr, alert(pod)).await;
    if a.status != 201 && a.status != 202 {
        return Err(format!("warm-up request answered {}", a.status).into());
    }
    Ok(())
}

struct ColdStart {
    listening: Duration,
    ready: Duration,
}

async fn cold_start(
    bin: &Path,
    cp: &ControlPlane,
    ns: &str,
    http: &Http,
    i: usize,
) -> Result<ColdStart, BoxError> {
    let gw = Gateway::spawn(bin, cp, ns, &format!("bench-cold-{i}"), true).await?;
    let url = format!("http://{}/readyz", gw.addr);
    let deadline = gw.spawned + START_TIMEOUT;
    loop {
        if get_status(http, &url).await == 200 {
            let ready = gw.spawned.elapsed();
            return Ok(ColdStart {
                listening: gw.listening - gw.spawned,
                ready,
            });
        }
        if Instant::now() > deadline {
            return Err(format!("cold start {i}: /readyz not 200 within {START_TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------
// Environment facts

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(testenv::repo_root())
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

fn release_profile() -> String {
    let toml = std::fs::read_to_string(testenv::repo_root().join("Cargo.toml")).unwrap_or_default();
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

// ---------------------------------------------------------------------------
// Report

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn latency_row(out: &mut String, label: &str, p: &Phase) {
    let s = stats(&p.latencies());
    let _ = writeln!(
        out,
        "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {} |",
        s.n,
        s.p50,
        s.p90,
        s.p99,
        s.min,
        s.max,
        s.mean,
        p.log_per_signal(),
        p.server_per_signal(),
        p.unexpected()
    );
}

fn api_row(out: &mut String, p: &Phase) {
    let agree = format!("{:+.0}", p.server.total - p.log_calls as f64);
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {:.0} | {agree} | {} |",
        p.name,
        p.signals,
        p.log_signals,
        p.log_calls,
        p.server.total,
        p.server.breakdown_text()
    );
}

#[allow(clippy::too_many_arguments)]
fn report(
    facts: &[(&str, String)],
    args: &Args,
    scrape_cost: f64,
    idle: &Delta,
    single: &[(bool, Phase, Phase, (u64, u64))],
    storm: &Phase,
    throughput: &Phase,
    replica_memory: &[(u64, u64)],
    cold: &[ColdStart],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# signal-gateway benchmark\n");
    let _ = writeln!(
        out,
        "Written by `hack/bench.sh` (`target/release/bench`). All numbers are from one run on a \
         shared machine: compare numbers within this report, not across reports. Latencies are \
         client-side wall clock per request (HTTP/1 keep-alive over loopback), in ms; quantiles \
         are linearly interpolated.\n"
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    for (k, v) in facts {
        let _ = writeln!(out, "| {k} | {v} |");
    }

    let _ = writeln!(
        out,
        "\n## 1. One gateway process, sequential requests\n\n\
         Per mode one gateway process in a namespace of its own; one warm-up signal (not \
         counted), then {n} signals for {n} distinct pods (new RR each), then the same {n} \
         pods again (duplicates).\n",
        n = args.n
    );
    let _ = writeln!(
        out,
        "| phase | samples | p50 | p90 | p99 | min | max | mean | API req/signal (logs) | API req/signal (server) | unexpected answers |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (_, new, dup, _) in single {
        latency_row(&mut out, &new.name, new);
        latency_row(&mut out, &dup.name, dup);
    }
    let find = |locking: bool| single.iter().find(|s| s.0 == locking);
    if let (Some(on), Some(off)) = (find(true), find(false)) {
        let (son, soff) = (stats(&on.1.latencies()), stats(&off.1.latencies()));
        let (don, doff) = (stats(&on.2.latencies()), stats(&off.2.latencies()));
        let cost = son.p50 - soff.p50;
        let verdict = if cost <= LOCK_BUDGET_MS {
            "within"
        } else {
            "over"
        };
        let _ = writeln!(
            out,
            "\n**Latency cost of the lock** (new RR): median(locking on) − median(locking off) = \
             {:.1} − {:.1} = **{cost:.1} ms**, {verdict} the original plan's {LOCK_BUDGET_MS:.0} ms \
             budget ({:.0} % of it). Ratio of medians on/off: {:.2}; p90 on − off: {:.1} ms.\n\n\
             Noise check: duplicates take no Lease in either mode, so their median difference \
             (on − off = {:.1} ms) is what this machine's drift alone produces between the two runs.",
            son.p50,
            soff.p50,
            cost / LOCK_BUDGET_MS * 100.0,
            son.p50 / soff.p50,
            son.p90 - soff.p90,
            don.p50 - doff.p50,
        );
    }
    let _ = writeln!(
        out,
        "\nServer-side time per Kubernetes request in these phases (mean of \
         `apiserver_request_duration_seconds`, i.e. inside kube-apiserver):\n"
    );
    for (_, new, dup, _) in single {
        for p in [new, dup] {
            let _ = writeln!(out, "- {}: {}", p.name, p.server.server_ms_text());
        }
    }

    let _ = writeln!(
        out,
        "\n## API requests, counted two ways\n\n\
         (a) the sum of `api_calls` over the gateways' `batch processed`/`batch failed` log \
         lines; (b) the API server's own `apiserver_request_total`, summed over all samples, \
         scraped before and after each phase, minus what one scrape adds to it (measured: \
         {scrape_cost:.0}). (b) also counts the API server's own background traffic: in an idle \
         window of {:.0} s before the load it counted {:.0} requests ({}).\n",
        IDLE_WINDOW.as_secs_f64(),
        idle.total,
        if idle.breakdown.is_empty() {
            "none".to_owned()
        } else {
            idle.breakdown_text()
        }
    );
    let _ = writeln!(
        out,
        "| phase | signals sent | signals in logs | (a) logs | (b) server | (b) − (a) | (b) by verb and resource |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (_, new, dup, _) in single {
        api_row(&mut out, new);
        api_row(&mut out, dup);
    }
    api_row(&mut out, storm);
    api_row(&mut out, throughput);

    let s = stats(&storm.latencies());
    let _ = writeln!(
        out,
        "\n## 2. Storm: 3 processes (locking on), {} concurrent identical signals\n\n\
         - wall time: **{:.1} ms** (first request sent to last answer)\n\
         - API requests per signal: **{:.2}** (logs: {} for {} signals), **{:.2}** (server: {:.0})\n\
         - answers: {} x 201, {} x 202, unexpected: {}\n\
         - latency: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        storm.signals,
        ms(storm.wall),
        storm.log_per_signal(),
        storm.log_calls,
        storm.log_signals,
        storm.server_per_signal(),
        storm.server.total,
        storm.count(201),
        storm.count(202),
        storm.unexpected(),
        s.p50,
        s.p90,
        s.max
    );

    let s = stats(&throughput.latencies());
    let _ = writeln!(
        out,
        "\n## 3. Throughput: 3 processes (locking on), 50 fingerprints x 20 signals, 64 in flight\n\n\
         - **{:.0} signals/s** ({} signals in {:.2} s)\n\
         - API requests per signal: {:.2} (logs), {:.2} (server)\n\
         - answers: {} x 201, {} x 202, unexpected: {}\n\
         - latency under load: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        throughput.signals as f64 / throughput.wall.as_secs_f64(),
        throughput.signals,
        throughput.wall.as_secs_f64(),
        throughput.log_per_signal(),
        throughput.server_per_signal(),
        throughput.count(201),
        throughput.count(202),
        throughput.unexpected(),
        s.p50,
        s.p90,
        s.p99,
        s.max
    );

    let _ = writeln!(
        out,
        "\n## 4. Memory (`/proc/<pid>/status`), after the load\n\n| process | load it served | VmRSS | VmHWM (peak) |\n|---|---|---|---|"
    );
    for (locking, new, _, (rss, hwm)) in single {
        let _ = writeln!(
            out,
            "| single, locking {} | {} sequential signals | {:.1} MiB | {:.1} MiB |",
            if *locking { "on" } else { "off" },
            2 * new.signals + 1,
            *rss as f64 / 1024.0,
            *hwm as f64 / 1024.0
        );
    }
    for (i, (rss, hwm)) in replica_memory.iter().enumerate() {
        let _ = writeln!(
            out,
            "| replica {i} of 3 | storm + throughput, about a third each | {:.1} MiB | {:.1} MiB |",
            *rss as f64 / 1024.0,
            *hwm as f64 / 1024.0
        );
    }

    let listening: Vec<Duration> = cold.iter().map(|c| c.listening).collect();
    let ready: Vec<Duration> = cold.iter().map(|c| c.ready).collect();
    let (l, r) = (stats(&listening), stats(&ready));
    let _ = writeln!(
        out,
        "\n## 5. Cold start ({} starts, locking on)\n\n\
         The gateway connects to the API server before it opens its port, so `listening` \
         already includes that set-up; `/readyz` is polled every 2 ms from then on.\n\n\
         | | median | min | max | each |\n|---|---|---|---|---|\n\
         | spawn → `listening` log line | {:.1} ms | {:.1} ms | {:.1} ms | {} |\n\
         | spawn → first `GET /readyz` 200 | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
        cold.len(),
        l.p50,
        l.min,
        l.max,
        listening
            .iter()
            .map(|d| format!("{:.1}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
        r.p50,
        r.min,
        r.max,
        ready
            .iter()
            .map(|d| format!("{:.1}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out
}

// ---------------------------------------------------------------------------

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
    let crd = testenv::read_crd(&testenv::repo_root().join("chart/crds/remediationrequests.yaml"))?;
    cp.install_crd(crd).await?;
    facts.push((
        "control plane",
        format!(
            "kube-apiserver + etcd from `{}` (testenv, loopback, TLS)",
            testenv::binaries_dir()?.display()
        ),
    ));
    let http = http();
    let admin = cp.admin_client();
    let scrape_cost = calibrate(&admin).await?;
    let api = ApiServer {
        client: admin,
        scrape_cost,
    };

    eprintln!("bench: measuring the API server's background traffic");
    let before = Scrape::take(&api.client).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = Delta::between(&before, &Scrape::take(&api.client).await?, scrape_cost);

    // 1. One process per mode, sequential new-RR and duplicate signals.
    let mut single = Vec::new();
    for locking in [true, false] {
        let mode = if locking { "on" } else { "off" };
        let ns = cp.new_namespace().await?;
        let gw = Gateway::spawn(&bin, &cp, ns.name(), &format!("bench-{mode}"), locking).await?;
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
        single.push((locking, new, dup, gw.memory()));
    }

    // 2 and 3. Three processes with locking on.
    let ns = cp.new_namespace().await?;
    let mut gws = Vec::new();
    for i in 0..3 {
        gws.push(Gateway::spawn(&bin, &cp, ns.name(), &format!("bench-replica-{i}"), true).await?);
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
    let text = report(
        &facts,
        &args,
        scrape_cost,
        &idle,
        &single,
        &storm,
        &throughput,
        &replica_memory,
        &cold,
    );
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("report.md");
    std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("{text}");
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

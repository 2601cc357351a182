//! Load drives gateway processes over plain HTTP/1 on loopback: open loop at a
//! fixed arrival rate (latency from the intended send time), a burst, or a
//! closed loop with a bounded number in flight.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use testenv::ControlPlane;
use testenv::gateway::{Batches, Gateway, START_TIMEOUT};
use testenv::lambda::{Emulator, answer, function_url};

use crate::BoxError;
use crate::apiserver::{ApiServer, Delta};
use crate::cpu::{self, Cpu};
use crate::stats::stats;

/// Http is the client every request of the bench goes through.
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// REQUEST_TIMEOUT bounds one HTTP request to a gateway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// LOG_TIMEOUT bounds the wait for a gateway's batch log lines.
const LOG_TIMEOUT: Duration = Duration::from_secs(15);

pub fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// spawn starts a gateway process from `bin` with `env` on top of testenv's.
pub fn spawn(
    bin: &Path,
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    env: &[(&str, &str)],
) -> Result<Gateway, BoxError> {
    // Spawning waits for the `listening` line; the timestamps are taken by
    // the thread that reads the log, so the wait does not skew them.
    let gw = tokio::task::block_in_place(|| Gateway::spawn(bin, cp, ns, name, env))?;
    Ok(gw)
}

/// firing is a webhook with one firing alert about `pod` in namespace `prod`, which
/// does not exist: for gateways with owner resolution off.
pub fn firing(pod: &str) -> Bytes {
    firing_in("prod", pod)
}

/// firing_in is a webhook with one firing alert about Pod `pod` in namespace `ns`.
pub fn firing_in(ns: &str, pod: &str) -> Bytes {
    json!({
        "version": "4", "status": "firing", "receiver": "sg", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "KubePodCrashLooping", "namespace": ns, "pod": pod, "severity": "critical"},
            "annotations": {}, "startsAt": "2026-11-27T08:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090", "fingerprint": "0123456789abcdef"
        }]
    })
    .to_string()
    .into()
}

/// Answer is the outcome of one request: status (0 if none) and latency.
#[derive(Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub latency: Duration,
}

/// timed_post sends one webhook; the latency runs from `from`, the intended send
/// time, so that time spent waiting to be sent counts.
pub(crate) async fn timed_post(http: &Http, to: SocketAddr, body: Bytes, from: Instant) -> Answer {
    let status = async {
        let req = http::Request::post(format!("http://{to}/api/v1/signals/prometheus"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .ok()?;
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            let res = http.request(req).await.ok()?;
            let status = res.status().as_u16();
            res.into_body().collect().await.ok()?;
            Some(status)
        })
        .await
        .ok()?
    }
    .await
    .unwrap_or(0);
    Answer {
        status,
        latency: from.elapsed(),
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

/// Schedule is when the requests of a phase are sent.
#[derive(Clone, Copy, Debug)]
pub enum Schedule {
    /// Rate sends request `i` at `start + i / per_s` whatever happened to the
    /// earlier ones (open loop); latency runs from that intended time.
    Rate { per_s: f64 },
    /// Burst sends every request at once.
    Burst,
    /// Closed keeps `in_flight` requests outstanding; latency runs from each send.
    Closed { in_flight: usize },
}

impl Schedule {
    /// describe says in words how the load was offered.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Rate { per_s } => format!("open loop, {per_s:.0}/s"),
            Schedule::Burst => "all at once".into(),
            Schedule::Closed { in_flight } => format!("closed loop, {in_flight} in flight"),
        }
    }
}

/// Send makes request `i`; the latency it reports runs from the `Instant` it is given.
pub type Send = Arc<dyn Fn(usize, Instant) -> BoxFuture<Answer> + std::marker::Send + Sync>;
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + std::marker::Send>>;

/// drive sends `bodies`, body `i` to gateway `i % targets.len()`, as `schedule`
/// says, and returns the answers in order.
async fn drive(
    http: &Http,
    targets: &[SocketAddr],
    bodies: Vec<Bytes>,
    schedule: Schedule,
) -> Result<Vec<Answer>, BoxError> {
    let n = bodies.len();
    let (http, targets) = (http.clone(), targets.to_vec());
    let send: Send = Arc::new(move |i, from| {
        let (http, to, body) = (http.clone(), targets[i % targets.len()], bodies[i].clone());
        Box::pin(async move { timed_post(&http, to, body, from).await })
    });
    drive_with(n, schedule, send).await
}

/// drive_with makes `n` requests with `send` as `schedule` says and returns the answers
/// in order: open loop from each intended send time, a burst from its start, or a closed
/// loop from each send.
pub async fn drive_with(n: usize, schedule: Schedule, send: Send) -> Result<Vec<Answer>, BoxError> {
    let start = Instant::now();
    match schedule {
        Schedule::Rate { per_s } => {
            let mut tasks = Vec::with_capacity(n);
            for i in 0..n {
                let intended = start + Duration::from_secs_f64(i as f64 / per_s);
                tokio::time::sleep_until(intended.into()).await;
                tasks.push(tokio::spawn(send(i, intended)));
            }
            let mut answers = Vec::with_capacity(n);
            for t in tasks {
                answers.push(t.await?);
            }
            Ok(answers)
        }
        Schedule::Burst => {
            let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(send(i, start))).collect();
            let mut answers = Vec::with_capacity(n);
            for t in tasks {
                answers.push(t.await?);
            }
            Ok(answers)
        }
        Schedule::Closed { in_flight } => {
            let next = Arc::new(AtomicUsize::new(0));
            let mut workers = Vec::new();
            for _ in 0..in_flight.max(1) {
                let (send, next) = (Arc::clone(&send), Arc::clone(&next));
                workers.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return got;
                        }
                        got.push((i, send(i, Instant::now()).await));
                    }
                }));
            }
            let mut answers = vec![
                Answer {
                    status: 0,
                    latency: Duration::ZERO
                };
                n
            ];
            for w in workers {
                for (i, a) in w.await? {
                    answers[i] = a;
                }
            }
            Ok(answers)
        }
    }
}

/// Phase is one measured stretch of load.
pub struct Phase {
    pub answers: Vec<Answer>,
    pub schedule: Schedule,
    /// wall runs from the first intended send to the last answer.
    pub wall: Duration,
    pub signals: u64,
    /// logged sums the gateways' batch log lines for the phase.
    pub logged: Batches,
    /// server is what the API server counted, its background traffic taken out.
    pub server: Delta,
    /// cpu is what every accounted process used from the first send to the last answer
    /// (and the gateways' batch log lines), the API server's scrapes left out.
    pub cpu: Cpu,
}

impl Phase {
    /// merge appends a later stretch of the same scenario.
    pub fn merge(&mut self, other: Phase) {
        self.answers.extend(other.answers);
        self.wall += other.wall;
        self.signals += other.signals;
        self.logged = Batches {
            api_calls: self.logged.api_calls + other.logged.api_calls,
            signals: self.logged.signals + other.logged.signals,
            failed_signals: self.logged.failed_signals + other.logged.failed_signals,
        };
        self.server.merge(other.server);
        self.cpu.add(&other.cpu);
    }

    /// errors counts answers that are not 2xx, or none at all.
    pub fn errors(&self) -> u64 {
        self.answers
            .iter()
            .filter(|a| !(200..300).contains(&a.status))
            .count() as u64
    }

    /// by_status counts the answers by status (0: no answer).
    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        let mut by = BTreeMap::new();
        for a in &self.answers {
            *by.entry(a.status).or_default() += 1;
        }
        by
    }

    pub fn latencies(&self) -> Vec<Duration> {
        self.answers.iter().map(|a| a.latency).collect()
    }

    pub fn signals_per_s(&self) -> f64 {
        self.signals as f64 / self.wall.as_secs_f64()
    }

    pub fn requests_per_signal(&self) -> f64 {
        self.server.total / self.signals as f64
    }

    pub fn writes_per_signal(&self) -> f64 {
        self.server.writes / self.signals as f64
    }

    pub fn logged_per_signal(&self) -> f64 {
        self.logged.api_calls as f64 / self.signals as f64
    }
}

/// run_phase sends `bodies` to `gws` as `schedule` says and measures the
/// answers and the API requests they cost. It waits for the gateways' batch
/// log lines, which come after the lock's release, so that the release is
/// counted with the phase.
pub async fn run_phase(
    label: &str,
    api: &ApiServer,
    http: &Http,
    gws: &[&Gateway],
    bodies: Vec<Bytes>,
    schedule: Schedule,
) -> Result<Phase, BoxError> {
    let signals = bodies.len() as u64;
    let marks: Vec<usize> = gws.iter().map(|g| g.log_len()).collect();
    let targets: Vec<SocketAddr> = gws.iter().map(|g| g.addr()).collect();
    let before = api.scrape().await?;
    let used = cpu::sample();
    let started = Instant::now();
    let answers = drive(http, &targets, bodies, schedule).await?;
    let wall = started.elapsed();
    let logged = wait_signals(gws, &marks, signals).await;
    let cpu = cpu::sample().since(&used);
    let phase = Phase {
        answers,
        schedule,
        wall,
        signals,
        logged,
        server: api.since(&before).await?,
        cpu,
    };
    let s = stats(&phase.latencies());
    eprintln!(
        "bench: {label}: {} signals in {:.2?} ({:.0}/s), p50 {:.1} ms, p95 {:.1} ms, API/signal {:.2} (server) {:.2} (logs), answers {:?}",
        phase.signals,
        phase.wall,
        phase.signals_per_s(),
        s.p50,
        s.p95,
        phase.requests_per_signal(),
        phase.logged_per_signal(),
        phase.by_status()
    );
    Ok(phase)
}

/// wait_signals waits (bounded) until the gateways have logged batches for
/// `want` signals since `marks`, and returns their sum.
async fn wait_signals(gws: &[&Gateway], marks: &[usize], want: u64) -> Batches {
    let deadline = Instant::now() + LOG_TIMEOUT;
    loop {
        let sum =
            gws.iter()
                .zip(marks)
                .map(|(g, &m)| g.batches(m))
                .fold(Batches::default(), |a, b| Batches {
                    api_calls: a.api_calls + b.api_calls,
                    signals: a.signals + b.signals,
                    failed_signals: a.failed_signals + b.failed_signals,
                });
        if sum.signals >= want || Instant::now() > deadline {
            return sum;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// warm_up sends one signal, `body`, outside any measurement, so that the
/// first measured request finds a warm connection on both sides. It returns
/// once the gateway has logged the signal's batch, so that the next phase's
/// counts start after it.
pub async fn warm_up(http: &Http, gw: &Gateway, body: Bytes) -> Result<(), BoxError> {
    let mark = gw.log_len();
    let a = timed_post(http, gw.addr(), body, Instant::now()).await;
    if a.status != 201 && a.status != 202 {
        return Err(format!("warm-up request answered {}", a.status).into());
    }
    if gw.wait_batches(mark, 1, LOG_TIMEOUT).await.signals < 1 {
        return Err(format!("{} logged no batch for the warm-up signal", gw.name()).into());
    }
    Ok(())
}

/// cold_start spawns a gateway and polls `/readyz` every 2 ms until it
/// answers 200; it returns the time from spawn to that answer.
pub async fn cold_start(
    bin: &Path,
    cp: &ControlPlane,
    ns: &str,
    http: &Http,
    i: usize,
) -> Result<Duration, BoxError> {
    let gw = spawn(bin, cp, ns, &format!("bench-cold-{i}"), &[])?;
    let url = format!("http://{}/readyz", gw.addr());
    let deadline = gw.spawned() + START_TIMEOUT;
    loop {
        if get_status(http, &url).await == 200 {
            return Ok(gw.spawned().elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!("cold start {i}: /readyz not 200 within {START_TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// LambdaStart is one Lambda cold start under AWS's Runtime Interface Emulator.
#[derive(Clone, Copy, Debug)]
pub struct LambdaStart {
    /// first is from the first invocation sent (the emulator then starts `bootstrap`) to
    /// its answer: process start, configuration, the Kubernetes client, a new RR.
    pub first: Duration,
    /// warm is the second invocation, a duplicate of the first, on the warm function.
    pub warm: Duration,
    /// hwm_kib is the function process's peak RSS after both.
    pub hwm_kib: u64,
}

/// lambda_start measures one Lambda cold start: a fresh emulator, a new signal, its repeat.
pub async fn lambda_start(cp: &ControlPlane, ns: &str, i: usize) -> Result<LambdaStart, BoxError> {
    let rie = Emulator::start(cp, ns, 30, &[]).await?;
    let body = firing(&format!("bench-lambda-{i}"));
    let event = function_url(std::str::from_utf8(&body)?);
    let mut timed = Vec::new();
    for want in [201, 202] {
        let t = Instant::now();
        let got = answer(&rie.invoke(&event).await?).0;
        timed.push(t.elapsed());
        if got != want {
            return Err(format!(
                "Lambda start {i}: answered {got}, not {want}: {}",
                rie.logs()
            )
            .into());
        }
    }
    let (_, hwm_kib) = rie
        .function_memory()
        .ok_or_else(|| format!("Lambda start {i}: no function process: {}", rie.logs()))?;
    Ok(LambdaStart {
        first: timed[0],
        warm: timed[1],
        hwm_kib,
    })
}

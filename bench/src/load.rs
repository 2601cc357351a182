//! Load drives gateway processes over plain HTTP/1 on loopback and records
//! each answer, and the gateways' and the API server's request counts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use testenv::ControlPlane;
use testenv::gateway::{Batches, Gateway, START_TIMEOUT};

use crate::BoxError;
use crate::apiserver::{ApiServer, Delta};
use crate::stats::stats;

/// Http is the client every request of the bench goes through.
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// REQUEST_TIMEOUT bounds one HTTP request to a gateway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// LOG_TIMEOUT bounds the wait for a gateway's batch log lines.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

pub fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// spawn starts a gateway process from `bin`, with the lock on or off.
pub fn spawn(
    bin: &Path,
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    locking: bool,
) -> Result<Gateway, BoxError> {
    let locking = if locking { "true" } else { "false" };
    let env = [("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", locking)];
    // Spawning waits for the `listening` line; the timestamps are taken by
    // the thread that reads the log, so the wait does not skew them.
    let gw = tokio::task::block_in_place(|| Gateway::spawn(bin, cp, ns, name, &env))?;
    Ok(gw)
}

/// alert is a webhook with one firing alert about `pod`.
pub fn alert(pod: &str) -> Bytes {
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
pub struct Answer {
    pub status: u16,
    pub latency: Duration,
}

async fn post(http: &Http, to: std::net::SocketAddr, body: Bytes) -> Answer {
    let started = Instant::now();
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

/// Phase is one measured stretch of load.
pub struct Phase {
    pub name: String,
    pub answers: Vec<Answer>,
    pub expected_status: &'static [u16],
    pub wall: Duration,
    pub signals: u64,
    pub log_calls: u64,
    pub log_signals: u64,
    pub server: Delta,
}

impl Phase {
    /// unexpected counts the answers outside `expected_status`, by status.
    pub fn unexpected(&self) -> String {
        let mut by_status = BTreeMap::<u16, usize>::new();
        for a in &self.answers {
            if !self.expected_status.contains(&a.status) {
                *by_status.entry(a.status).or_default() += 1;
            }
        }
        if by_status.is_empty() {
            return "none".into();
        }
        by_status
            .iter()
            .map(|(s, n)| match s {
                0 => format!("{n} x no answer"),
                s => format!("{n} x {s}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn count(&self, status: u16) -> usize {
        self.answers.iter().filter(|a| a.status == status).count()
    }

    pub fn latencies(&self) -> Vec<Duration> {
        self.answers.iter().map(|a| a.latency).collect()
    }

    pub fn log_per_signal(&self) -> f64 {
        self.log_calls as f64 / self.signals as f64
    }

    pub fn server_per_signal(&self) -> f64 {
        self.server.total / self.signals as f64
    }
}

/// Load is how the requests of a phase are sent.
pub enum Load {
    /// Sequential sends the bodies one after another to the first gateway.
    Sequential,
    /// Concurrent sends them at once, at most `limit` in flight, each body to
    /// the gateway its index picks (round robin).
    Concurrent { limit: usize },
}

/// run_phase sends `bodies` (each with the index of the gateway it goes to)
/// and measures the answers and the API requests they cost.
pub async fn run_phase(
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
    let before = api.scrape().await?;
    let started = Instant::now();
    let answers = match load {
        Load::Sequential => {
            let mut answers = Vec::with_capacity(bodies.len());
            for (_, body) in bodies {
                answers.push(post(http, gws[0].addr(), body).await);
            }
            answers
        }
        Load::Concurrent { limit } => {
            let limit = Arc::new(tokio::sync::Semaphore::new(limit));
            let mut tasks = Vec::with_capacity(bodies.len());
            for (target, body) in bodies {
                let (http, to, limit) = (
                    http.clone(),
                    gws[target % gws.len()].addr(),
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
    let logged = wait_signals(gws, &marks, signals).await;
    let phase = Phase {
        name: name.to_owned(),
        answers,
        expected_status,
        wall,
        signals,
        log_calls: logged.api_calls,
        log_signals: logged.signals,
        server: api.since(&before).await?,
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

/// warm_up sends one signal outside any measurement, so that the first
/// measured request finds a warm connection on both sides. It returns once
/// the gateway has logged the signal's batch, so that the next phase's
/// counts start after it.
pub async fn warm_up(http: &Http, gw: &Gateway, pod: &str) -> Result<(), BoxError> {
    let mark = gw.log_len();
    let a = post(http, gw.addr(), alert(pod)).await;
    if a.status != 201 && a.status != 202 {
        return Err(format!("warm-up request answered {}", a.status).into());
    }
    if gw.wait_batches(mark, 1, LOG_TIMEOUT).await.signals < 1 {
        return Err(format!("{} logged no batch for the warm-up signal", gw.name()).into());
    }
    Ok(())
}

/// ColdStart is how long one gateway process took to listen and to be ready.
pub struct ColdStart {
    pub listening: Duration,
    pub ready: Duration,
}

/// cold_start spawns a gateway and polls `/readyz` every 2 ms until it answers 200.
pub async fn cold_start(
    bin: &Path,
    cp: &ControlPlane,
    ns: &str,
    http: &Http,
    i: usize,
) -> Result<ColdStart, BoxError> {
    let gw = spawn(bin, cp, ns, &format!("bench-cold-{i}"), true)?;
    let url = format!("http://{}/readyz", gw.addr());
    let deadline = gw.spawned() + START_TIMEOUT;
    loop {
        if get_status(http, &url).await == 200 {
            return Ok(ColdStart {
                listening: gw.started_in(),
                ready: gw.spawned().elapsed(),
            });
        }
        if Instant::now() > deadline {
            return Err(format!("cold start {i}: /readyz not 200 within {START_TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

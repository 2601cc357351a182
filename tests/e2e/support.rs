//! Helpers shared by the end-to-end tests: gateway processes, an HTTP client,
//! payloads and cluster reads.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use kube::{Api, CustomResourceExt, api::ListParams};
use serde_json::{Value, json};
use signal_gateway::api::RemediationRequest;
use testenv::{ControlPlane, Identity};

pub type Http = Client<HttpConnector, Full<axum::body::Bytes>>;

/// Gateway is one signal-gateway process; it is killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// lines changes whenever a log line arrives.
    lines: tokio::sync::watch::Receiver<usize>,
    resume: tempfile::TempDir,
}

impl Gateway {
    pub fn spawn(cp: &ControlPlane, ns: &str, name: &str, env: &[(&str, &str)]) -> Gateway {
        let resume = tempfile::tempdir().expect("a temp dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_signal-gateway"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", cp.kubeconfig_path(Identity::Gateway))
            .env("GATEWAY_NAMESPACE", ns)
            .env("GATEWAY_LISTEN_ADDR", "127.0.0.1:0")
            .env("GATEWAY_AUTH", "none")
            .env("GATEWAY_LOCK_DURATION_SECONDS", "10")
            .env("GATEWAY_LOCK_WAIT_MS", "20000")
            .env("GATEWAY_API_TIMEOUT_MS", "5000")
            .env("POD_NAME", name)
            .env("RUST_LOG", "info")
            .env("GATEWAY_TEST_RESUME_FILE", resume.path().join("resume"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe; the gateway dies with this test thread.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting signal-gateway");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&logs);
        let (lines_tx, lines) = tokio::sync::watch::channel(0);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
                lines_tx.send_modify(|n| *n += 1);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{name} did not start: {:?}", logs.lock().unwrap()));
        Gateway {
            child,
            addr: addr.parse().expect("a socket address"),
            logs,
            lines,
            resume,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// freeze waits until a request is parked at the pause point, then stops
    /// the whole process with SIGSTOP: every thread and timer is frozen.
    pub async fn freeze(&self) {
        self.wait_logged("test hook: paused").await;
        self.signal(libc::SIGSTOP);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next())
                == Some("T")
            {
                return;
            }
            assert!(Instant::now() < deadline, "the gateway did not stop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// thaw lets the frozen request go on.
    pub fn thaw(&self) {
        std::fs::write(self.resume.path().join("resume"), b"").expect("writing the resume file");
        self.signal(libc::SIGCONT);
    }

    /// wait_logged returns once a log line contains `needle` (at most 30 s).
    pub async fn wait_logged(&self, needle: &str) {
        let mut lines = self.lines.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.logged(needle) {
            let changed = tokio::time::timeout_at(deadline, lines.changed()).await;
            assert!(
                matches!(changed, Ok(Ok(()))),
                "the gateway never logged {needle:?}"
            );
        }
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn api_calls_and_signals(&self) -> (u64, u64) {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "batch processed")
            .fold((0, 0), |(c, s), v| {
                (
                    c + v["api_calls"].as_u64().unwrap_or(0),
                    s + v["signals"].as_u64().unwrap_or(0),
                )
            })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tool runs `hack/tool.sh NAME` (install or reuse) and returns the path it prints last.
pub fn tool(name: &str) -> std::path::PathBuf {
    let script = testenv::repo_root().join("hack/tool.sh");
    let out = Command::new(&script)
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .expect("running hack/tool.sh");
    assert!(out.status.success(), "hack/tool.sh {name} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a path")
        .trim()
        .into()
}

pub fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn alert(pod: &str) -> String {
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
}

/// post sends one webhook; None means the connection failed (process killed).
pub async fn post(http: &Http, to: SocketAddr, body: String) -> Option<(u16, Value)> {
    let req = axum::http::Request::post(format!("http://{to}/api/v1/signals/prometheus"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("a request");
    let res = http.request(req).await.ok()?;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.ok()?.to_bytes();
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

pub async fn setup() -> (&'static ControlPlane, testenv::TestNamespace) {
    let cp = testenv::shared();
    cp.install_crd(RemediationRequest::crd())
        .await
        .expect("installing the CRD");
    let ns = cp.new_namespace().await.expect("a namespace");
    (cp, ns)
}

pub async fn rrs(cp: &ControlPlane, ns: &str) -> Vec<RemediationRequest> {
    Api::<RemediationRequest>::namespaced(cp.admin_client(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing RRs")
        .items
}

pub fn active_per_target(
    list: &[RemediationRequest],
) -> std::collections::BTreeMap<String, Vec<&RemediationRequest>> {
    let mut m = std::collections::BTreeMap::<String, Vec<&RemediationRequest>>::new();
    for rr in list.iter().filter(|rr| rr.is_active()) {
        m.entry(rr.spec.target_resource.name.clone())
            .or_default()
            .push(rr);
    }
    m
}

//! End-to-end with a real Alertmanager (Debian's prometheus-alertmanager,
//! installed by `hack/tool.sh alertmanager`) sending its webhooks to a real
//! gateway process.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use testenv::prometheus;

use crate::support::{Http, PROMETHEUS, active_per_target, http, rrs, setup, spawn};

/// Alertmanager is one alertmanager process with the given configuration.
pub(crate) struct Alertmanager {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    pub(crate) fn start(config: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).expect("writing the config");
        let addr = format!("127.0.0.1:{}", testenv::free_port().expect("a free port"));
        let mut cmd = Command::new(testenv::tool("alertmanager"));
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("a log file"));
        let child = testenv::spawn_tied(cmd).expect("starting alertmanager");
        Alertmanager { child, addr, dir }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub(crate) async fn get(&self, http: &Http, path: &str) -> Option<(u16, String)> {
        let req = axum::http::Request::get(format!("http://{}{path}", self.addr))
            .body(Full::default())
            .expect("a request");
        let res = http.request(req).await.ok()?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub(crate) async fn wait_ready(&self, http: &Http) {
        let deadline = Instant::now() + READY_WAIT;
        while self.get(http, "/-/ready").await.map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn fire(&self, http: &Http, alerts: Value) {
        let req = axum::http::Request::post(format!("http://{}/api/v2/alerts", self.addr))
            .header("content-type", "application/json")
            .body(Full::new(alerts.to_string().into()))
            .expect("a request");
        let res = http.request(req).await.expect("alertmanager answered");
        assert!(
            res.status().is_success(),
            "alertmanager refused: {}",
            res.status()
        );
    }

    /// notifications sums Alertmanager's webhook notification counters:
    /// (sent, failed).
    pub(crate) async fn notifications(&self, http: &Http) -> (u64, u64) {
        let (_, metrics) = self.get(http, "/metrics").await.unwrap_or_default();
        let samples = prometheus::parse(&metrics);
        let sum = |name: &str| -> u64 {
            samples
                .iter()
                .filter(|s| s.name == name && s.has(&[("integration", "webhook")]))
                .map(|s| s.value as u64)
                .sum()
        };
        (
            sum("alertmanager_notifications_total"),
            sum("alertmanager_notifications_failed_total"),
        )
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// READY_WAIT bounds how long an Alertmanager may take to become ready.
const READY_WAIT: Duration = Duration::from_secs(60);

/// webhook_config routes every alert to one webhook receiver at `url`, grouped by namespace.
fn webhook_config(url: &str) -> String {
    format!(
        "route:\n  receiver: gateway\n  group_by: ['namespace']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n- name: gateway\n  webhook_configs:\n  - url: '{url}'\n    send_resolved: true\n"
    )
}

#[tokio::test]
async fn alertmanager_webhooks_become_one_rr_per_workload() {
    let (cp, ns) = setup().await;
    let gw = spawn(cp, ns.name(), "gw-am", &[]);
    let am = Alertmanager::start(&webhook_config(&format!(
        "http://{}{PROMETHEUS}",
        gw.addr()
    )));
    let http = http();
    am.wait_ready(&http).await;

    // Two different alerts about one pod, and one about another pod: two problems.
    let labels = |alertname: &str, pod: &str| json!({"alertname": alertname, "namespace": "shop", "pod": pod, "severity": "critical"});
    am.fire(
        &http,
        json!([
            {"labels": labels("KubePodCrashLooping", "cart-0"), "annotations": {"summary": "crash looping"}},
            {"labels": labels("KubePodNotReady", "cart-0"), "annotations": {"summary": "not ready"}},
            {"labels": labels("KubePodCrashLooping", "checkout-0"), "annotations": {"summary": "crash looping"}},
        ]),
    )
    .await;

    let batches = gw.wait_batches(0, 3, Duration::from_secs(60)).await;
    assert_eq!(
        (batches.signals, batches.failed_signals),
        (3, 0),
        "the webhook never arrived whole: {:#?}",
        gw.logs()
    );
    let list = rrs(cp, ns.name()).await;
    let per_target = active_per_target(&list);
    assert_eq!(list.len(), 2, "one RR per pod, whatever the alert name");
    assert_eq!(per_target["cart-0"].len(), 1);
    assert_eq!(per_target["cart-0"][0].occurrence_count(), 2);
    assert_eq!(per_target["checkout-0"][0].occurrence_count(), 1);
    let spec = &per_target["cart-0"][0].spec;
    assert_eq!(spec.signal_source, "prometheus", "kubernaut's value");
    assert_eq!(spec.target_resource.kind, "Pod");
    assert_eq!(spec.target_resource.namespace, "shop");
    assert!(
        !gw.logged("request refused"),
        "the gateway refused part of a real webhook"
    );
}

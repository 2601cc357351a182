//! End-to-end with a real Alertmanager (Debian's prometheus-alertmanager,
//! installed by `hack/tool.sh alertmanager`) sending its webhooks to a real
//! gateway process.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use http_body_util::Full;
use serde_json::json;

use crate::support::{Http, PROMETHEUS, active_per_target, http, rrs, setup, spawn};

/// Alertmanager is one alertmanager process; it is killed when dropped.
struct Alertmanager {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start(webhook: &str) -> Alertmanager {
        let bin = testenv::tool("alertmanager");
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = format!(
            "route:\n  receiver: gateway\n  group_by: ['namespace']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n- name: gateway\n  webhook_configs:\n  - url: '{webhook}'\n    send_resolved: true\n"
        );
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).expect("writing the config");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join("alertmanager.log")).expect("a log file"),
            );
        let child = testenv::spawn_tied(cmd).expect("starting alertmanager");
        Alertmanager {
            child,
            addr,
            _dir: dir,
        }
    }

    async fn wait_ready(&self, http: &Http) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let req = axum::http::Request::get(format!("http://{}/-/ready", self.addr))
                .body(Full::default())
                .expect("a request");
            if http
                .request(req)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fire(&self, http: &Http, alerts: serde_json::Value) {
        let req = axum::http::Request::post(format!("http://{}/api/v2/alerts", self.addr))
            .header("content-type", "application/json")
            .body(Full::new(alerts.to_string().into()))
            .expect("a request");
        let res = http.request(req).await.expect("alertmanager answered");
        assert!(
            res.status().is_success(),
            "alertmanager refused the alerts: {}",
            res.status()
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn alertmanager_webhooks_become_one_rr_per_workload() {
    let (cp, ns) = setup().await;
    let gw = spawn(cp, ns.name(), "gw-am", &[]);
    let am = Alertmanager::start(&format!("http://{}{PROMETHEUS}", gw.addr()));
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
    assert_eq!(spec.signal_source, "alertmanager");
    assert_eq!(spec.target_resource.kind, "Pod");
    assert_eq!(spec.target_resource.namespace, "shop");
    assert!(
        !gw.logged("request refused"),
        "the gateway refused part of a real webhook"
    );
}

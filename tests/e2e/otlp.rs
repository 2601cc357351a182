//! End-to-end: a gateway process exports its metrics over OTLP/HTTP to a real
//! OpenTelemetry Collector (built pinned by `hack/tool.sh otelcol`).

use std::{
    collections::BTreeMap,
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::{firing, http, post, setup, spawn};

/// Collector is one otelcol process writing received metrics to a JSON-lines file.
struct Collector {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Collector {
    fn start() -> Collector {
        let bin = testenv::tool("otelcol");
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = format!(
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n\
             exporters:\n  file:\n    path: {}\n\
             service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      exporters: [file]\n",
            dir.path().join("metrics.jsonl").display()
        );
        let config_path = dir.path().join("otelcol.yaml");
        std::fs::write(&config_path, config).expect("writing the config");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config={}", config_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("otelcol.log")).expect("a log file"));
        let child = testenv::spawn_tied(cmd).expect("starting otelcol");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "otelcol did not open its port: {}",
                log(dir.path())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Collector { child, port, dir }
    }

    /// latest reads the newest value of every (metric, attributes) series
    /// received so far: sums as their value, histograms as their count.
    fn latest(&self) -> BTreeMap<String, f64> {
        let text =
            std::fs::read_to_string(self.dir.path().join("metrics.jsonl")).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for rm in v["resourceMetrics"].as_array().into_iter().flatten() {
                for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                    for m in sm["metrics"].as_array().into_iter().flatten() {
                        let name = m["name"].as_str().unwrap_or_default();
                        let (points, field) = if m["sum"].is_object() {
                            (&m["sum"]["dataPoints"], "asInt")
                        } else {
                            (&m["histogram"]["dataPoints"], "count")
                        };
                        for p in points.as_array().into_iter().flatten() {
                            let mut attrs: Vec<String> = p["attributes"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|a| {
                                    format!(
                                        "{}={}",
                                        a["key"].as_str().unwrap_or(""),
                                        scalar(&a["value"])
                                    )
                                })
                                .collect();
                            attrs.sort();
                            let value = scalar(&p[field]).parse::<f64>().unwrap_or(f64::NAN);
                            out.insert(format!("{name}{{{}}}", attrs.join(",")), value);
                        }
                    }
                }
            }
        }
        out
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.values().next().map(scalar).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("otelcol.log")).unwrap_or_default()
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn metrics_reach_a_real_collector_over_otlp() {
    let (cp, ns) = setup().await;
    let collector = Collector::start();
    let endpoint = format!("http://127.0.0.1:{}", collector.port);
    let gw = spawn(
        cp,
        ns.name(),
        "gw-otlp",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    );
    let http = http();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            post(&http, gw.addr(), firing("otlp-0"))
                .await
                .expect("an answer")
                .0,
        );
    }
    assert_eq!(statuses, [201, 202, 202]);

    let want = [
        (
            "signal_gateway.signals{source=alertmanager,status=created}",
            1.0,
        ),
        (
            "signal_gateway.signals{source=alertmanager,status=duplicate}",
            2.0,
        ),
        // One new RR with the lock (5 requests), two duplicates (2 each).
        ("signal_gateway.kube_api.requests{path=created}", 5.0),
        ("signal_gateway.kube_api.requests{path=duplicate}", 4.0),
        (
            "http.server.request.duration{http.response.status_code=201,http.route=/api/v1/signals/prometheus}",
            1.0,
        ),
        (
            "http.server.request.duration{http.response.status_code=202,http.route=/api/v1/signals/prometheus}",
            2.0,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = collector.latest();
        if want.iter().all(|(k, v)| got.get(*k) == Some(v)) {
            let service = std::fs::read_to_string(collector.dir.path().join("metrics.jsonl"))
                .unwrap_or_default();
            assert!(
                service.contains("\"signal-gateway\""),
                "service.name is set"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never arrived as expected; got {got:#?}\n{}",
            log(collector.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

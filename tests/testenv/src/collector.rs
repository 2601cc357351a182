//! Collector runs a real OpenTelemetry Collector (`hack/tool.sh otelcol`) on loopback for
//! the tests that export telemetry: OTLP in, JSON-lines files and a Prometheus endpoint out.

use std::{
    collections::BTreeSet,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{free_port, spawn_tied, tool};

/// START_TIMEOUT bounds the wait for the collector's ports.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Collector is one otelcol process: OTLP in (HTTP and gRPC), metrics, traces and logs
/// out to JSON-lines files, and metrics on a Prometheus scrape endpoint. Killed when
/// dropped, and with the test process.
pub struct Collector {
    child: Child,
    /// port is the OTLP/HTTP receiver's.
    pub port: u16,
    /// grpc_port is the OTLP/gRPC receiver's.
    pub grpc_port: u16,
    /// prometheus_port serves what arrived in the Prometheus text format.
    pub prometheus_port: u16,
    dir: tempfile::TempDir,
}

impl Collector {
    /// start starts a collector whose receivers serve plain HTTP and gRPC.
    ///
    /// # Panics
    ///
    /// When the collector cannot be installed or does not open its ports.
    #[must_use]
    pub fn start() -> Collector {
        Collector::start_with(None)
    }

    /// start_with starts the collector; with `tls` (a PEM certificate and key file) its
    /// OTLP receivers, HTTP and gRPC, serve TLS only.
    ///
    /// # Panics
    ///
    /// When the collector cannot be installed or does not open its ports.
    #[must_use]
    pub fn start_with(tls: Option<(&Path, &Path)>) -> Collector {
        let bin = tool("otelcol");
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = || free_port().expect("a free port");
        let (port, grpc_port, prometheus_port) = (port(), port(), port());
        let path = |f: &str| dir.path().join(f).display().to_string();
        let tls = tls.map_or_else(String::new, |(cert, key)| {
            format!(
                "
        tls:
          cert_file: {}
          key_file: {}",
                cert.display(),
                key.display()
            )
        });
        let config = format!(
            "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}{tls}
      grpc:
        endpoint: 127.0.0.1:{grpc_port}{tls}
exporters:
  file/metrics:
    path: {metrics}
  file/traces:
    path: {traces}
  file/logs:
    path: {logs}
  prometheus:
    endpoint: 127.0.0.1:{prometheus_port}
    resource_to_telemetry_conversion:
      enabled: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [file/metrics, prometheus]
    traces:
      receivers: [otlp]
      exporters: [file/traces]
    logs:
      receivers: [otlp]
      exporters: [file/logs]
",
            metrics = path("metrics.jsonl"),
            traces = path("traces.jsonl"),
            logs = path("logs.jsonl"),
        );
        let config_path = dir.path().join("otelcol.yaml");
        std::fs::write(&config_path, config).expect("writing the config");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config={}", config_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("otelcol.log")).expect("a log file"));
        let child = spawn_tied(cmd).expect("starting otelcol");
        let collector = Collector {
            child,
            port,
            grpc_port,
            prometheus_port,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        for p in [port, grpc_port, prometheus_port] {
            // otelcol announces nothing a test can wait on: a bounded series of
            // connection attempts is the event.
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "otelcol did not open port {p}: {}",
                    collector.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        collector
    }

    /// endpoint is the OTLP/HTTP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// dir holds the collector's configuration, output files and log; a test may put its
    /// own files there too.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// log is the collector's own log.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("otelcol.log")).unwrap_or_default()
    }

    /// stop kills the collector (its ports close).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// exported is every JSON line the collector's file exporter wrote to `file` so far.
    #[must_use]
    pub fn exported(&self, file: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// spans reads every span received so far.
    #[must_use]
    pub fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for v in self.exported("traces.jsonl") {
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        out
    }

    /// span_pods are the `k8s.pod.name`s of the resources whose spans were received.
    #[must_use]
    pub fn span_pods(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for v in self.exported("traces.jsonl") {
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                let resource = attributes(&rs["resource"]["attributes"]);
                out.extend(resource["k8s.pod.name"].as_str().map(str::to_owned));
            }
        }
        out
    }

    /// audit_records are the log records received so far from pod `pod`, each with its
    /// attributes as one plain JSON object (`attributes`) and its scope's name (`scope`).
    #[must_use]
    pub fn audit_records(&self, pod: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for v in self.exported("logs.jsonl") {
            for rl in v["resourceLogs"].as_array().into_iter().flatten() {
                let resource = attributes(&rl["resource"]["attributes"]);
                if resource["k8s.pod.name"] != pod {
                    continue;
                }
                for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                    for r in sl["logRecords"].as_array().into_iter().flatten() {
                        let mut r = r.clone();
                        r["scope"] = sl["scope"]["name"].clone();
                        r["attributes"] = attributes(&r["attributes"]);
                        out.push(r);
                    }
                }
            }
        }
        out
    }

    /// otlp_names are the OTLP metric names received so far.
    #[must_use]
    pub fn otlp_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for v in self.exported("metrics.jsonl") {
            for rm in v["resourceMetrics"].as_array().into_iter().flatten() {
                for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                    for m in sm["metrics"].as_array().into_iter().flatten() {
                        out.insert(m["name"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        }
        out
    }

    /// otlp_sum is the value of the sum (counter) `name` from pod `pod` in the last export
    /// that carried a data point of it whose attributes include `with`, added over those
    /// points; None when no export of that pod carried one. Cumulative sums make the last
    /// the total.
    #[must_use]
    pub fn otlp_sum(&self, pod: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let mut last = None;
        for v in self.exported("metrics.jsonl") {
            for rm in v["resourceMetrics"].as_array().into_iter().flatten() {
                if attributes(&rm["resource"]["attributes"])["k8s.pod.name"] != pod {
                    continue;
                }
                for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                    for m in sm["metrics"].as_array().into_iter().flatten() {
                        if m["name"] != name {
                            continue;
                        }
                        let points = m["sum"]["dataPoints"].as_array().into_iter().flatten();
                        let values: Vec<f64> = points
                            .filter(|p| {
                                let attrs = attributes(&p["attributes"]);
                                with.iter().all(|(k, want)| attrs[*k] == *want)
                            })
                            .map(|p| {
                                number(&p["asInt"])
                                    .or_else(|| number(&p["asDouble"]))
                                    .unwrap_or(f64::NAN)
                            })
                            .collect();
                        if !values.is_empty() {
                            last = Some(values.iter().sum());
                        }
                    }
                }
            }
        }
        last
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// number reads an OTLP/JSON number: an int is written as a string, a double as a number;
/// an absent field is None.
#[must_use]
pub fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// attributes turns an OTLP/JSON attribute list into one JSON object (ints, which
/// OTLP/JSON writes as strings, become numbers again).
#[must_use]
pub fn attributes(list: &Value) -> Value {
    fn value(v: &Value) -> Value {
        if let Some(s) = v.get("stringValue") {
            s.clone()
        } else if let Some(b) = v.get("boolValue") {
            b.clone()
        } else if let Some(i) = v.get("intValue") {
            i.as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .map_or_else(|| i.clone(), Value::from)
        } else if let Some(d) = v.get("doubleValue") {
            d.clone()
        } else if let Some(kv) = v.get("kvlistValue") {
            attributes(&kv["values"])
        } else if let Some(a) = v.get("arrayValue") {
            Value::Array(
                a["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(value)
                    .collect(),
            )
        } else {
            Value::Null
        }
    }
    let mut out = serde_json::Map::new();
    for kv in list.as_array().into_iter().flatten() {
        if let Some(k) = kv["key"].as_str() {
            out.insert(k.to_owned(), value(&kv["value"]));
        }
    }
    Value::Object(out)
}

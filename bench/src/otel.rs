//! Otel runs a real OpenTelemetry Collector (`hack/tool.sh otelcol`) that
//! receives the gateways' OTLP metrics and writes them to a JSON-lines file,
//! and reads the gateways' lock metrics back from it.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::BoxError;

/// INSTANCE is the resource attribute that tells the gateways apart.
const INSTANCE: &str = "service.instance.id";

/// Collector is one otelcol process; it is killed when dropped.
pub struct Collector {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// LockCounts are one gateway's lock counters, as last exported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LockCounts {
    pub attempts: f64,
    pub success: f64,
    pub contention: f64,
    /// failures counts failed claims by `reason`.
    pub failures: BTreeMap<String, f64>,
    /// hold_count and hold_sum describe `gateway.lock.hold.duration` (seconds).
    pub hold_count: f64,
    pub hold_sum: f64,
}

impl LockCounts {
    pub fn add(&mut self, o: &LockCounts) {
        self.attempts += o.attempts;
        self.success += o.success;
        self.contention += o.contention;
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        self.hold_count += o.hold_count;
        self.hold_sum += o.hold_sum;
    }

    pub fn superseded(&self) -> f64 {
        self.failures.get("superseded").copied().unwrap_or(0.0)
    }

    /// success_rate is success over the claims that had something to lock:
    /// a `superseded` claim found the RR already created by another writer,
    /// so it is neither a success nor a failure to acquire.
    pub fn success_rate(&self) -> f64 {
        self.success / (self.attempts - self.superseded())
    }

    pub fn contention_rate(&self) -> f64 {
        self.contention / self.attempts
    }
}

impl Collector {
    /// start runs otelcol with an OTLP/HTTP receiver on a free loopback port.
    pub fn start() -> Result<Collector, BoxError> {
        let bin = tool_path("otelcol")?;
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = format!(
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n\
             exporters:\n  file:\n    path: {}\n\
             service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      exporters: [file]\n",
            dir.path().join("metrics.jsonl").display()
        );
        let config_path = dir.path().join("otelcol.yaml");
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config={}", config_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("otelcol.log"))?);
        let child = testenv::spawn_tied(cmd)?;
        let collector = Collector { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "otelcol did not open its port: {}",
                    std::fs::read_to_string(collector.dir.path().join("otelcol.log"))
                        .unwrap_or_default()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(collector)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// locks reads the newest lock counters of every gateway instance.
    pub fn locks(&self) -> BTreeMap<String, LockCounts> {
        let text =
            std::fs::read_to_string(self.dir.path().join("metrics.jsonl")).unwrap_or_default();
        parse_locks(&text)
    }

    /// wait_locks polls until `instances` have all reported and nothing
    /// changed for a second (bounded), and returns what was read.
    pub async fn wait_locks(&self, instances: &[String]) -> BTreeMap<String, LockCounts> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = self.locks();
        let mut stable_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.locks();
            if now != last {
                last = now;
                stable_since = Instant::now();
                continue;
            }
            let all = instances.iter().all(|i| last.contains_key(i));
            if (all && stable_since.elapsed() > Duration::from_secs(1)) || Instant::now() > deadline
            {
                return last;
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tool_path is `hack/tool.sh NAME`'s last line, without testenv's panic.
fn tool_path(name: &str) -> Result<PathBuf, BoxError> {
    let out = Command::new(testenv::repo_root().join("hack/tool.sh"))
        .arg(name)
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().last() {
        Some(path) if out.status.success() => Ok(PathBuf::from(path.trim())),
        _ => Err(format!("hack/tool.sh {name} failed").into()),
    }
}

/// parse_locks reads the lock counters by instance from the collector's
/// JSON lines; the gateways export cumulative sums, so the newest wins.
fn parse_locks(text: &str) -> BTreeMap<String, LockCounts> {
    let mut out: BTreeMap<String, LockCounts> = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for rm in v["resourceMetrics"].as_array().into_iter().flatten() {
            let instance = attrs(&rm["resource"]["attributes"])
                .remove(INSTANCE)
                .unwrap_or_default();
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    let name = m["name"].as_str().unwrap_or_default();
                    if !name.starts_with("gateway.lock.") {
                        continue;
                    }
                    let c = out.entry(instance.clone()).or_default();
                    let points = if m["sum"].is_object() {
                        &m["sum"]["dataPoints"]
                    } else {
                        &m["histogram"]["dataPoints"]
                    };
                    for p in points.as_array().into_iter().flatten() {
                        let value = number(&p["asInt"]);
                        match name {
                            "gateway.lock.acquisition.attempts" => c.attempts = value,
                            "gateway.lock.acquisition.success" => c.success = value,
                            "gateway.lock.contention" => c.contention = value,
                            "gateway.lock.acquisition.failures" => {
                                let reason =
                                    attrs(&p["attributes"]).remove("reason").unwrap_or_default();
                                c.failures.insert(reason, value);
                            }
                            "gateway.lock.hold.duration" => {
                                c.hold_count = number(&p["count"]);
                                c.hold_sum = number(&p["sum"]);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    out
}

fn attrs(v: &Value) -> BTreeMap<String, String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["key"].as_str().unwrap_or_default().to_owned(),
                scalar(&a["value"]),
            )
        })
        .collect()
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.values().next().map(scalar).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// number reads an OTLP JSON number, which int64 fields carry as a string.
fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0.0),
        other => other.as_f64().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_cumulative_values_win_per_instance() {
        let line = |attempts: u32, superseded: u32| {
            serde_json::json!({"resourceMetrics": [{
                "resource": {"attributes": [{"key": "service.instance.id", "value": {"stringValue": "gw-0"}}]},
                "scopeMetrics": [{"metrics": [
                    {"name": "gateway.lock.acquisition.attempts", "sum": {"dataPoints": [{"asInt": attempts.to_string()}]}},
                    {"name": "gateway.lock.acquisition.success", "sum": {"dataPoints": [{"asInt": (attempts - superseded).to_string()}]}},
                    {"name": "gateway.lock.acquisition.failures", "sum": {"dataPoints": [
                        {"asInt": superseded.to_string(), "attributes": [{"key": "reason", "value": {"stringValue": "superseded"}}]}
                    ]}},
                    {"name": "gateway.lock.hold.duration", "histogram": {"dataPoints": [{"count": "2", "sum": 0.004}]}}
                ]}]
            }]})
            .to_string()
        };
        let text = format!("{}\n{}\n", line(2, 0), line(5, 1));
        let locks = parse_locks(&text);
        let c = &locks["gw-0"];
        assert_eq!((c.attempts, c.success, c.superseded()), (5.0, 4.0, 1.0));
        assert_eq!(c.success_rate(), 1.0);
        assert_eq!((c.hold_count, c.hold_sum), (2.0, 0.004));
    }
}

//! Otel reads the gateways' lock metrics back from the OpenTelemetry Collector
//! (`testenv::collector`) that received their OTLP export.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use testenv::collector::{Collector, attributes, number};

/// INSTANCE is the resource attribute that tells the gateways apart.
const INSTANCE: &str = "service.instance.id";

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

/// locks reads the newest lock counters of every gateway instance.
pub fn locks(collector: &Collector) -> BTreeMap<String, LockCounts> {
    parse_locks(&collector.exported("metrics.jsonl"))
}

/// wait_locks polls until `instances` have all reported and nothing
/// changed for a second (bounded), and returns what was read.
pub async fn wait_locks(
    collector: &Collector,
    instances: &[String],
) -> BTreeMap<String, LockCounts> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = locks(collector);
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = locks(collector);
        if now != last {
            last = now;
            stable_since = Instant::now();
            continue;
        }
        let all = instances.iter().all(|i| last.contains_key(i));
        if (all && stable_since.elapsed() > Duration::from_secs(1)) || Instant::now() > deadline {
            return last;
        }
    }
}

/// parse_locks reads the lock counters by instance from the collector's
/// JSON lines; the gateways export cumulative sums, so the newest wins.
fn parse_locks(lines: &[Value]) -> BTreeMap<String, LockCounts> {
    let mut out: BTreeMap<String, LockCounts> = BTreeMap::new();
    for v in lines {
        for rm in v["resourceMetrics"].as_array().into_iter().flatten() {
            let instance = text(&attributes(&rm["resource"]["attributes"])[INSTANCE]);
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
                        let value = number(&p["asInt"]).unwrap_or(0.0);
                        match name {
                            "gateway.lock.acquisition.attempts" => c.attempts = value,
                            "gateway.lock.acquisition.success" => c.success = value,
                            "gateway.lock.contention" => c.contention = value,
                            "gateway.lock.acquisition.failures" => {
                                let reason = text(&attributes(&p["attributes"])["reason"]);
                                c.failures.insert(reason, value);
                            }
                            "gateway.lock.hold.duration" => {
                                c.hold_count = number(&p["count"]).unwrap_or(0.0);
                                c.hold_sum = number(&p["sum"]).unwrap_or(0.0);
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

/// text is an attribute's value as a string ("" when absent).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
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
        };
        let locks = parse_locks(&[line(2, 0), line(5, 1)]);
        let c = &locks["gw-0"];
        assert_eq!((c.attempts, c.success, c.superseded()), (5.0, 4.0, 1.0));
        assert_eq!(c.success_rate(), 1.0);
        assert_eq!((c.hold_count, c.hold_sum), (2.0, 0.004));
    }
}

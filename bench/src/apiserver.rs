//! ApiServer counts requests with the API server's own `apiserver_request_total`,
//! scraped from `/metrics` before and after each phase.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use testenv::prometheus::{self, Sample};

use crate::BoxError;

/// SCRAPE_TIMEOUT bounds one `/metrics` scrape of the API server.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// ApiServer is the admin client that scrapes `/metrics`, with the number of
/// requests one scrape adds to the counter and the API server's background
/// traffic (requests and writes per second with no load).
pub struct ApiServer {
    pub client: kube::Client,
    pub scrape_cost: f64,
    pub background: (f64, f64),
}

impl ApiServer {
    /// new measures the cost of a scrape with [`calibrate`].
    pub async fn new(client: kube::Client) -> Result<ApiServer, BoxError> {
        let scrape_cost = calibrate(&client).await?;
        Ok(ApiServer {
            client,
            scrape_cost,
            background: (0.0, 0.0),
        })
    }

    /// measure_background observes the API server without load for `window`;
    /// [`ApiServer::since`] then takes that rate out of every delta.
    pub async fn measure_background(&mut self, window: Duration) -> Result<Delta, BoxError> {
        let before = self.scrape().await?;
        tokio::time::sleep(window).await;
        let idle = self.since(&before).await?;
        let secs = idle.window.as_secs_f64();
        self.background = (idle.total / secs, idle.writes / secs);
        Ok(idle)
    }

    /// scrape takes one scrape.
    pub async fn scrape(&self) -> Result<Scrape, BoxError> {
        Scrape::take(&self.client).await
    }

    /// since is what the API server counted from `before` until now, less
    /// the background traffic expected in that time.
    pub async fn since(&self, before: &Scrape) -> Result<Delta, BoxError> {
        let after = self.scrape().await?;
        let mut d = Delta::between(before, &after, self.scrape_cost);
        let secs = d.window.as_secs_f64();
        d.total = (d.total - self.background.0 * secs).max(0.0);
        d.writes = (d.writes - self.background.1 * secs).max(0.0);
        Ok(d)
    }
}

/// calibrate measures how many requests the API server counts for one
/// `/metrics` scrape: the smallest delta over back-to-back scrape pairs
/// (background traffic can only add to a pair).
async fn calibrate(client: &kube::Client) -> Result<f64, BoxError> {
    let mut cost = f64::INFINITY;
    for _ in 0..3 {
        let a = Scrape::take(client).await?;
        let b = Scrape::take(client).await?;
        cost = cost.min(Delta::between(&a, &b, 0.0).total);
    }
    Ok(cost)
}

/// Scrape is what one `/metrics` scrape of the API server says about requests:
/// the `apiserver_request_total` samples keyed by their label set, and the
/// sum and count of `apiserver_request_duration_seconds` by verb and resource.
#[derive(Clone)]
pub struct Scrape {
    at: Instant,
    total: BTreeMap<BTreeMap<String, String>, Sample>,
    duration: BTreeMap<String, (f64, f64)>,
}

impl Scrape {
    async fn take(client: &kube::Client) -> Result<Scrape, BoxError> {
        let samples = tokio::time::timeout(SCRAPE_TIMEOUT, prometheus::apiserver(client))
            .await
            .map_err(|_| format!("/metrics took longer than {SCRAPE_TIMEOUT:?}"))??;
        let scrape = Scrape::of(samples);
        if scrape.total.is_empty() {
            return Err("/metrics has no apiserver_request_total samples".into());
        }
        Ok(scrape)
    }

    /// of keeps the samples of interest.
    fn of(samples: Vec<Sample>) -> Scrape {
        let mut scrape = Scrape {
            at: Instant::now(),
            total: BTreeMap::new(),
            duration: BTreeMap::new(),
        };
        for s in samples {
            match s.name.as_str() {
                "apiserver_request_total" => {
                    scrape.total.insert(s.labels.clone(), s);
                }
                "apiserver_request_duration_seconds_sum" => {
                    scrape.duration.entry(s.request()).or_default().0 += s.value;
                }
                "apiserver_request_duration_seconds_count" => {
                    scrape.duration.entry(s.request()).or_default().1 += s.value;
                }
                _ => {}
            }
        }
        scrape
    }
}

/// WRITE_VERBS are the verbs of `apiserver_request_total` that change state.
const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];

/// Delta is what the API server counted between two scrapes.
pub struct Delta {
    /// window is the time between the two scrapes.
    pub window: Duration,
    /// total is every request counted, the scrapes excluded.
    pub total: f64,
    /// writes is the part of `total` that changes state.
    pub writes: f64,
    /// breakdown counts requests by "VERB resource[/subresource]".
    pub breakdown: BTreeMap<String, f64>,
    /// server_ms is the mean time the API server took per request, by
    /// "VERB resource[/subresource]", with the number of requests.
    pub server_ms: BTreeMap<String, (f64, f64)>,
}

impl Delta {
    /// between subtracts `before` from `after`, and `scrape_cost` requests
    /// for the scrape `before` (which [`calibrate`] measured).
    fn between(before: &Scrape, after: &Scrape, scrape_cost: f64) -> Delta {
        let mut breakdown = BTreeMap::new();
        let (mut total, mut writes) = (0.0, 0.0);
        for (labels, s) in &after.total {
            let d = s.value - before.total.get(labels).map_or(0.0, |b| b.value);
            if d <= 0.0 {
                continue;
            }
            total += d;
            if WRITE_VERBS.contains(&s.label("verb")) {
                writes += d;
            }
            *breakdown.entry(s.request()).or_insert(0.0) += d;
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
            window: after.at.saturating_duration_since(before.at),
            total: total - scrape_cost,
            writes,
            breakdown,
            server_ms,
        }
    }

    /// merge adds a later delta.
    pub fn merge(&mut self, other: Delta) {
        self.window += other.window;
        self.total += other.total;
        self.writes += other.writes;
        for (k, v) in other.breakdown {
            *self.breakdown.entry(k).or_default() += v;
        }
        for (k, (mean, n)) in other.server_ms {
            let e = self.server_ms.entry(k).or_insert((0.0, 0.0));
            let count = e.1 + n;
            *e = ((e.0 * e.1 + mean * n) / count, count);
        }
    }

    /// breakdown_text lists the requests by verb and resource, most first.
    pub fn breakdown_text(&self) -> String {
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

    /// server_ms_text lists the mean server time of Lease and RR requests, and of the
    /// Pod and ReplicaSet reads of owner resolution.
    pub fn server_ms_text(&self) -> String {
        self.server_ms
            .iter()
            .filter(|(k, _)| {
                ["leases", "remediationrequests", "pods", "replicasets"]
                    .iter()
                    .any(|r| k.contains(r))
            })
            .map(|(k, (mean, n))| format!("{k} {mean:.1} ms (x{n:.0})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_counts_new_requests_by_verb_and_resource() {
        let before = Scrape::of(prometheus::parse(
            "apiserver_request_total{code=\"200\",resource=\"leases\",verb=\"GET\"} 3\n",
        ));
        let after = Scrape::of(prometheus::parse(
            "# HELP apiserver_request_total x\n\
             apiserver_request_total{code=\"200\",resource=\"leases\",verb=\"GET\"} 5\n\
             apiserver_request_total{code=\"201\",resource=\"remediationrequests\",verb=\"POST\"} 1\n\
             apiserver_request_total{code=\"200\",resource=\"remediationrequests\",subresource=\"status\",verb=\"PATCH\"} 1\n\
             apiserver_request_total{code=\"200\",verb=\"GET\"} 1\n",
        ));
        let d = Delta::between(&before, &after, 1.0);
        assert_eq!((d.total, d.writes), (4.0, 2.0));
        assert_eq!(
            d.breakdown_text(),
            "GET leases 2, GET (non-resource) 1, PATCH remediationrequests/status 1, POST remediationrequests 1"
        );
    }
}

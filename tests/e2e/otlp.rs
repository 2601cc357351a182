//! End-to-end: gateway processes export metrics, traces and audit events (logs) over OTLP
//! to a real OpenTelemetry Collector (built pinned by `hack/tool.sh otelcol`), whose
//! Prometheus exporter shows the names a Prometheus server would store; and a
//! gateway serves the same instruments on `GATEWAY_METRICS_ADDR`.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full};
use serde_json::Value;
use testenv::collector::Collector;
use testenv::gateway::Gateway;
use testenv::prometheus::{Sample, parse, sum, value};

use crate::support::{
    Http, PROMETHEUS, alert, firing, http, post_http, post_http_as, setup, spawn, webhook,
};

async fn get(http: &Http, url: &str) -> Option<String> {
    let req = axum::http::Request::get(url)
        .body(Full::new(axum::body::Bytes::new()))
        .ok()?;
    let res = http.request(req).await.ok()?;
    let bytes = res.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8(bytes.to_vec()).ok()
}

/// post_raw sends `body` as it is, with a W3C `traceparent` if given, and returns the status.
async fn post_raw(http: &Http, to: SocketAddr, body: &str, traceparent: Option<&str>) -> u16 {
    let mut req = axum::http::Request::post(format!("http://{to}{PROMETHEUS}"))
        .header("content-type", "application/json");
    if let Some(traceparent) = traceparent {
        req = req.header("traceparent", traceparent);
    }
    let req = req
        .body(Full::new(body.to_owned().into()))
        .expect("a request");
    http.request(req)
        .await
        .expect("an answer")
        .status()
        .as_u16()
}

/// metrics_addr is where a gateway serves `/metrics`, from its log.
fn metrics_addr(gw: &testenv::gateway::Gateway) -> SocketAddr {
    gw.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "serving metrics")
        .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
        .expect("a `serving metrics` line with its address")
}

/// Want is a metric name, labels, and its value from gw-a, gw-b and gw-c.
type Want<'a> = (&'a str, Vec<(&'a str, &'a str)>, [f64; 3]);

/// PODS are the gateways of the collector test, in the order of `Want`'s values.
const PODS: [&str; 3] = ["gw-a", "gw-b", "gw-c"];

/// PROCESS_NAMES are the metrics of Prometheus' Go process collector, as kubernaut's
/// Gateway serves them.
const PROCESS_NAMES: [&str; 6] = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// LOCK_NAMES are the original plan's six metrics, as Prometheus stores them.
const LOCK_NAMES: [&str; 6] = [
    "gateway_lock_acquisition_attempts_total",
    "gateway_lock_acquisition_success_total",
    "gateway_lock_acquisition_failures_total",
    "gateway_lock_contention_total",
    "gateway_lock_wait_duration_seconds_count",
    "gateway_lock_hold_duration_seconds_count",
];

#[tokio::test]
async fn lock_metrics_and_spans_reach_prometheus_through_a_real_collector() {
    let (cp, ns) = setup().await;
    let collector = Collector::start();
    let mut gws = start_three_gateways(cp, ns.name(), &collector);
    let http = http();
    let scrape_b = format!("http://{}/metrics", metrics_addr(&gws[1]));
    contend_for_one_lock(&http, &gws[0], &gws[1], &scrape_b).await;
    send_new_duplicate_and_invalid_signals(&http, &gws[0], &gws[1]).await;
    resolve_a_deployment_and_refuse_a_missing_pod(&http, &gws[2], ns.name()).await;
    // The batch line of the traced request carries the caller's trace id.
    gws[0]
        .wait_logged(&format!("\"trace_id\":\"{TRACE}\""))
        .await;
    assert_gw_b_serves_its_lock_metrics(&http, &scrape_b).await;

    // SIGTERM flushes what was recorded since the last (never reached) export period.
    for gw in &mut gws {
        gw.signal(libc::SIGTERM);
        let status = gw.wait().expect("the gateway exits");
        assert!(status.success(), "{} exited with {status}", gw.name());
    }
    let samples = wait_for_the_collectors_totals(&http, &collector).await;
    assert_untouched_series_exist_at_zero(&samples);
    assert_process_metrics_are_plausible(&samples);
    assert_lock_series_and_their_instances(&samples, ns.name());
    // The names the dashboard and the alert rules query were all received.
    for name in dashboard_and_rule_metrics() {
        assert!(
            samples.iter().any(|s| s.name == name),
            "{name} is queried by chart/dashboards or chart/files but never arrived"
        );
    }
    let names = collector.otlp_names();
    assert!(
        names.contains("gateway.lock.acquisition.attempts"),
        "{names:?}"
    );
    wait_for_the_spans_of_the_trace(&collector).await;
}

/// TRACE is the trace id of the caller's `traceparent` in the collector test.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// start_three_gateways starts gw-a, gw-b and gw-c exporting to `collector`.
fn start_three_gateways(
    cp: &testenv::ControlPlane,
    ns: &str,
    collector: &Collector,
) -> [Gateway; 3] {
    let endpoint = collector.endpoint();
    let grpc = format!("http://127.0.0.1:{}", collector.grpc_port);
    // gw-a pauses its first claim while it holds the lock; gw-b exports over gRPC and
    // serves /metrics as well. Export periods are never reached: SIGTERM flushes.
    let a_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
        ("GATEWAY_TEST_PAUSE_AT", "after-lock"),
    ];
    let b_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
        ("GATEWAY_METRICS_ADDR", "127.0.0.1:0"),
    ];
    // gw-c resolves owners (as kubernaut does; the other tests' Pods do not exist).
    let c_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
        ("GATEWAY_OWNER_RESOLUTION", "true"),
    ];
    [
        spawn(cp, ns, "gw-a", &a_env),
        spawn(cp, ns, "gw-b", &b_env),
        spawn(cp, ns, "gw-c", &c_env),
    ]
}

/// contend_for_one_lock has gw-a hold the lock of pod "held" while paused and gw-b wait for
/// it: the first is created, the second a duplicate.
async fn contend_for_one_lock(http: &Http, gw_a: &Gateway, gw_b: &Gateway, scrape_b: &str) {
    let (a_addr, b_addr) = (gw_a.addr(), gw_b.addr());
    let first = tokio::spawn({
        let http = http.clone();
        async move { post_http(&http, a_addr, firing("held")).await }
    });
    gw_a.wait_logged("paused").await;
    let second = tokio::spawn({
        let http = http.clone();
        async move { post_http(&http, b_addr, firing("held")).await }
    });
    // gw-b is waiting once it re-reads the held record after a backoff: its third GET of
    // the Lease (the first is its cold read, the second the look before waiting), counted
    // on its own /metrics.
    let lease_gets = [("verb", "get"), ("resource", "leases")];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = get(http, scrape_b).await.unwrap_or_default();
        if sum(
            &parse(&text),
            "gateway_kube_api_requests_total",
            &lease_gets,
        ) >= 3.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gw-b never waited for the lock:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw_a.thaw();
    let (first, second) = (first.await.expect("a join"), second.await.expect("a join"));
    assert_eq!(
        (first.as_ref().map(|r| r.0), second.as_ref().map(|r| r.0)),
        (Some(201), Some(202)),
        "{first:?} {second:?}\n{}\n{}",
        gw_a.logs().join("\n"),
        gw_b.logs().join("\n")
    );
}

/// send_new_duplicate_and_invalid_signals sends a new signal (with a caller's trace) to
/// gw-a, its duplicate to gw-b, and an invalid one to each.
async fn send_new_duplicate_and_invalid_signals(http: &Http, gw_a: &Gateway, gw_b: &Gateway) {
    let (a_addr, b_addr) = (gw_a.addr(), gw_b.addr());
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    assert_eq!(
        post_raw(http, a_addr, &firing("fresh"), Some(&traceparent)).await,
        201
    );
    assert_eq!(
        post_http(http, b_addr, firing("fresh")).await.map(|r| r.0),
        Some(202)
    );
    let no_target = serde_json::json!({"status": "firing", "labels": {"alertname": "X"}});
    assert_eq!(
        post_raw(http, a_addr, &webhook(vec![no_target]), None).await,
        400
    );
    assert_eq!(post_raw(http, b_addr, "{not json", None).await, 400);
}

/// resolve_a_deployment_and_refuse_a_missing_pod has gw-c take a Deployment as its own
/// workload (resolved with no request) and refuse a Pod that does not exist with
/// resource_not_found.
async fn resolve_a_deployment_and_refuse_a_missing_pod(http: &Http, gw_c: &Gateway, ns: &str) {
    let mut deployment = alert("unused", "firing");
    deployment["labels"] = serde_json::json!({
        "alertname": "KubeDeploymentReplicasMismatch", "namespace": ns,
        "deployment": "web", "severity": "warning"
    });
    let mut gone = alert("gone-0", "firing");
    gone["labels"]["namespace"] = ns.into();
    let answer = post_http(http, gw_c.addr(), webhook(vec![deployment, gone])).await;
    let statuses = answer.as_ref().map(|(code, body)| {
        let results = body["results"].as_array().cloned().unwrap_or_default();
        let each: Vec<Value> = results.iter().map(|r| r["status"].clone()).collect();
        (*code, each)
    });
    assert_eq!(
        statuses,
        Some((201, vec!["created".into(), "rejected".into()])),
        "{answer:?}\n{}",
        gw_c.logs().join("\n")
    );
}

/// assert_gw_b_serves_its_lock_metrics checks gw-b's own endpoint: the lock metrics with
/// their exact values, kubernaut's names, and the process metrics Go's client library
/// serves.
async fn assert_gw_b_serves_its_lock_metrics(http: &Http, scrape_b: &str) {
    let local = parse(&get(http, scrape_b).await.unwrap_or_default());
    assert_eq!(
        sum(&local, "gateway_lock_acquisition_attempts_total", &[]),
        1.0
    );
    assert_eq!(
        sum(&local, "gateway_lock_acquisition_success_total", &[]),
        0.0
    );
    assert_eq!(
        sum(
            &local,
            "gateway_lock_acquisition_failures_total",
            &[("reason", "superseded")]
        ),
        1.0
    );
    assert_eq!(
        sum(&local, "gateway_lock_wait_duration_seconds_count", &[]),
        1.0
    );
    // ... and kubernaut's names, with the process metrics Go's client library serves.
    assert_eq!(
        sum(
            &local,
            "gateway_signals_deduplicated_total",
            &[("signal_name", "KubePodCrashLooping")]
        ),
        2.0
    );
    for name in PROCESS_NAMES {
        assert!(
            local.iter().any(|s| s.name == name),
            "{name} is not on /metrics"
        );
    }
}

/// collector_totals are the totals the collector's Prometheus endpoint must show:
/// (name, labels, [gw-a, gw-b, gw-c]).
fn collector_totals() -> Vec<Want<'static>> {
    let prometheus = ("source_type", "prometheus");
    let signals = "/api/v1/signals/prometheus";
    vec![
        (LOCK_NAMES[0], vec![], [2.0, 1.0, 1.0]),
        (LOCK_NAMES[1], vec![], [2.0, 0.0, 1.0]),
        (
            LOCK_NAMES[2],
            vec![("reason", "superseded")],
            [0.0, 1.0, 0.0],
        ),
        (LOCK_NAMES[3], vec![], [0.0, 1.0, 0.0]),
        (LOCK_NAMES[4], vec![], [2.0, 1.0, 1.0]),
        (LOCK_NAMES[5], vec![], [2.0, 0.0, 1.0]),
        (
            "gateway_signals_total",
            vec![("status", "created")],
            [2.0, 0.0, 1.0],
        ),
        (
            "gateway_signals_total",
            vec![("status", "duplicate")],
            [0.0, 2.0, 0.0],
        ),
        (
            "gateway_signals_total",
            vec![("status", "rejected")],
            [1.0, 0.0, 1.0],
        ),
        ("gateway_signals_total", vec![prometheus], [3.0, 2.0, 2.0]),
        (
            "gateway_signals_received_total",
            vec![prometheus, ("severity", "critical")],
            [2.0, 2.0, 1.0],
        ),
        (
            "gateway_signals_received_total",
            vec![prometheus, ("severity", "warning")],
            [0.0, 0.0, 1.0],
        ),
        (
            "gateway_signals_deduplicated_total",
            vec![("signal_name", "KubePodCrashLooping")],
            [0.0, 2.0, 0.0],
        ),
        (
            "gateway_crds_created_total",
            vec![prometheus, ("status", "created")],
            [2.0, 0.0, 1.0],
        ),
        ("gateway_crd_creation_errors_total", vec![], [0.0, 0.0, 0.0]),
        (
            "gateway_signals_rejected_total",
            vec![("reason", "invalid_signal")],
            [1.0, 0.0, 0.0],
        ),
        (
            "gateway_signals_rejected_total",
            vec![("reason", "resource_not_found")],
            [0.0, 0.0, 1.0],
        ),
        (
            "gateway_owner_resolution_total",
            vec![
                ("kind", "Deployment"),
                ("outcome", "success"),
                ("detail", "cached"),
            ],
            [0.0, 0.0, 1.0],
        ),
        (
            "gateway_owner_resolution_total",
            vec![("kind", "Pod"), ("outcome", "failed"), ("detail", "gone")],
            [0.0, 0.0, 1.0],
        ),
        (
            "gateway_http_request_duration_seconds_count",
            vec![("endpoint", signals), ("method", "POST"), ("status", "400")],
            [1.0, 1.0, 0.0],
        ),
        (
            "gateway_http_request_duration_seconds_count",
            vec![("endpoint", signals), ("status", "201")],
            [2.0, 0.0, 1.0],
        ),
        (
            "gateway_http_request_duration_seconds_count",
            vec![("endpoint", signals), ("status", "202")],
            [0.0, 2.0, 0.0],
        ),
        (
            "gateway_kube_api_requests_total",
            vec![
                ("verb", "create"),
                ("resource", "remediationrequests"),
                ("outcome", "ok"),
            ],
            [2.0, 0.0, 1.0],
        ),
    ]
}

/// wait_for_the_collectors_totals polls the collector's Prometheus endpoint until it shows
/// [`collector_totals`] and the process metrics of every pod (bounded), and returns what it
/// showed.
async fn wait_for_the_collectors_totals(http: &Http, collector: &Collector) -> Vec<Sample> {
    let scrape = format!("http://127.0.0.1:{}/metrics", collector.prometheus_port);
    let pod = |p: &'static str| [("k8s_pod_name", p)];
    let want = collector_totals();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = parse(&get(http, &scrape).await.unwrap_or_default());
        let ok = want.iter().all(|(name, labels, values)| {
            PODS.iter().zip(values).all(|(p, v)| {
                let with: Vec<_> = labels.iter().copied().chain(pod(p)).collect();
                sum(&samples, name, &with) == *v
            })
        });
        let processes = PODS.iter().all(|p| {
            PROCESS_NAMES.iter().all(|n| {
                samples.iter().any(|s| {
                    s.name == *n && s.labels.get("k8s_pod_name").map(String::as_str) == Some(*p)
                })
            })
        });
        if ok && processes {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "the collector's Prometheus endpoint never showed {want:#?} and {PROCESS_NAMES:?} of {PODS:?}; it has:\n{:#?}\n{}",
            samples
                .iter()
                .filter(|s| s.name.starts_with("gateway_") || s.name.starts_with("process_"))
                .collect::<Vec<_>>(),
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// assert_untouched_series_exist_at_zero checks that series no event touched exist at
/// zero, for rate() and increase().
fn assert_untouched_series_exist_at_zero(samples: &[Sample]) {
    for (name, labels) in [
        (
            "gateway_crd_creation_errors_total",
            ("error_type", "k8s_api_error"),
        ),
        (
            "gateway_crd_creation_errors_total",
            ("error_type", "fetch_existing_failed"),
        ),
        (
            "gateway_signals_rejected_total",
            ("reason", "unmanaged_resource"),
        ),
    ] {
        for p in PODS {
            assert!(
                samples.iter().any(|s| s.name == name
                    && s.labels.get(labels.0).map(String::as_str) == Some(labels.1)
                    && s.labels.get("k8s_pod_name").map(String::as_str) == Some(p)
                    && s.value == 0.0),
                "{name}{{{}={}}} of {p} is not at zero",
                labels.0,
                labels.1
            );
        }
    }
}

/// assert_process_metrics_are_plausible checks that the process metrics are the process'
/// own: plausible values.
fn assert_process_metrics_are_plausible(samples: &[Sample]) {
    let pod = |p: &'static str| [("k8s_pod_name", p)];
    let value = |name: &str, p: &'static str| sum(samples, name, &pod(p));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for p in PODS {
        let started = value("process_start_time_seconds", p);
        assert!(
            started > now - 600.0 && started <= now + 1.0,
            "{p} started at {started}, now is {now}"
        );
        let (open, max) = (value("process_open_fds", p), value("process_max_fds", p));
        assert!(open >= 3.0 && max >= open, "{p}: {open} of {max} fds");
        let (rss, vsz) = (
            value("process_resident_memory_bytes", p),
            value("process_virtual_memory_bytes", p),
        );
        assert!(rss > 1e6 && vsz >= rss, "{p}: rss {rss}, virtual {vsz}");
        assert!(
            value("process_cpu_seconds_total", p) > 0.0,
            "{p} used no CPU"
        );
    }
}

/// assert_lock_series_and_their_instances checks that every lock series arrived, that the
/// lock histograms resolve 1 ms, and that three processes have three instance ids, with
/// service.name as the job.
fn assert_lock_series_and_their_instances(samples: &[Sample], ns: &str) {
    for name in LOCK_NAMES {
        assert!(samples.iter().any(|s| s.name == name), "{name} is missing");
    }
    assert!(
        samples
            .iter()
            .any(|s| s.name == "gateway_lock_wait_duration_seconds_bucket"
                && s.labels.get("le").map(String::as_str) == Some("0.001")),
        "the lock histograms resolve 1 ms"
    );
    let instances: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == LOCK_NAMES[0])
        .filter_map(|s| s.labels.get("service_instance_id").map(String::as_str))
        .collect();
    assert_eq!(
        instances.len(),
        PODS.len(),
        "three processes, three instance ids: {instances:?}"
    );
    assert!(
        samples.iter().filter(|s| s.name == LOCK_NAMES[0]).all(|s| s
            .labels
            .get("job")
            .map(String::as_str)
            == Some("signal-gateway")
            && s.labels.get("k8s_namespace_name").is_none_or(|n| n == ns)),
        "service.name is the job"
    );
}

/// wait_for_the_spans_of_the_trace waits (bounded) for the signal, its batch and the batch's
/// steps in the caller's trace, the server span a child of the caller's. The gRPC exporter
/// of gw-b sent its spans too (the duplicates' dedup reads).
async fn wait_for_the_spans_of_the_trace(collector: &Collector) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = collector.spans();
        let in_trace: BTreeSet<String> = spans
            .iter()
            .filter(|s| s["traceId"].as_str() == Some(TRACE))
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        let all: BTreeSet<String> = spans
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        let traced = [
            "POST /api/v1/signals/prometheus",
            "signal",
            "batch",
            "record read",
            "lock wait",
            "create",
            "status write",
        ];
        // A new fingerprint has no RR to read; the duplicates' batches have.
        if traced.iter().all(|n| in_trace.contains(*n)) && all.contains("dedup read") {
            let http_span = spans
                .iter()
                .find(|s| {
                    s["traceId"].as_str() == Some(TRACE)
                        && s["name"] == "POST /api/v1/signals/prometheus"
                })
                .expect("the server span");
            assert_eq!(
                http_span["parentSpanId"].as_str(),
                Some("00f067aa0ba902b7"),
                "the caller's span is the parent"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans never arrived: in the trace {in_trace:?}, all {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// dashboard_and_rule_metrics are the metric names the chart's dashboard and alert rules
/// query: every `gateway_*` or `process_*` word in them, with histogram suffixes kept.
fn dashboard_and_rule_metrics() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("chart");
    let mut text = String::new();
    for dir in ["dashboards", "files"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("the chart's directory") {
            let path = entry.expect("an entry").path();
            if path.extension().is_some_and(|e| e == "json")
                || path.to_string_lossy().ends_with(".rules.yaml")
            {
                text.push_str(&std::fs::read_to_string(&path).expect("a readable file"));
            }
        }
    }
    let mut out = BTreeSet::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            if word.starts_with("gateway_") || word.starts_with("process_") {
                out.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    assert!(
        out.len() >= 8,
        "the dashboard and rules query metrics: {out:?}"
    );
    out
}

/// Series is a Prometheus metric name and its labels.
type Series = (&'static str, Vec<(&'static str, &'static str)>);

/// SIGNAL_ANSWERS are the HTTP statuses of a signal endpoint (README, "HTTP API").
const SIGNAL_ANSWERS: [&str; 10] = [
    "200", "201", "202", "400", "401", "403", "413", "415", "500", "503",
];

/// API_REQUESTS are the verb and resource of every Kubernetes request the gateway sends:
/// its own objects, and the metadata reads of the kinds of the README's target table.
const API_REQUESTS: [(&str, &str); 25] = [
    ("get", "leases"),
    ("list", "leases"),
    ("create", "leases"),
    ("patch", "leases"),
    ("delete", "leases"),
    ("get", "remediationrequests"),
    ("list", "remediationrequests"),
    ("create", "remediationrequests"),
    ("patch", "remediationrequests/status"),
    ("create", "tokenreviews"),
    ("create", "subjectaccessreviews"),
    ("get", "version"),
    ("get", "pods"),
    ("get", "deployments"),
    ("get", "statefulsets"),
    ("get", "daemonsets"),
    ("get", "replicasets"),
    ("get", "jobs"),
    ("get", "cronjobs"),
    ("get", "horizontalpodautoscalers"),
    ("get", "persistentvolumeclaims"),
    ("get", "services"),
    ("get", "nodes"),
    ("get", "namespaces"),
    ("get", "persistentvolumes"),
];

/// zero_series are the series the README says exist at 0 from start-up: every counter
/// whose labels the gateway defines, with every combination of their values.
fn zero_series() -> Vec<Series> {
    let mut out: Vec<Series> = [
        "gateway_lock_acquisition_attempts_total",
        "gateway_lock_acquisition_success_total",
        "gateway_lock_contention_total",
        "gateway_lock_holds_total",
        "gateway_lock_takeovers_total",
        "gateway_fence_collisions_total",
        "gateway_sweep_removals_total",
        "gateway_audit_events_dropped_total",
    ]
    .into_iter()
    .map(|name| (name, vec![]))
    .collect();
    let one = |name, key, values: &[&'static str]| -> Vec<Series> {
        values.iter().map(|v| (name, vec![(key, *v)])).collect()
    };
    out.extend(one(
        "gateway_lock_acquisition_failures_total",
        "reason",
        &["timeout", "cancelled", "api_error", "superseded"],
    ));
    out.extend(one(
        "gateway_signals_rejected_total",
        "reason",
        &["invalid_signal", "unmanaged_resource", "resource_not_found"],
    ));
    out.extend(one(
        "gateway_crd_creation_errors_total",
        "error_type",
        &["k8s_api_error", "fetch_existing_failed"],
    ));
    for (source, endpoint) in [
        ("prometheus", "/api/v1/signals/prometheus"),
        ("kubernetes-events", "/api/v1/signals/kubernetes-event"),
    ] {
        out.push((
            "gateway_crds_created_total",
            vec![("source_type", source), ("status", "created")],
        ));
        for status in ["created", "duplicate", "ignored", "rejected", "failed"] {
            out.push((
                "gateway_signals_total",
                vec![("source_type", source), ("status", status)],
            ));
        }
        for status in SIGNAL_ANSWERS {
            out.push((
                "gateway_http_requests_total",
                vec![
                    ("endpoint", endpoint),
                    ("method", "POST"),
                    ("status", status),
                ],
            ));
        }
    }
    for (endpoint, status) in [("/healthz", "200"), ("/readyz", "200"), ("/readyz", "503")] {
        out.push((
            "gateway_http_requests_total",
            vec![
                ("endpoint", endpoint),
                ("method", "GET"),
                ("status", status),
            ],
        ));
    }
    for (verb, resource) in API_REQUESTS {
        for outcome in [
            "ok",
            "conflict",
            "not_found",
            "client_error",
            "server_error",
            "timeout",
            "transport",
        ] {
            out.push((
                "gateway_kube_api_requests_total",
                vec![("verb", verb), ("resource", resource), ("outcome", outcome)],
            ));
        }
    }
    out
}

/// otlp_name is the OTLP name of a counter from its Prometheus name.
fn otlp_name(prometheus: &str) -> String {
    prometheus.trim_end_matches("_total").replace('_', ".")
}

/// stays_at_zero reports whether a gateway sent nothing must show `series` at 0: all but
/// the `ok` Kubernetes requests, which its start-up (the API's version) and its sweep send.
fn stays_at_zero(series: &Series) -> bool {
    !(series.0 == "gateway_kube_api_requests_total" && series.1.contains(&("outcome", "ok")))
}

#[tokio::test]
async fn every_series_exists_at_zero_from_start_up_over_otlp_and_on_metrics() {
    let (cp, ns) = setup().await;
    let collector = Collector::start();
    let endpoint = collector.endpoint();
    let pod = "gw-quiet";
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // No period is reached: SIGTERM flushes.
        ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
        ("GATEWAY_METRICS_ADDR", "127.0.0.1:0"),
    ];
    let mut gw = spawn(cp, ns.name(), pod, &env);
    let http = http();
    // Nothing is sent to the gateway: /metrics is served on a port of its own.
    let scrape = format!("http://{}/metrics", metrics_addr(&gw));
    let local = parse(&get(&http, &scrape).await.unwrap_or_default());
    gw.signal(libc::SIGTERM);
    let status = gw.wait().expect("the gateway exits");
    assert!(status.success(), "{pod} exited with {status}");

    let want = zero_series();
    let check = |path: &str, found: &dyn Fn(&Series) -> Option<f64>| -> Vec<String> {
        want.iter()
            .filter_map(|series| match found(series) {
                Some(v) if v == 0.0 || (v > 0.0 && !stays_at_zero(series)) => None,
                other => Some(format!("{path}: {series:?} is {other:?}")),
            })
            .collect()
    };
    let wrong_locally = check("/metrics", &|(name, labels)| value(&local, name, labels));
    let from_collector = format!("http://127.0.0.1:{}/metrics", collector.prometheus_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = parse(&get(&http, &from_collector).await.unwrap_or_default());
        let mut wrong = check("the collector's Prometheus exporter", &|(name, labels)| {
            let with: Vec<_> = labels
                .iter()
                .copied()
                .chain([("k8s_pod_name", pod)])
                .collect();
            value(&samples, name, &with)
        });
        wrong.extend(check("OTLP", &|(name, labels)| {
            collector.otlp_sum(pod, &otlp_name(name), labels)
        }));
        if wrong.is_empty() && wrong_locally.is_empty() {
            break;
        }
        // What the collector holds settles once the exit flush is written; /metrics was
        // read once, before.
        if Instant::now() >= deadline {
            wrong.extend(wrong_locally);
            panic!(
                "{} checks of {} series (on /metrics, over OTLP and on the collector's \
                 Prometheus endpoint) are not at zero:\n{wrong:#?}\n{}",
                wrong.len(),
                want.len(),
                collector.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// AUDIT is the target of the gateway's audit log lines and the scope of its records.
const AUDIT: &str = "signal_gateway::audit";

/// audit_lines are the audit events gateway `gw` logged, as JSON.
fn audit_lines(gw: &testenv::gateway::Gateway) -> Vec<Value> {
    gw.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == AUDIT)
        .collect()
}

#[tokio::test]
async fn audit_events_reach_the_collector_as_log_records() {
    let (cp, ns) = setup().await;
    let collector = Collector::start();
    let mut gw = spawn_an_audited_gateway(cp, ns.name(), &collector);
    let http = http();
    let token = cp.token(testenv::Identity::Admin);
    let (fingerprint, rr) = send_a_signal_and_its_duplicate(&http, &gw, token).await;
    send_signals_that_emit_nothing(&http, &gw, token).await;
    assert_the_events_are_log_lines_too(&gw);

    // SIGTERM flushes the records.
    gw.signal(libc::SIGTERM);
    let status = gw.wait().expect("the gateway exits");
    assert!(status.success(), "gw-audit exited with {status}");
    let records = wait_for_the_audit_records(&collector).await;
    assert_every_record_carries_its_signal(&records, &fingerprint, &rr);
    assert_each_event_names_its_actor_and_resource(&records, &fingerprint, &rr);
}

/// AUDIT_TYPES are the audit events of a new signal and its duplicate, in order.
const AUDIT_TYPES: [&str; 3] = [
    "gateway.signal.received",
    "gateway.crd.created",
    "gateway.signal.deduplicated",
];

/// spawn_an_audited_gateway starts gw-audit exporting to `collector`. The caller is named by
/// a TokenReview: the admin's static token, judged for the API server's own audience, and
/// allowed by a SubjectAccessReview.
fn spawn_an_audited_gateway(
    cp: &testenv::ControlPlane,
    ns: &str,
    collector: &Collector,
) -> Gateway {
    let endpoint = collector.endpoint();
    spawn(
        cp,
        ns,
        "gw-audit",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
            ("GATEWAY_AUTH", "tokenreview"),
            ("GATEWAY_AUTH_AUDIENCE", "apiserver"),
        ],
    )
}

/// send_a_signal_and_its_duplicate sends a new signal and its duplicate, and returns the
/// fingerprint and the RR (`namespace/name`) they were answered with.
async fn send_a_signal_and_its_duplicate(
    http: &Http,
    gw: &Gateway,
    token: &str,
) -> (String, String) {
    let mut answers = Vec::new();
    for want in [201, 202] {
        let answer = post_http_as(http, gw.addr(), firing("audit-0"), Some(token)).await;
        let (code, body) = answer.expect("an answer");
        assert_eq!(
            code,
            want,
            "{body}
{}",
            gw.logs().join(
                "
"
            )
        );
        answers.push(body["results"][0].clone());
    }
    let fingerprint = answers[0]["fingerprint"].as_str().unwrap_or_default();
    let rr = answers[0]["remediationRequest"]
        .as_str()
        .unwrap_or_default();
    let rr_name = rr.rsplit_once('/').map_or("", |(_, n)| n);
    assert_eq!(answers[1]["remediationRequest"], rr);
    assert!(
        !fingerprint.is_empty() && !rr_name.is_empty(),
        "{answers:?}"
    );
    (fingerprint.to_owned(), rr.to_owned())
}

/// send_signals_that_emit_nothing sends a parse failure, a resolved alert and a rejected
/// alert, none of which is audited.
async fn send_signals_that_emit_nothing(http: &Http, gw: &Gateway, token: &str) {
    let no_target = serde_json::json!({"status": "firing", "labels": {"alertname": "X"}});
    let answer = post_http_as(http, gw.addr(), webhook(vec![no_target]), Some(token)).await;
    assert_eq!(answer.map(|a| a.0), Some(400));
    let resolved = webhook(vec![alert("audit-0", "resolved")]);
    let answer = post_http_as(http, gw.addr(), resolved, Some(token)).await;
    assert_eq!(answer.map(|a| a.0), Some(200));
    let answer = post_http_as(http, gw.addr(), "{not json".into(), Some(token)).await;
    assert_eq!(answer.map(|a| a.0), Some(400));
}

/// assert_the_events_are_log_lines_too checks that the same events are log lines, without
/// OTLP.
fn assert_the_events_are_log_lines_too(gw: &Gateway) {
    let lines = audit_lines(gw);
    let line_types: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["event_type"].as_str())
        .collect();
    assert_eq!(line_types, AUDIT_TYPES, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l["version"] == "1.0"
            && l["event_category"] == "gateway"
            && l["event_data"].as_str().is_some_and(|d| d.starts_with('{'))),
        "{lines:#?}"
    );
}

/// record_time is a log record's time in nanoseconds (0 when it has none).
fn record_time(r: &Value) -> u128 {
    r["timeUnixNano"]
        .as_str()
        .and_then(|t| t.parse::<u128>().ok())
        .unwrap_or_default()
}

/// wait_for_the_audit_records waits (bounded) for gw-audit's records and returns exactly
/// [`AUDIT_TYPES`], in time order.
async fn wait_for_the_audit_records(collector: &Collector) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = loop {
        let records = collector.audit_records("gw-audit");
        if records.len() >= AUDIT_TYPES.len() {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "the audit records never arrived: {records:#?}
{}",
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    records.sort_by_key(record_time);
    let types: Vec<&str> = records
        .iter()
        .filter_map(|r| r["attributes"]["event_type"].as_str())
        .collect();
    assert_eq!(types, AUDIT_TYPES, "exactly these records: {records:#?}");
    records
}

/// assert_every_record_carries_its_signal checks what every record says: its scope, name,
/// trace and time, and the signal, RR and fingerprint it is about.
fn assert_every_record_carries_its_signal(records: &[Value], fingerprint: &str, rr: &str) {
    let rr_name = rr.rsplit_once('/').map_or("", |(_, n)| n);
    for r in records {
        let a = &r["attributes"];
        assert_eq!(r["scope"], AUDIT, "{r:#}");
        assert_eq!(r["eventName"], a["event_type"], "{r:#}");
        assert_eq!(r["body"]["stringValue"], a["event_type"], "{r:#}");
        assert!(
            r["traceId"].as_str().is_some_and(|t| t.len() == 32),
            "a record carries its batch's trace: {r:#}"
        );
        assert!(record_time(r) > 0, "{r:#}");
        assert_eq!(a["version"], "1.0");
        assert_eq!(a["event_category"], "gateway");
        assert_eq!(a["namespace"], "prod");
        assert_eq!(a["correlation_id"], rr_name, "{a:#}");
        assert!(a.get("cluster_id").is_none(), "the local cluster: {a:#}");
        assert!(
            a["event_timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{a:#}"
        );
        let d = &a["event_data"];
        assert_eq!(d["event_type"], a["event_type"]);
        assert_eq!(d["signal_type"], "alert");
        assert_eq!(d["signal_name"], "KubePodCrashLooping");
        assert_eq!(d["namespace"], "prod");
        assert_eq!(d["fingerprint"], fingerprint);
        assert_eq!(d["remediation_request"], rr);
    }
}

/// assert_each_event_names_its_actor_and_resource checks what each of the three events
/// says of itself.
fn assert_each_event_names_its_actor_and_resource(records: &[Value], fingerprint: &str, rr: &str) {
    let (received, created, duplicate) = (
        &records[0]["attributes"],
        &records[1]["attributes"],
        &records[2]["attributes"],
    );
    for signal_event in [received, duplicate] {
        assert_eq!(signal_event["actor_type"], "authenticated-service");
        assert_eq!(signal_event["actor_id"], "admin");
        assert_eq!(signal_event["resource_type"], "Signal");
        assert_eq!(signal_event["resource_id"], fingerprint);
        assert_eq!(signal_event["event_outcome"], "success");
        let d = &signal_event["event_data"];
        assert_eq!(
            d["signal_labels"]["pod"], "audit-0",
            "labels kept: {signal_event:#}"
        );
        assert_eq!(d["signal_annotations"]["summary"], "Pod is crash looping.");
        assert!(d.get("original_payload").is_none(), "left out: {d:#}");
    }
    assert_eq!(received["event_action"], "received");
    assert_eq!(received["event_data"]["deduplication_status"], "new");
    assert_eq!(received["event_data"]["severity"], "critical");
    assert_eq!(received["event_data"]["resource_kind"], "Pod");
    assert_eq!(received["event_data"]["resource_name"], "audit-0");
    assert_eq!(created["event_action"], "created");
    assert_eq!(created["actor_type"], "gateway");
    assert_eq!(created["actor_id"], "crd-creator");
    assert_eq!(created["resource_type"], "RemediationRequest");
    assert_eq!(created["resource_id"], rr);
    assert_eq!(created["event_data"]["occurrence_count"], 1);
    assert_eq!(duplicate["event_action"], "deduplicated");
    assert_eq!(duplicate["event_data"]["occurrence_count"], 2);
    assert_eq!(duplicate["event_data"]["deduplication_status"], "duplicate");
}

#[tokio::test]
async fn requests_keep_their_latency_when_the_collector_hangs() {
    let (cp, ns) = setup().await;
    let mut collector = Collector::start();
    let endpoint = collector.endpoint();
    let gw = spawn(
        cp,
        ns.name(),
        "gw-hang",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
            // A small audit queue, so that the hung exports fill it.
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10000"),
            ("GATEWAY_METRICS_ADDR", "127.0.0.1:0"),
        ],
    );
    let http = http();
    let mut statuses = Vec::new();
    let mut before = Vec::new();
    for i in 0..5 {
        let start = Instant::now();
        statuses.push(
            post_http(&http, gw.addr(), firing(&format!("up-{i}")))
                .await
                .map(|r| r.0),
        );
        before.push(start.elapsed());
    }
    // The collector goes; a listener that accepts and never answers takes its port, so
    // every export waits for its whole timeout (10 s).
    collector.stop();
    let hung = TcpListener::bind(("127.0.0.1", collector.port)).expect("taking the port");
    let mut after = Vec::new();
    for i in 0..20 {
        let start = Instant::now();
        statuses.push(
            post_http(&http, gw.addr(), firing(&format!("down-{}", i % 5)))
                .await
                .map(|r| r.0),
        );
        after.push(start.elapsed());
    }
    assert!(
        statuses.iter().all(|s| matches!(s, Some(201 | 202))),
        "{statuses:?}"
    );
    // An export is in flight against the hung port the whole time (one per 100 ms, 10 s each).
    let connected = hung.set_nonblocking(true).is_ok() && hung.accept().is_ok();
    assert!(connected, "the gateway kept trying to export");
    let worst = after.iter().max().copied().unwrap_or_default();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mb, ma) = (median(&mut before), median(&mut after));
    eprintln!("median before {mb:?}, after {ma:?}, worst after {worst:?}");
    assert!(
        worst < Duration::from_secs(2),
        "a request took {worst:?} while exports hung: exports must not block requests"
    );
    // The audit records that found the queue full were dropped and counted; the log
    // lines have every event: 10 new RRs (received and created) and 15 duplicates.
    let scrape = format!("http://{}/metrics", metrics_addr(&gw));
    let local = parse(&get(&http, &scrape).await.unwrap_or_default());
    let dropped = sum(&local, "gateway_audit_events_dropped_total", &[]);
    assert!(
        dropped > 0.0,
        "a hung collector fills the audit queue: {dropped}"
    );
    assert_eq!(audit_lines(&gw).len(), 2 * 10 + 15);
}

/// Pki is a CA and a server certificate for `localhost` signed by it, in PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "signal-gateway test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("a CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("a server key");
        let server = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        let cert = server
            .signed_by(&key, &issuer)
            .expect("a server certificate");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("writing a PEM file");
        };
        write("ca.pem", ca_cert.pem());
        write("server.pem", cert.pem());
        write("server.key", key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// TlsCase is a gateway's pod name, its protocol's variables, and how it trusts the
/// collector's CA (empty: it does not).
type TlsCase<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<(&'a str, &'a str)>);

/// FLUSH_FAILED is what a gateway logs when its exit flush did not reach the collector.
const FLUSH_FAILED: &str = "flushing telemetry at exit failed";

#[tokio::test]
async fn https_endpoints_export_over_tls_to_a_collector_whose_ca_is_trusted() {
    let (cp, ns) = setup().await;
    let pki = Pki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let collector = Collector::start_with(Some((Path::new(&cert), Path::new(&key))));
    let https = format!("https://localhost:{}", collector.port);
    let grpcs = format!("https://localhost:{}", collector.grpc_port);
    let ca = pki.path("ca.pem");
    let common = [("OTEL_METRIC_EXPORT_INTERVAL", "60000")];
    let http_proto = [("OTEL_EXPORTER_OTLP_ENDPOINT", https.as_str())];
    let grpc = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", grpcs.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ];
    let cases: Vec<TlsCase<'_>> = vec![
        // The standard variable, for both signals.
        (
            "gw-https",
            &http_proto,
            vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str())],
        ),
        // The per-signal variables.
        (
            "gw-grpcs",
            &grpc,
            vec![
                ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", ca.as_str()),
                ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca.as_str()),
            ],
        ),
        // The system roots (rustls-native-certs reads SSL_CERT_FILE, as the image sets it).
        (
            "gw-https-system",
            &http_proto,
            vec![("SSL_CERT_FILE", ca.as_str())],
        ),
        (
            "gw-grpcs-system",
            &grpc,
            vec![("SSL_CERT_FILE", ca.as_str())],
        ),
        // Not trusted at all: nothing may arrive.
        ("gw-https-untrusted", &http_proto, vec![]),
        ("gw-grpcs-untrusted", &grpc, vec![]),
    ];
    let http = http();
    let mut gateways = spawn_each_and_send_twice(cp, ns.name(), &cases, &common, &http).await;
    stop_each_and_check_its_flush(&mut gateways, &cases, &collector);
    let samples = wait_for_the_trusted_telemetry(&http, &collector, &cases).await;
    assert_nothing_of_the_untrusted_arrived(&samples, &collector, &cases);
}

/// spawn_each_and_send_twice starts a gateway for each case, and has each create one RR and
/// see it once more: created 1, duplicate 1.
async fn spawn_each_and_send_twice(
    cp: &testenv::ControlPlane,
    ns: &str,
    cases: &[TlsCase<'_>],
    common: &[(&str, &str)],
    http: &Http,
) -> Vec<Gateway> {
    let mut gateways = Vec::new();
    for (pod, protocol, trust) in cases {
        let env: Vec<(&str, &str)> = common
            .iter()
            .chain(protocol.iter())
            .chain(trust.iter())
            .copied()
            .collect();
        let gw = spawn(cp, ns, pod, &env);
        let target = format!("{pod}-target");
        for want in [201, 202] {
            let got = post_http(http, gw.addr(), firing(&target))
                .await
                .map(|r| r.0);
            assert_eq!(got, Some(want), "{pod}: {}", gw.logs().join("\n"));
        }
        gateways.push(gw);
    }
    gateways
}

/// stop_each_and_check_its_flush sends SIGTERM, which flushes: a trusted collector takes the
/// flush, an untrusted one fails it.
fn stop_each_and_check_its_flush(
    gateways: &mut [Gateway],
    cases: &[TlsCase<'_>],
    collector: &Collector,
) {
    for (gw, (pod, _, trust)) in gateways.iter_mut().zip(cases) {
        gw.signal(libc::SIGTERM);
        let status = gw.wait().expect("the gateway exits");
        assert!(status.success(), "{pod} exited with {status}");
        let failed = gw.logs().iter().any(|l| l.contains(FLUSH_FAILED));
        assert_eq!(
            failed,
            trust.is_empty(),
            "{pod}: the exit flush failed: {failed}; its log:\n{}\ncollector:\n{}",
            gw.logs().join("\n"),
            collector.log()
        );
    }
}

/// wait_for_the_trusted_telemetry waits (bounded) until every trusted gateway's counts
/// arrived exactly, and its spans; it returns the samples.
async fn wait_for_the_trusted_telemetry(
    http: &Http,
    collector: &Collector,
    cases: &[TlsCase<'_>],
) -> Vec<Sample> {
    let scrape = format!("http://127.0.0.1:{}/metrics", collector.prometheus_port);
    let trusted: Vec<&str> = cases
        .iter()
        .filter(|c| !c.2.is_empty())
        .map(|c| c.0)
        .collect();
    let count = |samples: &[Sample], pod: &str, status: &str| {
        sum(
            samples,
            "gateway_signals_total",
            &[("k8s_pod_name", pod), ("status", status)],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = parse(&get(http, &scrape).await.unwrap_or_default());
        let spans = collector.span_pods();
        let arrived = trusted.iter().all(|pod| {
            count(&samples, pod, "created") == 1.0
                && count(&samples, pod, "duplicate") == 1.0
                && spans.contains(*pod)
        });
        if arrived {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "the trusted gateways' telemetry never arrived: spans from {spans:?}; samples:\n{:#?}\n{}",
            samples
                .iter()
                .filter(|s| s.name == "gateway_signals_total")
                .collect::<Vec<_>>(),
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// assert_nothing_of_the_untrusted_arrived checks that nothing of the untrusted gateways is
/// there: their flushes had failed before (they exited first), and the trusted ones' went
/// through the same pipeline.
fn assert_nothing_of_the_untrusted_arrived(
    samples: &[Sample],
    collector: &Collector,
    cases: &[TlsCase<'_>],
) {
    let spans = collector.span_pods();
    for (pod, _, _) in cases.iter().filter(|c| c.2.is_empty()) {
        assert!(
            !samples
                .iter()
                .any(|s| s.labels.get("k8s_pod_name").map(String::as_str) == Some(*pod)),
            "{pod} does not trust the collector's CA, yet its metrics arrived"
        );
        assert!(!spans.contains(*pod), "{pod}'s spans arrived: {spans:?}");
    }
}

//! The Lambda package (`hack/lambda.sh`) under AWS's own Runtime Interface Emulator
//! (`hack/tool.sh rie`), against the test API server: HTTP events create and count, a
//! scheduled event sweeps, other events are refused, a batch held past the
//! invocation's deadline answers 503 before the runtime would kill it, and every
//! invocation's metrics and audit records reach a real OpenTelemetry Collector before
//! the next invocation.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use signal_gateway::k8s::{
    GENERATION, MANAGED_BY, REMEDIATION_REQUEST, RR_NAMESPACE, lease_name, rr_name,
};
use testenv::lambda::{self, answer, api_gateway, function_url};
use testenv::{ControlPlane, collector::Collector};

use crate::support::{firing, fp_of, rrs, setup};

/// Emulator is testenv's, with the tests' way with errors: a failure to start or to
/// invoke ends the test, naming what the emulator and the function logged.
struct Emulator(lambda::Emulator);

impl Emulator {
    async fn start(cp: &ControlPlane, ns: &str, timeout_s: u32, env: &[(&str, &str)]) -> Self {
        Emulator(
            lambda::Emulator::start(cp, ns, timeout_s, env)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    async fn invoke(&self, event: &Value) -> Value {
        self.0.invoke(event).await.unwrap_or_else(|e| panic!("{e}"))
    }

    fn logs(&self) -> String {
        self.0.logs()
    }
}

const SCHEDULED: &str = r#"{"version":"0","id":"53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
  "detail-type":"Scheduled Event","source":"aws.events","account":"123456789012",
  "time":"2026-12-02T10:00:00Z","region":"eu-west-1",
  "resources":["arn:aws:events:eu-west-1:123456789012:rule/signal-gateway-sweep"],"detail":{}}"#;

#[tokio::test]
async fn under_the_emulator_function_url_and_api_gateway_events_create_and_count() {
    let (cp, ns) = setup().await;
    let rie = Emulator::start(cp, ns.name(), 30, &[]).await;
    let (status, body) = answer(&rie.invoke(&function_url(&firing("lambda-url"))).await);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "created", "{body}");
    let (status, body) = answer(&rie.invoke(&api_gateway(&firing("lambda-url"))).await);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["duplicate"], true, "{body}");
    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 1, "one RR for the problem");
    let counted = list[0].occurrence_count();
    assert_eq!(counted, 2, "both invocations counted");
    assert_eq!(
        list[0].metadata.name.as_deref(),
        Some(rr_name(&fp_of("lambda-url"), 1).as_str())
    );
}

#[tokio::test]
async fn under_the_emulator_a_scheduled_event_sweeps_and_other_events_are_refused() {
    let (cp, ns) = setup().await;
    // Short leases and a short minimum age, so that a record can be swept within the test.
    let rie = Emulator::start(
        cp,
        ns.name(),
        30,
        &[
            ("GATEWAY_LOCK_DURATION_SECONDS", "3"),
            ("GATEWAY_API_TIMEOUT_MS", "2500"),
            ("GATEWAY_SWEEP_MIN_AGE_SECONDS", "12"),
        ],
    )
    .await;
    let scheduled: Value = serde_json::from_str(SCHEDULED).expect("a scheduled event");
    for pod in ["lambda-kept", "lambda-gone"] {
        assert_eq!(
            answer(&rie.invoke(&function_url(&firing(pod))).await).0,
            201
        );
    }
    let (kept, gone) = (fp_of("lambda-kept"), fp_of("lambda-gone"));
    Api::<signal_gateway::crd::RemediationRequest>::namespaced(cp.admin_client(), ns.name())
        .delete(&rr_name(&gone, 1), &DeleteParams::default())
        .await
        .expect("deleting an RR");
    // Young records are left alone, whatever they fence.
    assert_eq!(rie.invoke(&scheduled).await, json!({"swept": 0}));
    // Once old enough, the record of the deleted RR goes and the other stays. The
    // passing of time announces nothing: each pass is a bounded look.
    let leases = Api::<Lease>::namespaced(cp.admin_client(), ns.name());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let swept = rie.invoke(&scheduled).await;
        if swept == json!({"swept": 1}) {
            break;
        }
        assert_eq!(swept, json!({"swept": 0}), "{}", rie.logs());
        assert!(Instant::now() < deadline, "nothing swept: {}", rie.logs());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let exists = |fp: String| {
        let leases = leases.clone();
        async move {
            leases
                .get_opt(&lease_name(&fp))
                .await
                .expect("reading a lease")
                .is_some()
        }
    };
    assert!(
        !exists(gone).await,
        "the record of the deleted RR was swept"
    );
    assert!(exists(kept).await, "the record of the existing RR was kept");

    for other in [
        json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}),
        json!({"source": "aws.events", "detail-type": "EC2 Instance State-change Notification"}),
    ] {
        let refused = rie.invoke(&other).await;
        let message = refused["errorMessage"].as_str().unwrap_or_default();
        assert!(
            message.contains("not an event this function serves"),
            "{other} is refused with a clear error: {refused}"
        );
    }
    // A refused event leaves the function serving.
    assert_eq!(
        answer(&rie.invoke(&function_url(&firing("lambda-kept"))).await).0,
        202
    );
}

#[tokio::test]
async fn under_the_emulator_a_batch_held_past_the_deadline_answers_503_in_time() {
    let (cp, ns) = setup().await;
    let timeout = Duration::from_secs(3);
    // The lock wait (20 s) would outlast the invocation (3 s) many times over.
    let rie = Emulator::start(
        cp,
        ns.name(),
        3,
        &[
            ("GATEWAY_LOCK_WAIT_MS", "20000"),
            ("GATEWAY_LOCK_DURATION_SECONDS", "60"),
        ],
    )
    .await;
    // Warm: the first invocation also starts the function (a health check writes nothing).
    let mut health = function_url("");
    health["rawPath"] = json!("/healthz");
    health["requestContext"]["http"]["method"] = json!("GET");
    health["requestContext"]["http"]["path"] = json!("/healthz");
    assert_eq!(answer(&rie.invoke(&health).await).0, 200);
    // Another writer holds the problem's record and has not created its RR yet.
    let fp = fp_of("lambda-held");
    let now = MicroTime(jiff::Timestamp::now());
    let record = Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(&fp)),
            labels: Some(
                [
                    (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                    (RR_NAMESPACE.to_owned(), ns.name().to_owned()),
                ]
                .into(),
            ),
            annotations: Some(
                [
                    (GENERATION.to_owned(), "1".to_owned()),
                    (REMEDIATION_REQUEST.to_owned(), rr_name(&fp, 1)),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("another-writer/1".into()),
            lease_duration_seconds: Some(60),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    };
    Api::<Lease>::namespaced(cp.admin_client(), ns.name())
        .create(&PostParams::default(), &record)
        .await
        .expect("creating the held record");
    let start = Instant::now();
    let held = rie.invoke(&function_url(&firing("lambda-held"))).await;
    let took = start.elapsed();
    let (status, body) = answer(&held);
    assert_eq!(status, 503, "{held}; logs:\n{}", rie.logs());
    assert!(
        held["headers"]["retry-after"].is_string(),
        "a 503 says when to retry: {held}"
    );
    assert!(
        body["detail"].is_string() || body["title"].is_string(),
        "{body}"
    );
    assert!(
        took < timeout,
        "answered in {took:?}, inside the invocation's {timeout:?}"
    );
    // Nothing was created beside the holder's claim.
    assert!(
        rrs(cp, ns.name())
            .await
            .iter()
            .all(|rr| rr.metadata.name.as_deref() != Some(rr_name(&fp, 1).as_str())),
        "no RR for the held problem"
    );
}

/// FLUSHED_POD is the `k8s.pod.name` of the function whose telemetry the flush test reads.
const FLUSHED_POD: &str = "gw-lambda";

#[tokio::test]
async fn under_the_emulator_every_invocation_is_flushed_before_the_next() {
    let (cp, ns) = setup().await;
    let collector = Collector::start();
    let endpoint = collector.endpoint();
    let rie = Emulator::start(
        cp,
        ns.name(),
        30,
        &[
            ("POD_NAME", FLUSHED_POD),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // No period would export within the test: only the flush can.
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "600000"),
        ],
    )
    .await;
    // Each invocation: its event, its answer, the entry status it counts, and the audit
    // events received once it is flushed.
    let steps = [
        (
            function_url(&firing("lambda-flush")),
            201,
            "created",
            vec!["gateway.signal.received", "gateway.crd.created"],
        ),
        (
            api_gateway(&firing("lambda-flush")),
            202,
            "duplicate",
            vec![
                "gateway.signal.received",
                "gateway.crd.created",
                "gateway.signal.deduplicated",
            ],
        ),
    ];
    for (i, (event, code, status, audited)) in steps.iter().enumerate() {
        let (got, body) = answer(&rie.invoke(event).await);
        assert_eq!(got, *code, "invocation {i}: {body}; logs:\n{}", rie.logs());
        // The function waits for its next invocation (on Lambda, frozen); what this one
        // recorded has left already. The collector's file exporter writes within 1 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let counted = collector.otlp_sum(FLUSHED_POD, "gateway.signals", &[("status", status)]);
            let types: Vec<String> = collector
                .audit_records(FLUSHED_POD)
                .iter()
                .filter_map(|r| r["attributes"]["event_type"].as_str().map(str::to_owned))
                .collect();
            if counted == Some(1.0) && types == *audited {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "invocation {i} was not flushed: gateway.signals{{status={status}}} is {counted:?}, \
                 audit events {types:?}; logs:\n{}\ncollector:\n{}",
                rie.logs(),
                collector.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

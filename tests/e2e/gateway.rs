//! The HTTP API and pipeline in-process against a real kube-apiserver.

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use signal_gateway::crd::{RemediationRequest, SignalType};
use testenv::{ControlPlane, Identity};
use tower::ServiceExt;

use crate::support::{
    EVENTS, PROMETHEUS, active_of, alert, firing, in_process, oneshot, plane, post_to,
    private_plane, rrs, webhook,
};

/// gateway is an in-process gateway in `ns` with the defaults of [`in_process`].
async fn gateway(cp: &ControlPlane, ns: &str) -> Router {
    in_process(cp, ns, &[]).await
}

/// call sends a JSON body to `path` in-process and returns status and body.
async fn call(app: &Router, path: &str, body: String) -> (StatusCode, Value) {
    let (status, _, value) = post_to(app, path, "application/json", body).await;
    (status, value)
}

/// fresh is an Event fixture stamped with the current time, as a live cluster sends it:
/// the replay window (`GATEWAY_REPLAY_WINDOW_SECONDS`) refuses the fixtures' old timestamps.
fn fresh(fixture: &str) -> String {
    let mut event: Value = serde_json::from_str(fixture).expect("an Event fixture");
    let now = jiff::Timestamp::now().to_string();
    for field in ["firstTimestamp", "lastTimestamp"] {
        if event[field].is_string() {
            event[field] = now.clone().into();
        }
    }
    event.to_string()
}

#[tokio::test]
async fn a_new_alert_creates_one_rr_and_a_repeat_counts_on_it() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = gateway(cp, ns.name()).await;

    let (status, body) = call(&app, PROMETHEUS, firing("web-0")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = &body["results"][0];
    assert_eq!(first["status"], "created");
    assert_eq!(first["occurrenceCount"], 1);
    let fp = first["fingerprint"].as_str().unwrap();
    assert_eq!(fp.len(), 64);

    let (status, body) = call(&app, PROMETHEUS, firing("web-0")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["results"][0]["status"], "duplicate");
    assert_eq!(body["results"][0]["occurrenceCount"], 2);
    assert_eq!(
        body["results"][0]["remediationRequest"],
        first["remediationRequest"]
    );

    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 1);
    let rr = &list[0];
    assert_eq!(rr.spec.signal_fingerprint, fp);
    assert_eq!(rr.spec.signal_name, "KubePodCrashLooping");
    assert_eq!(rr.spec.target_resource.kind, "Pod");
    assert_eq!(rr.spec.target_resource.name, "web-0");
    assert_eq!(rr.spec.target_resource.namespace, "prod");
    let dedup = rr
        .status
        .as_ref()
        .and_then(|s| s.deduplication.as_ref())
        .expect("dedup status");
    assert_eq!(dedup.occurrence_count, Some(2));
    assert!(dedup.first_seen_at.is_some());
    assert!(dedup.last_seen_at >= dedup.first_seen_at);
}

#[tokio::test]
async fn a_terminal_rr_makes_the_next_signal_open_a_new_one() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = gateway(cp, ns.name()).await;

    let (status, body) = call(&app, PROMETHEUS, firing("db-0")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["results"][0]["remediationRequest"]
        .as_str()
        .unwrap()
        .to_owned();
    let name = first.split('/').nth(1).unwrap();

    let api: Api<RemediationRequest> = Api::namespaced(cp.admin_client(), ns.name());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"overallPhase": "Completed"}})),
    )
    .await
    .unwrap();

    let (status, body) = call(&app, PROMETHEUS, firing("db-0")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["results"][0]["occurrenceCount"], 1);
    assert_ne!(body["results"][0]["remediationRequest"], first.as_str());

    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 2);
    assert_eq!(active_of(&list).len(), 1);
}

#[tokio::test]
async fn concurrent_duplicates_from_two_instances_are_all_counted() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    // Two instances: separate pipelines, so nothing is coalesced between them.
    let a = gateway(cp, ns.name()).await;
    let b = gateway(cp, ns.name()).await;
    let (status, _) = call(&a, PROMETHEUS, firing("api-0")).await;
    assert_eq!(status, StatusCode::CREATED);

    let per_instance = 10;
    let mut tasks = Vec::new();
    for i in 0..2 * per_instance {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            call(&app, PROMETHEUS, firing("api-0")).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::ACCEPTED);
    }
    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].occurrence_count(), 1 + 2 * per_instance as i64);
}

#[tokio::test]
async fn concurrent_new_signals_create_exactly_one_rr_with_or_without_locking() {
    let cp = plane().await;
    for locking in ["true", "false"] {
        let ns = cp.new_namespace().await.unwrap();
        let extra = [("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", locking)];
        let instances = [
            in_process(cp, ns.name(), &extra).await,
            in_process(cp, ns.name(), &extra).await,
            in_process(cp, ns.name(), &extra).await,
        ];
        let n = 30;
        let mut tasks = Vec::new();
        for i in 0..n {
            let app = instances[i % 3].clone();
            tasks.push(tokio::spawn(async move {
                call(&app, PROMETHEUS, firing("cache-0")).await
            }));
        }
        let mut created = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            assert!(status.is_success(), "locking={locking}: {status} {body}");
            if body["results"][0]["status"] == "created" {
                created += 1;
            }
        }
        let list = rrs(cp, ns.name()).await;
        assert_eq!(list.len(), 1, "locking={locking}");
        assert_eq!(created, 1, "locking={locking}");
        assert_eq!(list[0].occurrence_count(), n as i64, "locking={locking}");
    }
}

#[tokio::test]
async fn resolved_alerts_and_normal_events_are_ignored_and_write_nothing() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = gateway(cp, ns.name()).await;

    let (status, body) = call(&app, PROMETHEUS, webhook(vec![alert("web-1", "resolved")])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], "ignored");

    let normal = include_str!("../fixtures/events/normal-scheduled.json").to_owned();
    let (status, body) = call(&app, EVENTS, normal).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], "ignored");
    assert!(rrs(cp, ns.name()).await.is_empty());
}

#[tokio::test]
async fn a_mixed_group_reports_each_alert() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = gateway(cp, ns.name()).await;
    let mut nameless = alert("x-0", "firing");
    nameless["labels"] = json!({"alertname": "Watchdog"});
    let group = vec![
        alert("a-0", "firing"),
        alert("b-0", "resolved"),
        nameless,
        alert("c-0", "firing"),
    ];
    let (status, body) = call(&app, PROMETHEUS, webhook(group)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["created", "ignored", "rejected", "created"]);
    assert!(
        body["results"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("target"),
        "{body}"
    );
    assert_eq!(rrs(cp, ns.name()).await.len(), 2);
}

#[tokio::test]
async fn warning_events_become_rrs() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = gateway(cp, ns.name()).await;
    let event = fresh(include_str!("../fixtures/events/warning-backoff-pod.json"));
    let (status, body) = call(&app, EVENTS, event.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = call(&app, EVENTS, event.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 1);
    // What kubernaut's Gateway writes for an Event.
    let spec = &list[0].spec;
    assert_eq!(spec.signal_type, SignalType::Alert);
    assert_eq!(spec.signal_source, "kubernetes-events");
    assert_eq!(spec.severity, "Warning");
    assert_eq!(
        spec.provider_data.as_deref(),
        Some(r#"{"labels":null,"namespace":"prod"}"#)
    );
    assert_eq!(spec.original_payload.as_deref(), Some(event.as_str()));
    assert_eq!(spec.cluster_id, None);
    assert_eq!(list[0].occurrence_count(), 2);

    let error = fresh(include_str!(
        "../fixtures/events/error-reconcile-deployment.json"
    ));
    let (status, body) = call(&app, EVENTS, error).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "an Error Event is a signal: {body}"
    );
}

#[tokio::test]
async fn the_replay_window_refuses_stale_signals_with_400_and_zero_turns_it_off() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = gateway(cp, ns.name()).await;
    let stale = include_str!("../fixtures/events/warning-backoff-pod.json").to_owned();
    let (status, problem) = call(&app, EVENTS, stale.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("event timestamp too old: possible stale event: field `lastTimestamp`"),
        "{detail}"
    );
    let stamped = |header: String| {
        let app = app.clone();
        async move {
            let req = Request::post(PROMETHEUS)
                .header("content-type", "application/json")
                .header("x-timestamp", header)
                .body(Body::from(firing("replayed-0")))
                .unwrap();
            let (status, _, body) = oneshot(&app, req).await;
            (status, body)
        }
    };
    let now = jiff::Timestamp::now().as_second();
    let (status, problem) = stamped((now - 3600).to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d
                .starts_with("timestamp too old: possible replay attack: header `X-Timestamp`")),
        "{problem}"
    );
    let (status, problem) = stamped("soon".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        rrs(cp, ns.name()).await.is_empty(),
        "nothing refused is written"
    );
    let (status, body) = stamped(now.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let off = in_process(cp, ns.name(), &[("GATEWAY_REPLAY_WINDOW_SECONDS", "0")]).await;
    let (status, body) = call(&off, EVENTS, stale).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn invalid_inputs_get_clear_4xx_and_write_nothing() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = in_process(cp, ns.name(), &[("GATEWAY_MAX_BODY_BYTES", "4096")]).await;

    let cases: Vec<(&str, &str, String, StatusCode, &str)> = vec![
        (
            PROMETHEUS,
            "application/json",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "JSON",
        ),
        (
            PROMETHEUS,
            "application/json",
            include_str!("../fixtures/alertmanager/v4-truncated.json").into(),
            StatusCode::BAD_REQUEST,
            "JSON",
        ),
        (
            PROMETHEUS,
            "application/json",
            include_str!("../fixtures/alertmanager/v3-unknown-version.json").into(),
            StatusCode::BAD_REQUEST,
            "version",
        ),
        (
            PROMETHEUS,
            "application/json",
            "[]".into(),
            StatusCode::BAD_REQUEST,
            "object",
        ),
        (
            PROMETHEUS,
            "text/plain",
            firing("w-0"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            PROMETHEUS,
            "application/json",
            webhook(vec![alert(&"p".repeat(5000), "firing")]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "4096",
        ),
        (
            PROMETHEUS,
            "application/json",
            firing("Not_A_Valid_Name"),
            StatusCode::BAD_REQUEST,
            "pod",
        ),
        (
            EVENTS,
            "application/json",
            json!({"kind": "Event", "type": "Warning"}).to_string(),
            StatusCode::BAD_REQUEST,
            "involvedObject",
        ),
    ];
    for (path, ct, body, want, mentions) in cases {
        let (status, headers, problem) = post_to(&app, path, ct, body).await;
        assert_eq!(status, want, "{problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(mentions),
            "detail {detail:?} should mention {mentions:?}"
        );
    }
    assert!(rrs(cp, ns.name()).await.is_empty());
}

#[tokio::test]
async fn tokenreview_auth_refuses_tokens_not_issued_for_the_gateway() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = in_process(cp, ns.name(), &[("GATEWAY_AUTH", "tokenreview")]).await;
    let body = firing("auth-0");
    let call = |token: Option<String>| {
        let app = app.clone();
        let body = body.clone();
        async move {
            let mut req = Request::post(PROMETHEUS).header("content-type", "application/json");
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            app.oneshot(req.body(Body::from(body)).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(call(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(Some("not-a-token".into())).await,
        StatusCode::UNAUTHORIZED
    );
    // A token the cluster accepts, but not issued for the gateway's audience (and its
    // caller may not create RRs either): refused. `security::` covers 2xx and 403.
    assert_eq!(
        call(Some(cp.token(Identity::Nobody).to_owned())).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(rrs(cp, ns.name()).await.is_empty());
}

#[tokio::test]
async fn the_lambda_adapter_serves_the_same_router() {
    use lambda_http::{Adapter, Context, LambdaEvent, Service, request::LambdaRequest};
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = gateway(cp, ns.name()).await;

    let payload = firing("lambda-0");
    let apigw = include_str!("../fixtures/lambda/apigw-v2-template.json")
        .replace("\"BODY\"", &serde_json::to_string(&payload).unwrap());
    let event = fresh(include_str!("../fixtures/events/warning-backoff-pod.json"));
    let alb = include_str!("../fixtures/lambda/alb-template.json")
        .replace("\"BODY\"", &serde_json::to_string(&event).unwrap());

    let mut adapter = Adapter::from(app);
    for (raw, want) in [(apigw.clone(), 201), (apigw, 202), (alb, 201)] {
        let req: LambdaRequest = serde_json::from_str(&raw).expect("a valid Lambda event");
        let res = adapter
            .call(LambdaEvent::new(req, Context::default()))
            .await
            .unwrap();
        let res = serde_json::to_value(res).unwrap();
        assert_eq!(res["statusCode"], want, "{res}");
        let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
        assert!(
            body["results"][0]["fingerprint"]
                .as_str()
                .is_some_and(|f| f.len() == 64),
            "{body}"
        );
    }
    assert_eq!(rrs(cp, ns.name()).await.len(), 2);
}

/// private_gateway starts a control plane of its own (for tests that stop or
/// freeze the API server) and an in-process gateway on it.
async fn private_gateway() -> (ControlPlane, Router) {
    let cp = private_plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = in_process(&cp, ns.name(), &[("GATEWAY_API_TIMEOUT_MS", "3000")]).await;
    (cp, app)
}

#[tokio::test]
async fn api_server_outage_gives_503_then_recovers_without_restart() {
    let (cp, app) = private_gateway().await;

    let (status, _) = call(&app, PROMETHEUS, firing("outage-0")).await;
    assert_eq!(status, StatusCode::CREATED);

    cp.stop_apiserver();
    let (status, headers, problem) =
        post_to(&app, PROMETHEUS, "application/json", firing("outage-0")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(headers.contains_key("retry-after"));
    let (status, _, _) = post_to(&app, PROMETHEUS, "application/json", firing("outage-1")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    cp.start_apiserver()
        .await
        .expect("restarting the API server");
    let (status, body) = call(&app, PROMETHEUS, firing("outage-0")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["results"][0]["occurrenceCount"], 2,
        "the 503 must not have been counted"
    );
    let (status, _) = call(&app, PROMETHEUS, firing("outage-1")).await;
    assert_eq!(status, StatusCode::CREATED);
}

/// apiserver_pid finds the kube-apiserver serving `cp` by its `--secure-port` flag.
fn apiserver_pid(cp: &ControlPlane) -> i32 {
    let port = cp
        .server_url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let flag = format!("--secure-port={port}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"kube-apiserver"))
                && args.contains(&flag.as_bytes())
        })
        .expect("the API server process")
}

#[tokio::test]
async fn a_hung_api_server_gives_503_within_the_call_timeout_then_recovers() {
    let (cp, app) = private_gateway().await;
    let (status, _) = call(&app, PROMETHEUS, firing("hung-0")).await;
    assert_eq!(status, StatusCode::CREATED);

    let pid = apiserver_pid(&cp);
    // SAFETY: signalling a child process of this test's control plane.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let start = std::time::Instant::now();
    let (status, headers, problem) =
        post_to(&app, PROMETHEUS, "application/json", firing("hung-0")).await;
    let waited = start.elapsed();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no answer within"),
        "{problem}"
    );
    assert!(
        waited < std::time::Duration::from_secs(30),
        "bounded by the call timeout and its retries: {waited:?}"
    );

    let (status, body) = call(&app, PROMETHEUS, firing("hung-0")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["results"][0]["occurrenceCount"], 2);
}

#[tokio::test]
async fn odd_but_valid_label_values_are_stored_as_sent() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let app = gateway(cp, ns.name()).await;
    let big = "x".repeat(10 * 1024);
    let mut a = alert("odd-0", "firing");
    a["labels"]["team"] = json!("Überwachung ✓ 監視");
    a["labels"]["huge"] = json!(big);
    a["labels"]["empty"] = json!("");
    a["labels"]["deployment"] = json!(""); // empty counts as absent: the pod label decides
    a["annotations"]["summary"] = json!("🔥 \"quoted\" \n newline");
    let (status, body) = call(&app, PROMETHEUS, webhook(vec![a])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 1);
    let spec = &list[0].spec;
    assert_eq!(spec.target_resource.kind, "Pod");
    assert_eq!(spec.signal_labels["team"], "Überwachung ✓ 監視");
    assert_eq!(spec.signal_labels["huge"].len(), 10 * 1024);
    assert_eq!(spec.signal_labels["empty"], "");
    assert_eq!(
        spec.signal_annotations["summary"],
        "🔥 \"quoted\" \n newline"
    );
}

//! Security: who may send signals (TokenReview for the gateway's audience, then a
//! SubjectAccessReview), hostile inputs against a gateway process (each answered with its
//! status and a short detail, nothing written, memory bounded), and slow clients cut off.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    coordination::v1::Lease,
    core::v1::ServiceAccount,
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use serde_json::{Value, json};
use testenv::{ControlPlane, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    EVENTS, PROMETHEUS, alert, firing, http, in_process, oneshot, plane, rrs, spawn, webhook,
};

/// SENDER_ROLE is the Role the chart's `senders` template creates, reproduced here.
const SENDER_ROLE: &str = "signal-gateway-sender";

/// tokenreview_gateway is an in-process gateway in `ns` that asks the API server who may send
/// (TokenReview, then SubjectAccessReview), with `extra` on top.
async fn tokenreview_gateway(cp: &ControlPlane, ns: &str, extra: &[(&str, &str)]) -> Router {
    let mut vars = vec![
        ("GATEWAY_AUTH", "tokenreview"),
        ("POD_NAME", "security-test"),
    ];
    vars.extend_from_slice(extra);
    in_process(cp, ns, &vars).await
}

/// post_with_token posts one firing alert in-process with an optional bearer token.
async fn post_with_token(app: &Router, token: Option<&str>, pod: &str) -> (StatusCode, Value) {
    let mut req = Request::post(PROMETHEUS).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (status, _, body) =
        oneshot(app, req.body(Body::from(firing(pod))).expect("a request")).await;
    (status, body)
}

/// service_account creates ServiceAccount `name` in `ns`, as the admin.
async fn service_account(cp: &ControlPlane, ns: &str, name: &str) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(cp.admin_client(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("creating a ServiceAccount");
}

/// token asks the TokenRequest API for a token of ServiceAccount `name` for `audience`.
async fn token(cp: &ControlPlane, ns: &str, name: &str, audience: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    Api::<ServiceAccount>::namespaced(cp.admin_client(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("requesting a token")
        .status
        .expect("a TokenRequest status")
        .token
        .expect("a token")
}

/// grant_sender gives ServiceAccount `name` the senders' Role in `ns` and waits until the
/// authorizer applies it.
async fn grant_sender(cp: &ControlPlane, ns: &str, name: &str) {
    grant(cp, ns, name, "signal-gateway.kubernaut.ai", "signals", None).await;
}

/// grant gives ServiceAccount `name` a Role in `ns` allowing `create` on `resource` of
/// `group` (on the one object `object`, if given), and waits until the authorizer applies it.
async fn grant(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    group: &str,
    resource: &str,
    object: Option<&str>,
) {
    let admin = cp.admin_client();
    let role = Role {
        metadata: ObjectMeta {
            name: Some(SENDER_ROLE.into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![group.into()]),
            resources: Some(vec![resource.into()]),
            resource_names: object.map(|o| vec![o.to_owned()]),
            verbs: vec!["create".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("creating the senders' Role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(SENDER_ROLE.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: SENDER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(ns.into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the senders' RoleBinding");
    // The RBAC authorizer learns of bindings through informers: poll, bounded.
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{name}")),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                name: object.map(str::to_owned),
                verb: Some("create".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api = Api::<SubjectAccessReview>::all(admin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .expect("reviewing access");
        if answer.status.is_some_and(|s| s.allowed) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the grant did not apply"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kubernaut's sender RBAC, unchanged: its chart lets a signal source `create` the one
/// object `services/gateway-service`, and its Gateway reviews the pod's ordinary token (the
/// API server's audience). With kubernaut's mapping the same RoleBinding sends signals.
#[tokio::test]
async fn kubernauts_sender_rolebinding_works_unchanged() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let ns = ns.name();
    service_account(cp, ns, "prometheus-alertmanager").await;
    service_account(cp, ns, "other-service").await;
    grant(
        cp,
        ns,
        "prometheus-alertmanager",
        "",
        "services",
        Some("gateway-service"),
    )
    .await;
    let kubernaut = [
        ("GATEWAY_AUTH_AUDIENCE", "apiserver"),
        ("GATEWAY_AUTH_RESOURCE", "services"),
        ("GATEWAY_AUTH_RESOURCE_NAME", "gateway-service"),
    ];
    let app = tokenreview_gateway(cp, ns, &kubernaut).await;
    let api_audience = "https://kubernetes.default.svc.cluster.local";
    let sender = token(cp, ns, "prometheus-alertmanager", api_audience).await;
    let other = token(cp, ns, "other-service", api_audience).await;
    let (status, body) = post_with_token(&app, Some(&other), "kubernaut-rbac").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post_with_token(&app, Some("not-a-token"), "kubernaut-rbac").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(rrs(cp, ns).await.is_empty());
    let (status, body) = post_with_token(&app, Some(&sender), "kubernaut-rbac").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The same Role on another object name is not enough: the name is checked.
    let strict = tokenreview_gateway(
        cp,
        ns,
        &[
            ("GATEWAY_AUTH_AUDIENCE", "apiserver"),
            ("GATEWAY_AUTH_RESOURCE", "services"),
            ("GATEWAY_AUTH_RESOURCE_NAME", "another-gateway"),
        ],
    )
    .await;
    let (status, body) = post_with_token(&strict, Some(&sender), "kubernaut-rbac").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn tokenreview_needs_the_gateway_audience_and_the_create_permission() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let ns = ns.name();
    service_account(cp, ns, "alertmanager").await;
    service_account(cp, ns, "stranger").await;
    grant_sender(cp, ns, "alertmanager").await;
    let app = tokenreview_gateway(cp, ns, &[]).await;

    let sender = token(cp, ns, "alertmanager", "signal-gateway").await;
    let api_audience = token(
        cp,
        ns,
        "alertmanager",
        "https://kubernetes.default.svc.cluster.local",
    )
    .await;
    let stranger = token(cp, ns, "stranger", "signal-gateway").await;

    // Refusals first, so that nothing they might write hides among the sender's RRs.
    for (who, token, want) in [
        ("no token", None, StatusCode::UNAUTHORIZED),
        ("garbage", Some("not-a-token"), StatusCode::UNAUTHORIZED),
        (
            "the API server's audience",
            Some(api_audience.as_str()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a static cluster token",
            Some(cp.token(Identity::Nobody)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no permission",
            Some(stranger.as_str()),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let (status, body) = post_with_token(&app, token, "auth-0").await;
        assert_eq!(status, want, "{who}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.contains("stranger") && !detail.contains("alertmanager"),
            "{who}: the detail names a ServiceAccount: {detail}"
        );
        // Asked twice: the cached decision must be the same refusal.
        assert_eq!(
            post_with_token(&app, token, "auth-0").await.0,
            want,
            "{who}, cached"
        );
    }
    assert!(rrs(cp, ns).await.is_empty());

    let (status, body) = post_with_token(&app, Some(&sender), "auth-0").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(rrs(cp, ns).await.len(), 1);
    let (status, body) = post_with_token(&app, Some(&sender), "auth-0").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn decisions_are_cached_per_token_and_not_without_a_cache() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let ns = ns.name();
    service_account(cp, ns, "alertmanager").await;
    grant_sender(cp, ns, "alertmanager").await;
    let cached = tokenreview_gateway(cp, ns, &[("GATEWAY_AUTH_CACHE_SECONDS", "300")]).await;
    let uncached = tokenreview_gateway(cp, ns, &[("GATEWAY_AUTH_CACHE_SECONDS", "0")]).await;
    let sender = token(cp, ns, "alertmanager", "signal-gateway").await;

    let started = std::time::Instant::now();
    assert_eq!(
        post_with_token(&cached, Some(&sender), "cache-0").await.0,
        201
    );
    let first = started.elapsed();
    let started = std::time::Instant::now();
    assert_eq!(
        post_with_token(&cached, Some(&sender), "cache-0").await.0,
        202
    );
    println!(
        "first request (TokenReview + SubjectAccessReview + create) {first:?}, cached auth + duplicate {:?}",
        started.elapsed()
    );
    assert_eq!(
        post_with_token(&uncached, Some(&sender), "cache-0").await.0,
        202
    );

    // The ServiceAccount is gone: once the API server notices (its informer), the token no
    // longer authenticates, and the gateway without a cache refuses it. The gateway with a
    // cache still accepts it: the decision is reused without an API call.
    Api::<ServiceAccount>::namespaced(cp.admin_client(), ns)
        .delete("alertmanager", &DeleteParams::default())
        .await
        .expect("deleting the ServiceAccount");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while post_with_token(&uncached, Some(&sender), "cache-0").await.0 != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deleted ServiceAccount's token still authenticates"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        post_with_token(&cached, Some(&sender), "cache-0").await.0,
        202
    );
}

#[tokio::test]
async fn bearer_mode_reads_a_trimmed_secret_file_and_follows_its_changes() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    // As `kubectl create secret generic --from-file` stores it: with a newline.
    std::fs::write(&file, "first-secret\n").unwrap();
    let path = file.to_str().unwrap();
    let gw = spawn(
        cp,
        ns.name(),
        "bearer-file",
        &[
            ("GATEWAY_AUTH", "bearer"),
            ("GATEWAY_AUTH_TOKEN_FILE", path),
        ],
    );
    let post = |token: &'static str| raw_post(gw.addr(), PROMETHEUS, token, firing("bearer-0"));
    assert_eq!(post("wrong").await.0, 401);
    assert_eq!(post("first-secret").await.0, 201);
    let next = dir.path().join("token.next");
    std::fs::write(&next, "second-secret\n").unwrap();
    std::fs::rename(&next, &file).unwrap();
    assert_eq!(post("first-secret").await.0, 401);
    assert_eq!(post("second-secret").await.0, 202);
    let logs = gw.logs().join("\n");
    assert!(logs.contains("caller refused"), "401s are logged");
    assert!(logs.contains("127.0.0.1"), "with the source address");
    assert!(
        !logs.contains("first-secret")
            && !logs.contains("second-secret")
            && !logs.contains("wrong"),
        "a token reached the log:\n{logs}"
    );
}

/// raw_post sends `body` to a gateway process with a bearer token.
async fn raw_post(to: SocketAddr, path: &str, token: &str, body: String) -> (u16, Value) {
    let req = Request::post(format!("http://{to}{path}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(body.into()))
        .expect("a request");
    let res = http().request(req).await.expect("an answer");
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.expect("a body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Hostile is one input of the table: where it goes, its content type, body and expected status.
struct Hostile {
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
}

fn case(name: &'static str, body: impl Into<Vec<u8>>, status: u16) -> Hostile {
    Hostile {
        name,
        path: PROMETHEUS,
        content_type: "application/json",
        body: body.into(),
        status,
    }
}

fn event_case(name: &'static str, body: Value, status: u16) -> Hostile {
    Hostile {
        path: EVENTS,
        ..case(name, body.to_string(), status)
    }
}

fn with_labels(labels: Value) -> String {
    let mut a = alert("p", "firing");
    a["labels"] = labels;
    webhook(vec![a])
}

fn with_field(key: &str, value: Value) -> String {
    let mut a = alert("p", "firing");
    a[key] = value;
    webhook(vec![a])
}

fn deep(depth: usize) -> String {
    format!(
        "{{\"version\":\"4\",\"alerts\":[{{\"labels\":{}1{}}}]}}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

fn warning_event(involved: Value) -> Value {
    json!({
        "kind": "Event", "apiVersion": "v1", "type": "Warning", "reason": "BackOff",
        "metadata": {"name": "e", "namespace": "prod"},
        "involvedObject": involved,
        "lastTimestamp": "2026-11-27T08:14:27Z",
    })
}

fn hostile_inputs() -> Vec<Hostile> {
    let tiny_alerts = format!(
        "{{\"version\":\"4\",\"alerts\":[{}1]}}",
        "1,".repeat(129_999)
    );
    let many_labels: serde_json::Map<String, Value> =
        (0..300).map(|i| (format!("l{i}"), json!("v"))).collect();
    let pod = |name: &str| json!({"alertname": "A", "namespace": "prod", "pod": name});
    vec![
        case("empty body", "", 400),
        case("not JSON", "hello", 400),
        case("truncated JSON", "{\"version\":\"4\",\"alerts\":[", 400),
        case("a JSON array", "[]", 400),
        case("a JSON string", "\"4\"", 400),
        case("null", "null", 400),
        case(
            "invalid UTF-8",
            b"{\"version\":\"4\",\"alerts\":[\"\xff\xfe\"]}".to_vec(),
            400,
        ),
        case(
            "lone surrogate escape",
            "{\"version\":\"4\",\"alerts\":[{\"labels\":{\"a\":\"\\ud800\"}}]}",
            400,
        ),
        case("NUL bytes", b"{\"version\":\"4\"\0}".to_vec(), 400),
        case("version missing", "{\"alerts\":[{}]}", 400),
        case(
            "version as a number",
            "{\"version\":4,\"alerts\":[{}]}",
            400,
        ),
        case(
            "v3 payload",
            json!({"version": "3", "alerts": [alert("p", "firing")]}).to_string(),
            400,
        ),
        case(
            "huge version string",
            json!({"version": "4".repeat(100_000), "alerts": [{}]}).to_string(),
            400,
        ),
        case("alerts missing", "{\"version\":\"4\"}", 400),
        case("alerts an object", "{\"version\":\"4\",\"alerts\":{}}", 400),
        case("empty alerts", "{\"version\":\"4\",\"alerts\":[]}", 400),
        case(
            "alerts of numbers",
            "{\"version\":\"4\",\"alerts\":[1,2,3]}",
            400,
        ),
        case("130,000 tiny alerts", tiny_alerts, 413),
        case("1001 rejected alerts", webhook(vec![json!({}); 1001]), 413),
        case(
            "duplicate keys, the last version wins",
            "{\"version\":\"4\",\"alerts\":[{}],\"version\":\"3\"}",
            400,
        ),
        case(
            "duplicate alerts keys, the last is empty",
            format!(
                "{{\"version\":\"4\",\"alerts\":[{}],\"alerts\":[]}}",
                alert("p", "firing")
            ),
            400,
        ),
        case("deep nesting (100)", deep(100), 400),
        case("deep nesting (100000)", deep(100_000), 400),
        case("labels as a string", with_labels(json!("pod=x")), 400),
        case(
            "a label value as a number",
            with_labels(json!({"alertname": "A", "namespace": "prod", "pod": 1})),
            400,
        ),
        case("300 labels", with_labels(Value::Object(many_labels)), 400),
        case(
            "a 100 KB label name",
            with_labels(json!({"alertname": "A", "k".repeat(100_000): "v"})),
            400,
        ),
        case(
            "a 100 KB label value",
            with_labels(
                json!({"alertname": "A", "namespace": "prod", "pod": "p", "x": "v".repeat(100_000)}),
            ),
            400,
        ),
        case(
            "a pod name that is not a DNS name",
            with_labels(pod("Bad_Name")),
            400,
        ),
        case(
            "a 300-character pod name",
            with_labels(pod(&"a".repeat(300))),
            400,
        ),
        case("a pod name with a colon", with_labels(pod("a:b")), 400),
        case(
            "a namespace that is not a DNS label",
            with_labels(json!({"alertname": "A", "namespace": "Prod!", "pod": "p"})),
            400,
        ),
        case(
            "a pod without a namespace",
            with_labels(json!({"alertname": "A", "pod": "p"})),
            400,
        ),
        case(
            "no alertname",
            with_labels(json!({"namespace": "prod", "pod": "p"})),
            400,
        ),
        case(
            "no target label",
            with_labels(json!({"alertname": "A"})),
            400,
        ),
        case(
            "status unknown",
            with_field("status", json!("exploded")),
            400,
        ),
        case("status missing", with_field("status", Value::Null), 400),
        case(
            "startsAt in year 9999",
            with_field("startsAt", json!("9999-12-31T23:59:59Z")),
            400,
        ),
        case(
            "startsAt before 1970",
            with_field("startsAt", json!("1969-07-20T20:17:40Z")),
            400,
        ),
        case(
            "startsAt not a timestamp",
            with_field("startsAt", json!("yesterday")),
            400,
        ),
        case(
            "annotations as an array",
            with_field("annotations", json!(["a"])),
            400,
        ),
        case(
            "only resolved alerts",
            webhook(vec![alert("p", "resolved")]),
            200,
        ),
        Hostile {
            content_type: "text/plain",
            ..case("wrong content type", firing("p"), 415)
        },
        case(
            "a body over the limit",
            format!(
                "{{\"version\":\"4\",\"alerts\":[],\"x\":\"{}\"}}",
                "x".repeat(300_000)
            ),
            413,
        ),
        event_case(
            "an Event without involvedObject",
            json!({"kind": "Event", "type": "Warning", "reason": "R"}),
            400,
        ),
        event_case(
            "an Event of another kind",
            json!({"kind": "Pod", "type": "Warning"}),
            400,
        ),
        event_case(
            "a Warning Event about a bad name",
            warning_event(json!({"kind": "Pod", "name": "Bad_Name", "namespace": "prod"})),
            400,
        ),
        event_case(
            "an Event in year 9999",
            {
                let mut e = warning_event(json!({"kind": "Pod", "name": "p", "namespace": "prod"}));
                e["lastTimestamp"] = json!("9999-01-01T00:00:00Z");
                e
            },
            400,
        ),
        event_case(
            "a Normal Event",
            {
                let mut e = warning_event(json!({"kind": "Pod", "name": "p", "namespace": "prod"}));
                e["type"] = json!("Normal");
                e
            },
            200,
        ),
    ]
}

#[tokio::test]
async fn hostile_inputs_get_their_status_a_short_detail_and_write_nothing() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let gw = spawn(cp, ns.name(), "hostile", &[]);
    let leases = Api::<Lease>::namespaced(cp.admin_client(), ns.name());
    let inputs = hostile_inputs();
    assert!(inputs.len() >= 40, "{} inputs", inputs.len());
    let client = http();
    let mut peak_kib = 0;
    for input in inputs {
        let req = Request::post(format!("http://{}{}", gw.addr(), input.path))
            .header("content-type", input.content_type)
            .body(Full::new(input.body.into()))
            .expect("a request");
        let res = client.request(req).await.expect("an answer");
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.expect("a body").to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, input.status, "{}: {body}", input.name);
        assert!(
            bytes.len() < 4096,
            "{}: a {}-byte answer",
            input.name,
            bytes.len()
        );
        if status >= 400 {
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(!detail.is_empty(), "{}: no detail: {body}", input.name);
            assert!(
                detail.len() < 1024,
                "{}: detail of {} bytes",
                input.name,
                detail.len()
            );
        }
        assert!(
            rrs(cp, ns.name()).await.is_empty(),
            "{}: an RR was written",
            input.name
        );
        let written = leases
            .list(&ListParams::default())
            .await
            .expect("listing leases");
        assert!(
            written.items.is_empty(),
            "{}: a Lease was written",
            input.name
        );
        let (_, hwm) = gw.memory();
        peak_kib = peak_kib.max(hwm);
        assert!(hwm < 64 * 1024, "{}: peak RSS {hwm} KiB", input.name);
    }
    println!("peak RSS over the hostile inputs: {peak_kib} KiB");
}

/// trickle writes `bytes` one a second until the server closes the connection, and
/// returns how many it wrote and what the server answered.
async fn trickle(to: SocketAddr, head: &[u8], bytes: &[u8]) -> (usize, String) {
    let stream = tokio::net::TcpStream::connect(to)
        .await
        .expect("connecting");
    let (mut rx, mut tx) = stream.into_split();
    tx.write_all(head).await.expect("writing");
    let reader = async {
        let mut answer = Vec::new();
        // Returns at EOF or a reset: the server closed the connection.
        let _ = rx.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let writer = async {
        let mut sent = 0;
        for b in bytes {
            if tx.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await;
        sent
    };
    tokio::pin!(writer);
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            answer = reader => answer,
            _ = &mut writer => unreachable!("the writer never ends on its own"),
        }
    })
    .await
    .expect("the server did not close a slow connection within 30 s");
    (bytes.len(), answer)
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let gw = spawn(
        cp,
        ns.name(),
        "slow",
        &[
            ("GATEWAY_HEADER_READ_TIMEOUT_MS", "2000"),
            ("GATEWAY_LOCK_WAIT_MS", "1000"),
            ("GATEWAY_REQUEST_TIMEOUT_MS", "3000"),
        ],
    );
    // Headers at one byte a second: the header read timeout closes the connection.
    let headers = format!(
        "POST {PROMETHEUS} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n"
    );
    let (_, answer) = trickle(gw.addr(), b"", headers.as_bytes()).await;
    assert!(!answer.contains("HTTP/1.1 2"), "{answer}");

    // A body at one byte a second: the request timeout answers 503 and the connection closes.
    let body = firing("slow-0");
    let head = format!(
        "POST {PROMETHEUS} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let (_, answer) = trickle(gw.addr(), head.as_bytes(), body.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after"),
        "{answer}"
    );
    assert!(rrs(cp, ns.name()).await.is_empty());
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let gw = spawn(cp, ns.name(), "conns", &[("GATEWAY_MAX_CONNECTIONS", "1")]);
    let get = b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    first.write_all(get).await.unwrap();
    let mut buf = [0u8; 512];
    let n = first.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    // The first connection is kept open: the second is not served (a bounded wait)...
    let mut second = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    second.write_all(get).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(waited.is_err(), "served beyond the connection limit");
    // ...until the first one closes.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

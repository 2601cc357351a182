//! End-to-end: gateway processes serving HTTPS (`GATEWAY_TLS_*`) to a real Alertmanager
//! (with and without a client certificate) and to rustls clients: ALPN, client
//! certificate refusals, and a certificate rotated the kubelet's way under load.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    ClientConfig, RootCertStore,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
};
use serde_json::{Value, json};
use testenv::gateway::Gateway;
use tokio::{net::TcpStream, time::Instant};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{
    alertmanager::Alertmanager,
    support::{EVENTS, PROMETHEUS, active_per_target, firing, http, rrs, setup, spawn},
};

/// Ca is a certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// Pair is a certificate and its key, as PEM, and the certificate as DER.
struct Pair {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("a key");
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("a CA certificate");
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// server is a serving certificate for localhost and 127.0.0.1.
    fn server(&self) -> Pair {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("names");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// client is a client certificate with common name `cn`.
    fn client(&self, cn: &str) -> Pair {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: rcgen::CertificateParams) -> Pair {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

use testenv::mount::SecretMount as Mount;

/// serving mounts `pair` as a `kubernetes.io/tls` Secret.
fn serving(pair: &Pair) -> Mount {
    Mount::new(&[("tls.crt", &pair.cert), ("tls.key", &pair.key)])
}

/// client_config trusts `ca` and, when given, presents `cert`; it offers `alpn`.
fn client_config(ca: &Ca, cert: Option<&Pair>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).expect("the CA");
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some(pair) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(pair.der.clone())],
                PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).expect("a key"),
            )
            .expect("a client certificate"),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Session is one TLS connection to a gateway, HTTP/1.1 or h2 as ALPN chose.
struct Session {
    sender: Sender,
    authority: String,
    /// leaf is the certificate the gateway presented, as DER.
    leaf: Vec<u8>,
    alpn: Option<Vec<u8>>,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Session {
    async fn open(to: SocketAddr, config: &Arc<ClientConfig>) -> Result<Session, String> {
        let tcp = TcpStream::connect(to)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").expect("a name");
        let tls: TlsStream<TcpStream> = TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let session = tls.get_ref().1;
        let leaf = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            Sender::Http2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("http/1.1 handshake: {e}"))?;
            tokio::spawn(conn);
            Sender::Http1(sender)
        };
        Ok(Session {
            sender,
            authority: format!("localhost:{}", to.port()),
            leaf,
            alpn,
        })
    }

    /// send makes one request on this connection: POST with a body, GET without.
    async fn send(&mut self, path: &str, body: Option<String>) -> Result<(u16, Value), String> {
        self.request(path, body, None).await
    }

    /// send_with_token POSTs `body` with a bearer token.
    async fn send_with_token(
        &mut self,
        path: &str,
        body: String,
        token: &str,
    ) -> Result<(u16, Value), String> {
        self.request(path, Some(body), Some(token)).await
    }

    async fn request(
        &mut self,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let method = if body.is_some() { "POST" } else { "GET" };
        let mut req = hyper::Request::builder().method(method);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        req = match &self.sender {
            Sender::Http1(_) => req.uri(path).header("host", &self.authority),
            Sender::Http2(_) => req.uri(format!("https://{}{path}", self.authority)),
        };
        let req = req
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a request");
        let res = match &mut self.sender {
            Sender::Http1(s) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
            Sender::Http2(s) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// once opens a connection for one request.
async fn once(
    to: SocketAddr,
    config: &Arc<ClientConfig>,
    path: &str,
    body: Option<String>,
) -> Result<(u16, Value), String> {
    Session::open(to, config).await?.send(path, body).await
}

/// tls_env is the environment of a gateway serving `mount`'s pair.
fn tls_env(mount: &Mount) -> Vec<(&'static str, String)> {
    vec![
        (
            "GATEWAY_TLS_CERT_FILE",
            mount.path("tls.crt").display().to_string(),
        ),
        (
            "GATEWAY_TLS_KEY_FILE",
            mount.path("tls.key").display().to_string(),
        ),
    ]
}

fn as_env<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// receiver is an Alertmanager configuration with one webhook receiver at `url` and
/// `http_config` (YAML, indented for its place).
fn receiver(url: &str, http_config: &str) -> String {
    format!(
        "route:\n  receiver: gateway\n  group_by: ['namespace']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n- name: gateway\n  webhook_configs:\n  - url: '{url}'\n    send_resolved: true\n    http_config:\n{http_config}"
    )
}

/// alertmanager_delivers fires one alert about `pod` through `am` and waits for the RR.
async fn alertmanager_delivers(
    am: &Alertmanager,
    gw: &testenv::gateway::Gateway,
    cp: &testenv::ControlPlane,
    ns: &str,
    pod: &str,
) {
    let http = http();
    am.wait_ready(&http).await;
    am.fire(
        &http,
        json!([{"labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": pod, "severity": "critical"}}]),
    )
    .await;
    let batches = gw.wait_batches(0, 1, Duration::from_secs(60)).await;
    assert_eq!(
        (batches.signals, batches.failed_signals),
        (1, 0),
        "the webhook never arrived over HTTPS; alertmanager:\n{}\ngateway:\n{}",
        am.log(),
        gw.logs().join("\n")
    );
    let list = rrs(cp, ns).await;
    assert_eq!(active_per_target(&list)[pod].len(), 1, "one RR for {pod}");
}

#[tokio::test]
async fn alertmanager_sends_over_https_trusting_the_ca_file() {
    let (cp, ns) = setup().await;
    let ca = Ca::new("serving-ca");
    let mount = serving(&ca.server());
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).expect("writing the CA");
    let mut env = tls_env(&mount);
    env.extend([
        ("GATEWAY_AUTH", "bearer".to_owned()),
        ("GATEWAY_AUTH_TOKEN", "over-tls".to_owned()),
    ]);
    let gw = spawn(cp, ns.name(), "gw-tls-am", &as_env(&env));
    let am = Alertmanager::start(&receiver(
        &format!("https://127.0.0.1:{}{PROMETHEUS}", gw.addr().port()),
        &format!(
            "      authorization:\n        credentials: over-tls\n      tls_config:\n        ca_file: {}\n",
            ca_file.display()
        ),
    ));
    alertmanager_delivers(&am, &gw, cp, ns.name(), "cart-0").await;

    // Plain HTTP on the TLS port gets nowhere.
    let plain = crate::support::post_http(&http(), gw.addr(), firing("cart-0")).await;
    assert!(
        !matches!(plain, Some((s, _)) if (200..300).contains(&s)),
        "plain HTTP was served on the TLS port: {plain:?}"
    );
}

#[tokio::test]
async fn client_certificates_authenticate_senders_and_clients_without_one_are_refused() {
    let (cp, ns) = setup().await;
    let serving_ca = Ca::new("serving-ca");
    let senders_ca = Ca::new("senders-ca");
    let mount = serving(&serving_ca.server());
    let am_cert = senders_ca.client("alertmanager-eu1");
    let dir = tempfile::tempdir().expect("a temp dir");
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("writing");
        p
    };
    let ca_file = write("ca.crt", &serving_ca.pem());
    let senders_file = write("senders-ca.crt", &senders_ca.pem());
    let (cert_file, key_file) = (
        write("am.crt", &am_cert.cert),
        write("am.key", &am_cert.key),
    );
    let mut env = tls_env(&mount);
    env.extend([
        ("GATEWAY_AUTH", "clientcert".to_owned()),
        (
            "GATEWAY_TLS_CLIENT_CA_FILE",
            senders_file.display().to_string(),
        ),
    ]);
    let gw = spawn(cp, ns.name(), "gw-tls-mtls", &as_env(&env));
    let show = |p: &Path| p.display().to_string();
    let am = Alertmanager::start(&receiver(
        &format!("https://127.0.0.1:{}{PROMETHEUS}", gw.addr().port()),
        &format!(
            "      tls_config:\n        ca_file: {}\n        cert_file: {}\n        key_file: {}\n",
            show(&ca_file),
            show(&cert_file),
            show(&key_file)
        ),
    ));
    alertmanager_delivers(&am, &gw, cp, ns.name(), "cart-0").await;
    // The certificate named the sender in the audit events.
    let audited = gw
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|v| {
            v["message"] == "audit event"
                && v["actor_type"] == "authenticated-service"
                && v["actor_id"] == "alertmanager-eu1"
        });
    assert!(audited, "no audit event names the certificate's CN");
    assert_only_the_senders_certificate_may_send(&gw, &serving_ca, &am_cert).await;
    let names: Vec<&str> = ["cart-1", "cart-2"].into();
    let list = rrs(cp, ns.name()).await;
    assert!(
        list.iter()
            .all(|rr| !names.contains(&rr.spec.target_resource.name.as_str())),
        "a refused request created an RR"
    );
}

/// assert_only_the_senders_certificate_may_send checks a client without a certificate (the
/// handshake succeeds, as probes present none; the health endpoints answer, the signal
/// endpoints refuse with 401 and the reason), one with a certificate from another CA (the
/// handshake fails), and the sender's over h2 (accepted).
async fn assert_only_the_senders_certificate_may_send(
    gw: &Gateway,
    serving_ca: &Ca,
    am_cert: &Pair,
) {
    let to = gw.addr();
    let bare = client_config(serving_ca, None, BOTH);
    let (status, _) = once(to, &bare, "/healthz", None).await.expect("healthz");
    assert_eq!(status, 200);
    let (status, body) = once(to, &bare, PROMETHEUS, Some(firing("cart-1")))
        .await
        .expect("an answer");
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("client certificate")),
        "{body}"
    );
    // A certificate from another CA: the handshake fails.
    let stranger = Ca::new("stranger-ca").client("alertmanager-eu1");
    let refused = once(
        to,
        &client_config(serving_ca, Some(&stranger), BOTH),
        PROMETHEUS,
        Some(firing("cart-2")),
    )
    .await;
    assert!(refused.is_err(), "a stranger's certificate got {refused:?}");
    gw.wait_logged("TLS handshake failed").await;
    // The sender's certificate, from a rustls client over h2: accepted.
    let (status, body) = once(
        to,
        &client_config(serving_ca, Some(am_cert), BOTH),
        EVENTS,
        Some(
            json!({
                "kind": "Event", "apiVersion": "v1", "type": "Normal", "reason": "Started",
                "metadata": {"name": "p.1", "namespace": "shop"},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "shop"},
            })
            .to_string(),
        ),
    )
    .await
    .expect("an answer");
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn beside_a_token_mode_a_client_certificate_is_a_third_way_in() {
    let (cp, ns) = setup().await;
    let serving_ca = Ca::new("serving-ca");
    let senders_ca = Ca::new("senders-ca");
    let mount = serving(&serving_ca.server());
    let dir = tempfile::tempdir().expect("a temp dir");
    let senders_file = dir.path().join("senders-ca.crt");
    std::fs::write(&senders_file, senders_ca.pem()).expect("writing");
    let mut env = tls_env(&mount);
    env.extend([
        ("GATEWAY_AUTH", "bearer".to_owned()),
        ("GATEWAY_AUTH_TOKEN", "s3cret".to_owned()),
        (
            "GATEWAY_TLS_CLIENT_CA_FILE",
            senders_file.display().to_string(),
        ),
    ]);
    let gw = spawn(cp, ns.name(), "gw-tls-mixed", &as_env(&env));
    let to = gw.addr();
    let bare = client_config(&serving_ca, None, BOTH);
    let with_cert = client_config(&serving_ca, Some(&senders_ca.client("remote-am")), BOTH);
    // A certificate needs no token; without one, the token is needed.
    let (status, body) = once(to, &with_cert, PROMETHEUS, Some(firing("mixed-0")))
        .await
        .expect("an answer");
    assert_eq!(status, 201, "{body}");
    let (status, body) = once(to, &bare, PROMETHEUS, Some(firing("mixed-1")))
        .await
        .expect("an answer");
    assert_eq!(status, 401, "{body}");
    let mut s = Session::open(to, &bare).await.expect("a TLS connection");
    let (status, body) = s
        .send_with_token(PROMETHEUS, firing("mixed-1"), "s3cret")
        .await
        .expect("an answer");
    assert_eq!(status, 201, "{body}");
    let list = rrs(cp, ns.name()).await;
    let per_target = active_per_target(&list);
    assert_eq!(
        per_target.keys().collect::<Vec<_>>(),
        ["mixed-0", "mixed-1"]
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_cut_off() {
    use tokio::io::AsyncReadExt as _;
    let (cp, ns) = setup().await;
    let ca = Ca::new("serving-ca");
    let mount = serving(&ca.server());
    let mut env = tls_env(&mount);
    env.push(("GATEWAY_HEADER_READ_TIMEOUT_MS", "500".to_owned()));
    let gw = spawn(cp, ns.name(), "gw-tls-silent", &as_env(&env));
    // Half a ClientHello's record header, then silence.
    let mut tcp = TcpStream::connect(gw.addr()).await.expect("a connection");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &[0x16, 0x03, 0x01])
        .await
        .expect("written");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("the gateway closed the connection within 10 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the gateway answered a silent client: {read:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the timeout"
    );
    // A proper client still gets through.
    let (status, _) = once(gw.addr(), &client_config(&ca, None, BOTH), "/healthz", None)
        .await
        .expect("healthz");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_h2_request_and_exits_zero() {
    let (cp, ns) = setup().await;
    let ca = Ca::new("serving-ca");
    let mount = serving(&ca.server());
    let mut env = tls_env(&mount);
    env.push(("GATEWAY_TEST_PAUSE_AT", "before-create".to_owned()));
    let mut gw = spawn(cp, ns.name(), "gw-tls-drain", &as_env(&env));
    let mut s = Session::open(gw.addr(), &client_config(&ca, None, BOTH))
        .await
        .expect("a TLS connection");
    assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]));
    let in_flight = tokio::spawn(async move { s.send(PROMETHEUS, Some(firing("drain-0"))).await });
    gw.wait_logged("test hook: paused").await;
    gw.signal(libc::SIGTERM);
    gw.wait_logged("shutdown signal received").await;
    gw.thaw();
    let (status, body) = in_flight
        .await
        .expect("the request task")
        .expect("the in-flight request was answered");
    assert_eq!(status, 201, "{body}");
    let exit = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .expect("the wait")
        .expect("an exit status");
    assert_eq!(exit.code(), Some(0));
    assert_eq!(rrs(cp, ns.name()).await.len(), 1);
}

#[tokio::test]
async fn h2_and_http1_are_offered_by_alpn() {
    let (cp, ns) = setup().await;
    let ca = Ca::new("serving-ca");
    let mount = serving(&ca.server());
    let gw = spawn(cp, ns.name(), "gw-tls-alpn", &as_env(&tls_env(&mount)));
    for (offer, want) in [
        (BOTH, Some(&b"h2"[..])),
        (&[&b"http/1.1"[..]][..], Some(&b"http/1.1"[..])),
        (&[][..], None),
    ] {
        let mut s = Session::open(gw.addr(), &client_config(&ca, None, offer))
            .await
            .expect("a TLS connection");
        assert_eq!(s.alpn.as_deref(), want, "offered {offer:?}");
        // Two requests on one connection: keep-alive, or two h2 streams.
        let (status, body) = s.send("/healthz", None).await.expect("healthz");
        assert_eq!((status, &body["status"]), (200, &json!("healthy")));
        let (status, body) = s
            .send(PROMETHEUS, Some(firing("alpn-0")))
            .await
            .expect("an answer");
        assert!(matches!(status, 201 | 202), "{offer:?}: {status} {body}");
    }
    let list = rrs(cp, ns.name()).await;
    assert_eq!(active_per_target(&list)["alpn-0"][0].occurrence_count(), 3);
}

/// Outcome is what one request of the rotation test got.
struct Outcome {
    /// pod is the target of its alert: one per client, so that no two clients contend
    /// for one RR's status.
    pod: String,
    /// opened is when its connection was opened.
    opened: Instant,
    /// result is the status and the certificate the connection was served.
    result: Result<(u16, Vec<u8>), String>,
}

/// Outcomes collects the requests of the rotation test as they end.
struct Outcomes {
    list: Mutex<Vec<Outcome>>,
    count: tokio::sync::watch::Sender<usize>,
}

impl Outcomes {
    fn push(&self, o: Outcome) {
        self.list.lock().unwrap().push(o);
        self.count.send_modify(|n| *n += 1);
    }

    /// wait returns once `n` requests ended.
    async fn wait(&self, n: usize) {
        let mut count = self.count.subscribe();
        tokio::time::timeout(Duration::from_secs(60), count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("the load made fewer than {n} requests in 60 s"))
            .expect("the counter lives");
    }
}

#[tokio::test]
async fn a_certificate_swapped_the_kubelet_way_is_served_without_losing_a_request() {
    let (cp, ns) = setup().await;
    let ca = Ca::new("serving-ca");
    let pairs = [ca.server(), ca.server(), ca.server()];
    let mut mount = serving(&pairs[0]);
    let gw = spawn(cp, ns.name(), "gw-tls-rotate", &as_env(&tls_env(&mount)));
    let to = gw.addr();
    let h2 = client_config(&ca, None, BOTH);
    let h1 = client_config(&ca, None, &[b"http/1.1"]);

    let outcomes = Arc::new(Outcomes {
        list: Mutex::new(Vec::new()),
        count: tokio::sync::watch::Sender::new(0),
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let load = open_fresh_connections_in_a_loop(to, [&h2, &h2, &h1, &h1], &outcomes, &stop);
    let kept = keep_one_connection_of_each_protocol(to, [&h2, &h1], &outcomes, &stop).await;
    let reloaded = swap_the_certificate_twice(&gw, &mut mount, &pairs, &outcomes).await;
    let total = *outcomes.count.borrow();
    outcomes.wait(total + 20).await;
    stop_tx.send(true).expect("the load listens");
    for task in load {
        task.await.expect("a load task");
    }
    for task in kept {
        let sent = task.await.expect("a kept connection");
        assert!(sent > 1, "a kept connection made {sent} requests");
    }

    let list = std::mem::take(&mut *outcomes.list.lock().unwrap());
    let ok = assert_each_request_was_served_a_due_pair(&list, &pairs, &reloaded);
    // Every 2xx was counted, on one RR per client.
    let rrs = rrs(cp, ns.name()).await;
    let per_target = active_per_target(&rrs);
    assert_eq!(per_target.len(), 6, "{:?}", per_target.keys());
    for (pod, n) in ok {
        assert_eq!(per_target[&pod].len(), 1, "{pod}");
        assert_eq!(per_target[&pod][0].occurrence_count(), n, "{pod}");
    }
}

/// open_fresh_connections_in_a_loop starts a client per config that opens a fresh
/// connection (a handshake each) for every request until `stop`.
fn open_fresh_connections_in_a_loop(
    to: SocketAddr,
    configs: [&Arc<ClientConfig>; 4],
    outcomes: &Arc<Outcomes>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut load = Vec::new();
    for (i, config) in configs.into_iter().enumerate() {
        let (config, outcomes, stop) = (Arc::clone(config), Arc::clone(outcomes), stop.clone());
        let pod = format!("fresh-{i}");
        load.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let opened = Instant::now();
                let result = match Session::open(to, &config).await {
                    Ok(mut s) => s
                        .send(PROMETHEUS, Some(firing(&pod)))
                        .await
                        .map(|(status, _)| (status, s.leaf.clone())),
                    Err(e) => Err(e),
                };
                let pod = pod.clone();
                outcomes.push(Outcome {
                    pod,
                    opened,
                    result,
                });
            }
        }));
    }
    load
}

/// keep_one_connection_of_each_protocol opens a connection per config before the swaps and
/// sends on it until `stop`; each task returns how many requests it made.
async fn keep_one_connection_of_each_protocol(
    to: SocketAddr,
    configs: [&Arc<ClientConfig>; 2],
    outcomes: &Arc<Outcomes>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    let mut kept = Vec::new();
    for (i, config) in configs.into_iter().enumerate() {
        let pod = format!("kept-{i}");
        let opened = Instant::now();
        let mut s = Session::open(to, config).await.expect("a TLS connection");
        let (outcomes, stop) = (Arc::clone(outcomes), stop.clone());
        kept.push(tokio::spawn(async move {
            let mut sent = 0;
            while !*stop.borrow() {
                let result = s
                    .send(PROMETHEUS, Some(firing(&pod)))
                    .await
                    .map(|(status, _)| (status, s.leaf.clone()));
                let pod = pod.clone();
                outcomes.push(Outcome {
                    pod,
                    opened,
                    result,
                });
                sent += 1;
            }
            sent
        }));
    }
    kept
}

/// swap_the_certificate_twice writes the next pairs into the mount, each once the load made
/// more requests, and returns when the gateway logged each reload: a swap is served from
/// then on, so every connection opened after that line must present the new certificate
/// (or a newer one).
async fn swap_the_certificate_twice(
    gw: &Gateway,
    mount: &mut Mount,
    pairs: &[Pair; 3],
    outcomes: &Outcomes,
) -> Vec<Instant> {
    let mut reloaded = Vec::new();
    for (i, pair) in pairs.iter().enumerate().skip(1) {
        outcomes.wait(20 * i).await;
        mount.update(&[("tls.crt", &pair.cert), ("tls.key", &pair.key)]);
        gw.wait_logged_times("TLS certificate reloaded", i).await;
        reloaded.push(Instant::now());
    }
    reloaded
}

/// assert_each_request_was_served_a_due_pair checks that no request failed, each was
/// answered 2xx with a pair at least as new as the reloads before its connection opened,
/// and every pair was served; it returns the number of 2xx per client.
fn assert_each_request_was_served_a_due_pair(
    list: &[Outcome],
    pairs: &[Pair; 3],
    reloaded: &[Instant],
) -> std::collections::BTreeMap<String, i64> {
    let failed: Vec<&String> = list
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .collect();
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    let mut ok = std::collections::BTreeMap::<String, i64>::new();
    for o in list.iter() {
        let (status, leaf) = o.result.as_ref().expect("checked above");
        assert!(matches!(status, 201 | 202), "status {status}");
        *ok.entry(o.pod.clone()).or_default() += 1;
        let served = pairs
            .iter()
            .position(|p| p.der == *leaf)
            .expect("one of the pairs");
        let due = reloaded.iter().filter(|at| **at <= o.opened).count();
        assert!(
            served >= due,
            "a connection opened after reload {due} was served pair {served}"
        );
    }
    for (i, pair) in pairs.iter().enumerate() {
        assert!(
            list.iter()
                .any(|o| o.result.as_ref().is_ok_and(|(_, l)| *l == pair.der)),
            "pair {i} was never served"
        );
    }
    ok
}

#[tokio::test]
async fn a_certificate_that_does_not_load_stops_start_up_naming_the_variable() {
    let (cp, ns) = setup().await;
    let ca = Ca::new("serving-ca");
    let (one, two) = (ca.server(), ca.server());
    let mismatched = Mount::new(&[("tls.crt", &one.cert), ("tls.key", &two.key)]);
    let bin = Path::new(env!("CARGO_BIN_EXE_signal-gateway"));
    let env = tls_env(&mismatched);
    let err = testenv::gateway::Gateway::spawn(bin, cp, ns.name(), "gw-tls-bad", &as_env(&env))
        .expect_err("a key of another certificate was accepted");
    let err = err.to_string();
    assert!(
        err.contains("GATEWAY_TLS_KEY_FILE") && err.contains("does not fit"),
        "{err}"
    );
}

//! The rendered pod, run end to end: `helm install` puts the chart on the test
//! API server, and `testenv::kubelet` plays the parts of the ReplicaSet controller,
//! the kubelet and the Service for it, so that three processes of the built
//! image run exactly as the Deployment's pod template says.
//!
//! - The ConfigMap `kube-root-ca.crt` is created as kube-controller-manager would.
//! - Alertmanager is configured with the receiver of the chart's NOTES (its
//!   URL pointed at a pod, its `credentials_file` at a projected token for the
//!   senders' ServiceAccount): one Alertmanager per replica, since a Service's
//!   load balancing needs kube-proxy.
//! - The rolling restart follows the template's strategy (`maxSurge` 1,
//!   `maxUnavailable` 0) and the kubelet's termination: a new pod ready first,
//!   then the old one keeps receiving traffic through its `preStop` sleep (the
//!   endpoints' propagation delay at its worst), is taken out of rotation, gets
//!   SIGTERM and must exit 0 within `terminationGracePeriodSeconds`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use testenv::kubelet::{Endpoints, Kubelet, Replica, get_status, token};
use testenv::{ControlPlane, Identity};

use crate::alertmanager::Alertmanager;
use crate::chart::helm;
use crate::image::image;
use crate::support::{Http, PROMETHEUS, http, plane, post_http_as, rrs, webhook};

/// RELEASE is the Helm release name.
const RELEASE: &str = "sg";
/// SENDER is the ServiceAccount Alertmanager runs as; the chart's senders Role binds it.
const SENDER: &str = "alertmanager";
/// AUDIENCE is the audience the gateway accepts tokens for (its default).
const AUDIENCE: &str = "signal-gateway";
/// WAIT bounds every wait in this module.
const WAIT: Duration = Duration::from_secs(60);
/// POLL is the interval of bounded polling.
const POLL: Duration = Duration::from_millis(50);

/// receiver is the Alertmanager receiver of the chart's NOTES (from `helm
/// install` output), with its URL pointed at `addr` and its credentials file at `token`.
fn receiver(notes: &str, addr: SocketAddr, token: &Path) -> serde_yaml_ng::Value {
    let snippet: String = notes
        .lines()
        .skip_while(|l| !l.starts_with("receivers:"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut parsed: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&snippet).expect("the NOTES snippet is YAML");
    let hook = &mut parsed["receivers"][0]["webhook_configs"][0];
    let url = hook["url"].as_str().expect("a URL").to_owned();
    let path = url
        .split_once(".svc:")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .expect("an in-cluster URL");
    assert_eq!(path, PROMETHEUS, "the NOTES name the webhook endpoint");
    hook["url"] = format!("http://{addr}{path}").into();
    let auth = &mut hook["http_config"]["authorization"];
    assert_eq!(auth["type"].as_str(), Some("Bearer"), "{notes}");
    assert!(auth["credentials_file"].is_string(), "{notes}");
    auth["credentials_file"] = token.display().to_string().into();
    parsed["receivers"].clone()
}

/// rr_count is the number of active RRs about pod `target` and the sum of their counts.
async fn rr_count(cp: &ControlPlane, ns: &str, target: &str) -> (usize, i64) {
    let list = rrs(cp, ns).await;
    let about: Vec<_> = list
        .iter()
        .filter(|rr| rr.spec.target_resource.name == target && rr.is_active())
        .collect();
    (
        about.len(),
        about.iter().map(|rr| rr.occurrence_count()).sum(),
    )
}

/// post_via_service posts one firing alert about `target` to a ready endpoint with the
/// sender's token; it returns whether the gateway acknowledged it (2xx).
async fn post_via_service(http: &Http, endpoints: &Endpoints, token: &str, target: &str) -> bool {
    let Some(addr) = endpoints.pick() else {
        return false;
    };
    let body = webhook(vec![json!({
        "status": "firing",
        "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": target, "severity": "critical"},
        "startsAt": "2026-11-27T08:14:27Z",
    })]);
    // A 2xx counts once its whole body arrived.
    post_http_as(http, addr, body, Some(token))
        .await
        .is_some_and(|(status, _)| (200..300).contains(&status))
}

#[tokio::test]
async fn the_rendered_pod_runs_three_replicas_behind_alertmanager_and_rolls_without_loss() {
    let img = image();
    let cp = plane().await;
    let ns = cp.new_namespace().await.expect("a test namespace");
    let ns = ns.name().to_owned();
    let notes = install_the_chart(cp, &ns);
    publish_the_root_ca_and_the_senders_account(cp, &ns).await;
    wait_until_the_chart_rbac_applies(cp, &ns).await;
    let deployment = the_rolling_deployment(cp, &ns).await;
    let kubelet = Kubelet {
        cp,
        ns: ns.clone(),
        image: img,
    };
    let (pods, running) = run_the_replicas(&kubelet, &deployment).await;

    let http = http();
    let (managers, _secrets) = start_one_alertmanager_per_replica(cp, &ns, &notes, &running).await;
    for am in &managers {
        am.wait_ready(&http).await;
    }
    fire_fifteen_alerts_about_one_pod(&managers, &http).await;
    assert_one_rr_counts_each_alert_once(cp, &ns, &managers, &running, &http).await;
    drop(managers);

    // A rolling restart under load: one new pod ready, then one old pod gone.
    let sender_token = token(cp, &ns, SENDER, Some(AUDIENCE), Some(3600), None).await;
    let endpoints = Arc::new(Endpoints::default());
    for replica in &running {
        endpoints.add(replica.addr);
    }
    let load = Load::start(&http, &endpoints, &sender_token);
    let replaced = roll(
        &kubelet,
        &deployment,
        &pods,
        running,
        &endpoints,
        &load.acked,
    )
    .await;
    let acked = load.stop().await;
    assert_the_rolled_problem_has_one_rr(cp, &ns, acked, &replaced).await;
}

/// install_the_chart runs `helm install` with the senders' ServiceAccount in `ns`, and
/// returns the NOTES it printed.
fn install_the_chart(cp: &ControlPlane, ns: &str) -> String {
    let kubeconfig = cp.kubeconfig_path(Identity::Admin);
    let sender_set = format!("senders.serviceAccounts[0].namespace={ns}");
    let sets = [
        // The shared control plane has the CRD already.
        "crds.install=false",
        "preStopSleepSeconds=1",
        // The alerts are about Pods that do not exist: with owner resolution they would be rejected.
        "ownerResolution.enabled=false",
        &format!("senders.serviceAccounts[0].name={SENDER}"),
        &sender_set,
    ];
    let mut args = vec![
        "install",
        RELEASE,
        "chart/",
        "--namespace",
        ns,
        "--kubeconfig",
        kubeconfig.to_str().expect("UTF-8"),
    ];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let (stdout, _) = helm(&args);
    stdout
        .split_once("NOTES:")
        .map(|(_, n)| n.to_owned())
        .unwrap_or_else(|| panic!("no NOTES:\n{stdout}"))
}

/// publish_the_root_ca_and_the_senders_account creates what kube-controller-manager's
/// root CA publisher would, and a ServiceAccount for Alertmanager.
async fn publish_the_root_ca_and_the_senders_account(cp: &ControlPlane, ns: &str) {
    let admin = cp.admin_client();
    Api::<ConfigMap>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("kube-root-ca.crt".into()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "ca.crt".to_owned(),
                    String::from_utf8(cp.ca_pem().to_vec()).expect("a PEM"),
                )])),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("publishing the root CA");
    Api::<ServiceAccount>::namespaced(admin, ns)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(SENDER.into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("Alertmanager's ServiceAccount");
}

/// wait_until_the_chart_rbac_applies waits for the senders Role and the gateway's Role and
/// ClusterRole: RBAC reaches the authorizer through informers.
async fn wait_until_the_chart_rbac_applies(cp: &ControlPlane, ns: &str) {
    let (sender_client, _) = crate::chart::service_account_client(cp, ns, SENDER).await;
    testenv::wait_allowed(
        &sender_client,
        ns,
        "signal-gateway.kubernaut.ai",
        "signals",
        "create",
    )
    .await
    .expect("the senders Role applies");
    let (gateway_client, _) = crate::chart::service_account_client(cp, ns, RELEASE).await;
    for (group, resource) in [
        ("kubernaut.ai", "remediationrequests"),
        ("coordination.k8s.io", "leases"),
    ] {
        testenv::wait_allowed(&gateway_client, ns, group, resource, "create")
            .await
            .expect("the gateway's Role applies");
    }
    testenv::wait_allowed(
        &gateway_client,
        "",
        "authentication.k8s.io",
        "tokenreviews",
        "create",
    )
    .await
    .expect("the gateway's ClusterRole applies");
}

/// the_rolling_deployment is the installed Deployment, checked for the chart's three
/// replicas and its rolling update (`maxUnavailable` 0, `maxSurge` 1).
async fn the_rolling_deployment(cp: &ControlPlane, ns: &str) -> Deployment {
    let deployment = Api::<Deployment>::namespaced(cp.admin_client(), ns)
        .get(RELEASE)
        .await
        .expect("the installed Deployment");
    assert_eq!(deployment.spec.replicas, Some(3), "the chart's default");
    let strategy = deployment
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .expect("a rolling update");
    assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(strategy.max_surge, Some(IntOrString::Int(1)));
    deployment
}

/// run_the_replicas creates and runs the Deployment's replicas, and checks that the
/// downward API reached each process: it names itself after its pod.
async fn run_the_replicas(
    kubelet: &Kubelet<'_>,
    deployment: &Deployment,
) -> (Vec<Pod>, Vec<Replica>) {
    let replicas = deployment.spec.replicas.expect("replicas");
    let mut pods = Vec::new();
    let mut running = Vec::new();
    for i in 0..replicas {
        let pod = kubelet
            .create_pod(deployment, &format!("{RELEASE}-a-{i}"))
            .await;
        running.push(kubelet.run(&pod).await);
        pods.push(pod);
    }
    for (pod, replica) in pods.iter().zip(&running) {
        let name = pod.metadata.name.as_deref().expect("a name");
        assert!(
            replica.log().contains(&format!("\"instance\":\"{name}\"")),
            "{name}:\n{}",
            replica.log()
        );
    }
    (pods, running)
}

/// start_one_alertmanager_per_replica starts an Alertmanager for each replica, with the
/// NOTES receiver and a projected token of its ServiceAccount for the gateway's audience
/// (in the returned directory, which must outlive them).
async fn start_one_alertmanager_per_replica(
    cp: &ControlPlane,
    ns: &str,
    notes: &str,
    running: &[Replica],
) -> (Vec<Alertmanager>, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("Alertmanager's mounts");
    let token_path = secrets.path().join("token");
    std::fs::write(
        &token_path,
        token(cp, ns, SENDER, Some(AUDIENCE), Some(3600), None).await,
    )
    .expect("writing Alertmanager's token");
    let mut managers = Vec::new();
    for replica in running {
        let config = json!({
            "route": {"receiver": "signal-gateway", "group_by": ["alertname"],
                      "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": receiver(notes, replica.addr, &token_path),
        });
        managers.push(Alertmanager::start(
            &serde_yaml_ng::to_string(&config).expect("a config"),
        ));
    }
    (managers, secrets)
}

/// fire_fifteen_alerts_about_one_pod fires 15 concurrent alerts about pod `cart-0`, five
/// through each Alertmanager.
async fn fire_fifteen_alerts_about_one_pod(managers: &[Alertmanager], http: &Http) {
    let alert = |i: usize| {
        json!({"labels": {"alertname": format!("Alert{i:02}"), "namespace": "shop",
                          "pod": "cart-0", "severity": "critical"},
               "annotations": {"summary": "one of fifteen"}})
    };
    let fired = managers.iter().enumerate().map(|(m, am)| {
        let http = http.clone();
        let alerts: Vec<Value> = (0..5).map(|k| alert(m * 5 + k)).collect();
        async move { am.fire(&http, Value::Array(alerts)).await }
    });
    futures::future::join_all(fired).await;
}

/// logs joins the replicas' logs.
fn logs(replicas: &[Replica]) -> String {
    replicas
        .iter()
        .map(Replica::log)
        .collect::<Vec<_>>()
        .join("\n")
}

/// assert_one_rr_counts_each_alert_once waits until the 15 notifications are sent and
/// counted: none failed, one per alert, one RR counting each once, nothing else written.
/// Alertmanager counts a notification when it starts sending it, and a failure (after its
/// retries) when no attempt got a 2xx.
async fn assert_one_rr_counts_each_alert_once(
    cp: &ControlPlane,
    ns: &str,
    managers: &[Alertmanager],
    running: &[Replica],
    http: &Http,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (mut sent, mut failed) = (0, 0);
        for am in managers {
            let (s, f) = am.notifications(http).await;
            sent += s;
            failed += f;
        }
        assert_eq!(failed, 0, "a notification failed:\n{}", logs(running));
        let (active, count) = rr_count(cp, ns, "cart-0").await;
        if sent >= 15 && count >= 15 {
            assert_eq!(sent, 15, "one notification per alert");
            assert_eq!((active, count), (1, 15), "one RR, every alert counted once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sent} of 15 notifications sent, {count} counted:\n{}",
            logs(running)
        );
        tokio::time::sleep(POLL).await;
    }
    let list = rrs(cp, ns).await;
    assert_eq!(list.len(), 1, "nothing else was written: {list:?}");
}

/// Load is four senders posting alerts about pod `roll-0` through the endpoints until
/// stopped, counting the acknowledged ones.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(http: &Http, endpoints: &Arc<Endpoints>, token: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let mut senders = Vec::new();
        for _ in 0..4 {
            let (http, endpoints, stop, acked, token) = (
                http.clone(),
                Arc::clone(endpoints),
                Arc::clone(&stop),
                Arc::clone(&acked),
                token.to_owned(),
            );
            senders.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if post_via_service(&http, &endpoints, &token, "roll-0").await {
                        acked.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        Load {
            stop,
            acked,
            senders,
        }
    }

    /// stop ends the senders and returns how many signals were acknowledged.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.senders {
            s.await.expect("a sender");
        }
        self.acked.load(Ordering::Relaxed)
    }
}

/// roll replaces each running replica by a new pod, ready first, and checks that signals
/// were acknowledged while each old pod went.
async fn roll(
    kubelet: &Kubelet<'_>,
    deployment: &Deployment,
    pods: &[Pod],
    running: Vec<Replica>,
    endpoints: &Endpoints,
    acked: &AtomicU64,
) -> Vec<Replica> {
    let mut replaced = Vec::new();
    for (i, old) in running.into_iter().enumerate() {
        let pod = kubelet
            .create_pod(deployment, &format!("{RELEASE}-b-{i}"))
            .await;
        let new = kubelet.run(&pod).await;
        endpoints.add(new.addr);
        let before = acked.load(Ordering::Relaxed);
        kubelet.terminate(old, &pods[i], endpoints).await;
        assert!(
            acked.load(Ordering::Relaxed) > before,
            "signals were acknowledged while pod {i} went"
        );
        replaced.push(new);
    }
    replaced
}

/// assert_the_rolled_problem_has_one_rr checks that the rolled problem has one RR counting
/// at least every acknowledged signal, and that the new pods are ready.
async fn assert_the_rolled_problem_has_one_rr(
    cp: &ControlPlane,
    ns: &str,
    acked: u64,
    replaced: &[Replica],
) {
    let (active, count) = rr_count(cp, ns, "roll-0").await;
    assert_eq!(
        active,
        1,
        "one RR for the rolled problem:\n{}",
        logs(replaced)
    );
    assert!(
        u64::try_from(count).expect("a count") >= acked,
        "{acked} signals acknowledged, {count} counted:\n{}",
        logs(replaced)
    );
    assert!(acked > 0);
    for new in replaced {
        assert_eq!(get_status(new.addr, "/readyz").await, 200, "{}", new.log());
    }
}

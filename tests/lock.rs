//! The Lease lock in isolation, against a real kube-apiserver.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use signal_gateway::{
    apicall::ApiCalls,
    error::Error,
    lock::{LeaseLock, lease_name},
    signal::Fingerprint,
};
use testenv::ControlPlane;

const NOT_CANCELLED: &(dyn Fn() -> bool + Sync) = &|| false;

fn fp(seed: &str) -> Fingerprint {
    use sha2::Digest;
    Fingerprint::parse(&hex::encode(sha2::Sha256::digest(seed.as_bytes()))).expect("64 hex")
}

fn lock(cp: &ControlPlane, ns: &str, instance: &str, duration_s: u64, wait_ms: u64) -> LeaseLock {
    LeaseLock::new(
        cp.gateway_client(),
        ns,
        instance,
        Duration::from_secs(duration_s),
        Duration::from_millis(wait_ms),
    )
}

fn calls() -> ApiCalls {
    ApiCalls::new(Duration::from_secs(5))
}

async fn read(cp: &ControlPlane, ns: &str, name: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(cp.admin_client(), ns)
        .get_opt(name)
        .await
        .expect("reading the lease")
}

#[tokio::test]
async fn acquire_when_absent_records_holder_and_duration() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.unwrap();
    let f = fp("absent");
    let g = lock(cp, ns.name(), "gw-a", 7, 0)
        .acquire(&f, &calls(), NOT_CANCELLED)
        .await
        .unwrap();
    assert!(!g.waited);
    let lease = read(cp, ns.name(), &lease_name(&f)).await.expect("a lease");
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(g.holder.as_str()));
    assert!(g.holder.starts_with("gw-a/"));
    assert_eq!(spec.lease_duration_seconds, Some(7));
    assert_eq!(spec.lease_transitions, Some(0));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
}

#[tokio::test]
async fn contention_waits_within_the_budget_then_reports_busy() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.unwrap();
    let f = fp("contention");
    // Two acquisitions in one process get distinct identities: the second never "already holds" it.
    let l = lock(cp, ns.name(), "gw-a", 30, 400);
    let first = l.acquire(&f, &calls(), NOT_CANCELLED).await.unwrap();
    let start = Instant::now();
    let second = l.acquire(&f, &calls(), NOT_CANCELLED).await;
    let waited = start.elapsed();
    assert!(matches!(second, Err(Error::LockBusy { .. })), "{second:?}");
    assert!(
        waited >= Duration::from_millis(400),
        "gave up early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "overran the budget: {waited:?}"
    );
    let holder = read(cp, ns.name(), &first.name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some(first.holder.as_str()));
}

#[tokio::test]
async fn waiting_honours_cancellation() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.unwrap();
    let f = fp("cancel");
    let l = lock(cp, ns.name(), "gw-a", 30, 20_000);
    let _held = l.acquire(&f, &calls(), NOT_CANCELLED).await.unwrap();
    let start = Instant::now();
    let cancel_at = start + Duration::from_millis(300);
    let cancelled = move || Instant::now() >= cancel_at;
    let r = l.acquire(&f, &calls(), &cancelled).await;
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_holder_cannot_release_it() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.unwrap();
    let f = fp("takeover");
    let a = lock(cp, ns.name(), "gw-a", 1, 0);
    let b = lock(cp, ns.name(), "gw-b", 1, 10_000);
    let held_by_a = a.acquire(&f, &calls(), NOT_CANCELLED).await.unwrap();
    // a "crashes": it never releases. b waits for expiry on the server's clock.
    let start = Instant::now();
    let held_by_b = b.acquire(&f, &calls(), NOT_CANCELLED).await.unwrap();
    assert!(held_by_b.waited);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "took over a live lease after {:?}",
        start.elapsed()
    );
    let spec = read(cp, ns.name(), &held_by_b.name)
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(held_by_b.holder.as_str())
    );
    assert_eq!(spec.lease_transitions, Some(1));

    // a wakes up and releases: b's lease must survive.
    a.release(&held_by_a, &calls()).await.unwrap();
    let spec = read(cp, ns.name(), &held_by_b.name)
        .await
        .expect("b's lease survives")
        .spec
        .unwrap();
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(held_by_b.holder.as_str())
    );

    // b releases: gone; releasing again (not found) is harmless.
    b.release(&held_by_b, &calls()).await.unwrap();
    assert!(read(cp, ns.name(), &held_by_b.name).await.is_none());
    b.release(&held_by_b, &calls()).await.unwrap();
}

#[tokio::test]
async fn a_fresh_takeover_is_not_stolen_again_at_once() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.unwrap();
    let f = fp("fresh-takeover");
    let a = lock(cp, ns.name(), "gw-a", 2, 0);
    let _held_by_a = a.acquire(&f, &calls(), NOT_CANCELLED).await.unwrap();
    let b = lock(cp, ns.name(), "gw-b", 2, 10_000);
    let held_by_b = b.acquire(&f, &calls(), NOT_CANCELLED).await.unwrap();
    // The takeover is a server-side write: its age restarts at zero.
    let c = lock(cp, ns.name(), "gw-c", 2, 300);
    let r = c.acquire(&f, &calls(), NOT_CANCELLED).await;
    assert!(
        matches!(r, Err(Error::LockBusy { .. })),
        "stole a fresh takeover: {r:?}"
    );
    let spec = read(cp, ns.name(), &held_by_b.name)
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(held_by_b.holder.as_str())
    );
}

#[tokio::test]
async fn many_racers_one_winner_per_round() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.unwrap();
    let f = fp("race");
    for round in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..12 {
            let l = lock(cp, ns.name(), &format!("gw-{i}"), 30, 0);
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                (l.clone(), l.acquire(&f, &calls(), NOT_CANCELLED).await)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (l, r) = t.await.unwrap();
            match r {
                Ok(g) => winners.push((l, g)),
                Err(Error::LockBusy { .. }) => {}
                Err(e) => panic!("round {round}: unexpected {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let (l, g) = winners.pop().unwrap();
        l.release(&g, &calls()).await.unwrap();
    }
}

#[tokio::test]
async fn sweep_removes_only_expired_leases() {
    let cp = testenv::shared();
    let ns = cp.new_namespace().await.unwrap();
    let dead = lock(cp, ns.name(), "gw-a", 1, 0)
        .acquire(&fp("dead"), &calls(), NOT_CANCELLED)
        .await
        .unwrap();
    let live = lock(cp, ns.name(), "gw-b", 60, 0)
        .acquire(&fp("live"), &calls(), NOT_CANCELLED)
        .await
        .unwrap();
    let sweeper = lock(cp, ns.name(), "gw-c", 1, 0);
    assert_eq!(
        sweeper.sweep(&calls()).await.unwrap(),
        0,
        "nothing has expired yet"
    );
    // Expiry is judged on the API server's clock: poll the sweep, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let removed = sweeper.sweep(&calls()).await.unwrap();
        if removed > 0 {
            assert_eq!(removed, 1);
            break;
        }
        assert!(Instant::now() < deadline, "the 1 s lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(read(cp, ns.name(), &dead.name).await.is_none());
    assert!(read(cp, ns.name(), &live.name).await.is_some());
}

#[tokio::test]
async fn api_errors_surface_as_transient() {
    let cp = ControlPlane::start()
        .await
        .expect("a private control plane");
    let ns = cp.new_namespace().await.unwrap();
    let l = lock(&cp, ns.name(), "gw-a", 30, 1000);
    cp.stop_apiserver();
    let r = l.acquire(&fp("down"), &calls(), NOT_CANCELLED).await;
    assert!(matches!(r, Err(Error::Transient { .. })), "{r:?}");
    cp.start_apiserver().await.unwrap();
    let g = l
        .acquire(&fp("down"), &calls(), NOT_CANCELLED)
        .await
        .expect("works again after restart");
    l.release(&g, &calls()).await.unwrap();
}

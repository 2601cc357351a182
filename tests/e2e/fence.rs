//! The fence record and the protocol around it, against the real API server: claims and
//! releases, waiting, takeover, the sweep; then the holes the record closes, each shown
//! deterministically with the `before-create` pause, and the request budget of the hot path.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use axum::Router;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams},
};
use serde_json::{Value, json};
use signal_gateway::{
    crd::RemediationRequest,
    k8s::{
        ApiCalls, Bid, Claimed, GENERATION, MANAGED_BY, REMEDIATION_REQUEST, RR_NAMESPACE, Records,
        View, lease_name, sweep,
    },
    pipeline::rr_name,
};
use testenv::ControlPlane;

use crate::support::{firing, fp_of, in_process, plane, post, private_plane};

const NOT_CANCELLED: &(dyn Fn() -> bool + Sync) = &|| false;

fn calls() -> ApiCalls {
    ApiCalls::new(Duration::from_secs(5))
}

fn records(cp: &ControlPlane, ns: &str, instance: &str, lease_s: u64, wait_ms: u64) -> Records {
    Records::new(
        cp.gateway_client(),
        ns,
        ns,
        instance,
        Duration::from_secs(lease_s),
        Duration::from_millis(wait_ms),
        true,
    )
}

/// records_apart is a record client with its records in `locks` and its RRs in `rr_ns`,
/// a 30 s lease, and locking on or off.
fn records_apart(
    cp: &ControlPlane,
    locks: &str,
    rr_ns: &str,
    instance: &str,
    wait_ms: u64,
    locking: bool,
) -> Records {
    Records::new(
        cp.gateway_client(),
        locks,
        rr_ns,
        instance,
        Duration::from_secs(30),
        Duration::from_millis(wait_ms),
        locking,
    )
}

async fn lease(cp: &ControlPlane, ns: &str, fp: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(cp.admin_client(), ns)
        .get_opt(&lease_name(fp))
        .await
        .expect("reading the lease")
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

fn annotation(lease: &Lease, key: &str) -> Option<String> {
    lease.metadata.annotations.as_ref()?.get(key).cloned()
}

async fn won(r: &Records, fp: &str, view: &View, generation: u64) -> signal_gateway::k8s::Claim {
    match r
        .claim(
            fp,
            view,
            Bid::new(generation, &rr_name(fp, generation)),
            NOT_CANCELLED,
            &calls(),
        )
        .await
        .expect("claiming")
    {
        Claimed::Won(claim) => claim,
        other => panic!("expected to win the claim, got {other:?}"),
    }
}

#[tokio::test]
async fn a_claim_writes_generation_and_name_and_its_release_keeps_them() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let fp = fp_of("claim");
    let r = records(cp, ns.name(), "gw-a", 7, 0);
    let absent = r.read(&fp, &calls()).await.unwrap();
    assert_eq!(absent, View::default(), "no record yet");

    let claim = won(&r, &fp, &absent, 1).await;
    let l = lease(cp, ns.name(), &fp).await.expect("the record exists");
    let held_by = holder(&l).expect("held after the claim");
    assert!(held_by.starts_with("gw-a/"), "{held_by}");
    assert_eq!(annotation(&l, GENERATION).as_deref(), Some("1"));
    assert_eq!(annotation(&l, REMEDIATION_REQUEST), Some(rr_name(&fp, 1)));
    assert_eq!(
        l.spec.as_ref().and_then(|s| s.lease_duration_seconds),
        Some(7)
    );

    let released = r
        .release(&claim, &calls())
        .await
        .unwrap()
        .expect("still ours");
    assert!(!released.held());
    let l = lease(cp, ns.name(), &fp).await.expect("the record is kept");
    assert_eq!(holder(&l), None, "release clears the holder");
    assert_eq!(annotation(&l, GENERATION).as_deref(), Some("1"));
    assert_eq!(released.generation, 1);
    assert_eq!(released.rr, Some(rr_name(&fp, 1)));

    // The next claim starts from the released view, without reading again.
    let next = won(&r, &fp, &released, 2).await;
    assert_eq!(next.generation, 2);
    r.release(&next, &calls()).await.unwrap();
    // A claim from a view that is no longer current loses, and reports the current record.
    match r
        .claim(
            &fp,
            &released,
            Bid::new(3, &rr_name(&fp, 3)),
            NOT_CANCELLED,
            &calls(),
        )
        .await
        .unwrap()
    {
        Claimed::Changed(fresh) => assert_eq!(fresh.generation, 2),
        other => panic!("a stale view won a claim: {other:?}"),
    }
}

#[tokio::test]
async fn a_held_record_makes_others_wait_within_the_budget_and_honours_cancellation() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let fp = fp_of("contention");
    let r = records(cp, ns.name(), "gw-a", 30, 400);
    let first = won(&r, &fp, &View::default(), 1).await;

    // One process, two claims: the second never counts as "already ours".
    let start = Instant::now();
    let second = r
        .claim(
            &fp,
            &View::default(),
            Bid::new(1, &rr_name(&fp, 1)),
            NOT_CANCELLED,
            &calls(),
        )
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(matches!(second, Claimed::Busy { .. }), "{second:?}");
    assert!(
        waited >= Duration::from_millis(400),
        "gave up early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "overran the budget: {waited:?}"
    );

    let patient = records(cp, ns.name(), "gw-b", 30, 20_000);
    let cancel_at = Instant::now() + Duration::from_millis(300);
    let cancelled = move || Instant::now() >= cancel_at;
    let view = patient.read(&fp, &calls()).await.unwrap();
    assert!(view.held());
    let r2 = patient
        .claim(
            &fp,
            &view,
            Bid::new(2, &rr_name(&fp, 2)),
            &cancelled,
            &calls(),
        )
        .await
        .unwrap();
    assert!(matches!(r2, Claimed::Cancelled), "{r2:?}");
    assert!(cancel_at.elapsed() < Duration::from_secs(3));

    let l = lease(cp, ns.name(), &fp).await.unwrap();
    assert_eq!(holder(&l).as_deref(), first.holder());
}

/// A claim whose RR exists is over without a write: a writer waiting on the holder stops
/// when the RR appears, and a writer that read the RR terminal claims over the holder's
/// unexpired lease at once. Without that read the hold still blocks.
#[tokio::test]
async fn a_hold_ends_without_a_write_once_its_rr_exists() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let fp = fp_of("settled");
    let a = paused_gateway(cp, ns.name(), &[]).await;
    let a_app = a.app.clone();
    let from_a = tokio::spawn(async move { post(&a_app, &firing("settled")).await });
    await_record(cp, ns.name(), &fp, claimed(1)).await;
    // A holds generation 1 and is frozen before its create; B waits on it.
    let b = records(cp, ns.name(), "gw-b", 30, 20_000);
    let view = b.read(&fp, &calls()).await.unwrap();
    assert!(view.held(), "A holds the record while it creates");
    let start = Instant::now();
    let waiting = {
        let (b, fp) = (b.clone(), fp.clone());
        tokio::spawn(async move {
            let name = rr_name(&fp, 1);
            b.claim(&fp, &view, Bid::new(1, &name), NOT_CANCELLED, &calls())
                .await
        })
    };
    std::fs::write(&a.resume, b"").expect("resuming A");
    let (status, body) = from_a.await.expect("A's request");
    assert_eq!(status, 201, "{body}");
    let a_holder = holder(&lease(cp, ns.name(), &fp).await.unwrap());
    assert!(
        a_holder
            .as_deref()
            .is_some_and(|h| h.starts_with("paused/")),
        "A's hold is not released: {a_holder:?}"
    );
    match waiting.await.expect("B's claim").expect("claiming") {
        Claimed::Changed(fresh) => assert_eq!(fresh.rr, Some(rr_name(&fp, 1))),
        other => panic!("B must stop waiting and decide again, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "B waited out its budget instead of seeing the RR: {waited:?}"
    );

    // rr-1 completes. B read it terminal: it claims generation 2 over A's unexpired hold.
    complete(cp, ns.name(), &rr_name(&fp, 1)).await;
    let view = b.read(&fp, &calls()).await.unwrap();
    assert!(view.held(), "A's lease is still live");
    let by_b = match b
        .claim(
            &fp,
            &view,
            Bid {
                settled: true,
                ..Bid::new(2, &rr_name(&fp, 2))
            },
            NOT_CANCELLED,
            &calls(),
        )
        .await
        .unwrap()
    {
        Claimed::Won(claim) => claim,
        other => panic!("a settled claim must win at once, got {other:?}"),
    };
    let l = lease(cp, ns.name(), &fp).await.unwrap();
    assert_eq!(holder(&l).as_deref(), by_b.holder());
    assert_eq!(annotation(&l, GENERATION).as_deref(), Some("2"));
    // rr-2 does not exist yet: a writer that has not seen it waits on B, within its budget.
    let c = records(cp, ns.name(), "gw-c", 30, 300);
    let view = c.read(&fp, &calls()).await.unwrap();
    let busy = c
        .claim(
            &fp,
            &view,
            Bid::new(2, &rr_name(&fp, 2)),
            NOT_CANCELLED,
            &calls(),
        )
        .await
        .unwrap();
    assert!(matches!(busy, Claimed::Busy { .. }), "{busy:?}");
}

/// With the records in a namespace of their own, a writer waiting on a holder reads the
/// holder's RR where RRs live, and stops waiting once it exists instead of sitting out its
/// whole wait budget.
#[tokio::test]
async fn a_waiter_sees_the_holders_rr_when_the_records_live_apart() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let locks = cp.new_namespace().await.unwrap();
    let fp = fp_of("split");
    let a = paused_gateway(cp, ns.name(), &[("GATEWAY_LOCK_NAMESPACE", locks.name())]).await;
    let a_app = a.app.clone();
    let from_a = tokio::spawn(async move { post(&a_app, &firing("split")).await });
    await_record(cp, locks.name(), &fp, claimed(1)).await;
    let b = records_apart(cp, locks.name(), ns.name(), "gw-b", 20_000, true);
    let view = b.read(&fp, &calls()).await.unwrap();
    assert!(view.held(), "A holds the record while it creates");
    let waiting = {
        let fp = fp.clone();
        tokio::spawn(async move {
            b.claim(
                &fp,
                &view,
                Bid::new(1, &rr_name(&fp, 1)),
                NOT_CANCELLED,
                &calls(),
            )
            .await
        })
    };
    std::fs::write(&a.resume, b"").expect("resuming A");
    assert_eq!(from_a.await.expect("A's request").0, 201);
    match waiting.await.expect("B's claim").expect("claiming") {
        Claimed::Changed(fresh) => assert_eq!(fresh.rr, Some(rr_name(&fp, 1))),
        other => panic!("B must see A's RR in the RR namespace and decide again, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expired_holder_is_taken_over_and_its_late_release_changes_nothing() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let fp = fp_of("takeover");
    let a = records(cp, ns.name(), "gw-a", 1, 0);
    let b = records(cp, ns.name(), "gw-b", 1, 10_000);
    let by_a = won(&a, &fp, &View::default(), 1).await;

    // a "crashes" holding it; b waits for expiry on the server's clock, then sees the
    // record free of a live holder and decides again from it.
    let start = Instant::now();
    let view = b.read(&fp, &calls()).await.unwrap();
    let fresh = match b
        .claim(
            &fp,
            &view,
            Bid::new(1, &rr_name(&fp, 1)),
            NOT_CANCELLED,
            &calls(),
        )
        .await
        .unwrap()
    {
        Claimed::Changed(fresh) => fresh,
        other => panic!("expected to wait and then decide again, got {other:?}"),
    };
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "took over a live lease after {:?}",
        start.elapsed()
    );
    assert!(!fresh.held());
    let by_b = won(&b, &fp, &fresh, 1).await;
    let l = lease(cp, ns.name(), &fp).await.unwrap();
    let b_holder = holder(&l).expect("held by b");
    assert!(b_holder.starts_with("gw-b/"), "{b_holder}");
    assert_eq!(l.spec.as_ref().and_then(|s| s.lease_transitions), Some(1));

    // a wakes up and releases: b's claim must survive.
    assert_eq!(a.release(&by_a, &calls()).await.unwrap(), None);
    let l = lease(cp, ns.name(), &fp).await.unwrap();
    assert_eq!(holder(&l).as_deref(), Some(b_holder.as_str()));
    b.release(&by_b, &calls()).await.unwrap();
    assert_eq!(holder(&lease(cp, ns.name(), &fp).await.unwrap()), None);
}

#[tokio::test]
async fn racing_claims_from_one_view_have_exactly_one_winner() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let fp = fp_of("race");
    let mut view = View::default();
    for round in 1..=4u64 {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let r = records(cp, ns.name(), &format!("gw-{i}"), 30, 0);
            let (fp, view) = (fp.clone(), view.clone());
            tasks.push(tokio::spawn(async move {
                let claimed = r
                    .claim(
                        &fp,
                        &view,
                        Bid::new(round, &rr_name(&fp, round)),
                        NOT_CANCELLED,
                        &calls(),
                    )
                    .await
                    .expect("claiming");
                (r, claimed)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (r, Claimed::Won(c)) => winners.push((r, c)),
                (_, Claimed::Busy { .. } | Claimed::Changed(_)) => {}
                (_, Claimed::Cancelled) => panic!("nothing was cancelled"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let (r, c) = winners.pop().unwrap();
        view = r.release(&c, &calls()).await.unwrap().expect("released");
        assert_eq!(view.generation, round);
    }
}

#[tokio::test]
async fn the_sweep_deletes_only_records_that_fence_nothing() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let r = records(cp, ns.name(), "gw-a", 30, 0);
    // A five-second lease: the gateway's holds lapse soon after its RRs exist.
    let short = [
        ("GATEWAY_LOCK_DURATION_SECONDS", "5"),
        ("GATEWAY_API_TIMEOUT_MS", "4000"),
    ];
    let app = gateway(cp, ns.name(), &short).await;
    // A record whose RR exists, a record whose RR is gone (its hold lapsed), and a held one.
    let kept = fp_of("kept");
    let (status, body) = post(&app, &firing("kept")).await;
    assert_eq!(status, 201, "{body}");
    let gone = fp_of("gone");
    assert_eq!(post(&app, &firing("gone")).await.0, 201);
    rr_api(cp, ns.name())
        .delete(&rr_name(&gone, 1), &DeleteParams::default())
        .await
        .unwrap();
    let held = fp_of("held");
    let _claim = won(&r, &held, &View::default(), 1).await;
    // Until the gateway's hold lapses, the record of the deleted RR is left alone: its
    // holder could still be about to create it.
    let rrs = signal_gateway::k8s::RemediationRequests::new(cp.gateway_client(), ns.name());
    assert_eq!(sweep(&r, &rrs, Duration::ZERO, &calls()).await.unwrap(), 0);
    await_expiry(&r, &gone).await;

    let young = sweep(&r, &rrs, Duration::from_secs(3600), &calls())
        .await
        .unwrap();
    assert_eq!(young, 0, "nothing is old enough yet");
    let removed = sweep(&r, &rrs, Duration::ZERO, &calls()).await.unwrap();
    assert_eq!(removed, 1);
    assert!(lease(cp, ns.name(), &gone).await.is_none());
    assert!(lease(cp, ns.name(), &kept).await.is_some());
    assert!(lease(cp, ns.name(), &held).await.is_some());
    // The fingerprint starts again at generation 1 and works as before.
    assert_eq!(post(&app, &firing("gone")).await.0, 201);
    assert_eq!(
        active(cp, ns.name(), &gone).await,
        vec![(rr_name(&gone, 1), 1)]
    );
}

/// await_expiry polls the record of `fp` until its holder's lease has expired on the API
/// server's clock: expiry is the passing of time, not an event to watch for.
async fn await_expiry(r: &Records, fp: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while r
        .read(fp, &calls())
        .await
        .expect("reading the record")
        .held()
    {
        assert!(Instant::now() < deadline, "the lease of {fp} never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// The in-process gateway and its helpers.

async fn gateway(cp: &ControlPlane, ns: &str, extra: &[(&str, &str)]) -> Router {
    in_process(cp, ns, extra).await
}

fn rr_api(cp: &ControlPlane, ns: &str) -> Api<RemediationRequest> {
    Api::namespaced(cp.admin_client(), ns)
}

/// active lists the active RRs of a fingerprint as (name, occurrenceCount), by name.
async fn active(cp: &ControlPlane, ns: &str, fp: &str) -> Vec<(String, i64)> {
    let lp = ListParams::default().fields(&format!("spec.signalFingerprint={fp}"));
    let mut found: Vec<(String, i64)> = rr_api(cp, ns)
        .list(&lp)
        .await
        .expect("listing RRs")
        .items
        .into_iter()
        .filter(RemediationRequest::is_active)
        .map(|rr| {
            (
                rr.metadata.name.clone().unwrap_or_default(),
                rr.occurrence_count(),
            )
        })
        .collect();
    found.sort();
    found
}

async fn complete(cp: &ControlPlane, ns: &str, name: &str) {
    rr_api(cp, ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"overallPhase": "Completed"}})),
        )
        .await
        .expect("completing the RR");
}

/// Paused is a gateway that will freeze its first create at `before-create`.
struct Paused {
    app: Router,
    resume: PathBuf,
    _dir: tempfile::TempDir,
}

async fn paused_gateway(cp: &ControlPlane, ns: &str, extra: &[(&str, &str)]) -> Paused {
    let dir = tempfile::tempdir().expect("a temp dir");
    let resume = dir.path().join("resume");
    let resume_s = resume.to_string_lossy().into_owned();
    let mut vars = vec![
        ("GATEWAY_TEST_PAUSE_AT", "before-create"),
        ("GATEWAY_TEST_RESUME_FILE", resume_s.as_str()),
        ("POD_NAME", "paused"),
    ];
    vars.extend_from_slice(extra);
    let app = gateway(cp, ns, &vars).await;
    Paused {
        app,
        resume,
        _dir: dir,
    }
}

/// await_record waits, on a watch, until the record of `fp` satisfies `ready`.
async fn await_record(cp: &ControlPlane, ns: &str, fp: &str, ready: impl Fn(&Lease) -> bool) {
    let api = Api::<Lease>::namespaced(cp.admin_client(), ns);
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={}", lease_name(fp)))
        .timeout(60);
    let mut events = api
        .watch(&wp, "0")
        .await
        .expect("watching the record")
        .boxed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline, events.try_next())
            .await
            .expect("the record never reached the awaited state")
            .expect("the watch failed")
            .expect("the watch ended");
        if let WatchEvent::Added(l) | WatchEvent::Modified(l) = next
            && ready(&l)
        {
            return;
        }
    }
}

fn claimed(generation: u64) -> impl Fn(&Lease) -> bool {
    move |l| annotation(l, GENERATION) == Some(generation.to_string())
}

/// retention_trace runs the trace: rr-1 is Completed; A claims generation 2 and
/// freezes before its create; A's lease expires; retention deletes rr-1; B signals; A
/// resumes. It returns the active RRs and the two answers.
async fn retention_trace(fencing: bool) -> (Vec<(String, i64)>, u16, u16) {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let fp = fp_of("web-0");
    let mut extra = vec![
        ("GATEWAY_LOCK_DURATION_SECONDS", "3"),
        ("GATEWAY_API_TIMEOUT_MS", "2000"),
    ];
    if !fencing {
        extra.push(("GATEWAY_UNSAFE_DISABLE_FENCING", "true"));
    }
    let c = gateway(cp, ns.name(), &extra).await;
    let (status, body) = post(&c, &firing("web-0")).await;
    assert_eq!(status, 201, "{body}");
    let first = body["results"][0]["remediationRequest"]
        .as_str()
        .and_then(|r| r.split('/').nth(1))
        .expect("an RR name")
        .to_owned();
    complete(cp, ns.name(), &first).await;

    let a = paused_gateway(cp, ns.name(), &extra).await;
    let a_app = a.app.clone();
    let from_a = tokio::spawn(async move { post(&a_app, &firing("web-0")).await });
    await_record(cp, ns.name(), &fp, claimed(2)).await;
    // A now holds generation 2 and is frozen before its create. Retention deletes rr-1.
    rr_api(cp, ns.name())
        .delete(&first, &DeleteParams::default())
        .await
        .expect("deleting the completed RR");
    let b = gateway(
        cp,
        ns.name(),
        &[extra.as_slice(), &[("POD_NAME", "b")]].concat(),
    )
    .await;
    let (b_status, b_body) = post(&b, &firing("web-0")).await;
    std::fs::write(&a.resume, b"").expect("resuming A");
    let (a_status, a_body) = from_a.await.expect("A's request");
    assert!(
        (200..300).contains(&b_status) && (200..300).contains(&a_status),
        "A: {a_status} {a_body}\nB: {b_status} {b_body}"
    );
    (active(cp, ns.name(), &fp).await, a_status, b_status)
}

#[tokio::test]
async fn retention_during_a_paused_claim_cannot_make_a_second_active_rr() {
    let (active, a, b) = retention_trace(true).await;
    assert_eq!(active.len(), 1, "two active RRs: {active:?}");
    assert!(active[0].0.ends_with("-2"), "{active:?}");
    assert_eq!(active[0].1, 2, "both signals are counted: {active:?}");
    assert_eq!(
        (b, a),
        (201, 202),
        "B created generation 2, A collided and counted"
    );
}

#[tokio::test]
async fn the_retention_trace_finds_the_duplicate_when_fencing_is_off() {
    let (active, _, _) = retention_trace(false).await;
    assert_eq!(
        active.len(),
        2,
        "without the fence the trace must produce two active RRs: {active:?}"
    );
}

/// paused_claimant freezes A right after its claim, before its create, with a live
/// lease; B, with a short wait budget, signals; then A resumes. It returns the active
/// RRs and B's first answer.
async fn paused_claimant(locking: bool, fencing: bool) -> (Vec<(String, i64)>, u16) {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let fp = fp_of("web-1");
    let mut extra = vec![
        (
            "GATEWAY_ENABLE_DISTRIBUTED_LOCKING",
            if locking { "true" } else { "false" },
        ),
        ("GATEWAY_LOCK_WAIT_MS", "1500"),
    ];
    if !fencing {
        extra.push(("GATEWAY_UNSAFE_DISABLE_FENCING", "true"));
    }
    let a = paused_gateway(cp, ns.name(), &extra).await;
    let a_app = a.app.clone();
    let from_a = tokio::spawn(async move { post(&a_app, &firing("web-1")).await });
    await_record(cp, ns.name(), &fp, claimed(1)).await;
    let b = gateway(
        cp,
        ns.name(),
        &[extra.as_slice(), &[("POD_NAME", "b")]].concat(),
    )
    .await;
    let (b_status, _) = post(&b, &firing("web-1")).await;
    std::fs::write(&a.resume, b"").expect("resuming A");
    let (a_status, a_body) = from_a.await.expect("A's request");
    assert!((200..300).contains(&a_status), "A: {a_status} {a_body}");
    if b_status == 503 {
        let (again, body) = post(&b, &firing("web-1")).await;
        assert_eq!(again, 202, "B's retry counts on A's RR: {body}");
    }
    (active(cp, ns.name(), &fp).await, b_status)
}

#[tokio::test]
async fn the_lock_alone_covers_the_check_when_fencing_is_off() {
    let (active, b) = paused_claimant(true, false).await;
    assert_eq!(b, 503, "B must not create while A holds the lease");
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0].1, 2, "{active:?}");
}

#[tokio::test]
async fn the_fence_alone_holds_when_locking_is_off() {
    let (active, b) = paused_claimant(false, true).await;
    assert_eq!(b, 201, "without the lock B creates at once");
    assert_eq!(active.len(), 1, "A's create collides with B's: {active:?}");
    assert_eq!(active[0].1, 2, "{active:?}");
}

#[tokio::test]
async fn with_lock_and_fence_off_the_paused_claimant_duplicates() {
    let (active, _) = paused_claimant(false, false).await;
    assert_eq!(
        active.len(),
        2,
        "the test must see the duplicate: {active:?}"
    );
}

#[tokio::test]
async fn a_stale_view_after_deletion_costs_a_retry_not_a_duplicate() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let fp = fp_of("stale");
    let a = gateway(cp, ns.name(), &[("POD_NAME", "a")]).await;
    let b = gateway(cp, ns.name(), &[("POD_NAME", "b")]).await;
    let (status, body) = post(&a, &firing("stale")).await;
    assert_eq!(status, 201, "{body}");
    // A now remembers generation 1. Behind its back: rr-1 completes, B opens rr-2, and
    // retention deletes rr-1.
    complete(cp, ns.name(), &rr_name(&fp, 1)).await;
    assert_eq!(post(&b, &firing("stale")).await.0, 201);
    rr_api(cp, ns.name())
        .delete(&rr_name(&fp, 1), &DeleteParams::default())
        .await
        .unwrap();
    let (status, body) = post(&a, &firing("stale")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["results"][0]["remediationRequest"],
        format!("{}/{}", ns.name(), rr_name(&fp, 2))
    );
    assert_eq!(active(cp, ns.name(), &fp).await, vec![(rr_name(&fp, 2), 2)]);
}

/// requests_of reads the API server's `apiserver_request_total`, summed by
/// "VERB resource[/subresource]", for the resources the gateway reads or writes.
async fn requests_of(cp: &ControlPlane) -> std::collections::BTreeMap<String, f64> {
    let samples = testenv::prometheus::apiserver(&cp.admin_client())
        .await
        .expect("scraping the API server");
    let gateways = [
        "remediationrequests",
        "leases",
        "pods",
        "replicasets",
        "jobs",
    ];
    let mut counts = std::collections::BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "apiserver_request_total" && gateways.contains(&s.label("resource")))
    {
        *counts.entry(s.request()).or_insert(0.0) += s.value;
    }
    counts
}

/// cost runs `step` and returns the requests the API server counted meanwhile: the gateway
/// sends nothing after its answer. The API server renews its own identity Lease with PUT,
/// a verb the gateway never uses; it is left out.
pub(crate) async fn cost<F: std::future::Future<Output = (u16, Value)>>(
    cp: &ControlPlane,
    step: F,
) -> std::collections::BTreeMap<String, f64> {
    let before = requests_of(cp).await;
    let (status, body) = step.await;
    assert!((200..300).contains(&status), "{status} {body}");
    let after = requests_of(cp).await;
    after
        .into_iter()
        .filter(|(k, _)| k != "PUT leases")
        .filter_map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0.0);
            (d > 0.0).then_some((k, d))
        })
        .collect()
}

pub(crate) fn breakdown(pairs: &[(&str, f64)]) -> std::collections::BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test]
async fn the_hot_path_lists_nothing_and_keeps_to_its_request_budget() {
    // A private API server: the counters must see this test's requests only.
    let cp = private_plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let (ns, fp) = (ns.name(), fp_of("hot"));
    let body = firing("hot");
    let app = gateway(&cp, ns, &[]).await;
    // A fresh API server counts its first LIST of a resource twice (it was measured: one
    // request from the gateway, two in `apiserver_request_total`); list once beforehand.
    rr_api(&cp, ns)
        .list(&ListParams::default())
        .await
        .expect("listing RRs");
    let new = cost(&cp, post(&app, &body)).await;
    let dup = cost(&cp, post(&app, &body)).await;
    complete(&cp, ns, &rr_name(&fp, 1)).await;
    let renew = cost(&cp, post(&app, &body)).await;
    let cold = gateway(&cp, ns, &[("POD_NAME", "cold")]).await;
    let cold_dup = cost(&cp, post(&cold, &body)).await;
    let new_rr = breakdown(&[
        ("GET leases", 1.0),
        ("LIST remediationrequests", 1.0),
        ("POST leases", 1.0),
        ("POST remediationrequests", 1.0),
        ("PATCH remediationrequests/status", 1.0),
    ]);
    assert_eq!(
        new, new_rr,
        "a new fingerprint: read the record, find it missing and look for the fingerprint's RRs once, create it claimed, create the RR, count; no release"
    );
    assert_eq!(
        dup,
        breakdown(&[
            ("GET remediationrequests", 1.0),
            ("PATCH remediationrequests/status", 1.0),
        ]),
        "a duplicate: read the RR, count"
    );
    assert_eq!(
        renew,
        breakdown(&[
            ("GET remediationrequests", 1.0),
            ("PATCH leases", 1.0),
            ("POST remediationrequests", 1.0),
            ("PATCH remediationrequests/status", 1.0),
        ]),
        "after a terminal RR: read it, claim over the unreleased hold, create, count"
    );
    assert_eq!(
        cold_dup,
        breakdown(&[
            ("GET leases", 1.0),
            ("GET remediationrequests", 1.0),
            ("PATCH remediationrequests/status", 1.0),
        ]),
        "a duplicate in a process new to the fingerprint also reads the record"
    );
    let unlocked = gateway(&cp, ns, &[("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", "false")]).await;
    let fresh = fp_of("hot-unlocked");
    let new_unlocked = cost(&cp, post(&unlocked, &firing("hot-unlocked"))).await;
    assert_eq!(
        new_unlocked, new_rr,
        "the lock adds no request: a new fingerprint without locking costs the same"
    );
    let lease = lease(&cp, ns, &fresh).await.expect("the record");
    assert_eq!(holder(&lease), None, "without locking nothing is held");
}

/// A lock namespace that does not exist is a configuration error named in the answer
/// (500), not a record that "changed" on every attempt (503 after eight rounds). The admin
/// identity is used so that the API server answers 404 rather than 403.
#[tokio::test]
async fn a_missing_lock_namespace_is_named_in_a_500() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let config = signal_gateway::config::Config::from_vars([
        ("GATEWAY_NAMESPACE", ns.name()),
        ("GATEWAY_LOCK_NAMESPACE", "sg-no-such-namespace"),
        ("GATEWAY_AUTH", "none"),
        ("GATEWAY_OWNER_RESOLUTION", "false"),
        ("POD_NAME", "missing-ns"),
    ])
    .expect("a valid configuration");
    let app = signal_gateway::app::assemble(&config, cp.admin_client())
        .await
        .router();
    let (status, body) = post(&app, &firing("missing-ns")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("sg-no-such-namespace")),
        "{body}"
    );
}

/// An orchestrator that ends a new RR at once (here `Skipped` before the gateway's first
/// status write) gets one RR per request, counted with the signals that opened it: the
/// batch counts on the RR it created whatever its phase, and never claims a further
/// generation. (Before, the status write found it terminal and the batch opened rr-2.)
#[tokio::test]
async fn an_rr_ended_at_once_counts_its_batch_and_no_second_is_opened() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let fp = fp_of("skipped-at-once");
    let a = paused_gateway(cp, ns.name(), &[("GATEWAY_TEST_PAUSE_AT", "after-create")]).await;
    let app = a.app.clone();
    let answer = tokio::spawn(async move { post(&app, &firing("skipped-at-once")).await });
    let first = rr_name(&fp, 1);
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={first}"))
        .timeout(60);
    let mut events = rr_api(cp, ns.name())
        .watch(&wp, "0")
        .await
        .expect("watching the RR")
        .boxed();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(60), events.try_next())
            .await
            .expect("the RR was never created")
            .expect("the watch failed")
            .expect("the watch ended");
        if matches!(next, WatchEvent::Added(_)) {
            break;
        }
    }
    rr_api(cp, ns.name())
        .patch_status(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"overallPhase": "Skipped"}})),
        )
        .await
        .expect("the orchestrator skipping the RR");
    std::fs::write(&a.resume, b"").expect("resuming the gateway");
    let (status, body) = answer.await.expect("the request");
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["results"][0]["remediationRequest"],
        format!("{}/{first}", ns.name())
    );
    let all = rr_api(cp, ns.name())
        .list(&ListParams::default())
        .await
        .expect("listing RRs")
        .items;
    assert_eq!(all.len(), 1, "one RR per request: {all:?}");
    assert_eq!(all[0].occurrence_count(), 1, "the batch is counted on it");
    let phase = all[0]
        .status
        .as_ref()
        .and_then(|s| s.overall_phase.as_deref());
    assert_eq!(
        phase,
        Some("Skipped"),
        "the count kept the orchestrator's phase"
    );
}

/// Two releases share one lock namespace, each with its own RR namespace: one release's
/// sweep never deletes the other's records (it would find their RRs "missing" in its own
/// namespace). Release B runs in rollback mode, so its records are never held.
#[tokio::test]
async fn a_sweep_leaves_another_releases_records_alone() {
    let cp = plane().await;
    let (a_ns, b_ns, locks) = (
        cp.new_namespace().await.unwrap(),
        cp.new_namespace().await.unwrap(),
        cp.new_namespace().await.unwrap(),
    );
    let b = gateway(
        cp,
        b_ns.name(),
        &[
            ("GATEWAY_LOCK_NAMESPACE", locks.name()),
            ("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", "false"),
        ],
    )
    .await;
    assert_eq!(post(&b, &firing("shared-locks")).await.0, 201);
    let fp = fp_of("shared-locks");
    assert!(lease(cp, locks.name(), &fp).await.is_some());
    let a = records_apart(cp, locks.name(), a_ns.name(), "gw-a", 0, true);
    let a_rrs = signal_gateway::k8s::RemediationRequests::new(cp.gateway_client(), a_ns.name());
    let removed = sweep(&a, &a_rrs, Duration::ZERO, &calls()).await.unwrap();
    assert_eq!(removed, 0, "release A swept release B's record");
    assert!(lease(cp, locks.name(), &fp).await.is_some());
    // B's own sweep still judges it: its RR exists, so it stays.
    let b_records = records_apart(cp, locks.name(), b_ns.name(), "gw-b", 0, false);
    let b_rrs = signal_gateway::k8s::RemediationRequests::new(cp.gateway_client(), b_ns.name());
    assert_eq!(
        sweep(&b_records, &b_rrs, Duration::ZERO, &calls())
            .await
            .unwrap(),
        0
    );
}

/// A sweep reads the records page by page (500 a page): past the first page, every record
/// that fences nothing is still found, and a record whose RR exists still stays.
#[tokio::test]
async fn the_sweep_reads_every_page_of_records() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let r = records(cp, ns.name(), "gw-a", 30, 0);
    let app = gateway(cp, ns.name(), &[]).await;
    assert_eq!(post(&app, &firing("paged-kept")).await.0, 201);
    let leases = Api::<Lease>::namespaced(cp.admin_client(), ns.name());
    let (unused, rr_ns) = (501, ns.name().to_owned());
    futures::stream::iter(0..unused)
        .map(|i| {
            let leases = leases.clone();
            let (fp, rr_ns) = (fp_of(&format!("paged-{i}")), rr_ns.clone());
            async move {
                let record: Lease = serde_json::from_value(json!({
                    "metadata": {
                        "name": lease_name(&fp),
                        "labels": {
                            MANAGED_BY.0: MANAGED_BY.1,
                            RR_NAMESPACE: rr_ns,
                        },
                        "annotations": {
                            GENERATION: "1",
                            REMEDIATION_REQUEST: rr_name(&fp, 1),
                        },
                    },
                    "spec": {},
                }))
                .unwrap();
                leases
                    .create(&Default::default(), &record)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("creating the unused records");
    let rrs = signal_gateway::k8s::RemediationRequests::new(cp.gateway_client(), ns.name());
    let removed = sweep(&r, &rrs, Duration::ZERO, &calls()).await.unwrap();
    assert_eq!(removed, unused);
    assert!(lease(cp, ns.name(), &fp_of("paged-kept")).await.is_some());
    let left = leases
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(left, 1, "records left after the sweep");
}

/// With locking off, a claim of the generation a record already names used to send a patch
/// identical to the record: the API server wrote nothing, so a sweep that had read the
/// record could still delete it with its resourceVersion precondition, right after the
/// claim. Every claim is now a real write: the precondition of that sweep fails.
#[tokio::test]
async fn a_same_generation_claim_in_rollback_mode_is_a_real_write() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let (r, fp) = (
        records_apart(cp, ns.name(), ns.name(), "gw-a", 0, false),
        fp_of("noop-claim"),
    );
    let name = rr_name(&fp, 1);
    let first = match r
        .claim(
            &fp,
            &View::default(),
            Bid::new(1, &name),
            NOT_CANCELLED,
            &calls(),
        )
        .await
        .unwrap()
    {
        Claimed::Won(claim) => claim,
        other => panic!("the first claim must win, got {other:?}"),
    };
    drop(first);
    // What a sweep read: the record as it is now.
    let swept = lease(cp, ns.name(), &fp).await.expect("the record");
    let view = r.read(&fp, &calls()).await.unwrap();
    let again = r
        .claim(&fp, &view, Bid::new(1, &name), NOT_CANCELLED, &calls())
        .await
        .unwrap();
    assert!(matches!(again, Claimed::Won(_)), "{again:?}");
    let now = lease(cp, ns.name(), &fp).await.expect("the record");
    assert_ne!(
        now.metadata.resource_version, swept.metadata.resource_version,
        "the re-claim must change the record"
    );
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: swept.metadata.uid.clone(),
            resource_version: swept.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    let deleted = Api::<Lease>::namespaced(cp.gateway_client(), ns.name())
        .delete(&lease_name(&fp), &dp)
        .await;
    assert!(
        matches!(&deleted, Err(kube::Error::Api(s)) if s.code == 409),
        "a sweep holding the old version must not delete the re-claimed record: {deleted:?}"
    );
}

/// The lost-record trace: the record names the active rr-<fp>-3, rr-1 and rr-2 are gone
/// (retention), and the record is deleted (a person, a restore, a changed lock namespace).
/// A process that never saw the fingerprint finds no record; it must not start again at
/// generation 1 beside rr-3. It looks for the fingerprint's RRs once, counts on rr-3, and
/// the next generation after rr-3 is 4.
#[tokio::test]
async fn a_lost_record_never_opens_a_second_active_rr() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let (ns, fp) = (ns.name(), fp_of("lost-record"));
    let body = firing("lost-record");
    let app = gateway(cp, ns, &[]).await;
    for generation in 1..=3 {
        assert_eq!(post(&app, &body).await.0, 201, "generation {generation}");
        if generation < 3 {
            complete(cp, ns, &rr_name(&fp, generation)).await;
        }
    }
    for generation in 1..=2 {
        rr_api(cp, ns)
            .delete(&rr_name(&fp, generation), &DeleteParams::default())
            .await
            .expect("retention deleting an old RR");
    }
    Api::<Lease>::namespaced(cp.admin_client(), ns)
        .delete(&lease_name(&fp), &DeleteParams::default())
        .await
        .expect("deleting the record");
    let cold = gateway(cp, ns, &[("POD_NAME", "cold")]).await;
    let (status, answer) = post(&cold, &body).await;
    assert_eq!(status, 202, "counted on rr-3: {answer}");
    assert_eq!(active(cp, ns, &fp).await, vec![(rr_name(&fp, 3), 2)]);
    complete(cp, ns, &rr_name(&fp, 3)).await;
    assert_eq!(post(&cold, &body).await.0, 201);
    assert_eq!(active(cp, ns, &fp).await, vec![(rr_name(&fp, 4), 1)]);
    let record = lease(cp, ns, &fp).await.expect("the record is back");
    assert_eq!(annotation(&record, GENERATION).as_deref(), Some("4"));
}

/// A hand-edited record that names another fingerprint's RR is not trusted: the signal is
/// counted on its own fingerprint's RR, found by the writer's list, and the other RR is
/// left alone.
#[tokio::test]
async fn a_record_naming_another_fingerprints_rr_is_not_trusted() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let ns = ns.name();
    let app = gateway(cp, ns, &[]).await;
    let (a, b) = (fp_of("edited-a"), fp_of("edited-b"));
    assert_eq!(post(&app, &firing("edited-a")).await.0, 201);
    assert_eq!(post(&app, &firing("edited-b")).await.0, 201);
    Api::<Lease>::namespaced(cp.admin_client(), ns)
        .patch(
            &lease_name(&a),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {REMEDIATION_REQUEST: rr_name(&b, 1)}}}),
            ),
        )
        .await
        .expect("hand-editing the record");
    let cold = gateway(cp, ns, &[("POD_NAME", "cold")]).await;
    let (status, body) = post(&cold, &firing("edited-a")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(active(cp, ns, &a).await, vec![(rr_name(&a, 1), 2)]);
    assert_eq!(
        active(cp, ns, &b).await,
        vec![(rr_name(&b, 1), 1)],
        "B's RR untouched"
    );
}

/// An RR under a fenced name that another writer made with only kubernaut's required fields
/// (a free `signalType`, no `signalSource`, no status) is counted on, never refused.
#[tokio::test]
async fn a_foreign_rr_with_kubernauts_minimal_fields_is_counted_on() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let ns = ns.name();
    let fp = fp_of("foreign");
    let foreign: RemediationRequest = serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "RemediationRequest",
        "metadata": {"name": rr_name(&fp, 1)},
        "spec": {
            "signalFingerprint": fp, "signalName": "KubePodCrashLooping", "severity": "critical",
            "signalType": "prometheus-alert", "targetType": "kubernetes",
            "targetResource": {"kind": "Pod", "name": "foreign", "namespace": "prod"},
            "firingTime": "2026-11-27T08:14:27Z", "receivedTime": "2026-11-27T08:14:28Z",
        },
    }))
    .expect("a minimal RR");
    rr_api(cp, ns)
        .create(&Default::default(), &foreign)
        .await
        .expect("another writer creating the RR");
    let app = gateway(cp, ns, &[]).await;
    let (status, body) = post(&app, &firing("foreign")).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post(&app, &firing("foreign")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(active(cp, ns, &fp).await, vec![(rr_name(&fp, 1), 2)]);
}

/// A 403 on Leases (the gateway may not write records in its lock namespace) is the
/// gateway's misconfiguration: the whole request is a 500, never a 2xx with the alert
/// marked `failed` (which Alertmanager would never retry).
#[tokio::test]
async fn a_403_on_leases_is_a_500_not_a_failed_alert() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let locks = format!("sg-norole-{:08x}", rand::random::<u32>());
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": locks}})).expect("a namespace");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(cp.admin_client())
        .create(&Default::default(), &namespace)
        .await
        .expect("creating a namespace where the gateway holds no Role");
    let app = gateway(cp, ns.name(), &[("GATEWAY_LOCK_NAMESPACE", locks.as_str())]).await;
    let (status, body) = post(&app, &firing("no-lease-rights")).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.get("results").is_none(), "{body}");
    assert!(
        rr_api(cp, ns.name())
            .list(&ListParams::default())
            .await
            .expect("listing RRs")
            .items
            .is_empty()
    );
    Api::<k8s_openapi::api::core::v1::Namespace>::all(cp.admin_client())
        .delete(&locks, &DeleteParams::default())
        .await
        .expect("cleaning up");
}

/// A record edited back (or restored from an old backup) to a consistent but older pair,
/// generation 1 naming the deleted rr-1, while rr-3 holds the problem: a writer that finds
/// the named RR missing looks at the fingerprint's RRs before re-claiming, and counts on
/// rr-3 instead of creating rr-1 beside it.
#[tokio::test]
async fn a_record_set_back_never_opens_a_second_active_rr() {
    let cp = plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let (ns, fp) = (ns.name(), fp_of("set-back"));
    let body = firing("set-back");
    let app = gateway(cp, ns, &[("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", "false")]).await;
    for generation in 1..=3 {
        assert_eq!(post(&app, &body).await.0, 201, "generation {generation}");
        if generation < 3 {
            complete(cp, ns, &rr_name(&fp, generation)).await;
        }
    }
    rr_api(cp, ns)
        .delete(&rr_name(&fp, 1), &DeleteParams::default())
        .await
        .expect("retention deleting rr-1");
    Api::<Lease>::namespaced(cp.admin_client(), ns)
        .patch(
            &lease_name(&fp),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                GENERATION: "1", REMEDIATION_REQUEST: rr_name(&fp, 1)}}})),
        )
        .await
        .expect("setting the record back");
    let cold = gateway(
        cp,
        ns,
        &[
            ("POD_NAME", "cold"),
            ("GATEWAY_ENABLE_DISTRIBUTED_LOCKING", "false"),
        ],
    )
    .await;
    let (status, answer) = post(&cold, &body).await;
    assert_eq!(status, 202, "counted on rr-3: {answer}");
    assert_eq!(active(cp, ns, &fp).await, vec![(rr_name(&fp, 3), 2)]);
}

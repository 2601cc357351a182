//! End-to-end: several gateway processes against one real API server, with
//! crashes, pauses, skewed clocks and API server restarts.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use testenv::gateway::Gateway;

use crate::support::{
    active_of, active_per_target, firing, http, post_http, private_plane, rrs, setup, spawn,
};

#[tokio::test]
async fn a_hundred_identical_signals_over_three_instances_make_one_rr() {
    let (cp, ns) = setup().await;
    let gws: Vec<Gateway> = (0..3)
        .map(|i| spawn(cp, ns.name(), &format!("gw-{i}"), &[]))
        .collect();
    let http = http();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (http, to) = (http.clone(), gws[i % 3].addr());
        tasks.push(tokio::spawn(async move {
            post_http(&http, to, firing("storm-0")).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap().expect("the instance answered");
        assert!(status == 201 || status == 202, "{status} {body}");
        created += usize::from(status == 201);
    }
    assert_eq!(created, 1);
    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].occurrence_count(), 100);
    let (mut calls, mut signals) = (0, 0);
    for g in &gws {
        let b = g.batches(0);
        assert_eq!(b.failed_signals, 0, "{} logged a failed batch", g.name());
        calls += b.api_calls;
        signals += b.signals;
    }
    assert_eq!(signals, 100);
    eprintln!(
        "storm: {calls} API requests for {signals} signals ({:.2} per signal)",
        calls as f64 / signals as f64
    );
    assert!(
        calls < signals,
        "coalescing must bring API requests below one per signal, got {calls} for {signals}"
    );
}

#[tokio::test]
async fn fifty_fingerprints_times_twenty_make_fifty_exact_rrs() {
    let (cp, ns) = setup().await;
    let gws: Vec<Gateway> = (0..3)
        .map(|i| spawn(cp, ns.name(), &format!("gw-{i}"), &[]))
        .collect();
    let http = http();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for round in 0..20 {
        for f in 0..50 {
            let (http, to, limit) = (
                http.clone(),
                gws[(round + f) % 3].addr(),
                Arc::clone(&limit),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                post_http(&http, to, firing(&format!("pod-{f}"))).await
            }));
        }
    }
    for t in tasks {
        let (status, body) = t.await.unwrap().expect("the instance answered");
        assert!(status == 201 || status == 202, "{status} {body}");
    }
    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 50);
    for (target, rrs) in active_per_target(&list) {
        assert_eq!(rrs.len(), 1, "{target}");
        assert_eq!(rrs[0].occurrence_count(), 20, "{target}");
    }
}

/// paused_writer freezes instance A right before its RR create, lets B act,
/// then resumes A; it returns the active RRs and A's answer.
async fn paused_writer(locking: bool, fencing: bool) -> (usize, i64, Option<u16>) {
    let (cp, ns) = setup().await;
    let flags = [
        (
            "GATEWAY_ENABLE_DISTRIBUTED_LOCKING",
            if locking { "true" } else { "false" },
        ),
        (
            "GATEWAY_UNSAFE_DISABLE_FENCING",
            if fencing { "false" } else { "true" },
        ),
        ("GATEWAY_LOCK_DURATION_SECONDS", "3"),
        ("GATEWAY_API_TIMEOUT_MS", "2000"),
    ];
    let mut a_env = flags.to_vec();
    a_env.push(("GATEWAY_TEST_PAUSE_AT", "before-create"));
    let a = spawn(cp, ns.name(), "gw-a", &a_env);
    let b = spawn(cp, ns.name(), "gw-b", &flags);
    let http = http();

    let (h, to) = (http.clone(), a.addr());
    let from_a = tokio::spawn(async move { post_http(&h, to, firing("paused-0")).await });
    a.freeze().await;
    // A holds the lease (if locking) and has read "no RR": B must wait for the
    // lease to expire (3 s, on the server's clock), then create.
    let (status, body) = post_http(&http, b.addr(), firing("paused-0"))
        .await
        .expect("B answered");
    assert_eq!(status, 201, "{body}\nA: {:#?}", a.logs());
    a.thaw();
    let a_answer = from_a.await.unwrap();
    let a_status = a_answer.as_ref().map(|(s, _)| *s);
    eprintln!("A answered {a_answer:?}; A's log: {:#?}", a.logs());
    let list = rrs(cp, ns.name()).await;
    let active = active_of(&list);
    let total: i64 = active.iter().map(|rr| rr.occurrence_count()).sum();
    (active.len(), total, a_status)
}

#[tokio::test]
async fn a_writer_paused_past_lease_expiry_cannot_create_a_duplicate() {
    let (active, total, a_status) = paused_writer(true, true).await;
    assert_eq!(active, 1, "fencing must stop the stale holder");
    assert_eq!(
        a_status,
        Some(202),
        "the stale holder's signal is counted as a duplicate"
    );
    assert_eq!(total, 2);
}

#[tokio::test]
async fn the_paused_writer_test_detects_duplicates_when_protection_is_off() {
    // Lock and fencing both off: the test must see the duplicate it guards against.
    let (active, _, _) = paused_writer(false, false).await;
    assert_eq!(
        active, 2,
        "without lock and fencing the paused writer duplicates"
    );
    // The lock alone is not enough: a holder paused past expiry still duplicates.
    let (active, _, _) = paused_writer(true, false).await;
    assert_eq!(
        active, 2,
        "a lock without fencing lets a stale holder duplicate"
    );
    // Fencing alone (the rollback mode) still prevents it.
    let (active, total, _) = paused_writer(false, true).await;
    assert_eq!((active, total), (1, 2));
}

#[tokio::test]
async fn an_instance_killed_while_holding_the_lease_does_not_block_or_duplicate() {
    let (cp, ns) = setup().await;
    let flags = [
        ("GATEWAY_LOCK_DURATION_SECONDS", "3"),
        ("GATEWAY_API_TIMEOUT_MS", "2000"),
    ];
    let mut a_env = flags.to_vec();
    a_env.push(("GATEWAY_TEST_PAUSE_AT", "after-lock"));
    let mut a = spawn(cp, ns.name(), "gw-a", &a_env);
    let b = spawn(cp, ns.name(), "gw-b", &flags);
    let http = http();
    let (h, to) = (http.clone(), a.addr());
    let from_a = tokio::spawn(async move { post_http(&h, to, firing("killed-0")).await });
    a.freeze().await;
    a.kill();
    assert!(
        from_a.await.unwrap().is_none(),
        "a killed instance answers nothing"
    );

    let start = Instant::now();
    let (status, body) = post_http(&http, b.addr(), firing("killed-0"))
        .await
        .expect("B answered");
    assert_eq!(status, 201, "{body}\nA: {:#?}", a.logs());
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "B must wait for the dead holder's lease to expire"
    );
    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].occurrence_count(), 1);
    assert!(b.logged("took over expired lease"));
}

#[tokio::test]
async fn skewed_clocks_do_not_steal_a_live_lease() {
    let faketime = testenv::tool("libfaketime");
    let (cp, ns) = setup().await;
    let lib = faketime.to_string_lossy().into_owned();
    let common = [
        ("LD_PRELOAD", lib.as_str()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("GATEWAY_LOCK_DURATION_SECONDS", "15"),
        ("GATEWAY_API_TIMEOUT_MS", "5000"),
    ];
    let mut a_env = common.to_vec();
    a_env.extend([
        ("FAKETIME", "-60s"),
        ("GATEWAY_TEST_PAUSE_AT", "after-lock"),
    ]);
    let mut b_env = common.to_vec();
    b_env.extend([("FAKETIME", "+60s"), ("GATEWAY_LOCK_WAIT_MS", "1500")]);
    let a = spawn(cp, ns.name(), "gw-behind", &a_env);
    let b = spawn(cp, ns.name(), "gw-ahead", &b_env);
    let http = http();

    let (h, to) = (http.clone(), a.addr());
    let from_a = tokio::spawn(async move { post_http(&h, to, firing("skew-0")).await });
    a.freeze().await;
    // A's renewTime is 60 s in the past and B's clock 60 s ahead: a lock that
    // trusted those clocks would let B steal at once. B must wait, then give up.
    let (status, body) = post_http(&http, b.addr(), firing("skew-0"))
        .await
        .expect("B answered");
    assert_eq!(
        status,
        503,
        "B stole a live lease: {body}\nA: {:#?}\nB: {:#?}",
        a.logs(),
        b.logs()
    );
    assert!(!b.logged("took over expired lease"));
    a.thaw();
    let (status, body) = from_a.await.unwrap().expect("A answered");
    assert_eq!(status, 201, "{body}");
    let (status, _) = post_http(&http, b.addr(), firing("skew-0"))
        .await
        .expect("B answered");
    assert_eq!(status, 202);
    let list = rrs(cp, ns.name()).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].occurrence_count(), 2);
}

#[tokio::test]
async fn an_api_server_restart_under_load_loses_no_count_and_duplicates_nothing() {
    let cp = private_plane().await;
    let ns = cp.new_namespace().await.unwrap();
    let flags = [
        ("GATEWAY_LOCK_DURATION_SECONDS", "4"),
        ("GATEWAY_API_TIMEOUT_MS", "2000"),
        ("GATEWAY_LOCK_WAIT_MS", "3000"),
    ];
    let gws: Vec<Gateway> = (0..3)
        .map(|i| spawn(&cp, ns.name(), &format!("gw-{i}"), &flags))
        .collect();
    let http = http();
    let targets = 10;
    let accepted: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; targets]));
    let sent: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; targets]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // (answered 2xx, answered otherwise), over all workers.
    let (progress_tx, progress) = tokio::sync::watch::channel((0u64, 0u64));
    let progress_tx = Arc::new(progress_tx);
    let mut load = Vec::new();
    for worker in 0..6 {
        let (http, to) = (http.clone(), gws[worker % 3].addr());
        let (accepted, sent, stop) = (Arc::clone(&accepted), Arc::clone(&sent), Arc::clone(&stop));
        let progress_tx = Arc::clone(&progress_tx);
        load.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t = i % targets;
                sent.lock().unwrap()[t] += 1;
                if let Some((status, _)) = post_http(&http, to, firing(&format!("load-{t}"))).await
                    && (status == 201 || status == 202)
                {
                    accepted.lock().unwrap()[t] += 1;
                    progress_tx.send_modify(|(ok, _)| *ok += 1);
                } else {
                    progress_tx.send_modify(|(_, refused)| *refused += 1);
                }
                i += 1;
            }
        }));
    }
    until(&progress, "no load got through before the restart", |p| {
        p.0 >= 30
    })
    .await;
    cp.stop_apiserver();
    // Keep it down until the gateways have answered some signals with 503.
    let refused_before = progress.borrow().1;
    until(&progress, "the outage was never noticed", |p| {
        p.1 >= refused_before + 6
    })
    .await;
    cp.start_apiserver()
        .await
        .expect("restarting the API server");
    let resumed_at = progress.borrow().0;
    until(
        &progress,
        "the gateways did not recover after the restart",
        |p| p.0 >= resumed_at + 30,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let list = rrs(&cp, ns.name()).await;
    let per_target = active_per_target(&list);
    assert_eq!(list.len(), targets, "one RR per target, none duplicated");
    let accepted = accepted.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    for t in 0..targets {
        let rr = &per_target[&format!("load-{t}")];
        assert_eq!(rr.len(), 1);
        let count = rr[0].occurrence_count() as u64;
        assert!(
            count >= accepted[t],
            "load-{t}: {count} counted < {} answered 2xx",
            accepted[t]
        );
        assert!(
            count <= sent[t],
            "load-{t}: {count} counted > {} sent",
            sent[t]
        );
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let (cp, ns) = setup().await;
    let mut a = spawn(
        cp,
        ns.name(),
        "gw-a",
        &[
            ("GATEWAY_TEST_PAUSE_AT", "before-create"),
            ("GATEWAY_SHUTDOWN_TIMEOUT_SECONDS", "20"),
        ],
    );
    let http = http();
    let (h, to) = (http.clone(), a.addr());
    let in_flight = tokio::spawn(async move { post_http(&h, to, firing("drain-0")).await });
    a.wait_logged("test hook: paused").await;
    a.signal(libc::SIGTERM);
    a.wait_logged("shutdown signal received").await;
    a.thaw();
    let (status, body) = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(status, 201, "{body}");
    let exit = tokio::task::spawn_blocking(move || a.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    assert_eq!(rrs(cp, ns.name()).await.len(), 1);
}

/// until waits, at most a minute, for the load's progress to satisfy `done`.
async fn until(
    progress: &tokio::sync::watch::Receiver<(u64, u64)>,
    what: &str,
    done: impl Fn(&(u64, u64)) -> bool,
) {
    let mut progress = progress.clone();
    let reached = tokio::time::timeout(Duration::from_secs(60), progress.wait_for(done)).await;
    assert!(matches!(reached, Ok(Ok(_))), "{what}");
}

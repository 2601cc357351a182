//! Testhook lets chaos tests freeze a request at a named point of the write path.
//!
//! When `GATEWAY_TEST_PAUSE_AT` names a point, the first request to reach it
//! logs `test hook: paused` and blocks until the file named by
//! `GATEWAY_TEST_RESUME_FILE` exists (at most two minutes). Tests freeze the
//! whole process with SIGSTOP meanwhile, act, then resume it. Unset (always,
//! in production), the hook costs one comparison.

use std::{
    path::PathBuf,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// AFTER_LOCK is reached right after the Lease was acquired.
pub const AFTER_LOCK: &str = "after-lock";
/// BEFORE_CREATE is reached after every check, right before the RR create.
pub const BEFORE_CREATE: &str = "before-create";

struct Hook {
    point: String,
    resume: PathBuf,
}

static HOOK: OnceLock<Option<Hook>> = OnceLock::new();
static FIRED: AtomicBool = AtomicBool::new(false);

/// pause blocks the calling request once if `point` is the configured pause point.
pub async fn pause(point: &str) {
    let hook = HOOK.get_or_init(|| {
        let point = std::env::var("GATEWAY_TEST_PAUSE_AT")
            .ok()
            .filter(|p| !p.is_empty())?;
        let resume = std::env::var_os("GATEWAY_TEST_RESUME_FILE")?.into();
        Some(Hook { point, resume })
    });
    let Some(hook) = hook else { return };
    if hook.point != point || FIRED.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::warn!(point, "test hook: paused");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !hook.resume.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(point, "test hook: resumed");
}

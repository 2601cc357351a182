//! Testhook lets chaos tests stop the process at a named point of the write path.
//!
//! When `GATEWAY_TEST_PAUSE_AT` names a point, the first request to reach it
//! sends SIGSTOP to its own process; the test then acts while the writer is
//! frozen and resumes it with SIGCONT. Unset (always, in production), the
//! hook costs one comparison.

use std::sync::{
    OnceLock,
    atomic::{AtomicBool, Ordering},
};

/// AFTER_LOCK is reached right after the Lease was acquired.
pub const AFTER_LOCK: &str = "after-lock";
/// BEFORE_CREATE is reached after every check, right before the RR create.
pub const BEFORE_CREATE: &str = "before-create";

static PAUSE_AT: OnceLock<Option<String>> = OnceLock::new();
static FIRED: AtomicBool = AtomicBool::new(false);

/// pause stops the process once if `point` is the configured pause point.
pub fn pause(point: &str) {
    let configured = PAUSE_AT.get_or_init(|| {
        std::env::var("GATEWAY_TEST_PAUSE_AT")
            .ok()
            .filter(|p| !p.is_empty())
    });
    if configured.as_deref() != Some(point) || FIRED.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::warn!(
        point,
        pid = std::process::id(),
        "test hook: stopping this process"
    );
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &std::process::id().to_string()])
        .status();
    tracing::warn!(
        point,
        ok = stopped.is_ok_and(|s| s.success()),
        "test hook: resumed"
    );
}

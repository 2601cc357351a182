//! testenv runs a local control plane for development until interrupted.
//!
//! `testenv --dir <path>` starts etcd and kube-apiserver, installs the checked-in
//! RemediationRequest CRD, creates namespace `signal-gateway` with the
//! gateway's Role, writes `<path>/admin.kubeconfig` and
//! `<path>/gateway.kubeconfig`, prints `READY`, and runs until SIGINT, SIGTERM
//! or end of stdin.

use std::io::Write as _;
use std::path::PathBuf;

use testenv::{ControlPlane, Identity};
use tokio::io::AsyncReadExt as _;
use tokio::signal::unix::{SignalKind, signal};

/// NAMESPACE is where the local gateway keeps its RRs and Leases.
const NAMESPACE: &str = "signal-gateway";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = parse_args()?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;

    let started = std::time::Instant::now();
    let cp = ControlPlane::start().await?;
    let control_plane_ready = started.elapsed();
    let crd = testenv::read_crd(&testenv::repo_root().join("chart/crds/remediationrequests.yaml"))?;
    cp.install_crd(crd).await?;
    cp.create_namespace(NAMESPACE).await?;

    let mut out = std::io::stdout().lock();
    for id in [Identity::Admin, Identity::Gateway] {
        let path = dir.join(format!("{}.kubeconfig", id.user_name()));
        cp.write_kubeconfig(id, &path)?;
        writeln!(out, "{} kubeconfig: {}", id.user_name(), path.display())?;
    }
    writeln!(out, "server: {}", cp.server_url())?;
    writeln!(out, "namespace: {NAMESPACE}")?;
    writeln!(out, "logs: {}", cp.dir().display())?;
    writeln!(
        out,
        "control plane ready in {control_plane_ready:.1?}, set up in {:.1?}",
        started.elapsed()
    )?;
    writeln!(out, "READY")?;
    out.flush()?;
    drop(out);

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
        () = stdin_closed() => {}
    }
    // Dropping the control plane kills and reaps etcd and kube-apiserver.
    drop(cp);
    Ok(())
}

/// stdin_closed resolves at end of input, so that a parent that dies takes
/// the control plane with it.
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1024];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn parse_args() -> Result<PathBuf, String> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            other => match other.strip_prefix("--dir=") {
                Some(d) => dir = Some(PathBuf::from(d)),
                None => {
                    return Err(format!(
                        "unknown argument {other:?}; usage: testenv --dir <path>"
                    ));
                }
            },
        }
    }
    dir.ok_or_else(|| "usage: testenv --dir <path>".to_owned())
}

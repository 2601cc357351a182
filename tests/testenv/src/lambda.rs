//! Lambda runs the gateway's Lambda package (`hack/lambda.sh`) under AWS's own Runtime
//! Interface Emulator (`hack/tool.sh rie`), for the end-to-end tests and the bench: the
//! emulator starts the package's `bootstrap` on the first invocation, as Lambda does.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::{ControlPlane, Error, Identity, Result, free_port, last_line_of, repo_root, tool};

/// INVOKE is the emulator's invocation endpoint (the Lambda Invoke API's path).
const INVOKE: &str = "/2015-03-31/functions/function/invocations";

/// bootstrap unpacks the Lambda package once per process and returns its `bootstrap`:
/// the zip `SIGNAL_GATEWAY_LAMBDA_ZIP` names (hack/test.sh and hack/bench.sh build it),
/// else the one `hack/lambda.sh` builds now.
///
/// # Errors
///
/// When the package cannot be built or unpacked, or holds more than `bootstrap`.
pub fn bootstrap() -> Result<PathBuf> {
    static BOOTSTRAP: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BOOTSTRAP
        .get_or_init(|| unpack().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Other)
}

fn unpack() -> Result<PathBuf> {
    let zip = match std::env::var_os("SIGNAL_GATEWAY_LAMBDA_ZIP") {
        Some(zip) => PathBuf::from(zip),
        None => last_line_of(&repo_root().join("hack/lambda.sh"), &[]).map_err(Error::Other)?,
    };
    let dir = std::env::temp_dir().join(format!("signal-gateway-lambda-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    let out = Command::new(tool("unzip"))
        .arg("-q")
        .arg(&zip)
        .arg("-d")
        .arg(&dir)
        .output()
        .map_err(|source| Error::Io {
            context: "running unzip".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Other(format!("unzip {}: {out:?}", zip.display())));
    }
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|source| Error::Io {
            context: "reading the unpacked package".into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    if entries != ["bootstrap"] {
        return Err(Error::Other(format!(
            "{} holds {entries:?}, not `bootstrap` alone",
            zip.display()
        )));
    }
    Ok(dir.join("bootstrap"))
}

/// function_url is a Function URL event (the fixture's) carrying `body`.
#[must_use]
pub fn function_url(body: &str) -> Value {
    http_event(
        include_str!("../../fixtures/lambda/function-url-template.json"),
        body,
    )
}

/// api_gateway is an API Gateway HTTP API (v2) event carrying `body`.
#[must_use]
pub fn api_gateway(body: &str) -> Value {
    http_event(
        include_str!("../../fixtures/lambda/apigw-v2-template.json"),
        body,
    )
}

fn http_event(template: &str, body: &str) -> Value {
    let body = serde_json::to_string(body).unwrap_or_default();
    serde_json::from_str(&template.replace("\"BODY\"", &body)).unwrap_or(Value::Null)
}

/// Emulator is one aws-lambda-rie process running the package's `bootstrap`; killed when
/// dropped. Its output (the emulator's and the function's) goes to a file.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Emulator {
    /// start runs the function with the gateway identity's kubeconfig, namespace `ns`, no
    /// auth, JSON logs, an invocation timeout of `timeout_s` seconds, then `env` on top,
    /// and returns once the emulator accepts invocations.
    ///
    /// # Errors
    ///
    /// When the package or the emulator cannot be had, or it does not listen in time.
    pub async fn start(
        cp: &ControlPlane,
        ns: &str,
        timeout_s: u32,
        env: &[(&str, &str)],
    ) -> Result<Emulator> {
        let bootstrap = bootstrap()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let runtime_api = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = tempfile::NamedTempFile::new().map_err(|source| Error::Io {
            context: "creating the emulator's log".into(),
            source,
        })?;
        let output = || {
            log.reopen().map_err(|source| Error::Io {
                context: "opening the emulator's log".into(),
                source,
            })
        };
        let mut cmd = Command::new(tool("rie"));
        cmd.arg("--runtime-interface-emulator-address")
            .arg(addr.to_string())
            .arg("--runtime-api-address")
            .arg(runtime_api.to_string())
            .arg(&bootstrap)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", cp.kubeconfig_path(Identity::Gateway))
            .env("GATEWAY_NAMESPACE", ns)
            .env("GATEWAY_AUTH", "none")
            .env("GATEWAY_LOG_FORMAT", "json")
            .env("GATEWAY_OWNER_RESOLUTION", "false")
            .env("AWS_LAMBDA_FUNCTION_NAME", "signal-gateway")
            .env("AWS_LAMBDA_FUNCTION_TIMEOUT", timeout_s.to_string())
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(output()?)
            .stderr(output()?);
        let child = crate::spawn_tied(cmd).map_err(|source| Error::Io {
            context: "starting aws-lambda-rie".into(),
            source,
        })?;
        let emulator = Emulator { child, addr, log };
        emulator.await_listening().await?;
        Ok(emulator)
    }

    /// await_listening waits until the emulator accepts connections: it announces nothing
    /// else, so a bounded series of connection attempts is the event.
    async fn await_listening(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "aws-lambda-rie did not listen on {}: {}",
                    self.addr,
                    self.logs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// logs is everything the emulator and the function wrote so far.
    #[must_use]
    pub fn logs(&self) -> String {
        let mut text = String::new();
        let _ = self
            .log
            .reopen()
            .and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    /// invoke sends one event and returns the function's answer, as JSON.
    ///
    /// # Errors
    ///
    /// When the emulator does not answer, or not with JSON.
    pub async fn invoke(&self, event: &Value) -> Result<Value> {
        let fail = |what: String| Error::Other(format!("{what}; logs:\n{}", self.logs()));
        let req = http::Request::post(format!("http://{}{INVOKE}", self.addr))
            .body(Full::new(bytes(event)))
            .map_err(|e| fail(format!("an invocation: {e}")))?;
        let res = Client::builder(TokioExecutor::new())
            .build_http()
            .request(req)
            .await
            .map_err(|e| fail(format!("invoking: {e}")))?;
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| {
            fail(format!(
                "the answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            ))
        })
    }

    /// function_memory reads VmRSS and VmHWM (peak) of the function's process (the
    /// emulator's child running `bootstrap`), in KiB; None before the first invocation
    /// starts it.
    #[must_use]
    pub fn function_memory(&self) -> Option<(u64, u64)> {
        let bootstrap = bootstrap().ok()?;
        let parent = self.child.id();
        std::fs::read_dir("/proc").ok()?.find_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so read after its ')'.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            (ppid == parent && exe == bootstrap)
                .then(|| crate::process::memory(pid))
                .flatten()
        })
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bytes(event: &Value) -> bytes::Bytes {
    bytes::Bytes::from(event.to_string())
}

/// answer reads an HTTP answer event: its status and its JSON body (Null if none).
#[must_use]
pub fn answer(event: &Value) -> (u64, Value) {
    let status = event["statusCode"].as_u64().unwrap_or(0);
    let body = event["body"].as_str().unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

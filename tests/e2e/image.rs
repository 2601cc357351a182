//! The container image built by `hack/image.sh`: its archive is an OCI layout
//! and a `docker save` archive at once; its layers, unpacked into an empty
//! root, hold a static binary, a CA bundle and a passwd entry for the numeric
//! user the image config names; and the image's entrypoint, run from that
//! root with the config's user check, env and working directory, becomes
//! ready against the test control plane, resolves host names (the kubeconfig
//! and the OTLP endpoint both say `localhost`), and turns a signal into an RR.
//!
//! Without root there is no chroot: the entrypoint is run by its path inside
//! the unpacked root, which is what a static binary with nothing else to load
//! makes equivalent.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use serde_json::Value;
use testenv::kubelet::Image;
use testenv::{ControlPlane, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{active_of, firing, http, post_http, rrs, setup};

/// IMAGE_UID is the numeric user the image runs as (hack/image.sh, Dockerfile).
pub const IMAGE_UID: u32 = 65532;
/// WAIT bounds every wait for the image's process.
const WAIT: Duration = Duration::from_secs(30);

/// image builds the image once per test binary (`SIGNAL_GATEWAY_IMAGE`, set
/// by hack/test.sh, names an archive it built already) and unpacks it.
pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let archive = match std::env::var_os("SIGNAL_GATEWAY_IMAGE") {
            Some(p) => PathBuf::from(p),
            None => crate::support::script("hack/image.sh", &[]),
        };
        unpack(&archive)
    })
}

fn tar(args: &[&str], dir: &Path) {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running tar");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let digest = digest.as_str().expect("a digest");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// unpack reads the archive as an OCI layout, checks its docker manifest,
/// and unpacks its layers, in order, into an empty root.
fn unpack(archive: &Path) -> Image {
    assert!(archive.is_absolute(), "{} is absolute", archive.display());
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("image");
    let _ = std::fs::remove_dir_all(&base);
    let layout = base.join("layout");
    let root = base.join("root");
    std::fs::create_dir_all(&layout).expect("creating the layout dir");
    std::fs::create_dir_all(&root).expect("creating the empty root");
    let archive_str = archive.to_str().expect("a UTF-8 path");
    tar(&["-xf", archive_str], &layout);

    let oci_layout = read_json(&layout.join("oci-layout"));
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let ref_name = manifests[0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .expect("the image is named in index.json")
        .to_owned();
    let manifest = read_json(&blob(&layout, &manifests[0]["digest"]));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config_file = read_json(&blob(&layout, &manifest["config"]["digest"]));
    assert_eq!(config_file["os"], "linux");
    assert_eq!(config_file["architecture"], "amd64");

    // docker load reads manifest.json; it names the same config and layers.
    let docker = read_json(&layout.join("manifest.json"));
    let docker = &docker[0];
    assert_eq!(
        docker["Config"].as_str(),
        blob(&layout, &manifest["config"]["digest"])
            .strip_prefix(&layout)
            .ok()
            .and_then(Path::to_str)
    );
    assert_eq!(docker["RepoTags"][0].as_str(), Some(ref_name.as_str()));

    let layers = manifest["layers"].as_array().expect("manifest layers");
    assert_eq!(
        docker["Layers"].as_array().map(Vec::len),
        Some(layers.len())
    );
    for (i, layer) in layers.iter().enumerate() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let path = blob(&layout, &layer["digest"]);
        assert_eq!(
            docker["Layers"][i].as_str(),
            path.strip_prefix(&layout).ok().and_then(Path::to_str)
        );
        let path = path.to_str().expect("a UTF-8 path").to_owned();
        tar(&["--no-same-owner", "-xzf", &path], &root);
    }
    Image {
        config: config_file["config"].clone(),
        ref_name,
        root,
    }
}

/// chart_image is the chart's default image: `image.repository` of
/// values.yaml and the Chart's `appVersion` (the tag defaults to it).
pub fn chart_image() -> (String, String) {
    let read = |p: &str| -> serde_yaml_ng::Value {
        let text = std::fs::read_to_string(testenv::repo_root().join(p)).expect("reading chart");
        serde_yaml_ng::from_str(&text).expect("chart YAML")
    };
    let values = read("chart/values.yaml");
    let chart = read("chart/Chart.yaml");
    let repository = values["image"]["repository"]
        .as_str()
        .expect("image.repository")
        .to_owned();
    let version = chart["appVersion"].as_str().expect("appVersion").to_owned();
    (repository, version)
}

/// is_static reports whether the ELF file at `path` has no program
/// interpreter, i.e. needs no dynamic loader or shared library.
fn is_static(path: &Path) -> bool {
    let elf = std::fs::read(path).expect("reading the binary");
    assert_eq!(&elf[..4], b"\x7fELF", "an ELF file");
    assert_eq!(elf[4], 2, "a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes")) != PT_INTERP
    })
}

#[test]
fn the_image_runs_as_a_numeric_non_root_user_from_pinned_static_contents() {
    let img = image();
    let (repository, version) = chart_image();
    assert_eq!(
        img.ref_name,
        format!("{repository}:{version}"),
        "the archive is the chart's default image"
    );
    let labels = &img.config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version.as_str());
    assert_eq!(labels["org.opencontainers.image.title"], "signal-gateway");
    for key in [
        "org.opencontainers.image.revision",
        "org.opencontainers.image.created",
        "org.opencontainers.image.licenses",
    ] {
        assert!(labels[key].as_str().is_some_and(|v| !v.is_empty()), "{key}");
    }

    let user = img.config["User"].as_str().expect("the image names a user");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    assert_eq!(
        uid.parse::<u32>().ok(),
        Some(IMAGE_UID),
        "numeric uid: {user}"
    );
    assert_eq!(
        gid.parse::<u32>().ok(),
        Some(IMAGE_UID),
        "numeric gid: {user}"
    );
    let passwd = std::fs::read_to_string(img.root.join("etc/passwd")).expect("etc/passwd");
    assert!(
        passwd.contains(&format!(":x:{IMAGE_UID}:{IMAGE_UID}:")),
        "{passwd}"
    );

    let (exe, args) = img.command();
    assert_eq!(args, ["serve"]);
    assert!(is_static(&exe), "{} is statically linked", exe.display());
    let env = img.env();
    let ca = img.root.join(env["SSL_CERT_FILE"].trim_start_matches('/'));
    let bundle = std::fs::read_to_string(&ca).expect("the CA bundle");
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 100,
        "Debian's Mozilla roots"
    );

    // The Dockerfile builds the same image: same user, entrypoint and CA pin.
    let root = testenv::repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let script = std::fs::read_to_string(root.join("hack/image.sh")).expect("hack/image.sh");
    assert!(dockerfile.contains(&format!("USER {IMAGE_UID}:{IMAGE_UID}")));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/signal-gateway"]"#));
    assert!(dockerfile.contains(r#"CMD ["serve"]"#));
    let pin = script
        .lines()
        .find_map(|l| l.strip_prefix("CA_CERTIFICATES_VERSION="))
        .expect("hack/image.sh pins ca-certificates");
    assert!(
        dockerfile.contains(&format!("ca-certificates={pin}")),
        "the Dockerfile pins ca-certificates {pin} too"
    );
}

/// Proc is the image's entrypoint running from the unpacked root.
pub struct Proc {
    child: Child,
    pub addr: std::net::SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// start runs the image's entrypoint and default command with exactly the
    /// config's env plus `env`, in the config's working directory, and
    /// returns once it logs `listening`.
    pub fn start(img: &Image, env: &[(&str, &str)]) -> Proc {
        let (exe, args) = img.command();
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env_clear()
            .envs(img.env())
            .envs(env.iter().copied())
            .current_dir(img.workdir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = testenv::spawn_tied(cmd).expect("starting the image's entrypoint");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut proc = Proc {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            logs,
        };
        match rx.recv_timeout(WAIT) {
            Ok(addr) => proc.addr = addr.parse().expect("a listen address"),
            Err(_) => panic!(
                "the image's entrypoint did not log `listening` (exit {:?}):\n{}",
                proc.child.try_wait().ok().flatten(),
                proc.log()
            ),
        }
        proc
    }

    pub fn log(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// terminate sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill has no memory effects; the pid is our child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().expect("waiting for the gateway")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// localhost_kubeconfig writes a kubeconfig of `id` whose server is named
/// `localhost`, so that the client must resolve a host name. The API server's
/// self-signed certificate names `kubernetes` but not `localhost` (it binds
/// 127.0.0.1), so the certificate is checked for `kubernetes`.
pub fn localhost_kubeconfig(cp: &ControlPlane, id: Identity, path: &Path) {
    let text = std::fs::read_to_string(cp.kubeconfig_path(id)).expect("reading a kubeconfig");
    let by_ip = format!("server: {}\n", cp.server_url());
    assert!(text.contains(&by_ip), "the kubeconfig names {by_ip}");
    let by_name = format!(
        "{}    tls-server-name: kubernetes\n",
        by_ip.replace("127.0.0.1", "localhost")
    );
    std::fs::write(path, text.replace(&by_ip, &by_name)).expect("writing a kubeconfig");
}

pub use testenv::kubelet::get_status;

/// accept_otlp waits for one OTLP/HTTP request on `listener`, answers 200,
/// and returns its request line.
async fn accept_otlp(listener: tokio::net::TcpListener) -> String {
    let (mut conn, _) = listener.accept().await.expect("accepting the OTLP export");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await.expect("reading the export");
        assert!(n > 0, "the exporter closed before its headers");
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = conn
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_images_entrypoint_serves_a_signal_and_resolves_host_names() {
    let img = image();
    let (cp, ns) = setup().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    localhost_kubeconfig(cp, Identity::Gateway, &kubeconfig);
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("an OTLP port");
    let otlp_endpoint = format!(
        "http://localhost:{}/v1/metrics",
        otlp.local_addr().expect("a port").port()
    );
    let proc = Proc::start(
        img,
        &[
            ("KUBECONFIG", kubeconfig.to_str().expect("UTF-8")),
            ("GATEWAY_NAMESPACE", ns.name()),
            ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0"),
            ("GATEWAY_AUTH", "none"),
            // The alert's Pod does not exist; owner resolution has its own tests (owners.rs).
            ("GATEWAY_OWNER_RESOLUTION", "false"),
            ("POD_NAME", "image-0"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                otlp_endpoint.as_str(),
            ),
            // Only the flush at exit exports.
            ("OTEL_METRIC_EXPORT_INTERVAL", "3600000"),
        ],
    );
    // Readiness needs the API server, which the kubeconfig names `localhost`.
    // The gateway connects before it opens its port, so it is ready at once.
    assert!(
        proc.log().contains("Kubernetes API reachable"),
        "{}",
        proc.log()
    );
    assert_eq!(
        get_status(proc.addr, "/readyz").await,
        200,
        "{}",
        proc.log()
    );

    let (status, body) = post_http(&http(), proc.addr, firing("image-pod"))
        .await
        .expect("an answer");
    assert_eq!(status, 201, "{body}\n{}", proc.log());
    assert_eq!(body["results"][0]["status"], "created", "{body}");
    let list = rrs(cp, ns.name()).await;
    assert_eq!(active_of(&list).len(), 1, "{list:?}");

    // The metrics flushed at exit go to `localhost`.
    let export = tokio::spawn(accept_otlp(otlp));
    let status = proc.terminate();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let line = tokio::time::timeout(WAIT, export)
        .await
        .expect("the exporter connected to localhost")
        .expect("the OTLP task");
    assert!(line.starts_with("POST /v1/metrics "), "{line}");
}

//! Tls is HTTPS serving from PEM files (`GATEWAY_TLS_*`): HTTP/1.1 and h2 offered by
//! ALPN, optional client certificates verified against a CA bundle, and the files
//! re-read when they change, so that a renewed certificate (cert-manager updates the
//! Secret, the kubelet swaps the mounted directory's `..data` symlink) is served on the
//! next handshake without a restart. Connections already open keep the certificate they
//! were made with; a renewed pair that does not load keeps the previous one.

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio_rustls::TlsAcceptor;

use super::auth::{Stamp, stamp};
use crate::config::TlsFiles;

/// CHECK_EVERY is how often, at most, the files are looked at (three `stat` calls) for
/// a change; the look happens on a handshake, so an idle gateway does nothing.
const CHECK_EVERY: Duration = Duration::from_secs(1);

const CERT_VAR: &str = "GATEWAY_TLS_CERT_FILE";
const KEY_VAR: &str = "GATEWAY_TLS_KEY_FILE";
const CA_VAR: &str = "GATEWAY_TLS_CLIENT_CA_FILE";

/// ALPN is what the server offers, h2 first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// LoadError names the variable whose file cannot be used, and why.
#[derive(Debug)]
pub struct LoadError {
    pub var: &'static str,
    pub problem: String,
}

/// check loads the files once, as start-up validation does.
pub fn check(files: &TlsFiles) -> Result<(), LoadError> {
    server_config(files).map(drop)
}

/// Tls is the current serving configuration, rebuilt when one of its files changes.
pub struct Tls {
    files: TlsFiles,
    check_every: Duration,
    state: Mutex<State>,
}

struct State {
    acceptor: TlsAcceptor,
    /// stamps are the versions of the files last looked at (loaded or not).
    stamps: [Option<Stamp>; 3],
    checked: Instant,
}

impl Tls {
    /// load reads the files; an error names the variable of the file at fault.
    pub fn load(files: TlsFiles) -> Result<Tls, LoadError> {
        Tls::with_check_every(files, CHECK_EVERY)
    }

    fn with_check_every(files: TlsFiles, check_every: Duration) -> Result<Tls, LoadError> {
        let stamps = stamps(&files);
        let (config, leaf) = server_config(&files)?;
        tracing::info!(
            cert = %files.cert.display(),
            serial = %leaf.serial,
            not_after = %leaf.not_after,
            "TLS certificate loaded"
        );
        Ok(Tls {
            files,
            check_every,
            state: Mutex::new(State {
                acceptor: TlsAcceptor::from(config),
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// acceptor is the acceptor for a new connection. When the files were last looked at
    /// more than `check_every` ago and one of them changed, they are loaded first; a set
    /// that does not load is logged and the previous configuration stays.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let now = stamps(&self.files);
            if now != state.stamps {
                state.stamps = now;
                // A few small files, read only when they changed: cheap enough to do
                // here rather than hand to a blocking thread.
                match server_config(&self.files) {
                    Ok((config, leaf)) => {
                        state.acceptor = TlsAcceptor::from(config);
                        tracing::info!(
                            cert = %self.files.cert.display(),
                            serial = %leaf.serial,
                            not_after = %leaf.not_after,
                            "TLS certificate reloaded"
                        );
                    }
                    Err(e) => tracing::warn!(
                        var = e.var,
                        error = %e.problem,
                        "TLS files changed but do not load; keeping the previous certificate"
                    ),
                }
            }
        }
        state.acceptor.clone()
    }
}

fn stamps(files: &TlsFiles) -> [Option<Stamp>; 3] {
    [
        stamp(&files.cert).ok(),
        stamp(&files.key).ok(),
        files.client_ca.as_ref().and_then(|ca| stamp(ca).ok()),
    ]
}

/// Leaf describes the served certificate for the log.
struct Leaf {
    serial: String,
    not_after: String,
}

impl Leaf {
    fn of(der: Option<&CertificateDer<'_>>) -> Leaf {
        match der.and_then(|d| x509_parser::parse_x509_certificate(d.as_ref()).ok()) {
            Some((_, cert)) => Leaf {
                serial: cert.raw_serial_as_string(),
                not_after: cert.validity().not_after.to_string(),
            },
            None => Leaf {
                serial: String::new(),
                not_after: String::new(),
            },
        }
    }
}

/// server_config builds the rustls configuration of `files`, and describes its leaf.
fn server_config(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Leaf), LoadError> {
    let provider = Arc::new(ring::default_provider());
    let chain = certs(&files.cert, CERT_VAR)?;
    let leaf = Leaf::of(chain.first());
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| LoadError {
        var: KEY_VAR,
        problem: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                format!("{} holds no PEM private key", files.key.display())
            }
            e => format!(
                "cannot read a private key from {}: {e}",
                files.key.display()
            ),
        },
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError {
            var: CERT_VAR,
            problem: format!("no TLS version available: {e}"),
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(path, CA_VAR)? {
                roots.add(cert).map_err(|e| LoadError {
                    var: CA_VAR,
                    problem: format!("{} holds a certificate that is no CA: {e}", path.display()),
                })?;
            }
            // A client without a certificate still gets through the handshake: the
            // health endpoints are open (kubelet probes present none), and `auth`
            // decides whether the request needs another credential. A certificate that
            // does not verify fails the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| LoadError {
                    var: CA_VAR,
                    problem: format!("{}: {e}", path.display()),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| LoadError {
            var: KEY_VAR,
            problem: format!(
                "{} does not fit the certificate of {}: {e}",
                files.key.display(),
                files.cert.display()
            ),
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), leaf))
}

fn certs(path: &Path, var: &'static str) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let fail = |e: rustls::pki_types::pem::Error| LoadError {
        var,
        problem: format!("cannot read certificates from {}: {e}", path.display()),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(fail)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    if certs.is_empty() {
        return Err(LoadError {
            var,
            problem: format!("{} holds no PEM certificate", path.display()),
        });
    }
    Ok(certs)
}

/// ClientCert is the client certificate a connection presented and the handshake
/// verified, as a request extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// name is the certificate's subject common name, as the Kubernetes API server's
    /// x509 authenticator reads it, else its first URI or DNS name (empty if none).
    pub name: String,
}

impl ClientCert {
    /// of reads the name of a verified certificate.
    #[must_use]
    pub fn of(der: &CertificateDer<'_>) -> ClientCert {
        use x509_parser::extensions::GeneralName;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
            return ClientCert {
                name: String::new(),
            };
        };
        let cn = cert
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty());
        let san = || {
            let san = cert.subject_alternative_name().ok().flatten()?;
            let names = &san.value.general_names;
            names
                .iter()
                .find_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .or_else(|| {
                    names.iter().find_map(|n| match n {
                        GeneralName::DNSName(d) => Some(*d),
                        _ => None,
                    })
                })
        };
        ClientCert {
            name: cn.or_else(san).unwrap_or_default().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pair is a CA and a serving certificate it signed, as PEM.
    struct Pair {
        cert: String,
        key: String,
        serial: u8,
    }

    fn issued(ca: &(rcgen::Certificate, rcgen::Issuer<'_, rcgen::KeyPair>), serial: u8) -> Pair {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(vec![serial]));
        let cert = params.signed_by(&key, &ca.1).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial,
        }
    }

    fn ca() -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert, rcgen::Issuer::new(params, key))
    }

    use testenv::mount::SecretMount as Mount;

    fn files(mount: &Mount) -> TlsFiles {
        TlsFiles {
            cert: mount.path("tls.crt"),
            key: mount.path("tls.key"),
            client_ca: None,
        }
    }

    /// served is the serial of the leaf certificate `tls` presents to a new handshake.
    async fn served(tls: &Tls, ca: &rcgen::Certificate) -> u8 {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let client =
            rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tls.acceptor();
        let server = tokio::spawn(async move { acceptor.accept(b).await.map(drop) });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, a).await.unwrap();
        server.await.unwrap().unwrap();
        let leaf = &stream.get_ref().1.peer_certificates().unwrap()[0];
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
        *cert.raw_serial().last().unwrap()
    }

    #[tokio::test]
    async fn a_swapped_secret_is_served_on_the_next_handshake_and_a_bad_one_is_not() {
        let ca = ca();
        let first = issued(&ca, 1);
        let mut mount = Mount::new(&[("tls.crt", &first.cert), ("tls.key", &first.key)]);
        let tls = Tls::with_check_every(files(&mount), Duration::ZERO).unwrap();
        assert_eq!(served(&tls, &ca.0).await, first.serial);

        let second = issued(&ca, 2);
        mount.update(&[("tls.crt", &second.cert), ("tls.key", &second.key)]);
        assert_eq!(served(&tls, &ca.0).await, second.serial);

        // A pair whose key belongs to another certificate, then a truncated one: the
        // previous pair stays.
        let third = issued(&ca, 3);
        mount.update(&[("tls.crt", &third.cert), ("tls.key", &first.key)]);
        assert_eq!(served(&tls, &ca.0).await, second.serial);
        mount.update(&[("tls.crt", &third.cert[..40]), ("tls.key", &third.key)]);
        assert_eq!(served(&tls, &ca.0).await, second.serial);
        // Fixed: served.
        mount.update(&[("tls.crt", &third.cert), ("tls.key", &third.key)]);
        assert_eq!(served(&tls, &ca.0).await, third.serial);
    }

    #[tokio::test]
    async fn the_files_are_looked_at_no_more_often_than_the_check_interval() {
        let ca = ca();
        let first = issued(&ca, 1);
        let mut mount = Mount::new(&[("tls.crt", &first.cert), ("tls.key", &first.key)]);
        let tls = Tls::with_check_every(files(&mount), Duration::from_secs(3600)).unwrap();
        let second = issued(&ca, 2);
        mount.update(&[("tls.crt", &second.cert), ("tls.key", &second.key)]);
        assert_eq!(served(&tls, &ca.0).await, first.serial);
    }

    #[test]
    fn files_that_do_not_load_name_their_variable() {
        let ca = ca();
        let pair = issued(&ca, 1);
        let other = issued(&ca, 2);
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let cert = write("tls.crt", &pair.cert);
        let key = write("tls.key", &pair.key);
        let ca_file = write("ca.crt", &ca.0.pem());
        let files = |cert: &Path, key: &Path, ca: Option<&Path>| TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: ca.map(Path::to_owned),
        };
        check(&files(&cert, &key, Some(&ca_file))).unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = write("empty.pem", "");
        let other_key = write("other.key", &other.key);
        for (f, var, says) in [
            (files(&missing, &key, None), CERT_VAR, "missing.pem"),
            (files(&empty, &key, None), CERT_VAR, "no PEM certificate"),
            (files(&key, &key, None), CERT_VAR, "no PEM certificate"),
            (files(&cert, &missing, None), KEY_VAR, "missing.pem"),
            (files(&cert, &cert, None), KEY_VAR, "no PEM private key"),
            (files(&cert, &other_key, None), KEY_VAR, "does not fit"),
            (
                files(&cert, &key, Some(&empty)),
                CA_VAR,
                "no PEM certificate",
            ),
            (files(&cert, &key, Some(&missing)), CA_VAR, "missing.pem"),
        ] {
            let e = check(&f).unwrap_err();
            assert_eq!(e.var, var, "{f:?}: {e:?}");
            assert!(e.problem.contains(says), "{f:?}: {e:?}");
        }
    }

    #[test]
    fn a_client_certificate_is_named_by_its_common_name_else_its_san() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = |cn: Option<&str>, sans: Vec<rcgen::SanType>| {
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            if let Some(cn) = cn {
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, cn);
            }
            params.subject_alt_names = sans;
            ClientCert::of(params.self_signed(&key).unwrap().der()).name
        };
        let dns = || rcgen::SanType::DnsName("am.eu1.example".try_into().unwrap());
        let uri = || rcgen::SanType::URI("spiffe://eu1/ns/monitoring/sa/am".try_into().unwrap());
        assert_eq!(
            cert(Some("alertmanager-eu1"), vec![dns()]),
            "alertmanager-eu1"
        );
        assert_eq!(
            cert(None, vec![dns(), uri()]),
            "spiffe://eu1/ns/monitoring/sa/am"
        );
        assert_eq!(cert(None, vec![dns()]), "am.eu1.example");
        assert_eq!(cert(None, vec![]), "");
        assert_eq!(
            ClientCert::of(&CertificateDer::from(vec![1, 2, 3])).name,
            ""
        );
    }
}

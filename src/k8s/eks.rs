//! Eks makes the bearer tokens an EKS cluster accepts, the way `aws eks get-token` makes
//! them, so that a process without an exec plugin (a Lambda function) can reach the
//! cluster with its role's credentials: an STS `GetCallerIdentity` URL presigned with
//! SigV4 (aws-sigv4) whose signed headers include `x-k8s-aws-id: <cluster>`, encoded
//! base64url without padding behind `k8s-aws-v1.`. EKS asks STS who signed it, and maps
//! that role to Kubernetes groups (an access entry or the aws-auth ConfigMap).
//!
//! A token is accepted for 15 minutes after its signing time. Signing is local (no call),
//! so the client signs lazily, on the first request after `REFRESH_AFTER`: a function
//! frozen between invocations never sends a token older than that.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign},
    sign::v4,
};
use base64::Engine as _;
use http::{HeaderValue, header::AUTHORIZATION};
use tower::util::MapRequestLayer;

use crate::config::Eks;

/// PREFIX marks the token kind that EKS's authenticator reads.
const PREFIX: &str = "k8s-aws-v1.";
/// CLUSTER_HEADER binds a token to one cluster.
const CLUSTER_HEADER: &str = "x-k8s-aws-id";
/// PRESIGN_EXPIRES is what `aws eks get-token` sets as `X-Amz-Expires`; EKS applies its
/// own 15-minute limit from the signing time.
const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);
/// REFRESH_AFTER leaves a token at least 5 of its 15 minutes when it is last sent.
const REFRESH_AFTER: Duration = Duration::from_secs(10 * 60);

/// SignError is a token that could not be made; with a validated `Eks` it does not happen.
#[derive(Debug, thiserror::Error)]
#[error("signing an EKS token: {0}")]
pub struct SignError(String);

/// token presigns the STS call for `eks` at `at` and encodes it as an EKS bearer token.
pub fn token(eks: &Eks, at: SystemTime) -> Result<String, SignError> {
    let url = format!(
        "https://{}/?Action=GetCallerIdentity&Version=2011-06-15",
        sts_host(&eks.region)
    );
    let identity = Credentials::new(
        &eks.access_key_id,
        &eks.secret_access_key,
        eks.session_token.clone(),
        None,
        "environment",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&eks.region)
        .name("sts")
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::once((CLUSTER_HEADER, eks.cluster_name.as_str())),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    let mut request = http::Request::get(url.as_str())
        .body(())
        .map_err(|e| SignError(e.to_string()))?;
    instructions.apply_to_request_http1x(&mut request);
    let presigned = request.uri().to_string();
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned)
    ))
}

/// sts_host is the regional STS endpoint, as the AWS CLI uses by default.
fn sts_host(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("sts.{region}.{suffix}")
}

/// Tokens hands out the current `Authorization` value, signing a new token when the last
/// one is `REFRESH_AFTER` old (or the clock went back).
pub struct Tokens {
    eks: Eks,
    now: fn() -> SystemTime,
    current: Mutex<Option<(SystemTime, HeaderValue)>>,
}

impl Tokens {
    pub fn new(eks: Eks, now: fn() -> SystemTime) -> Tokens {
        Tokens {
            eks,
            now,
            current: Mutex::new(None),
        }
    }

    pub fn authorization(&self) -> Result<HeaderValue, SignError> {
        let now = (self.now)();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((signed, value)) = current.as_ref()
            && now
                .duration_since(*signed)
                .is_ok_and(|age| age < REFRESH_AFTER)
        {
            return Ok(value.clone());
        }
        let mut value = HeaderValue::try_from(format!("Bearer {}", token(&self.eks, now)?))
            .map_err(|e| SignError(e.to_string()))?;
        value.set_sensitive(true);
        *current = Some((now, value.clone()));
        Ok(value)
    }
}

/// client builds a Kubernetes client for the EKS cluster: its endpoint, its CA, and a
/// layer that puts the current token on every request.
pub fn client(eks: &Eks, api_timeout: Duration) -> Result<kube::Client, kube::Error> {
    let mut config = kube::Config::new(eks.endpoint.clone());
    config.root_cert = Some(eks.ca.clone());
    config.connect_timeout = Some(api_timeout);
    let tokens = Arc::new(Tokens::new(eks.clone(), SystemTime::now));
    let authorize = MapRequestLayer::new(move |mut request: http::Request<kube::client::Body>| {
        match tokens.authorization() {
            Ok(value) => {
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            // The API server answers 401, which names the problem where the call fails.
            Err(e) => tracing::error!(error = %e, "no EKS token for this request"),
        }
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&authorize)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{KeyInit as _, Mac as _};
    use sha2::{Digest as _, Sha256};

    fn eks() -> Eks {
        Eks {
            cluster_name: "prod-1".into(),
            endpoint: "https://abc.gr7.eu-west-1.eks.amazonaws.com"
                .parse()
                .unwrap(),
            ca: vec![],
            region: "eu-west-1".into(),
            access_key_id: "ASIAQEXAMPLE7".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            // '/', '+' and '=' must be percent-encoded in the query.
            session_token: Some("IQoJb3/Jp+Z2lu=".into()),
        }
    }

    /// 2026-12-02T10:00:00Z
    fn fixed() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_205_600)
    }

    /// encode is SigV4's URI encoding, written here from the spec, not taken from the signer.
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// expected_query is the presigned query computed independently of aws-sigv4, from
    /// the SigV4 specification: canonical request, string to sign, derived key.
    fn expected_query(e: &Eks) -> Vec<(String, String)> {
        let (date, stamp) = ("20261202", "20261202T100000Z");
        let scope = format!("{date}/{}/sts/aws4_request", e.region);
        let mut query: Vec<(String, String)> = [
            ("Action", "GetCallerIdentity".to_owned()),
            ("Version", "2011-06-15".to_owned()),
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_owned()),
            ("X-Amz-Credential", format!("{}/{scope}", e.access_key_id)),
            ("X-Amz-Date", stamp.to_owned()),
            ("X-Amz-Expires", "60".to_owned()),
            ("X-Amz-Security-Token", e.session_token.clone().unwrap()),
            ("X-Amz-SignedHeaders", "host;x-k8s-aws-id".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let canonical_query = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let empty_payload = hex::encode(Sha256::digest(b""));
        let canonical_request = format!(
            "GET\n/\n{canonical_query}\nhost:sts.{}.amazonaws.com\nx-k8s-aws-id:{}\n\nhost;x-k8s-aws-id\n{empty_payload}",
            e.region, e.cluster_name
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let key = ["aws4_request", "sts", &e.region, date].iter().rev().fold(
            format!("AWS4{}", e.secret_access_key).into_bytes(),
            |key, part| hmac(&key, part),
        );
        query.push((
            "X-Amz-Signature".into(),
            hex::encode(hmac(&key, &string_to_sign)),
        ));
        query.sort();
        query
    }

    fn decode_query(url: &str) -> Vec<(String, String)> {
        let (_, query) = url.split_once('?').unwrap();
        let mut pairs: Vec<(String, String)> = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                let decode = |s: &str| {
                    let bytes = s.as_bytes();
                    let mut out = Vec::new();
                    let mut i = 0;
                    while i < bytes.len() {
                        if bytes[i] == b'%' {
                            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                            out.push(u8::from_str_radix(hex, 16).unwrap());
                            i += 3;
                        } else {
                            out.push(bytes[i]);
                            i += 1;
                        }
                    }
                    String::from_utf8(out).unwrap()
                };
                (decode(k), decode(v))
            })
            .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn the_token_is_a_presigned_sts_call_as_aws_eks_get_token_makes_it() {
        let e = eks();
        let token = token(&e, fixed()).unwrap();
        let body = token.strip_prefix("k8s-aws-v1.").expect(&token);
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "base64url without padding: {body}"
        );
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with("https://sts.eu-west-1.amazonaws.com/?"),
            "{url}"
        );
        assert_eq!(decode_query(&url), expected_query(&e), "{url}");
    }

    #[test]
    fn a_token_is_bound_to_its_cluster_credentials_and_time() {
        let e = eks();
        let base = token(&e, fixed()).unwrap();
        assert_eq!(token(&e, fixed()).unwrap(), base, "deterministic");
        let other_cluster = Eks {
            cluster_name: "prod-2".into(),
            ..eks()
        };
        let other_secret = Eks {
            secret_access_key: "another".into(),
            ..eks()
        };
        for (what, t) in [
            ("cluster", token(&other_cluster, fixed()).unwrap()),
            ("secret", token(&other_secret, fixed()).unwrap()),
            ("time", token(&e, fixed() + Duration::from_secs(1)).unwrap()),
        ] {
            assert_ne!(t, base, "{what}");
        }
        // China regions sign for their own partition's STS.
        let cn = Eks {
            region: "cn-north-1".into(),
            ..eks()
        };
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token(&cn, fixed()).unwrap().trim_start_matches(PREFIX))
            .unwrap();
        assert!(
            String::from_utf8(url)
                .unwrap()
                .starts_with("https://sts.cn-north-1.amazonaws.com.cn/?")
        );
    }

    static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn test_clock() -> SystemTime {
        fixed() + Duration::from_secs(CLOCK.load(std::sync::atomic::Ordering::SeqCst))
    }

    #[test]
    fn tokens_are_reused_for_ten_minutes_then_signed_anew() {
        use std::sync::atomic::Ordering::SeqCst;
        let tokens = Tokens::new(eks(), test_clock);
        let first = tokens.authorization().unwrap();
        assert!(first.is_sensitive());
        assert!(first.to_str().unwrap().starts_with("Bearer k8s-aws-v1."));
        CLOCK.store(599, SeqCst);
        assert_eq!(tokens.authorization().unwrap(), first, "still fresh");
        CLOCK.store(600, SeqCst);
        let second = tokens.authorization().unwrap();
        assert_ne!(second, first, "renewed after 10 minutes");
        assert_eq!(
            second.to_str().unwrap(),
            format!("Bearer {}", token(&eks(), test_clock()).unwrap())
        );
        // A clock that goes back signs anew rather than keeping a token from the future.
        CLOCK.store(300, SeqCst);
        assert_ne!(tokens.authorization().unwrap(), second);
    }
}

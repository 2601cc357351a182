//! EKS mode: with `GATEWAY_EKS_CLUSTER_NAME` set, the Kubernetes client is built from the
//! cluster's endpoint and CA (`GATEWAY_EKS_ENDPOINT`, `GATEWAY_EKS_CA_DATA`) and signs its
//! own bearer tokens with the AWS credentials that Lambda puts in the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`), so
//! no kubeconfig and no exec plugin are needed. The token itself is made in
//! `src/k8s/eks.rs`.

use std::fmt;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, pem::PemObject as _};
use serde::Deserialize;

use super::{ConfigError, problem};

/// Eks is what the client needs to reach an EKS cluster and sign its tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Eks {
    /// cluster_name is signed into each token (`x-k8s-aws-id`): a token for one cluster
    /// is refused by another.
    pub cluster_name: String,
    pub endpoint: http::Uri,
    /// ca holds the DER certificates the API server's certificate must chain to.
    pub ca: Vec<Vec<u8>>,
    /// region is the region of the STS endpoint the token is presigned for.
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

// The secret and the session token never reach a log.
impl fmt::Debug for Eks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Eks")
            .field("cluster_name", &self.cluster_name)
            .field("endpoint", &self.endpoint)
            .field("ca_certificates", &self.ca.len())
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// EksEnv is the `GATEWAY_EKS_*` environment.
#[derive(Deserialize)]
pub(super) struct EksEnv {
    cluster_name: Option<String>,
    endpoint: Option<String>,
    ca_data: Option<String>,
}

/// AwsEnv is the `AWS_*` environment Lambda sets for the function's role.
#[derive(Deserialize)]
pub(super) struct AwsEnv {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    region: Option<String>,
    default_region: Option<String>,
}

/// eks validates EKS mode: None when `GATEWAY_EKS_CLUSTER_NAME` is unset (the kubeconfig
/// or the in-cluster service account is used, as before).
pub(super) fn eks(env: EksEnv, aws: AwsEnv) -> Result<Option<Eks>, ConfigError> {
    let Some(cluster_name) = env.cluster_name.map(|n| n.trim().to_owned()) else {
        for (var, set) in [
            ("GATEWAY_EKS_ENDPOINT", env.endpoint.is_some()),
            ("GATEWAY_EKS_CA_DATA", env.ca_data.is_some()),
        ] {
            if set {
                return Err(problem(var, "needs GATEWAY_EKS_CLUSTER_NAME".into()));
            }
        }
        return Ok(None);
    };
    if !is_cluster_name(&cluster_name) {
        return Err(problem(
            "GATEWAY_EKS_CLUSTER_NAME",
            format!(
                "'{cluster_name}' is not an EKS cluster name (1 to 100 letters, digits, '-' and '_', starting with a letter or digit)"
            ),
        ));
    }
    let endpoint = endpoint(env.endpoint)?;
    let ca = ca(env.ca_data)?;
    let region = aws.region.or(aws.default_region).ok_or_else(|| {
        problem(
            "AWS_REGION",
            "required in EKS mode (Lambda sets it); AWS_DEFAULT_REGION is read too".into(),
        )
    })?;
    if !is_region(&region) {
        return Err(problem(
            "AWS_REGION",
            format!("'{region}' is not an AWS region name"),
        ));
    }
    let required = |var: &str, v: Option<String>| {
        v.ok_or_else(|| {
            problem(
                var,
                "required in EKS mode (Lambda sets it from the function's role)".into(),
            )
        })
    };
    Ok(Some(Eks {
        cluster_name,
        endpoint,
        ca,
        region,
        access_key_id: required("AWS_ACCESS_KEY_ID", aws.access_key_id)?,
        secret_access_key: required("AWS_SECRET_ACCESS_KEY", aws.secret_access_key)?,
        session_token: aws.session_token,
    }))
}

fn endpoint(v: Option<String>) -> Result<http::Uri, ConfigError> {
    const VAR: &str = "GATEWAY_EKS_ENDPOINT";
    let v = v.ok_or_else(|| {
        problem(
            VAR,
            "required in EKS mode: the cluster's API server endpoint (aws eks describe-cluster --query cluster.endpoint)".into(),
        )
    })?;
    let uri: http::Uri = v
        .trim()
        .parse()
        .map_err(|e| problem(VAR, format!("'{v}' is not a URL: {e}")))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(problem(VAR, format!("'{v}' is not an https:// URL")));
    }
    Ok(uri)
}

/// ca decodes the base64 PEM bundle that `aws eks describe-cluster` gives as
/// `cluster.certificateAuthority.data`.
fn ca(v: Option<String>) -> Result<Vec<Vec<u8>>, ConfigError> {
    const VAR: &str = "GATEWAY_EKS_CA_DATA";
    let v = v.ok_or_else(|| {
        problem(
            VAR,
            "required in EKS mode: the cluster's CA, base64 (aws eks describe-cluster --query cluster.certificateAuthority.data)".into(),
        )
    })?;
    let compact: String = v.split_whitespace().collect();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| problem(VAR, format!("is not base64: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(VAR, format!("holds no valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(problem(VAR, "decodes to no PEM CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn is_cluster_name(n: &str) -> bool {
    (1..=100).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_region(r: &str) -> bool {
    (1..=32).contains(&r.len())
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    /// A self-signed CA, PEM then base64, as describe-cluster gives it.
    fn ca_data() -> String {
        use base64::Engine as _;
        let cert = rcgen::generate_simple_self_signed(vec!["kubernetes".into()]).unwrap();
        base64::engine::general_purpose::STANDARD.encode(cert.cert.pem())
    }

    fn vars(ca: &str) -> Vec<(&'static str, String)> {
        [
            ("GATEWAY_NAMESPACE", "kubernaut-system"),
            ("GATEWAY_EKS_CLUSTER_NAME", "prod-1"),
            (
                "GATEWAY_EKS_ENDPOINT",
                "https://ABC.gr7.eu-west-1.eks.amazonaws.com",
            ),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "c2VjcmV0"),
            ("AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2Vj"),
            ("AWS_LAMBDA_FUNCTION_NAME", "signal-gateway"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .chain([("GATEWAY_EKS_CA_DATA", ca.to_owned())])
        .collect()
    }

    fn load(vars: &[(&'static str, String)]) -> Result<Config, super::ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (*k, v.as_str())))
    }

    #[test]
    fn eks_mode_reads_the_cluster_and_lambda_credentials() {
        let c = load(&vars(&ca_data())).unwrap();
        let eks = c.eks.unwrap();
        assert_eq!(eks.cluster_name, "prod-1");
        assert_eq!(eks.region, "eu-west-1");
        assert_eq!(eks.ca.len(), 1);
        assert_eq!(eks.session_token.as_deref(), Some("IQoJb3JpZ2luX2Vj"));
        let shown = format!("{eks:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("IQoJ"),
            "{shown}"
        );
    }

    #[test]
    fn eks_mode_is_off_without_a_cluster_name() {
        let c = load(&[("GATEWAY_NAMESPACE", "a".to_owned())]).unwrap();
        assert!(c.eks.is_none());
        let e = load(&[
            ("GATEWAY_NAMESPACE", "a".to_owned()),
            ("GATEWAY_EKS_ENDPOINT", "https://x".to_owned()),
        ])
        .unwrap_err();
        assert_eq!(e.var, "GATEWAY_EKS_ENDPOINT", "{e}");
    }

    #[test]
    fn each_missing_or_bad_eks_variable_is_named() {
        let ca = ca_data();
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "GATEWAY_EKS_CLUSTER_NAME",
                Some("-bad name"),
                "GATEWAY_EKS_CLUSTER_NAME",
            ),
            ("GATEWAY_EKS_ENDPOINT", None, "GATEWAY_EKS_ENDPOINT"),
            (
                "GATEWAY_EKS_ENDPOINT",
                Some("http://plain.example"),
                "GATEWAY_EKS_ENDPOINT",
            ),
            ("GATEWAY_EKS_CA_DATA", None, "GATEWAY_EKS_CA_DATA"),
            (
                "GATEWAY_EKS_CA_DATA",
                Some("not base64!"),
                "GATEWAY_EKS_CA_DATA",
            ),
            (
                "GATEWAY_EKS_CA_DATA",
                Some("aGVsbG8="),
                "GATEWAY_EKS_CA_DATA",
            ),
            ("AWS_REGION", None, "AWS_REGION"),
            ("AWS_REGION", Some("EU West"), "AWS_REGION"),
            ("AWS_ACCESS_KEY_ID", None, "AWS_ACCESS_KEY_ID"),
            ("AWS_SECRET_ACCESS_KEY", None, "AWS_SECRET_ACCESS_KEY"),
        ];
        for (var, value, named) in cases {
            let mut vs: Vec<_> = vars(&ca).into_iter().filter(|(k, _)| k != var).collect();
            if let Some(v) = value {
                vs.push((var, (*v).to_owned()));
            }
            let e = load(&vs).unwrap_err();
            assert_eq!(e.var, *named, "{var}={value:?}: {e}");
        }
        // AWS_DEFAULT_REGION stands in for AWS_REGION.
        let mut vs: Vec<_> = vars(&ca)
            .into_iter()
            .filter(|(k, _)| *k != "AWS_REGION")
            .collect();
        vs.push(("AWS_DEFAULT_REGION", "us-east-2".to_owned()));
        assert_eq!(load(&vs).unwrap().eks.unwrap().region, "us-east-2");
    }
}

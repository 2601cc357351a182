//! EKS mode (`GATEWAY_EKS_CLUSTER_NAME`, docs/lambda.md) against the real API server:
//! the client goes to `GATEWAY_EKS_ENDPOINT`, verifies it with `GATEWAY_EKS_CA_DATA` and
//! presents a token signed from the AWS credentials in the environment (its exact form is
//! tested in src/k8s/eks.rs). The test API server cannot ask STS who signed it (there is
//! no AWS here), so it refuses the token with 401, while it answers the same request
//! made anonymously: the 401 is the proof that the token was sent, over a TLS session
//! the CA verified.

use base64::Engine as _;

use crate::{
    image::get_status,
    support::{setup, spawn},
};

fn eks_env<'a>(endpoint: &'a str, ca_data: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("GATEWAY_EKS_CLUSTER_NAME", "test-cluster"),
        ("GATEWAY_EKS_ENDPOINT", endpoint),
        ("GATEWAY_EKS_CA_DATA", ca_data),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "ASIAQEXAMPLE7"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2VjEXAMPLE"),
    ]
}

#[tokio::test]
async fn eks_mode_verifies_the_endpoint_with_its_ca_and_presents_a_signed_token() {
    let (cp, ns) = setup().await;
    let endpoint = cp.server_url();
    let b64 = base64::engine::general_purpose::STANDARD;

    // The same endpoint and CA without a token: the API server answers (anonymous
    // requests may read /version).
    let mut anonymous = kube::Config::new(endpoint.parse().unwrap());
    anonymous.root_cert = Some(
        rustls::pki_types::pem::PemObject::pem_slice_iter(cp.ca_pem())
            .map(|c: Result<rustls::pki_types::CertificateDer<'static>, _>| c.unwrap().to_vec())
            .collect(),
    );
    let version = kube::Client::try_from(anonymous)
        .unwrap()
        .apiserver_version()
        .await;
    assert!(version.is_ok(), "anonymous /version: {version:?}");

    let ca = b64.encode(cp.ca_pem());
    let gw = spawn(cp, ns.name(), "eks-0", &eks_env(&endpoint, &ca));
    let log = gw.logs().join("\n");
    assert!(
        log.contains("Kubernetes API not reachable yet") && log.contains("401"),
        "the start-up check is refused for the token it presented: {log}"
    );
    assert!(
        !log.contains("IQoJb3JpZ2lu"),
        "a credential reached the log: {log}"
    );
    assert_eq!(
        get_status(gw.addr(), "/readyz").await,
        503,
        "{}",
        gw.logs().join("\n")
    );

    // Another CA: the handshake fails, before any token is sent.
    let other = rcgen::generate_simple_self_signed(vec!["kubernetes".into()]).unwrap();
    let other_ca = b64.encode(other.cert.pem());
    let gw = spawn(cp, ns.name(), "eks-1", &eks_env(&endpoint, &other_ca));
    let log = gw.logs().join("\n");
    assert!(
        log.contains("Kubernetes API not reachable yet") && !log.contains("401"),
        "{log}"
    );
    assert!(log.to_lowercase().contains("certificate"), "{log}");
}

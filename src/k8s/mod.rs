//! Kube is the only module that talks to the Kubernetes API: the call budget (`calls`),
//! the fence record and its lock (`record`), the server clock (`clock`), the RR client
//! and the hold rule (`rrs`), owner resolution (`owners`) and scope labels (`scope`) over
//! metadata reads (`meta`), the record sweep (`sweep`), TokenReview and SubjectAccessReview (`tokenreview`),
//! EKS tokens from AWS credentials (`eks`) and health.

mod calls;
mod clock;
mod eks;
mod meta;
mod owners;
mod record;
mod rrs;
mod scope;
mod sweep;
mod tokenreview;

use std::time::Duration;

use calls::Op;
pub use calls::{ApiCalls, KubeError, backoff};
pub(crate) use calls::{OUTCOMES, request_kinds};
pub use owners::{Owners, Resolution};
pub use record::{
    Bid, Claim, Claimed, GENERATION, REMEDIATION_REQUEST, RR_NAMESPACE, Records, View,
    generation_of, lease_name, rr_name,
};
pub use rrs::{CREATE_RR, Counted, RemediationRequests, Rr, Tally};
pub use scope::{MANAGED, Scope};
pub use sweep::sweep;
pub use tokenreview::{Permission, may_create, review_token};

/// MANAGED_BY labels every object the gateway creates, for the sweep and operators.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "signal-gateway");

/// FIELD_MANAGER is the field manager of every write the gateway makes.
pub const FIELD_MANAGER: &str = "signal-gateway";

/// connect builds a client from the kubeconfig or the in-cluster service account, or in
/// EKS mode from the cluster's endpoint and CA with tokens signed from AWS credentials.
pub async fn connect(
    api_timeout: Duration,
    eks: Option<&crate::config::Eks>,
) -> Result<kube::Client, kube::Error> {
    if let Some(eks) = eks {
        return eks::client(eks, api_timeout);
    }
    let mut kc = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    // Each call is bounded by `ApiCalls`. A read timeout here would also fire on
    // idle pooled connections and break the next request sent on them.
    kc.connect_timeout = Some(api_timeout);
    kube::Client::try_from(kc)
}

/// reachable asks the API server for its version, bounded by `timeout`.
pub async fn reachable(client: &kube::Client, timeout: Duration) -> Result<(), KubeError> {
    let calls = ApiCalls::new(timeout);
    calls
        .read(Op::ReadVersion, "apiserver", || client.apiserver_version())
        .await?
        .map(drop)
        .map_err(|e| Op::ReadVersion.failed("apiserver", e))
}

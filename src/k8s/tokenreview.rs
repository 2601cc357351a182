//! Tokenreview asks the API server who a bearer token belongs to, and whether that caller
//! may send signals (a SubjectAccessReview).

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, api::PostParams};

use super::calls::{ApiCalls, KubeError, Op};

/// review_token sends one TokenReview for `audience` (None: the API server's own) and
/// returns its status.
pub async fn review_token(
    client: &kube::Client,
    token: &str,
    audience: Option<&str>,
    calls: &ApiCalls,
) -> Result<TokenReviewStatus, KubeError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: audience.map(|a| vec![a.to_owned()]),
        },
        ..TokenReview::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let done = calls
        .run(
            Op::ReviewToken,
            "",
            api.create(&PostParams::default(), &review),
        )
        .await?
        .map_err(|e| Op::ReviewToken.failed("", e))?;
    Ok(done.status.unwrap_or_default())
}

/// Permission is the action a caller must be allowed: `create` on a resource (or on one
/// object of it, by name) in a namespace.
#[derive(Clone, Debug)]
pub struct Permission {
    pub namespace: String,
    pub group: String,
    pub resource: String,
    pub name: Option<String>,
}

/// may_create sends one SubjectAccessReview: may `user` create `permission.resource`?
pub async fn may_create(
    client: &kube::Client,
    user: &UserInfo,
    permission: &Permission,
    calls: &ApiCalls,
) -> Result<bool, KubeError> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(permission.namespace.clone()),
                group: Some(permission.group.clone()),
                resource: Some(permission.resource.clone()),
                name: permission.name.clone(),
                verb: Some("create".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let done = calls
        .run(
            Op::ReviewAccess,
            &permission.resource,
            api.create(&PostParams::default(), &review),
        )
        .await?
        .map_err(|e| Op::ReviewAccess.failed(&permission.resource, e))?;
    Ok(done
        .status
        .is_some_and(|s| s.allowed && s.denied != Some(true)))
}

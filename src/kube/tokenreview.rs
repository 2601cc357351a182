//! Tokenreview asks the API server who a bearer token belongs to.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::{Api, api::PostParams};

use super::calls::{ApiCalls, KubeError};

/// review_token sends one TokenReview and returns its status.
pub async fn review_token(
    client: &kube::Client,
    token: &str,
    calls: &ApiCalls,
) -> Result<TokenReviewStatus, KubeError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            ..TokenReviewSpec::default()
        },
        ..TokenReview::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let done = calls
        .run(
            "reviewing token",
            "",
            api.create(&PostParams::default(), &review),
        )
        .await?
        .map_err(|e| KubeError::failed("reviewing token", "", e))?;
    Ok(done.status.unwrap_or_default())
}

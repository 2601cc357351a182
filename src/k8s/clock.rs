//! Clock judges Lease expiry on the API server's clock alone: the age of the Lease's last
//! server-side write against the `Date` header of the response that read it, so that a
//! gateway with a skewed clock can neither steal nor keep a Lease.

use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::coordination::v1::Lease;

use super::calls::{ApiCalls, KubeError, Op};

/// get_dated sends a GET or LIST and returns the decoded body (None on 404)
/// with the API server's time of the answer.
pub(crate) async fn get_dated<T: serde::de::DeserializeOwned>(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
    op: Op,
    name: &str,
    calls: &ApiCalls,
) -> Result<(Option<T>, jiff::Timestamp), KubeError> {
    let send = || {
        let req = req.clone();
        async move {
            let res = client.send(req.map(kube::client::Body::from)).await?;
            let status = res.status();
            let date = res.headers().get(http::header::DATE).cloned();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, kube::Error>((status, date, body))
        }
    };
    let (status, date, body) = calls
        .read(op, name, send)
        .await?
        .map_err(|e| op.failed(name, e))?;
    let unusable = |message: String| KubeError::Unusable {
        op: op.words(),
        name: name.to_owned(),
        message,
    };
    let now = server_time(date.as_ref())
        .ok_or_else(|| unusable("the API server's response has no valid Date header".into()))?;
    if status == http::StatusCode::NOT_FOUND {
        return Ok((None, now));
    }
    if !status.is_success() {
        let st = serde_json::from_slice::<kube::core::Status>(&body).unwrap_or_else(|_| {
            kube::core::Status::failure(&String::from_utf8_lossy(&body), "")
                .with_code(status.as_u16())
        });
        return Err(op.failed(name, kube::Error::Api(st.boxed())));
    }
    let value = serde_json::from_slice(&body)
        .map_err(|e| unusable(format!("decoding the response: {e}")))?;
    Ok((Some(value), now))
}

fn server_time(date: Option<&http::HeaderValue>) -> Option<jiff::Timestamp> {
    let date = httpdate::parse_http_date(date?.to_str().ok()?).ok()?;
    jiff::Timestamp::try_from(date).ok()
}

/// last_server_write is the API server's time of the Lease's newest write.
fn last_server_write(lease: &Lease) -> Option<jiff::Timestamp> {
    let created = lease.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let managed = lease
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.time.as_ref().map(|t| t.0));
    created.into_iter().chain(managed).max()
}

/// age is how long ago, on the server's clock, the Lease was last written.
/// Both times have one-second resolution.
pub(crate) fn age(lease: &Lease, server_now: jiff::Timestamp) -> Option<Duration> {
    let written = last_server_write(lease)?;
    u64::try_from(server_now.as_second() - written.as_second())
        .ok()
        .map(Duration::from_secs)
}

/// is_expired judges a held Lease's expiry on the API server's clock alone; a
/// Lease counts as expired only when its rounded age exceeds its duration, which is never
/// taken longer than this gateway's own (`configured`): a hand-edited record with a huge
/// `leaseDurationSeconds` cannot block a fingerprint for longer.
#[must_use]
pub(crate) fn is_expired(lease: &Lease, server_now: jiff::Timestamp, configured: Duration) -> bool {
    let secs = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .map_or(configured.as_secs(), |s| u64::try_from(s).unwrap_or(0))
        .min(configured.as_secs());
    age(lease, server_now).is_some_and(|age| age.as_secs() > secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        ManagedFieldsEntry, MicroTime, ObjectMeta, Time,
    };

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn lease(created: i64, updated: Option<i64>, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                creation_timestamp: Some(Time(at(created))),
                managed_fields: updated.map(|u| {
                    vec![ManagedFieldsEntry {
                        time: Some(Time(at(u))),
                        ..ManagedFieldsEntry::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("a/1".into()),
                lease_duration_seconds: Some(duration),
                // A holder with a clock far in the future cannot keep its lease by this.
                renew_time: Some(MicroTime(at(created + 10_000))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn expiry_uses_server_write_times_not_renew_time() {
        let l = lease(1000, None, 10);
        assert!(!is_expired(&l, at(1010), Duration::from_secs(30)));
        assert!(is_expired(&l, at(1011), Duration::from_secs(30)));
    }

    #[test]
    fn a_later_write_restarts_the_clock() {
        let l = lease(1000, Some(2000), 10);
        assert!(!is_expired(&l, at(2005), Duration::from_secs(30)));
        assert!(is_expired(&l, at(2011), Duration::from_secs(30)));
        assert_eq!(age(&l, at(2011)), Some(Duration::from_secs(11)));
    }

    #[test]
    fn a_hand_edited_duration_is_capped_at_our_own() {
        let l = lease(1000, None, i32::MAX);
        assert!(is_expired(&l, at(1031), Duration::from_secs(30)));
        assert!(!is_expired(&l, at(1030), Duration::from_secs(30)));
    }

    #[test]
    fn a_server_clock_behind_the_write_means_not_expired() {
        let l = lease(1000, None, 10);
        assert!(!is_expired(&l, at(500), Duration::from_secs(30)));
    }
}

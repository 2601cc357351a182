//! Check holds the invariants the fuzz targets assert.
#![allow(dead_code, reason = "each target uses a part of it")]

use signal::{ORIGINAL_PAYLOAD_MAX, Signal, lease_name, rr_name};

/// short fails when an error message could flood an answer or a log line.
pub fn short(message: &str) {
    assert!(message.len() < 1024, "a {}-byte message", message.len());
}

/// names fails unless the fingerprint and the names derived from it are valid.
pub fn names(fp: &str) {
    assert_eq!(fp.len(), 64, "{fp}");
    assert!(
        fp.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{fp}"
    );
    for name in [rr_name(fp, u64::MAX), lease_name(fp)] {
        assert!(name.len() <= 253, "{name}");
        assert!(
            name.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-')),
            "{name}"
        );
        assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
    }
}

/// signal fails unless the signal's names are valid and the fields it gives its RR are within
/// what kubernaut's CRD and the payload bound allow.
pub fn signal(s: &Signal) {
    names(s.fingerprint.as_str());
    assert!(
        s.cluster_id
            .as_deref()
            .is_none_or(|c| !c.is_empty() && c.chars().count() <= 253),
        "{:?}",
        s.cluster_id
    );
    assert!(
        s.provider_data.starts_with("{\"labels\":") && s.provider_data.ends_with('}'),
        "{}",
        s.provider_data
    );
    assert!(
        s.original_payload
            .as_deref()
            .is_none_or(|p| p.len() <= ORIGINAL_PAYLOAD_MAX)
    );
}

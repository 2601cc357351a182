//! Check holds the invariants the fuzz targets assert.
#![allow(dead_code, reason = "each target uses a part of it")]

use signal_gateway::{kube::lease_name, pipeline::rr_name};

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

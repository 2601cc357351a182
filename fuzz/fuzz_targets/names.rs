//! Fuzzes fingerprint and name derivation over arbitrary targets: the fingerprint is always
//! 64 lowercase hex digits, and the RR and Lease names derived from it are valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signal::{Fingerprint, TargetResource};

mod check;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{0}');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    let cluster = next();
    let target = TargetResource {
        kind: next(),
        namespace: next(),
        name: next(),
        api_version: String::new(),
    };
    let cluster = (!cluster.is_empty()).then_some(cluster.as_str());
    let fp = Fingerprint::of(cluster, &target);
    check::names(fp.as_str());
    assert_eq!(fp, Fingerprint::of(cluster, &target));
});

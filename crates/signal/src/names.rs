//! Names are the Kubernetes object names derived from a fingerprint: the fenced name of each
//! generation of its RemediationRequest, and the name of its fence record (a Lease).

/// rr_name is the fenced name of generation `generation` of a fingerprint's RR.
#[must_use]
pub fn rr_name(fp: &str, generation: u64) -> String {
    format!("rr-{fp}-{generation}")
}

/// generation_of reads the generation of a fenced RR name of `fp` (None for other names).
#[must_use]
pub fn generation_of(fp: &str, name: &str) -> Option<u64> {
    name.strip_prefix("rr-")?
        .strip_prefix(fp)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// lease_name is the record's name for a fingerprint: always a valid DNS-1123 name.
#[must_use]
pub fn lease_name(fp: &str) -> String {
    format!("sg-{fp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_whole_and_valid() {
        let a = "ab".repeat(32);
        let b = format!("{}cd", "ab".repeat(31));
        assert_ne!(
            lease_name(&a),
            lease_name(&b),
            "a shared prefix must not collide"
        );
        let n = lease_name(&a);
        assert!(
            n.len() <= 253
                && n.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
    }
}

//! Target is the resource a signal is about: the kinds the adapters know (one table) and
//! the validation that makes a target safe to name and to fingerprint.

use super::shown;

/// TargetResource identifies the Kubernetes object the signal is about.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TargetResource {
    pub kind: String,
    pub name: String,
    /// Empty for cluster-scoped resources such as nodes.
    pub namespace: String,
    /// Empty when the sender did not say and the kind is not known.
    pub api_version: String,
}

#[cfg(any(test, feature = "testing"))]
impl TargetResource {
    /// pod is the target of Pod `name` in `namespace`, for unit tests (the `testing` feature
    /// exports it to those of other crates).
    #[must_use]
    pub fn pod(namespace: &str, name: &str) -> TargetResource {
        TargetResource {
            kind: "Pod".into(),
            name: name.into(),
            namespace: namespace.into(),
            api_version: "v1".into(),
        }
    }
}

/// Kind is a kind of resource the adapters know: its API version, plural, scope, and the
/// Alertmanager label that names it.
pub struct Kind {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// label is the Alertmanager label naming a resource of this kind, if any.
    pub label: Option<&'static str>,
    /// read_op names a metadata read of this kind in errors and metrics.
    pub read_op: &'static str,
    /// names is the rule Kubernetes applies to names of this kind.
    pub(crate) names: NameRule,
}

/// NameRule is one of Kubernetes' rules for object names (`k8s.io/apimachinery`'s
/// `IsDNS1123Subdomain`, `IsDNS1123Label`, `IsDNS1035Label`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// At most 253 characters of lowercase letters, digits, `-` and `.`, starting and ending
    /// with a letter or digit, with a letter or digit on each side of every `.`; no limit
    /// per dot-separated part. Most kinds, and custom resources.
    Subdomain,
    /// At most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit.
    Label,
    /// A DNS-1123 label that starts with a letter (Services).
    Dns1035Label,
}

impl NameRule {
    /// allows reports whether `name` is valid under this rule.
    pub(crate) fn allows(self, name: &str) -> bool {
        match self {
            NameRule::Subdomain => is_dns1123_subdomain(name),
            NameRule::Label => is_dns1123_label(name),
            NameRule::Dns1035Label => {
                is_dns1123_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())
            }
        }
    }

    /// describes says what the rule requires, for an error message.
    fn describes(self) -> &'static str {
        match self {
            NameRule::Subdomain => {
                "a valid DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and \
                 ending with a letter or digit, at most 253 characters)"
            }
            NameRule::Label => {
                "a valid DNS-1123 label (lowercase letters, digits and '-', starting and ending \
                 with a letter or digit, at most 63 characters)"
            }
            NameRule::Dns1035Label => {
                "a valid DNS-1035 label (lowercase letters, digits and '-', starting with a \
                 letter and ending with a letter or digit, at most 63 characters)"
            }
        }
    }
}

macro_rules! kind {
    ($kind:literal, $api_version:literal, $plural:literal, $namespaced:literal, $label:expr) => {
        kind!(
            $kind,
            $api_version,
            $plural,
            $namespaced,
            $label,
            NameRule::Subdomain
        )
    };
    ($kind:literal, $api_version:literal, $plural:literal, $namespaced:literal, $label:expr, $names:expr) => {
        Kind {
            kind: $kind,
            api_version: $api_version,
            plural: $plural,
            namespaced: $namespaced,
            label: $label,
            read_op: concat!("reading ", $plural),
            names: $names,
        }
    };
}

/// KINDS lists the known kinds; those with a label are in the priority order in which an
/// alert's labels are tried (the target table of docs/api.md). `job_name`, not `job`, names a
/// Job because Prometheus puts the scrape job in `job` on nearly every alert. A
/// `namespace` label alone names the Namespace.
pub const KINDS: &[Kind] = &[
    kind!("Pod", "v1", "pods", true, Some("pod")),
    kind!(
        "Deployment",
        "apps/v1",
        "deployments",
        true,
        Some("deployment")
    ),
    kind!(
        "StatefulSet",
        "apps/v1",
        "statefulsets",
        true,
        Some("statefulset")
    ),
    kind!(
        "DaemonSet",
        "apps/v1",
        "daemonsets",
        true,
        Some("daemonset")
    ),
    kind!(
        "ReplicaSet",
        "apps/v1",
        "replicasets",
        true,
        Some("replicaset")
    ),
    kind!("Job", "batch/v1", "jobs", true, Some("job_name")),
    kind!("CronJob", "batch/v1", "cronjobs", true, Some("cronjob")),
    kind!(
        "HorizontalPodAutoscaler",
        "autoscaling/v2",
        "horizontalpodautoscalers",
        true,
        Some("horizontalpodautoscaler")
    ),
    kind!(
        "PersistentVolumeClaim",
        "v1",
        "persistentvolumeclaims",
        true,
        Some("persistentvolumeclaim")
    ),
    kind!(
        "Service",
        "v1",
        "services",
        true,
        Some("service"),
        NameRule::Dns1035Label
    ),
    kind!("Node", "v1", "nodes", false, Some("node")),
    kind!(
        "Namespace",
        "v1",
        "namespaces",
        false,
        None,
        NameRule::Label
    ),
    kind!("PersistentVolume", "v1", "persistentvolumes", false, None),
];

/// NAMESPACE is the kind a `namespace` label alone names.
pub(crate) const NAMESPACE: &Kind = &KINDS[11];

/// known_kind looks a kind up case-insensitively, so that `pod` and `Pod` fingerprint alike.
pub fn known_kind(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind.eq_ignore_ascii_case(kind))
}

/// is_dns1123_label reports whether `s` is a valid namespace (RFC 1123 label, at most 63 characters).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// is_object_name reports whether `s` can name an object of most kinds (a DNS-1123 subdomain).
pub fn is_object_name(s: &str) -> bool {
    is_dns1123_subdomain(s)
}

/// is_dns1123_subdomain reports whether `s` is a DNS-1123 subdomain as Kubernetes checks
/// it: at most 253 characters, dot-separated parts of lowercase letters, digits and `-`
/// that start and end with a letter or digit, with no limit on a part's length.
fn is_dns1123_subdomain(s: &str) -> bool {
    let part = |p: &str| {
        let b = p.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    (1..=253).contains(&s.len()) && s.split('.').all(part)
}

/// is_kind reports whether `s` can be a Kubernetes kind: ASCII letters and digits, starting with a letter.
fn is_kind(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b.iter().all(u8::is_ascii_alphanumeric)
}

/// validate_target checks that a target can name a Kubernetes object and be fingerprinted unambiguously.
pub(crate) fn validate_target(target: &TargetResource) -> Result<(), String> {
    if !is_kind(&target.kind) {
        return Err(format!(
            "kind {} is not a valid Kubernetes kind (ASCII letters and digits, starting with a letter)",
            shown(&target.kind)
        ));
    }
    let rule = known_kind(&target.kind).map_or(NameRule::Subdomain, |k| k.names);
    if !rule.allows(&target.name) {
        return Err(format!(
            "{} name {} is not {}",
            target.kind,
            shown(&target.name),
            rule.describes()
        ));
    }
    if !target.namespace.is_empty() && !is_dns1123_label(&target.namespace) {
        return Err(format!(
            "namespace {} is not a valid DNS-1123 label (lowercase letters, digits and '-', \
             starting and ending with a letter or digit, at most 63 characters)",
            shown(&target.namespace)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_row_is_the_namespace_kind() {
        assert_eq!(NAMESPACE.kind, "Namespace");
        assert!(NAMESPACE.label.is_none() && !NAMESPACE.namespaced);
    }

    #[test]
    fn dns1123_rules() {
        for ok in ["a", "web-0", "a.b-c.d", "0abc", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok) || ok.contains('.'), "{ok:?}");
            assert!(is_dns1123_subdomain(ok), "{ok:?}");
        }
        assert!(is_dns1123_subdomain(&format!(
            "{}.{}",
            "a".repeat(63),
            "b".repeat(63)
        )));
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a:b",
            "wéb",
            "a..b",
            "a.-b",
            ".a",
            "a.",
            &"a".repeat(254),
        ] {
            assert!(
                !is_dns1123_subdomain(bad),
                "{bad:?} must not be a subdomain"
            );
        }
        let longest = ["a"; 127].join(".");
        assert_eq!(longest.len(), 253);
        assert!(
            is_dns1123_subdomain(&longest),
            "253 characters is the limit"
        );
        assert!(
            !is_dns1123_subdomain(&format!("{longest}.a")),
            "255 characters is too long"
        );
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn each_kind_gets_kubernetes_own_name_rule() {
        // A 64-character Pod name without dots: a subdomain has no per-part limit.
        let pod = "payment-api-processing-test-3f1c0a6e-2b7d-4c1e-9a55-0d6b8e1f2a3c";
        assert_eq!(pod.len(), 64);
        let cases: [(&str, &str, bool); 14] = [
            ("Pod", pod, true),
            ("Deployment", &"d".repeat(253), true),
            ("Pod", &"p".repeat(254), false),
            ("Pod", "web.v2-0", true),
            ("Node", "ip-10-0-0-1.ec2.internal", true),
            ("Service", "web", true),
            ("Service", "0web", false),
            ("Service", "web.v2", false),
            ("Service", &"s".repeat(64), false),
            ("Namespace", &"n".repeat(63), true),
            ("Namespace", &"n".repeat(64), false),
            ("Namespace", "a.b", false),
            ("MyCustomKind", pod, true),
            ("Pod", "Web", false),
        ];
        for (kind, name, ok) in cases {
            let t = TargetResource {
                kind: kind.into(),
                name: name.into(),
                namespace: if kind == "Namespace" || kind == "Node" {
                    String::new()
                } else {
                    "prod".into()
                },
                api_version: String::new(),
            };
            assert_eq!(validate_target(&t).is_ok(), ok, "{kind} {name:?}");
        }
        let t = TargetResource {
            kind: "Service".into(),
            name: "0web".into(),
            namespace: "prod".into(),
            api_version: String::new(),
        };
        let reason = validate_target(&t).err().unwrap_or_default();
        assert!(reason.contains("DNS-1035 label"), "{reason}");
    }

    #[test]
    fn validate_target_names_the_problem_without_echoing_huge_values() {
        let mut t = TargetResource::pod("prod", &"x".repeat(10_000));
        let reason = validate_target(&t).err().unwrap_or_default();
        assert!(reason.contains("Pod name"), "{reason}");
        assert!(reason.contains("10000 bytes"), "{reason}");
        assert!(reason.len() < 400, "{reason}");
        t.name = "web-0".into();
        t.namespace = "Prod".into();
        let reason = validate_target(&t).err().unwrap_or_default();
        assert!(reason.starts_with("namespace \"Prod\""), "{reason}");
        t.namespace = "prod".into();
        t.kind = "Po:d".into();
        assert!(validate_target(&t).is_err());
        t.kind = "Pod".into();
        assert_eq!(validate_target(&t), Ok(()));
    }
}

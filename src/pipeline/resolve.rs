//! Resolve decides what problem a signal belongs to before it is deduplicated: the workload
//! behind its target (`k8s::Owners`, `GATEWAY_OWNER_RESOLUTION`) and, with
//! `GATEWAY_SCOPE=managed`, whether kubernaut manages that workload (`k8s::Scope`). A
//! refused signal writes nothing.

use crate::{
    k8s::{ApiCalls, KubeError, MANAGED, Owners, Resolution, Scope},
    signal::{Signal, TargetResource},
    telemetry::{self, kv},
};

/// Refusal is why a signal gets no RR; the answer is 200 with a `rejection`, as kubernaut's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The workload is outside kubernaut's scope (`GATEWAY_SCOPE=managed`).
    Unmanaged { resource: TargetResource },
    /// The target is gone and its workload was never resolved here.
    Gone { message: String },
}

impl Refusal {
    /// reason is the constant naming the refusal (`rejection.reason`, a metric label).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unmanaged { .. } => "unmanaged_resource",
            Refusal::Gone { .. } => "resource_not_found",
        }
    }

    /// message says what was refused, for an operator.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Refusal::Unmanaged { resource } => {
                format!(
                    "Resource {} is not in Kubernaut's management scope",
                    reference(resource)
                )
            }
            Refusal::Gone { message } => message.clone(),
        }
    }

    /// action says what an operator can do about it.
    #[must_use]
    pub fn action(&self) -> String {
        match self {
            Refusal::Unmanaged { resource } => {
                let namespace = if resource.namespace.is_empty() {
                    String::new()
                } else {
                    format!("-n {} ", resource.namespace)
                };
                format!(
                    "To manage this resource, add the label: kubectl label {namespace}{} {} {MANAGED}=true",
                    resource.kind.to_ascii_lowercase(),
                    resource.name
                )
            }
            Refusal::Gone { .. } => {
                "None: the resource no longer exists; signals about its workload's live objects are still counted".into()
            }
        }
    }

    /// resource is `namespace:Kind:name` (or `Kind:name`) of the refused workload, if known.
    #[must_use]
    pub fn resource(&self) -> Option<String> {
        match self {
            Refusal::Unmanaged { resource } => Some(reference(resource)),
            Refusal::Gone { .. } => None,
        }
    }
}

/// reference renders a resource as kubernaut does: `namespace:Kind:name`, or `Kind:name`.
fn reference(r: &TargetResource) -> String {
    if r.namespace.is_empty() {
        format!("{}:{}", r.kind, r.name)
    } else {
        format!("{}:{}:{}", r.namespace, r.kind, r.name)
    }
}

/// Resolver holds the owner and scope checks of one process.
pub(crate) struct Resolver {
    pub owners: Option<Owners>,
    pub scope: Option<Scope>,
}

impl Resolver {
    /// resolve retargets `signal` to its workload, or says why it gets no RR.
    pub(crate) async fn resolve(
        &self,
        signal: &mut Signal,
        calls: &ApiCalls,
    ) -> Result<Option<Refusal>, KubeError> {
        if let Some(owners) = &self.owners {
            match owners.resolve(&signal.target, calls).await? {
                Resolution::Workload(w) if w == signal.target => {}
                Resolution::Workload(w) => signal.retarget(w),
                Resolution::Gone(message) => return Ok(Some(refused(Refusal::Gone { message }))),
            }
        }
        if let Some(scope) = &self.scope
            && !scope.managed(&signal.target, calls).await?
        {
            return Ok(Some(refused(Refusal::Unmanaged {
                resource: signal.target.clone(),
            })));
        }
        Ok(None)
    }
}

fn refused(refusal: Refusal) -> Refusal {
    telemetry::metrics()
        .signals_rejected
        .add(1, &[kv("reason", refusal.reason())]);
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmanaged_refusal_names_the_label_to_set() {
        let r = Refusal::Unmanaged {
            resource: TargetResource {
                kind: "Deployment".into(),
                name: "web".into(),
                namespace: "prod".into(),
                api_version: "apps/v1".into(),
            },
        };
        assert_eq!(r.reason(), "unmanaged_resource");
        assert_eq!(r.resource().as_deref(), Some("prod:Deployment:web"));
        assert_eq!(
            r.action(),
            "To manage this resource, add the label: kubectl label -n prod deployment web kubernaut.ai/managed=true"
        );
        let node = Refusal::Unmanaged {
            resource: TargetResource {
                kind: "Node".into(),
                name: "worker-1".into(),
                namespace: String::new(),
                api_version: "v1".into(),
            },
        };
        assert_eq!(node.resource().as_deref(), Some("Node:worker-1"));
        assert!(node.action().contains("kubectl label node worker-1 "));
    }
}

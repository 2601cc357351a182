//! Resource is the set of attributes that names this process in all of its telemetry.

use opentelemetry::KeyValue;
use opentelemetry_sdk::{
    Resource,
    resource::{EnvResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector},
};

use super::env::Env;

/// SERVICE_NAME is `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// names the service.
pub const SERVICE_NAME: &str = "signal-gateway";

/// resource_attributes are the gateway's defaults, the lowest layer of the resource:
/// `service.name`, a `service.instance.id` unique to the process, `k8s.pod.name` and
/// `k8s.namespace.name` from `POD_NAME` (or, in a pod, `HOSTNAME`) and `POD_NAMESPACE`.
#[must_use]
pub fn resource_attributes(env: Env<'_>, instance_id: &str) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("service.name", SERVICE_NAME),
        KeyValue::new("service.instance.id", instance_id.to_owned()),
    ];
    // In a pod, HOSTNAME is the pod's name (Knative cannot set POD_NAME from a fieldRef).
    let in_pod = env("KUBERNETES_SERVICE_HOST").is_some();
    let pod = env("POD_NAME").or_else(|| env("HOSTNAME").filter(|_| in_pod));
    if let Some(pod) = pod {
        attrs.push(KeyValue::new("k8s.pod.name", pod));
    }
    if let Some(ns) = env("POD_NAMESPACE") {
        attrs.push(KeyValue::new("k8s.namespace.name", ns));
    }
    attrs
}

/// instance_id is a random UUID (version 4) naming this process.
fn instance_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// resource is, lowest precedence first: the SDK's `telemetry.sdk.*`, the gateway's
/// defaults, `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME`. The SDK's detectors read
/// the last two from the process' environment.
pub(super) fn resource(env: Env<'_>) -> Resource {
    let builder = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(resource_attributes(env, &instance_id()))
        .with_detector(Box::new(EnvResourceDetector::new()));
    // The SDK's detector names the service `unknown_service` when no variable does.
    if env("OTEL_SERVICE_NAME").is_some() {
        builder.with_detector(Box::new(SdkProvidedResourceDetector))
    } else {
        builder
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::env::{process_env, tests::env};

    fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[test]
    fn resource_has_instance_pod_and_namespace() {
        let e = env(&[("POD_NAME", "gw-1"), ("POD_NAMESPACE", "ops")]);
        let a = resource_attributes(&e, "id-1");
        assert_eq!(attr(&a, "service.name").as_deref(), Some(SERVICE_NAME));
        assert_eq!(attr(&a, "service.instance.id").as_deref(), Some("id-1"));
        assert_eq!(attr(&a, "k8s.pod.name").as_deref(), Some("gw-1"));
        assert_eq!(attr(&a, "k8s.namespace.name").as_deref(), Some("ops"));
        let knative = env(&[
            ("HOSTNAME", "sg-00001-x"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ]);
        let a = resource_attributes(&knative, "id-2");
        assert_eq!(attr(&a, "k8s.pod.name").as_deref(), Some("sg-00001-x"));
        let laptop = env(&[("HOSTNAME", "laptop")]);
        assert_eq!(
            attr(&resource_attributes(&laptop, "id-3"), "k8s.pod.name"),
            None
        );
        assert_ne!(instance_id(), instance_id());
        let id = instance_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4", "a version 4 UUID: {id}");
    }

    /// CHILD marks the test process that `resource_in` starts.
    const CHILD: &str = "SIGNAL_GATEWAY_TEST_RESOURCE_CHILD";

    /// resource_in is the resource of a process whose environment holds `pairs`: the SDK's
    /// detectors read the process' own environment, so a child runs `resource_of_this_process`.
    fn resource_in(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "telemetry::resource::tests::resource_of_this_process",
            ])
            .arg("--nocapture")
            .env(CHILD, "1")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .env_remove("OTEL_SERVICE_NAME")
            .envs(pairs.iter().copied());
        let out = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        stdout
            .lines()
            .filter_map(|l| l.split_once("resource: ")?.1.split_once('='))
            .map(|(k, v)| KeyValue::new(k.to_owned(), v.to_owned()))
            .collect()
    }

    /// resource_of_this_process prints the resource, one `resource: key=value` line per
    /// attribute, when `resource_in` started it.
    #[test]
    fn resource_of_this_process() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        for (k, v) in resource(&process_env).iter() {
            println!("resource: {k}={v}");
        }
    }

    #[test]
    fn service_name_from_the_environment_is_never_overwritten() {
        let a = resource_in(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=billing,team=ops")]);
        assert_eq!(attr(&a, "service.name").as_deref(), Some("billing"));
        assert_eq!(attr(&a, "team").as_deref(), Some("ops"));
        let a = resource_in(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=billing"),
            ("OTEL_SERVICE_NAME", "alerts"),
        ]);
        assert_eq!(attr(&a, "service.name").as_deref(), Some("alerts"));
        assert_eq!(
            a.iter()
                .filter(|kv| kv.key.as_str() == "service.name")
                .count(),
            1
        );
        let a = resource_in(&[("POD_NAME", "gw-1")]);
        assert_eq!(attr(&a, "service.name").as_deref(), Some(SERVICE_NAME));
        assert_eq!(attr(&a, "k8s.pod.name").as_deref(), Some("gw-1"));
        assert!(attr(&a, "telemetry.sdk.name").is_some());
    }
}

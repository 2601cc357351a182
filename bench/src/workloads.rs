//! Workloads creates Deployments, their ReplicaSets and Pods with the admin client, outside
//! any measured phase, for the scenarios with owner resolution on: the gateway reads each
//! Pod's controller chain and refuses a Pod that does not exist, so the objects must be
//! real. No controller manager runs on the bench's control plane: the objects just sit,
//! linked by the controller ownerReferences written here, as a Deployment's would be.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::BoxError;

/// CONCURRENCY bounds the creates in flight.
const CONCURRENCY: usize = 32;
/// TEMPLATE_HASH stands for the pod-template hash a Deployment puts in its ReplicaSet's name.
const TEMPLATE_HASH: &str = "7d4b9c6f8";

fn collection(ns: &str, resource: &str) -> String {
    match resource {
        "deployments" | "replicasets" => format!("/apis/apps/v1/namespaces/{ns}/{resource}"),
        _ => format!("/api/v1/namespaces/{ns}/{resource}"),
    }
}

/// service_account creates the `default` ServiceAccount of `ns`, which admission wants
/// before it accepts a Pod (nothing here creates it).
pub async fn service_account(client: &kube::Client, ns: &str) -> Result<(), BoxError> {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    create_all(client, vec![(collection(ns, "serviceaccounts"), sa)]).await?;
    Ok(())
}

/// deployments creates, in `ns`, one Deployment per name, a ReplicaSet controlled by it and
/// `pods` Pods controlled by that ReplicaSet, and returns the Pods' names of each Deployment,
/// in the order of `names`.
pub async fn deployments(
    client: &kube::Client,
    ns: &str,
    names: &[String],
    pods: usize,
) -> Result<Vec<Vec<String>>, BoxError> {
    let created = create_all(
        client,
        names
            .iter()
            .map(|n| (collection(ns, "deployments"), deployment(n)))
            .collect(),
    )
    .await?;
    let mut sets = Vec::with_capacity(names.len());
    for (d, name) in created.iter().zip(names) {
        sets.push((collection(ns, "replicasets"), replica_set(name, owner(d)?)));
    }
    let sets = create_all(client, sets).await?;
    let mut objects = Vec::with_capacity(names.len() * pods);
    let mut made = Vec::with_capacity(names.len());
    for (rs, name) in sets.iter().zip(names) {
        let set = format!("{name}-{TEMPLATE_HASH}");
        let names: Vec<String> = (0..pods).map(|i| format!("{set}-x{i}")).collect();
        for pod in &names {
            objects.push((collection(ns, "pods"), self::pod(name, pod, owner(rs)?)));
        }
        made.push(names);
    }
    create_all(client, objects).await?;
    Ok(made)
}

fn selector(app: &str) -> Value {
    json!({"matchLabels": {"app": app}})
}

/// pod_spec is a Pod that never runs anywhere; `Always` is the only restartPolicy a
/// Deployment's template may have.
fn pod_spec() -> Value {
    json!({
        "containers": [{"name": "app", "image": "registry.example/app:1"}],
        "restartPolicy": "Always",
        "automountServiceAccountToken": false,
    })
}

fn template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": pod_spec()})
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"selector": selector(name), "template": template(name)},
    })
}

fn replica_set(app: &str, owners: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{app}-{TEMPLATE_HASH}"), "ownerReferences": owners},
        "spec": {"selector": selector(app), "template": template(app)},
    })
}

fn pod(app: &str, name: &str, owners: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}, "ownerReferences": owners},
        "spec": pod_spec(),
    })
}

/// owner is a controller ownerReference to the created object `object`.
fn owner(object: &Value) -> Result<Value, BoxError> {
    let m = &object["metadata"];
    if !m["uid"].is_string() {
        return Err(format!("created object without a uid: {object}").into());
    }
    Ok(json!([{
        "apiVersion": object["apiVersion"], "kind": object["kind"],
        "name": m["name"], "uid": m["uid"],
        "controller": true, "blockOwnerDeletion": true,
    }]))
}

/// create_all POSTs each `(collection, object)`, a bounded number at a time, and returns
/// what the API server stored, in order.
async fn create_all(
    client: &kube::Client,
    objects: Vec<(String, Value)>,
) -> Result<Vec<Value>, BoxError> {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut created = vec![Value::Null; objects.len()];
    let mut tasks = JoinSet::new();
    for (i, (url, object)) in objects.into_iter().enumerate() {
        let permit = Arc::clone(&limit).acquire_owned().await?;
        let client = client.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let what = format!(
                "{url}/{}",
                object["metadata"]["name"].as_str().unwrap_or("")
            );
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .body(object.to_string().into_bytes())?;
            let text = client
                .request_text(req)
                .await
                .map_err(|e| format!("creating {what}: {e}"))?;
            Ok::<(usize, Value), BoxError>((i, serde_json::from_str(&text)?))
        });
        while let Some(done) = tasks.try_join_next() {
            let (i, v) = done??;
            created[i] = v;
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (i, v) = done??;
        created[i] = v;
    }
    Ok(created)
}

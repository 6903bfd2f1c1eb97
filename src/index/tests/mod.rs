//! The index's unit tests, by subject, and the builders they share. The `fidelity_N` tests
//! are one per case of the fidelity audit: read AWS the way ESO and KES read it.

use super::*;
use crate::event::{Change, Operation, Service};
use serde_json::{Value, json};

mod bounds;
mod feeding;
mod filing;
mod kes;
mod lookup;
mod owners;
mod patterns;
mod scale;
mod secrets_manager;
mod stores;
mod versions;

/// A ClusterExternalSecret as ESO leaves it: children named `child` provisioned in
/// `namespaces`.
fn ces(name: &str, uid: &str, child: &str, namespaces: &[&str]) -> ClusterExternalSecret {
    ClusterExternalSecret::from_object(&json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
        "metadata": {"name": name, "uid": uid},
        "spec": {"externalSecretName": child},
        "status": {"provisionedNamespaces": namespaces}
    }))
    .unwrap()
}

fn change(name: &str, region: &str) -> Change {
    Change {
        service: Service::ParameterStore,
        region: region.into(),
        account: Some("123456789012".into()),
        name: name.into(),
        operation: Operation::Update,
        touched: Default::default(),
    }
}

fn store_obj(kind: &str, ns: Option<&str>, name: &str, aws: Value) -> Value {
    let mut meta = json!({"name": name});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"apiVersion": "external-secrets.io/v1", "kind": kind, "metadata": meta, "spec": {"provider": {"aws": aws}}})
}

fn ss(ns: &str, name: &str, region: &str, prefix: &str) -> Store {
    Store::from_object(
        &store_obj(
            "SecretStore",
            Some(ns),
            name,
            json!({"service": "ParameterStore", "region": region, "prefix": prefix}),
        ),
        false,
    )
    .unwrap()
}

fn css(name: &str, service: &str, region: &str) -> Store {
    Store::from_object(
        &store_obj(
            "ClusterSecretStore",
            None,
            name,
            json!({"service": service, "region": region}),
        ),
        true,
    )
    .unwrap()
}

fn es(ns: &str, name: &str, spec: Value) -> Reader {
    Reader::from_external_secret(&json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"namespace": ns, "name": name}, "spec": spec
    }))
    .unwrap()
}

fn data(store: &str, kind: &str, keys: &[&str]) -> Value {
    json!({
        "secretStoreRef": {"name": store, "kind": kind},
        "data": keys.iter().enumerate().map(|(i, k)| json!({"secretKey": format!("k{i}"), "remoteRef": {"key": k}})).collect::<Vec<_>>()
    })
}

fn names(l: &Lookup) -> Vec<String> {
    let mut v: Vec<String> = l
        .targets
        .iter()
        .map(|m| format!("{}/{}", m.target.namespace, m.target.name))
        .collect();
    v.sort();
    v
}

fn sm_change(name: &str) -> Change {
    Change {
        service: Service::SecretsManager,
        ..change(name, "us-east-1")
    }
}

fn find(store: &str, find: Value) -> Value {
    json!({"secretStoreRef": {"name": store, "kind": "SecretStore"}, "dataFrom": [{"find": find}]})
}

/// The changes an SNS Message reports (the oracle test prints its misses in this form).
fn changes(message: &str) -> Vec<Change> {
    match crate::event::decode(message).expect("a decodable event") {
        crate::event::Decoded::Changes(c) => c,
        other => panic!("not a change: {other:?}"),
    }
}

fn op(operation: Operation, c: Change) -> Change {
    Change { operation, ..c }
}

fn sm_store(ns: &str, name: &str, aws: Value) -> Store {
    let mut aws = aws;
    aws["service"] = json!("SecretsManager");
    if aws.get("region").is_none() {
        aws["region"] = json!("us-east-1");
    }
    Store::from_object(&store_obj("SecretStore", Some(ns), name, aws), false).unwrap()
}

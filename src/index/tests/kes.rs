//! kubernetes-external-secrets: its own backends, spellings and versions.

use super::*;

#[test]
fn kes_external_secrets_with_their_own_backend() {
    let mut idx = Index::new();
    let kes = |name: &str, spec: Value| {
        Reader::from_kes(
            &json!({"apiVersion": "kubernetes-client.io/v1", "kind": "ExternalSecret",
            "metadata": {"namespace": "legacy", "name": name}, "spec": spec}),
        )
        .unwrap()
    };
    idx.apply_reader(kes(
        "keys",
        json!({"backendType": "systemManager", "region": "us-east-1",
        "data": [{"key": "/legacy/db", "name": "db"}], "dataFrom": ["/legacy/all"]}),
    ));
    idx.apply_reader(kes(
        "tree",
        json!({"backendType": "systemManager", "region": "us-east-1",
        "data": [{"path": "/legacy/tree", "recursive": false}]}),
    ));
    idx.apply_reader(kes("deep", json!({"backendType": "systemManager", "data": [{"path": "/legacy/tree", "recursive": true}]})));
    idx.apply_reader(kes("other-account", json!({"backendType": "systemManager", "region": "us-east-1",
        "roleArn": "arn:aws:iam::999999999999:role/x", "data": [{"key": "/legacy/db", "name": "db"}]})));
    idx.apply_reader(kes("sm", json!({"backendType": "secretsManager", "region": "us-east-1", "data": [{"key": "legacy/sm", "name": "x"}]})));
    idx.apply_reader(kes(
        "vault",
        json!({"backendType": "vault", "data": [{"key": "/legacy/db", "name": "db"}]}),
    ));
    // An ESO ExternalSecret with the same namespace/name is a different resource.
    idx.apply_store(ss("legacy", "s", "us-east-1", ""));
    idx.apply_reader(es(
        "legacy",
        "keys",
        data("s", "SecretStore", &["/legacy/db"]),
    ));

    let m = idx.lookup(&change("/legacy/db", "us-east-1"));
    let mut t: Vec<String> = m.targets.iter().map(|m| m.target.to_string()).collect();
    t.sort();
    assert_eq!(
        t,
        [
            "ExternalSecret legacy/keys",
            "ExternalSecret.kubernetes-client.io legacy/keys"
        ]
    );
    assert_eq!(
        names(&idx.lookup(&change("/legacy/all", "us-east-1"))),
        ["legacy/keys"]
    );
    assert_eq!(
        names(&idx.lookup(&change("/legacy/tree/a", "us-east-1"))),
        ["legacy/deep", "legacy/tree"]
    );
    assert_eq!(
        names(&idx.lookup(&change("/legacy/tree/a/b", "us-east-1"))),
        ["legacy/deep"],
        "recursive: false reads direct children only"
    );
    assert_eq!(names(&idx.lookup(&sm_change("legacy/sm"))), ["legacy/sm"]);
    assert_eq!(idx.stats().kes_external_secrets, 6);
    idx.delete_reader(ReaderKind::KesExternalSecret, "legacy", "keys");
    assert_eq!(
        names(&idx.lookup(&change("/legacy/db", "us-east-1"))),
        ["legacy/keys"],
        "only the ESO one is left"
    );
}

/// Audit case 7: KES `dataFromWithOptions[]`, the old `properties` spelling and `secretManager`.
#[test]
fn fidelity_7_kes_spellings() {
    let mut idx = Index::new();
    let kes = |name: &str, spec: Value| {
        Reader::from_kes(&json!({"metadata": {"namespace": "app", "name": name}, "spec": spec}))
            .unwrap()
    };
    idx.apply_reader(kes("opts", json!({"backendType": "secretsManager", "region": "us-east-1", "dataFromWithOptions": [{"key": "app/json", "versionStage": "AWSCURRENT"}]})));
    idx.apply_reader(kes("props", json!({"backendType": "systemManager", "region": "us-east-1", "properties": [{"key": "/old/key", "name": "k"}]})));
    idx.apply_reader(kes("alias", json!({"backendType": "secretManager", "region": "us-east-1", "data": [{"key": "alias/db", "name": "k"}]})));
    // `properties` is read only without `data`.
    idx.apply_reader(kes("both", json!({"backendType": "systemManager", "region": "us-east-1", "data": [{"key": "/new", "name": "k"}], "properties": [{"key": "/old/key", "name": "k"}]})));
    assert_eq!(names(&idx.lookup(&sm_change("app/json"))), ["app/opts"]);
    assert_eq!(
        names(&idx.lookup(&change("/old/key", "us-east-1"))),
        ["app/props"]
    );
    assert_eq!(names(&idx.lookup(&sm_change("alias/db"))), ["app/alias"]);
    let m = idx.lookup(&sm_change("app/json"));
    assert_eq!(m.targets[0].reference, "spec.dataFromWithOptions[0].key");
    // A KES version id pins the value.
    idx.apply_reader(kes("pinned", json!({"backendType": "secretsManager", "region": "us-east-1", "data": [{"key": "p", "name": "k", "versionId": "1234"}]})));
    assert!(
        idx.lookup(&op(Operation::PutSecretValue, sm_change("p")))
            .targets
            .is_empty()
    );
    assert_eq!(
        names(&idx.lookup(&op(Operation::DeleteSecret, sm_change("p")))),
        ["app/pinned"]
    );
}

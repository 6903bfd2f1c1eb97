use super::*;
use crate::event::Operation;
use serde_json::{Value, json};

fn change(name: &str, region: &str) -> Change {
    Change {
        service: Service::ParameterStore,
        region: region.into(),
        account: Some("123456789012".into()),
        name: name.into(),
        operation: Operation::Update,
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

fn es(ns: &str, name: &str, spec: Value) -> ExternalSecret {
    ExternalSecret::from_object(&json!({
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

fn names(matches: &[Match]) -> Vec<String> {
    let mut v: Vec<String> = matches.iter().map(|m| m.target.key.to_string()).collect();
    v.sort();
    v
}

#[test]
fn remote_ref_and_extract_through_a_namespaced_store() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "aws", "us-east-1", ""));
    idx.apply_external_secret(es(
        "app",
        "db",
        json!({
            "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
            "data": [{"secretKey": "pw", "remoteRef": {"key": "/app/db/password"}}],
            "dataFrom": [{"extract": {"key": "/app/config"}}]
        }),
    ));
    let m = idx.lookup(&change("/app/db/password", "us-east-1"));
    assert_eq!(names(&m), ["app/db"]);
    assert_eq!(m[0].reference, "spec.data[0].remoteRef.key");
    assert_eq!(m[0].store.to_string(), "SecretStore/app/aws");
    let m = idx.lookup(&change("/app/config", "us-east-1"));
    assert_eq!(m[0].reference, "spec.dataFrom[0].extract.key");
    assert!(idx.lookup(&change("/app/other", "us-east-1")).is_empty());
}

#[test]
fn region_and_service_must_match() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "east", "us-east-1", ""));
    idx.apply_store(css("sm", "SecretsManager", "us-east-1"));
    idx.apply_external_secret(es("app", "a", data("east", "SecretStore", &["/k"])));
    idx.apply_external_secret(es("app", "b", data("sm", "ClusterSecretStore", &["/k"])));
    assert_eq!(names(&idx.lookup(&change("/k", "us-east-1"))), ["app/a"]);
    assert!(idx.lookup(&change("/k", "eu-west-1")).is_empty());
}

#[test]
fn namespaced_store_resolves_in_the_secret_namespace_only() {
    let mut idx = Index::new();
    idx.apply_store(ss("team-a", "aws", "us-east-1", ""));
    idx.apply_external_secret(es("team-a", "x", data("aws", "SecretStore", &["/k"])));
    // Same store name, other namespace, where no such store exists: no match.
    idx.apply_external_secret(es("team-b", "y", data("aws", "SecretStore", &["/k"])));
    assert_eq!(names(&idx.lookup(&change("/k", "us-east-1"))), ["team-a/x"]);
}

#[test]
fn cluster_store_and_default_kind() {
    let mut idx = Index::new();
    idx.apply_store(css("global", "ParameterStore", "us-east-1"));
    idx.apply_external_secret(es(
        "n1",
        "a",
        data("global", "ClusterSecretStore", &["/shared"]),
    ));
    idx.apply_external_secret(es(
        "n2",
        "b",
        data("global", "ClusterSecretStore", &["shared"]),
    ));
    // No kind means SecretStore: n3 has none named "global", so it does not match.
    idx.apply_external_secret(es("n3", "c", json!({"secretStoreRef": {"name": "global"}, "data": [{"secretKey": "s", "remoteRef": {"key": "/shared"}}]})));
    assert_eq!(
        names(&idx.lookup(&change("/shared", "us-east-1"))),
        ["n1/a", "n2/b"]
    );
}

#[test]
fn leading_slash_version_suffix_and_prefix() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "pre", "us-east-1", "/prod/"));
    idx.apply_store(ss("app", "plain", "us-east-1", ""));
    idx.apply_external_secret(es("app", "a", data("pre", "SecretStore", &["db/password"])));
    idx.apply_external_secret(es(
        "app",
        "b",
        data("plain", "SecretStore", &["/prod/db/password:3"]),
    ));
    idx.apply_external_secret(es(
        "app",
        "c",
        data("plain", "SecretStore", &["prod/db/password:label1"]),
    ));
    assert_eq!(
        names(&idx.lookup(&change("/prod/db/password", "us-east-1"))),
        ["app/a", "app/b", "app/c"]
    );
    assert_eq!(
        names(&idx.lookup(&change("prod/db/password", "us-east-1"))),
        ["app/a", "app/b", "app/c"]
    );
    // The prefix is part of the name: the bare key alone does not match.
    assert!(
        idx.lookup(&change("/db/password", "us-east-1"))
            .iter()
            .all(|m| m.target.key.name != "a")
    );
}

#[test]
fn store_prefix_change_refiles_its_secrets() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", "/v1/"));
    idx.apply_external_secret(es("app", "a", data("s", "SecretStore", &["k"])));
    assert_eq!(names(&idx.lookup(&change("/v1/k", "us-east-1"))), ["app/a"]);
    idx.apply_store(ss("app", "s", "us-east-1", "/v2/"));
    assert!(idx.lookup(&change("/v1/k", "us-east-1")).is_empty());
    assert_eq!(names(&idx.lookup(&change("/v2/k", "us-east-1"))), ["app/a"]);
}

#[test]
fn store_arriving_late_or_leaving() {
    let mut idx = Index::new();
    idx.apply_external_secret(es("app", "a", data("s", "SecretStore", &["/k"])));
    assert!(
        idx.lookup(&change("/k", "us-east-1")).is_empty(),
        "no store yet: region unknown"
    );
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    assert_eq!(names(&idx.lookup(&change("/k", "us-east-1"))), ["app/a"]);
    idx.apply_store(ss("app", "s", "eu-west-1", ""));
    assert!(
        idx.lookup(&change("/k", "us-east-1")).is_empty(),
        "region change applies at once"
    );
    idx.delete_store(&StoreId::namespaced("app", "s"));
    assert!(idx.lookup(&change("/k", "eu-west-1")).is_empty());
}

#[test]
fn per_entry_source_ref_overrides_the_default_store() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "east", "us-east-1", ""));
    idx.apply_store(ss("app", "west", "us-west-2", ""));
    idx.apply_external_secret(es("app", "a", json!({
        "secretStoreRef": {"name": "east", "kind": "SecretStore"},
        "data": [
            {"secretKey": "x", "remoteRef": {"key": "/k"}},
            {"secretKey": "y", "remoteRef": {"key": "/w"}, "sourceRef": {"storeRef": {"name": "west", "kind": "SecretStore"}}},
            {"secretKey": "z", "remoteRef": {"key": "/g"}, "sourceRef": {"generatorRef": {"kind": "Password", "name": "p"}}}
        ]
    })));
    assert_eq!(names(&idx.lookup(&change("/w", "us-west-2"))), ["app/a"]);
    assert!(idx.lookup(&change("/w", "us-east-1")).is_empty());
    assert!(
        idx.lookup(&change("/g", "us-east-1")).is_empty(),
        "generator entries read no AWS key"
    );
}

#[test]
fn one_target_per_resource_even_with_several_references() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_external_secret(es(
        "app",
        "a",
        data("s", "SecretStore", &["/k", "k", "/k:2"]),
    ));
    let m = idx.lookup(&change("/k", "us-east-1"));
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].reference, "spec.data[0].remoteRef.key");
}

#[test]
fn arn_keys_carry_region_and_account() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_external_secret(es(
        "app",
        "a",
        data(
            "s",
            "SecretStore",
            &["arn:aws:ssm:us-east-1:123456789012:parameter/app/k"],
        ),
    ));
    assert_eq!(
        names(&idx.lookup(&change("/app/k", "us-east-1"))),
        ["app/a"]
    );
    let mut other = change("/app/k", "us-east-1");
    other.account = Some("999999999999".into());
    assert!(idx.lookup(&other).is_empty());
}

#[test]
fn updates_and_deletes_keep_the_index_exact() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_external_secret(es("app", "a", data("s", "SecretStore", &["/old"])));
    idx.apply_external_secret(es("app", "a", data("s", "SecretStore", &["/new"])));
    assert!(idx.lookup(&change("/old", "us-east-1")).is_empty());
    assert_eq!(names(&idx.lookup(&change("/new", "us-east-1"))), ["app/a"]);
    idx.delete_external_secret("app", "a");
    assert!(idx.lookup(&change("/new", "us-east-1")).is_empty());
    assert_eq!(
        idx.stats(),
        Stats {
            external_secrets: 0,
            stores: 1,
            references: 0,
            names: 0
        }
    );
}

#[test]
fn replace_after_relist_drops_what_vanished() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_external_secret(es("app", "a", data("s", "SecretStore", &["/a"])));
    idx.apply_external_secret(es("app", "b", data("s", "SecretStore", &["/b"])));
    idx.replace_external_secrets(vec![es("app", "b", data("s", "SecretStore", &["/b"]))]);
    assert!(idx.lookup(&change("/a", "us-east-1")).is_empty());
    assert_eq!(names(&idx.lookup(&change("/b", "us-east-1"))), ["app/b"]);
    idx.replace_stores(false, vec![]);
    assert!(idx.lookup(&change("/b", "us-east-1")).is_empty());
    assert_eq!(idx.stats().stores, 0);
}

#[test]
fn non_aws_stores_never_match() {
    let mut idx = Index::new();
    let vault = Store::from_object(
        &json!({"metadata": {"namespace": "app", "name": "v"}, "spec": {"provider": {"vault": {"server": "x"}}}}),
        false,
    )
    .unwrap();
    assert!(vault.aws.is_none());
    idx.apply_store(vault);
    idx.apply_external_secret(es("app", "a", data("v", "SecretStore", &["/k"])));
    assert!(idx.lookup(&change("/k", "us-east-1")).is_empty());
}

#[test]
fn store_without_region_matches_any_region() {
    let mut idx = Index::new();
    idx.apply_store(
        Store::from_object(
            &store_obj(
                "SecretStore",
                Some("app"),
                "s",
                json!({"service": "ParameterStore"}),
            ),
            false,
        )
        .unwrap(),
    );
    idx.apply_external_secret(es("app", "a", data("s", "SecretStore", &["/k"])));
    assert_eq!(names(&idx.lookup(&change("/k", "ap-south-1"))), ["app/a"]);
}

/// Correctness at a scale the service meets: every ExternalSecret is found by its own key
/// and by no other.
#[test]
fn ten_thousand_secrets_each_found_exactly() {
    let mut idx = Index::new();
    for ns in 0..10 {
        idx.apply_store(ss(&format!("ns{ns}"), "s", "us-east-1", ""));
    }
    for i in 0..10_000 {
        let ns = format!("ns{}", i % 10);
        idx.apply_external_secret(es(
            &ns,
            &format!("es{i}"),
            data("s", "SecretStore", &[&format!("/app/{i}/key")]),
        ));
    }
    assert_eq!(idx.stats().references, 10_000);
    for i in (0..10_000).step_by(7) {
        let m = idx.lookup(&change(&format!("/app/{i}/key"), "us-east-1"));
        assert_eq!(names(&m), [format!("ns{}/es{i}", i % 10)]);
    }
}

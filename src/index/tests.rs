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

#[test]
fn remote_ref_and_extract_through_a_namespaced_store() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "aws", "us-east-1", ""));
    idx.apply_reader(es(
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
    assert_eq!(m.targets[0].reference, "spec.data[0].remoteRef.key");
    assert!(
        m.targets[0].reason.contains("SecretStore/app/aws"),
        "{}",
        m.targets[0].reason
    );
    let m = idx.lookup(&change("/app/config", "us-east-1"));
    assert_eq!(m.targets[0].reference, "spec.dataFrom[0].extract.key");
    assert!(
        idx.lookup(&change("/app/other", "us-east-1"))
            .targets
            .is_empty()
    );
}

#[test]
fn region_and_service_must_match() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "east", "us-east-1", ""));
    idx.apply_store(css("sm", "SecretsManager", "us-east-1"));
    idx.apply_reader(es("app", "a", data("east", "SecretStore", &["/k"])));
    idx.apply_reader(es("app", "b", data("sm", "ClusterSecretStore", &["/k"])));
    assert_eq!(names(&idx.lookup(&change("/k", "us-east-1"))), ["app/a"]);
    assert!(idx.lookup(&change("/k", "eu-west-1")).targets.is_empty());
}

#[test]
fn namespaced_store_resolves_in_the_secret_namespace_only() {
    let mut idx = Index::new();
    idx.apply_store(ss("team-a", "aws", "us-east-1", ""));
    idx.apply_reader(es("team-a", "x", data("aws", "SecretStore", &["/k"])));
    // Same store name, other namespace, where no such store exists: no match.
    idx.apply_reader(es("team-b", "y", data("aws", "SecretStore", &["/k"])));
    assert_eq!(names(&idx.lookup(&change("/k", "us-east-1"))), ["team-a/x"]);
}

#[test]
fn cluster_store_and_default_kind() {
    let mut idx = Index::new();
    idx.apply_store(css("global", "ParameterStore", "us-east-1"));
    idx.apply_reader(es(
        "n1",
        "a",
        data("global", "ClusterSecretStore", &["/shared"]),
    ));
    idx.apply_reader(es(
        "n2",
        "b",
        data("global", "ClusterSecretStore", &["shared"]),
    ));
    // No kind means SecretStore: n3 has none named "global", so it does not match.
    idx.apply_reader(es("n3", "c", json!({"secretStoreRef": {"name": "global"}, "data": [{"secretKey": "s", "remoteRef": {"key": "/shared"}}]})));
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
    idx.apply_reader(es("app", "a", data("pre", "SecretStore", &["db/password"])));
    idx.apply_reader(es(
        "app",
        "b",
        data("plain", "SecretStore", &["/prod/db/password:3"]),
    ));
    idx.apply_reader(es(
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
            .targets
            .iter()
            .all(|m| m.target.name != "a")
    );
}

#[test]
fn store_prefix_change_refiles_its_secrets() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", "/v1/"));
    idx.apply_reader(es("app", "a", data("s", "SecretStore", &["k"])));
    assert_eq!(names(&idx.lookup(&change("/v1/k", "us-east-1"))), ["app/a"]);
    idx.apply_store(ss("app", "s", "us-east-1", "/v2/"));
    assert!(idx.lookup(&change("/v1/k", "us-east-1")).targets.is_empty());
    assert_eq!(names(&idx.lookup(&change("/v2/k", "us-east-1"))), ["app/a"]);
}

#[test]
fn store_arriving_late_or_leaving() {
    let mut idx = Index::new();
    idx.apply_reader(es("app", "a", data("s", "SecretStore", &["/k"])));
    assert!(
        idx.lookup(&change("/k", "us-east-1")).targets.is_empty(),
        "no store yet: region unknown"
    );
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    assert_eq!(names(&idx.lookup(&change("/k", "us-east-1"))), ["app/a"]);
    idx.apply_store(ss("app", "s", "eu-west-1", ""));
    assert!(
        idx.lookup(&change("/k", "us-east-1")).targets.is_empty(),
        "region change applies at once"
    );
    idx.delete_store(&StoreId::namespaced("app", "s"));
    assert!(idx.lookup(&change("/k", "eu-west-1")).targets.is_empty());
}

#[test]
fn per_entry_source_ref_overrides_the_default_store() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "east", "us-east-1", ""));
    idx.apply_store(ss("app", "west", "us-west-2", ""));
    idx.apply_reader(es("app", "a", json!({
        "secretStoreRef": {"name": "east", "kind": "SecretStore"},
        "data": [
            {"secretKey": "x", "remoteRef": {"key": "/k"}},
            {"secretKey": "y", "remoteRef": {"key": "/w"}, "sourceRef": {"storeRef": {"name": "west", "kind": "SecretStore"}}},
            {"secretKey": "z", "remoteRef": {"key": "/g"}, "sourceRef": {"generatorRef": {"kind": "Password", "name": "p"}}}
        ]
    })));
    assert_eq!(names(&idx.lookup(&change("/w", "us-west-2"))), ["app/a"]);
    assert!(idx.lookup(&change("/w", "us-east-1")).targets.is_empty());
    assert!(
        idx.lookup(&change("/g", "us-east-1")).targets.is_empty(),
        "generator entries read no AWS key"
    );
}

#[test]
fn one_target_per_resource_even_with_several_references() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_reader(es(
        "app",
        "a",
        data("s", "SecretStore", &["/k", "k", "/k:2"]),
    ));
    let m = idx.lookup(&change("/k", "us-east-1"));
    assert_eq!(m.targets.len(), 1);
    assert_eq!(m.targets[0].reference, "spec.data[0].remoteRef.key");
}

#[test]
fn arn_keys_carry_region_and_account() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_reader(es(
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
    assert!(idx.lookup(&other).targets.is_empty());
}

#[test]
fn updates_and_deletes_keep_the_index_exact() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_reader(es("app", "a", data("s", "SecretStore", &["/old"])));
    idx.apply_reader(es("app", "a", data("s", "SecretStore", &["/new"])));
    assert!(idx.lookup(&change("/old", "us-east-1")).targets.is_empty());
    assert_eq!(names(&idx.lookup(&change("/new", "us-east-1"))), ["app/a"]);
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "a");
    assert!(idx.lookup(&change("/new", "us-east-1")).targets.is_empty());
    assert_eq!(
        idx.stats(),
        Stats {
            external_secrets: 0,
            kes_external_secrets: 0,
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
    idx.apply_reader(es("app", "a", data("s", "SecretStore", &["/a"])));
    idx.apply_reader(es("app", "b", data("s", "SecretStore", &["/b"])));
    idx.replace_readers(
        ReaderKind::ExternalSecret,
        vec![es("app", "b", data("s", "SecretStore", &["/b"]))],
    );
    assert!(idx.lookup(&change("/a", "us-east-1")).targets.is_empty());
    assert_eq!(names(&idx.lookup(&change("/b", "us-east-1"))), ["app/b"]);
    idx.replace_stores(false, vec![]);
    assert!(idx.lookup(&change("/b", "us-east-1")).targets.is_empty());
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
    idx.apply_reader(es("app", "a", data("v", "SecretStore", &["/k"])));
    assert!(idx.lookup(&change("/k", "us-east-1")).targets.is_empty());
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
    idx.apply_reader(es("app", "a", data("s", "SecretStore", &["/k"])));
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
        idx.apply_reader(es(
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

// ---- issue 4: every way a resource reads a key -------------------------------------------

fn sm_change(name: &str) -> Change {
    Change {
        service: Service::SecretsManager,
        ..change(name, "us-east-1")
    }
}

fn find(store: &str, find: Value) -> Value {
    json!({"secretStoreRef": {"name": store, "kind": "SecretStore"}, "dataFrom": [{"find": find}]})
}

#[test]
fn find_path_matches_the_hierarchy_below_it_for_every_operation() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", "/ignored-prefix/"));
    idx.apply_reader(es("app", "all", find("s", json!({"path": "/app/prod"}))));
    idx.apply_reader(es("app", "slash", find("s", json!({"path": "/app/prod/"}))));
    for op in [Operation::Create, Operation::Update, Operation::Delete] {
        let c = Change {
            operation: op,
            ..change("/app/prod/db/password", "us-east-1")
        };
        assert_eq!(names(&idx.lookup(&c)), ["app/all", "app/slash"], "{op:?}");
    }
    let m = idx.lookup(&change("/app/prod/new", "us-east-1"));
    assert_eq!(m.targets[0].reference, "spec.dataFrom[0].find");
    assert!(
        m.targets[0].reason.starts_with("path via"),
        "{}",
        m.targets[0].reason
    );
    // Not under the path: a sibling with the same prefix string, the path itself, another tree.
    assert!(
        idx.lookup(&change("/app/production/x", "us-east-1"))
            .targets
            .is_empty()
    );
    assert!(
        idx.lookup(&change("/app/prod", "us-east-1"))
            .targets
            .is_empty()
    );
    assert!(
        idx.lookup(&change("/other/x", "us-east-1"))
            .targets
            .is_empty()
    );
}

#[test]
fn find_name_regexp_alone_and_with_a_path() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_reader(es(
        "app",
        "re",
        find("s", json!({"name": {"regexp": "^/svc/[a-z]+/token$"}})),
    ));
    idx.apply_reader(es(
        "app",
        "both",
        find("s", json!({"path": "/svc", "name": {"regexp": "password"}})),
    ));
    assert_eq!(
        names(&idx.lookup(&change("/svc/api/token", "us-east-1"))),
        ["app/re"]
    );
    assert_eq!(
        names(&idx.lookup(&change("/svc/api/password", "us-east-1"))),
        ["app/both"]
    );
    assert!(
        idx.lookup(&change("/other/password", "us-east-1"))
            .targets
            .is_empty(),
        "regexp and path must both hold"
    );
    assert!(
        idx.lookup(&change("/svc/api/token2", "us-east-1"))
            .targets
            .is_empty()
    );
}

#[test]
fn find_tags_match_any_change_in_scope_and_say_so() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_reader(es(
        "app",
        "tagged",
        find("s", json!({"tags": {"team": "payments"}})),
    ));
    let m = idx.lookup(&change("/anything/at/all", "us-east-1"));
    assert_eq!(names(&m), ["app/tagged"]);
    assert!(
        m.targets[0].reason.contains("find.tags cannot be decided"),
        "{}",
        m.targets[0].reason
    );
    assert!(
        idx.lookup(&change("/anything", "eu-west-1"))
            .targets
            .is_empty(),
        "still scoped to the store"
    );
    // An empty tags map selects nothing: no reference at all.
    idx.apply_reader(es("app", "empty", find("s", json!({"tags": {}}))));
    assert_eq!(idx.stats().references, 1);
}

#[test]
fn role_account_must_match_the_event_account() {
    let mut idx = Index::new();
    let store = |name: &str, role: &str| {
        Store::from_object(
            &store_obj(
                "SecretStore",
                Some("app"),
                name,
                json!({"service": "ParameterStore", "region": "us-east-1", "role": role}),
            ),
            false,
        )
        .unwrap()
    };
    idx.apply_store(store("mine", "arn:aws:iam::123456789012:role/reader"));
    idx.apply_store(store("theirs", "arn:aws:iam::999999999999:role/reader"));
    idx.apply_reader(es("app", "a", data("mine", "SecretStore", &["/k"])));
    idx.apply_reader(es("app", "b", data("theirs", "SecretStore", &["/k"])));
    assert_eq!(names(&idx.lookup(&change("/k", "us-east-1"))), ["app/a"]);
    let explained = idx.explain(&change("/k", "us-east-1"));
    assert_eq!(explained.near_misses.len(), 1);
    assert!(
        explained.near_misses[0]
            .reason
            .contains("account 999999999999"),
        "{:?}",
        explained.near_misses
    );
    // An event that does not name its account cannot exclude anyone.
    let mut anon = change("/k", "us-east-1");
    anon.account = None;
    assert_eq!(names(&idx.lookup(&anon)), ["app/a", "app/b"]);
}

#[test]
fn cluster_store_conditions_restrict_namespaces() {
    let mut idx = Index::new();
    let obj = json!({
        "metadata": {"name": "shared"},
        "spec": {
            "conditions": [{"namespaces": ["team-a"]}, {"namespaceRegexes": ["^team-b-.*$"]}],
            "provider": {"aws": {"service": "ParameterStore", "region": "us-east-1"}}
        }
    });
    idx.apply_store(Store::from_object(&obj, true).unwrap());
    for ns in ["team-a", "team-b-1", "team-c"] {
        idx.apply_reader(es(ns, "x", data("shared", "ClusterSecretStore", &["/k"])));
    }
    assert_eq!(
        names(&idx.lookup(&change("/k", "us-east-1"))),
        ["team-a/x", "team-b-1/x"]
    );
    let e = idx.explain(&change("/k", "us-east-1"));
    assert!(
        e.near_misses
            .iter()
            .any(|n| n.reader.namespace == "team-c" && n.reason.contains("conditions")),
        "{e:?}"
    );

    // A namespaceSelector cannot be evaluated without namespace labels: assumed to allow.
    let obj = json!({"metadata": {"name": "sel"}, "spec": {"conditions": [{"namespaceSelector": {"matchLabels": {"x": "y"}}}],
        "provider": {"aws": {"service": "ParameterStore", "region": "us-east-1"}}}});
    idx.apply_store(Store::from_object(&obj, true).unwrap());
    idx.apply_reader(es(
        "team-z",
        "y",
        data("sel", "ClusterSecretStore", &["/s"]),
    ));
    assert_eq!(names(&idx.lookup(&change("/s", "us-east-1"))), ["team-z/y"]);
}

#[test]
fn cluster_external_secret_children_patch_the_parent_once() {
    let mut idx = Index::new();
    idx.apply_store(css("global", "ParameterStore", "us-east-1"));
    for ns in ["a", "b", "c"] {
        let mut obj = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"namespace": ns, "name": "db", "ownerReferences": [
                {"apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret", "name": "db-everywhere", "uid": "0b7e3c2e-6c1a-4a57-9d43-6a0c7f3e2b11", "controller": true}
            ]},
            "spec": data("global", "ClusterSecretStore", &["/shared/db"])
        });
        if ns == "c" {
            obj["metadata"]["ownerReferences"][0]["kind"] = json!("Deployment");
        }
        idx.apply_reader(Reader::from_external_secret(&obj).unwrap());
    }
    let m = idx.lookup(&change("/shared/db", "us-east-1"));
    let mut targets: Vec<String> = m.targets.iter().map(|t| t.target.to_string()).collect();
    targets.sort();
    assert_eq!(
        targets,
        ["ClusterExternalSecret db-everywhere", "ExternalSecret c/db"],
        "the parent once, plus the ExternalSecret it does not own"
    );
    let parent = m
        .targets
        .iter()
        .find(|t| t.target.kind == TargetKind::ClusterExternalSecret)
        .unwrap();
    assert_eq!(
        (parent.target.namespace.as_str(), parent.uid.as_deref()),
        ("", Some("0b7e3c2e-6c1a-4a57-9d43-6a0c7f3e2b11"))
    );
}

#[test]
fn unforceable_resources_are_reported_not_targeted() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    let with = |name: &str, extra: Value| {
        let mut spec = data("s", "SecretStore", &["/k"]);
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        es("app", name, spec)
    };
    idx.apply_reader(with("once", json!({"refreshPolicy": "CreatedOnce"})));
    idx.apply_reader(with("zero", json!({"refreshInterval": "0s"})));
    idx.apply_reader(with(
        "zero-periodic",
        json!({"refreshInterval": "0", "refreshPolicy": "Periodic"}),
    ));
    idx.apply_reader(with("immutable", json!({"target": {"immutable": true}})));
    idx.apply_reader(with(
        "onchange",
        json!({"refreshInterval": "0", "refreshPolicy": "OnChange"}),
    ));
    idx.apply_reader(with("hourly", json!({"refreshInterval": "1h0m0s"})));
    let m = idx.lookup(&change("/k", "us-east-1"));
    assert_eq!(names(&m), ["app/hourly", "app/onchange"]);
    let mut reported: Vec<(String, String)> = m
        .unforceable
        .iter()
        .map(|u| (u.target.name.clone(), u.reason.clone()))
        .collect();
    reported.sort();
    assert_eq!(reported.len(), 4, "{reported:?}");
    assert!(reported[0].0 == "immutable" && reported[0].1.contains("immutable"));
    assert!(reported[1].0 == "once" && reported[1].1.contains("CreatedOnce"));
    assert!(reported[2].0 == "zero" && reported[2].1.contains("OnChange"));
}

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

#[test]
fn secrets_manager_names_and_arns() {
    let mut idx = Index::new();
    idx.apply_store(css("sm", "SecretsManager", "us-east-1"));
    idx.apply_store(css("ps", "ParameterStore", "us-east-1"));
    idx.apply_reader(es(
        "app",
        "by-name",
        data("sm", "ClusterSecretStore", &["prod/db"]),
    ));
    idx.apply_reader(es(
        "app",
        "by-arn",
        data(
            "sm",
            "ClusterSecretStore",
            &["arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"],
        ),
    ));
    idx.apply_reader(es(
        "app",
        "ssm-same-name",
        data("ps", "ClusterSecretStore", &["prod/db"]),
    ));
    assert_eq!(
        names(&idx.lookup(&sm_change("prod/db"))),
        ["app/by-arn", "app/by-name"]
    );
    assert_eq!(
        names(&idx.lookup(&change("prod/db", "us-east-1"))),
        ["app/ssm-same-name"]
    );
    let e = idx.explain(&sm_change("prod/db"));
    assert!(
        e.near_misses
            .iter()
            .any(|n| n.reader.name == "ssm-same-name" && n.reason.contains("reads ParameterStore")),
        "{e:?}"
    );
}

#[test]
fn explain_names_missing_stores_and_other_regions() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "west", "us-west-2", ""));
    idx.apply_reader(es("app", "w", data("west", "SecretStore", &["/k"])));
    idx.apply_reader(es("app", "ghost", data("nope", "SecretStore", &["/k"])));
    let e = idx.explain(&change("/k", "us-east-1"));
    assert!(e.targets.is_empty());
    let mut reasons: Vec<&str> = e.near_misses.iter().map(|n| n.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("SecretStore/app/nope does not exist")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("region us-west-2")),
        "{reasons:?}"
    );
    assert!(
        idx.lookup(&change("/k", "us-east-1"))
            .near_misses
            .is_empty(),
        "lookup skips near misses"
    );
}

/// Correctness at 100,000 ExternalSecrets with the mix the benchmarks use: mostly
/// remoteRef keys, some extract, 1% find.path, 0.1% name.regexp; every lookup exact.
#[test]
fn hundred_thousand_mixed_references_each_found_exactly() {
    let mut idx = Index::new();
    for ns in 0..100 {
        idx.apply_store(ss(&format!("ns{ns}"), "s", "us-east-1", ""));
    }
    let n = 100_000;
    for i in 0..n {
        let ns = format!("ns{}", i % 100);
        let spec = match i % 1000 {
            0 => find(
                "s",
                json!({"name": {"regexp": format!("^/rx/{i}/[a-z]+$")}}),
            ),
            1..=10 => find("s", json!({"path": format!("/tree/{i}")})),
            11..=200 => {
                json!({"secretStoreRef": {"name": "s"}, "dataFrom": [{"extract": {"key": format!("/ex/{i}")}}]})
            }
            _ => data("s", "SecretStore", &[&format!("/app/{i}/key")]),
        };
        idx.apply_reader(es(&ns, &format!("es{i}"), spec));
    }
    assert_eq!(idx.stats().external_secrets, n);
    assert_eq!(idx.stats().references, n);
    for i in 0..n {
        let name = match i % 1000 {
            0 => format!("/rx/{i}/abc"),
            1..=10 => format!("/tree/{i}/leaf"),
            11..=200 => format!("/ex/{i}"),
            _ => format!("/app/{i}/key"),
        };
        let m = idx.lookup(&change(&name, "us-east-1"));
        assert_eq!(names(&m), [format!("ns{}/es{i}", i % 100)], "{name}");
    }
}

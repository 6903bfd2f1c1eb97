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
    // b pins version 3 and c reads a label: a new version changes neither.
    assert_eq!(
        names(&idx.lookup(&change("/prod/db/password", "us-east-1"))),
        ["app/a"]
    );
    for op in [Operation::Delete, Operation::Create] {
        let c = Change {
            operation: op,
            ..change("prod/db/password", "us-east-1")
        };
        assert_eq!(
            names(&idx.lookup(&c)),
            ["app/a", "app/b", "app/c"],
            "{op:?}"
        );
    }
    for op in [
        Operation::LabelParameterVersion,
        Operation::UnlabelParameterVersion,
    ] {
        let c = Change {
            operation: op,
            ..change("/prod/db/password", "us-east-1")
        };
        assert_eq!(names(&idx.lookup(&c)), ["app/c"], "{op:?}");
    }
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
    // It also takes a value from a generator: a force-sync would regenerate it, so it is
    // reported, not patched (unless allowed).
    let m = idx.lookup(&change("/w", "us-west-2"));
    assert!(m.targets.is_empty());
    assert_eq!(m.unforceable.len(), 1);
    assert!(
        m.unforceable[0].reason.contains("Password/p"),
        "{}",
        m.unforceable[0].reason
    );
    assert!(
        idx.lookup(&change("/w", "us-east-1"))
            .unforceable
            .is_empty()
    );
    assert!(
        idx.lookup(&change("/g", "us-east-1"))
            .unforceable
            .is_empty(),
        "generator entries read no AWS key"
    );
    let mut allowed = Index::with_config(IndexConfig {
        force_generators: true,
        ..Default::default()
    });
    allowed.apply_store(ss("app", "east", "us-east-1", ""));
    allowed.apply_store(ss("app", "west", "us-west-2", ""));
    for r in idx.readers.values() {
        allowed.apply_reader((**r).clone());
    }
    assert_eq!(
        names(&allowed.lookup(&change("/w", "us-west-2"))),
        ["app/a"]
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
            names: 0,
            rejected: 0
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
    // ESO's find by name: GetParametersByPath(path, recursive); `regexp: ""` matches all.
    let every = json!({"regexp": ""});
    idx.apply_reader(es(
        "app",
        "all",
        find("s", json!({"path": "/app/prod", "name": every})),
    ));
    idx.apply_reader(es(
        "app",
        "slash",
        find("s", json!({"path": "/app/prod/", "name": {}})),
    ));
    // `path` alone is an error in ESO ("unexpected find operator"): it reads nothing.
    idx.apply_reader(es("app", "alone", find("s", json!({"path": "/app/prod"}))));
    assert_eq!(idx.stats().references, 2);
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
    // Parameter Store: `tags: {}` is set (DescribeParameters with no tag filter lists every
    // parameter), so it reads everything in its store's scope.
    idx.apply_reader(es("app", "empty", find("s", json!({"tags": {}}))));
    assert_eq!(idx.stats().references, 2);
    assert_eq!(
        names(&idx.lookup(&change("/x", "us-east-1"))),
        ["app/empty", "app/tagged"]
    );
    // A tag change reaches tag finds; a label move does not change what they read.
    let tagged = Change {
        operation: Operation::TagsChanged,
        ..change("/x", "us-east-1")
    };
    assert_eq!(names(&idx.lookup(&tagged)), ["app/empty", "app/tagged"]);
    let labelled = Change {
        operation: Operation::LabelParameterVersion,
        ..change("/x", "us-east-1")
    };
    assert!(idx.lookup(&labelled).targets.is_empty());
    // Secrets Manager: `tags: {}` with no name is an error there (`len(ref.Tags) > 0`).
    idx.apply_store(
        Store::from_object(
            &store_obj(
                "SecretStore",
                Some("app"),
                "sm",
                json!({"service": "SecretsManager", "region": "us-east-1"}),
            ),
            false,
        )
        .unwrap(),
    );
    idx.apply_reader(es("app", "sm-empty", find("sm", json!({"tags": {}}))));
    assert_eq!(idx.stats().references, 2);
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
    // As ESO leaves them after their first sync.
    let with = |name: &str, extra: Value| {
        let mut spec = data("s", "SecretStore", &["/k"]);
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        Reader::from_external_secret(&json!({
            "metadata": {"namespace": "app", "name": name}, "spec": spec,
            "status": {"refreshTime": "2026-01-01T00:00:00Z", "syncedResourceVersion": "1-abc"}
        }))
        .unwrap()
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
    // ESO's shouldRefresh syncs every resource once before its policy counts: before the
    // first sync (no status.syncedResourceVersion) each of them is forced like any other.
    for name in ["once", "zero", "zero-periodic", "immutable"] {
        let spec = match name {
            "once" => json!({"refreshPolicy": "CreatedOnce"}),
            "immutable" => json!({"target": {"immutable": true}}),
            _ => json!({"refreshInterval": "0s"}),
        };
        let mut full = data("s", "SecretStore", &["/k"]);
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        let fresh = Reader::from_external_secret(
            &json!({"metadata": {"namespace": "app", "name": name}, "spec": full}),
        )
        .unwrap();
        assert!(fresh.unforceable.is_none(), "{name}");
        idx.apply_reader(fresh);
    }
    assert_eq!(
        names(&idx.lookup(&change("/k", "us-east-1"))),
        [
            "app/hourly",
            "app/immutable",
            "app/once",
            "app/onchange",
            "app/zero",
            "app/zero-periodic"
        ]
    );
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
/// remoteRef keys, some extract, 1% find.path (with an empty name regexp, as ESO needs),
/// 0.1% name.regexp; every lookup exact.
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
            1..=10 => find(
                "s",
                json!({"path": format!("/tree/{i}"), "name": {"regexp": ""}}),
            ),
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

// --- Read AWS the way ESO and KES read it: one test per case of the fidelity audit ---------

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

/// Audit case 2: Secrets Manager's `find.path` is ListSecrets' `name` filter: a case-sensitive string
/// prefix (`!` negates), not a hierarchy. Parameter Store's stays a hierarchy.
#[test]
fn fidelity_2_secrets_manager_find_path_is_a_string_prefix() {
    let mut idx = Index::new();
    idx.apply_store(sm_store("app", "sm", json!({})));
    idx.apply_reader(es(
        "app",
        "pre",
        find("sm", json!({"path": "prod/app", "name": {"regexp": ""}})),
    ));
    idx.apply_reader(es(
        "app",
        "not",
        find("sm", json!({"path": "!prod/", "name": {"regexp": "db"}})),
    ));
    assert_eq!(
        names(&idx.lookup(&sm_change("prod/app-worker"))),
        ["app/pre"]
    );
    assert_eq!(names(&idx.lookup(&sm_change("prod/app/db"))), ["app/pre"]);
    // Case-sensitive: only the negated filter takes `Prod/...`.
    assert_eq!(names(&idx.lookup(&sm_change("Prod/app/db"))), ["app/not"]);
    assert_eq!(names(&idx.lookup(&sm_change("staging/db"))), ["app/not"]);
    assert!(idx.lookup(&sm_change("prod/ap")).targets.is_empty());
}

/// Audit case 3: `/aws/reference/secretsmanager/<name>` through a Parameter Store store reads the
/// Secrets Manager secret `<name>`: its changes reach the reader; Parameter Store changes of
/// that path do not exist.
#[test]
fn fidelity_3_parameter_store_references_to_secrets_manager() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    idx.apply_reader(es(
        "app",
        "ref",
        data(
            "ps",
            "SecretStore",
            &["/aws/reference/secretsmanager/prod/db"],
        ),
    ));
    assert_eq!(names(&idx.lookup(&sm_change("prod/db"))), ["app/ref"]);
    assert!(
        idx.lookup(&change(
            "/aws/reference/secretsmanager/prod/db",
            "us-east-1"
        ))
        .targets
        .is_empty()
    );
    assert!(idx.lookup(&sm_change("prod/db2")).targets.is_empty());
    // The store still decides region and account.
    assert!(
        idx.lookup(&Change {
            region: "eu-west-1".into(),
            ..sm_change("prod/db")
        })
        .targets
        .is_empty()
    );
}

/// Audit case 4: Every API call that changes what a reader gets is a change, CreateSecret (a new secret
/// a `find` lists) and the Parameter Store calls the native event does not report included.
#[test]
fn fidelity_4_calls_beyond_the_native_events_reach_their_readers() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    idx.apply_store(sm_store("app", "sm", json!({})));
    idx.apply_reader(es(
        "app",
        "smfind",
        find("sm", json!({"name": {"regexp": "^prod/"}})),
    ));
    idx.apply_reader(es("app", "label", json!({"secretStoreRef": {"name": "ps"}, "data": [{"secretKey": "k", "remoteRef": {"key": "/a", "version": "stable"}}]})));
    idx.apply_reader(es("app", "plain", data("ps", "SecretStore", &["/b"])));
    let trail = |source: &str, call: &str, request: Value, response: Value| {
        json!({"source": source, "detail-type": "AWS API Call via CloudTrail", "region": "us-east-1", "account": "123456789012",
            "detail": {"eventSource": format!("{}.amazonaws.com", source.trim_start_matches("aws.")), "eventName": call,
                       "awsRegion": "us-east-1", "requestParameters": request, "responseElements": response}}).to_string()
    };
    let hit = |message: String| -> Vec<String> {
        let mut out: Vec<String> = changes(&message)
            .iter()
            .flat_map(|c| names(&idx.lookup(c)))
            .collect();
        out.sort();
        out.dedup();
        out
    };
    assert_eq!(
        hit(trail(
            "aws.secretsmanager",
            "CreateSecret",
            json!({"name": "prod/new"}),
            json!({"arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/new-AbCdEf"})
        )),
        ["app/smfind"]
    );
    assert_eq!(
        hit(trail(
            "aws.secretsmanager",
            "RestoreSecret",
            json!({"secretId": "prod/x"}),
            Value::Null
        )),
        ["app/smfind"]
    );
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "UnlabelParameterVersion",
            json!({"name": "/a", "parameterVersion": 2, "labels": ["stable"]}),
            Value::Null
        )),
        ["app/label"]
    );
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "LabelParameterVersion",
            json!({"name": "/a", "parameterVersion": 3, "labels": ["stable"]}),
            Value::Null
        )),
        ["app/label"]
    );
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "DeleteParameters",
            json!({"names": ["/a", "/b"]}),
            Value::Null
        )),
        ["app/label", "app/plain"]
    );
    // A new version: only the reader of the newest value.
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "PutParameter",
            json!({"name": "/a"}),
            json!({"version": 4})
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "PutParameter",
            json!({"name": "/b"}),
            json!({"version": 4})
        )),
        ["app/plain"]
    );
    // A new parameter (version 1): a label reader of that name now has something to read.
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "PutParameter",
            json!({"name": "/a"}),
            json!({"version": 1})
        )),
        ["app/label"]
    );
}

/// Audit case 5: Tags: `find.tags` readers and `metadataPolicy: Fetch` readers change on tag changes; a
/// Fetch reader does not change on a new value, a value reader not on a tag change.
#[test]
fn fidelity_5_tag_changes_reach_tag_readers_only() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    idx.apply_store(sm_store("app", "sm", json!({})));
    idx.apply_reader(es("app", "meta", json!({"secretStoreRef": {"name": "ps"}, "data": [{"secretKey": "t", "remoteRef": {"key": "/a", "metadataPolicy": "Fetch"}}]})));
    idx.apply_reader(es("app", "value", data("ps", "SecretStore", &["/a"])));
    idx.apply_reader(es(
        "app",
        "tagfind",
        find("ps", json!({"path": "/", "tags": {"team": "x"}})),
    ));
    idx.apply_reader(es("app", "smmeta", json!({"secretStoreRef": {"name": "sm"}, "data": [{"secretKey": "t", "remoteRef": {"key": "s", "metadataPolicy": "Fetch"}}]})));
    idx.apply_reader(es(
        "app",
        "smtags",
        find("sm", json!({"tags": {"team": "x"}})),
    ));
    let tagged = op(Operation::TagsChanged, change("/a", "us-east-1"));
    assert_eq!(names(&idx.lookup(&tagged)), ["app/meta", "app/tagfind"]);
    assert_eq!(
        names(&idx.lookup(&change("/a", "us-east-1"))),
        ["app/tagfind", "app/value"]
    );
    assert_eq!(
        names(&idx.lookup(&op(Operation::TagsChanged, sm_change("s")))),
        ["app/smmeta", "app/smtags"]
    );
    assert_eq!(
        names(&idx.lookup(&op(Operation::PutSecretValue, sm_change("s")))),
        ["app/smtags"]
    );
    // Deleting the item changes what every reader gets, tags included.
    assert_eq!(
        names(&idx.lookup(&op(Operation::Delete, change("/a", "us-east-1")))),
        ["app/meta", "app/tagfind", "app/value"]
    );
    let e = idx.explain(&change("/a", "us-east-1"));
    assert!(
        e.near_misses
            .iter()
            .any(|n| n.reader.name == "meta" && n.reason.contains("tags")),
        "{e:?}"
    );
}

/// Audit case 6: An ARN key names its own region and account: another account's item (shared by a
/// resource policy or RAM) read through the store's role, and KES's roleArn likewise.
#[test]
fn fidelity_6_an_arn_key_names_its_own_account_behind_a_role() {
    let mut idx = Index::new();
    idx.apply_store(Store::from_object(&store_obj("SecretStore", Some("app"), "role", json!({"service": "ParameterStore", "region": "us-east-1", "role": "arn:aws:iam::111111111111:role/reader"})), false).unwrap());
    idx.apply_reader(es(
        "app",
        "shared",
        data(
            "role",
            "SecretStore",
            &["arn:aws:ssm:us-east-1:222222222222:parameter/shared/db"],
        ),
    ));
    idx.apply_reader(es(
        "app",
        "own",
        data("role", "SecretStore", &["/shared/db"]),
    ));
    let from = |account: &str| Change {
        account: Some(account.into()),
        ..change("/shared/db", "us-east-1")
    };
    assert_eq!(names(&idx.lookup(&from("222222222222"))), ["app/shared"]);
    assert_eq!(names(&idx.lookup(&from("111111111111"))), ["app/own"]);
    let kes = Reader::from_kes(&json!({"metadata": {"namespace": "app", "name": "kes"}, "spec": {"backendType": "secretsManager", "region": "us-east-1",
        "roleArn": "arn:aws:iam::111111111111:role/r", "data": [{"key": "arn:aws:secretsmanager:us-east-1:222222222222:secret:team/db-AbCdEf", "name": "x"}]}})).unwrap();
    idx.apply_reader(kes);
    assert_eq!(
        names(&idx.lookup(&Change {
            account: Some("222222222222".into()),
            ..sm_change("team/db")
        })),
        ["app/kes"]
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

/// Audit case 8: Empty selectors are not absent: `name: {regexp: ""}` (or `name: {}`) matches every
/// name, Parameter Store `tags: {}` lists every parameter.
#[test]
fn fidelity_8_empty_selectors_read_everything() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    idx.apply_store(sm_store("app", "sm", json!({})));
    idx.apply_reader(es("app", "re", find("ps", json!({"name": {"regexp": ""}}))));
    idx.apply_reader(es("app", "nameobj", find("sm", json!({"name": {}}))));
    idx.apply_reader(es("app", "tags", find("ps", json!({"tags": {}}))));
    assert_eq!(
        names(&idx.lookup(&change("/any/thing", "us-east-1"))),
        ["app/re", "app/tags"]
    );
    assert_eq!(names(&idx.lookup(&sm_change("whatever"))), ["app/nameobj"]);
}

/// Audit case 9: A partial Secrets Manager ARN (no random suffix) of a name ending in `-backup` names
/// `…-backup`, not `…`: both readings are kept, and a name is never stripped.
#[test]
fn fidelity_9_partial_secret_arns_keep_the_name() {
    let mut idx = Index::new();
    idx.apply_store(sm_store("app", "sm", json!({})));
    idx.apply_reader(es(
        "app",
        "partial",
        data(
            "sm",
            "SecretStore",
            &["arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-backup"],
        ),
    ));
    idx.apply_reader(es(
        "app",
        "full",
        data(
            "sm",
            "SecretStore",
            &["arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"],
        ),
    ));
    idx.apply_reader(es(
        "app",
        "name",
        data("sm", "SecretStore", &["prod/db-backup"]),
    ));
    assert_eq!(
        names(&idx.lookup(&sm_change("prod/db-backup"))),
        ["app/name", "app/partial"]
    );
    assert_eq!(
        names(&idx.lookup(&sm_change("prod/db"))),
        ["app/full", "app/partial"]
    );
    // Events: a full ARN from AWS names the secret; a caller's ARN is read both ways.
    let label = |name: &str| {
        json!({"source": "aws.secretsmanager", "detail-type": "Secret Label Updated", "region": "us-east-1",
        "account": "123456789012", "detail": {"name": name, "labelUpdated": "AWSCURRENT"}}).to_string()
    };
    let reached: Vec<String> = changes(&label(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-backup",
    ))
    .iter()
    .flat_map(|c| names(&idx.lookup(c)))
    .collect();
    assert!(
        reached.contains(&"app/partial".to_owned()) && reached.contains(&"app/name".to_owned()),
        "{reached:?}"
    );
}

/// Audit case 10: Secrets Manager `find` by name without a path lists every name and reads `prefix +
/// name` (ESO v0.16 `fetchAndSet` applies the store prefix again): a change to the prefixed
/// secret reaches it.
#[test]
fn fidelity_10_secrets_manager_find_by_name_reads_prefix_plus_name() {
    let mut idx = Index::new();
    idx.apply_store(sm_store("app", "pre", json!({"prefix": "team/"})));
    idx.apply_reader(es(
        "app",
        "find",
        find("pre", json!({"name": {"regexp": "^app/db$"}})),
    ));
    assert_eq!(names(&idx.lookup(&sm_change("team/app/db"))), ["app/find"]);
    // The listed name itself: its creation or deletion changes the listing.
    assert_eq!(
        names(&idx.lookup(&op(Operation::CreateSecret, sm_change("app/db")))),
        ["app/find"]
    );
    assert!(idx.lookup(&sm_change("team/app/dbx")).targets.is_empty());
}

/// Audit case 12: Spurious matches: references ESO cannot read (a find with only a path, KES `path` on
/// Secrets Manager, a store prefix before an ARN), what a new value does not change (a pinned
/// version or version id), resources that write no Secret, stores of another controller class.
#[test]
fn fidelity_12_no_patch_where_nothing_changes() {
    let mut idx = Index::with_config(IndexConfig {
        controller_classes: vec!["default".into()],
        ..Default::default()
    });
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    idx.apply_store(ss("app", "pre", "us-east-1", "/team/"));
    idx.apply_store(sm_store("app", "sm", json!({})));
    let mut other = ss("app", "other-class", "us-east-1", "");
    other.controller = Some("internal".into());
    idx.apply_store(other);
    idx.apply_reader(es("app", "pathonly", find("ps", json!({"path": "/a"}))));
    idx.apply_reader(es(
        "app",
        "prefixarn",
        data(
            "pre",
            "SecretStore",
            &["arn:aws:ssm:us-east-1:123456789012:parameter/a/x"],
        ),
    ));
    idx.apply_reader(es("app", "pinned", json!({"secretStoreRef": {"name": "ps"}, "data": [{"secretKey": "k", "remoteRef": {"key": "/a/x", "version": "3"}}]})));
    idx.apply_reader(es("app", "uuid", json!({"secretStoreRef": {"name": "sm"}, "data": [{"secretKey": "k", "remoteRef": {"key": "s", "version": "uuid/abc"}}]})));
    idx.apply_reader(es("app", "none", json!({"secretStoreRef": {"name": "ps"}, "target": {"creationPolicy": "None"}, "data": [{"secretKey": "k", "remoteRef": {"key": "/a/x"}}]})));
    idx.apply_reader(es(
        "app",
        "class",
        data("other-class", "SecretStore", &["/a/x"]),
    ));
    let kes = Reader::from_kes(&json!({"metadata": {"namespace": "app", "name": "kespath"}, "spec": {"backendType": "secretsManager", "region": "us-east-1", "data": [{"path": "a", "name": "k"}]}})).unwrap();
    assert!(kes.references.is_empty());
    idx.apply_reader(kes);
    assert!(idx.lookup(&change("/a/x", "us-east-1")).targets.is_empty());
    assert!(
        idx.lookup(&op(Operation::PutSecretValue, sm_change("s")))
            .targets
            .is_empty()
    );
    let e = idx.explain(&change("/a/x", "us-east-1"));
    let why = |name: &str| {
        e.near_misses
            .iter()
            .find(|n| n.reader.name == name)
            .map(|n| n.reason.clone())
            .unwrap_or_default()
    };
    assert!(why("pinned").contains("pinned"), "{e:?}");
    assert!(why("none").contains("creationPolicy: None"), "{e:?}");
    assert!(why("class").contains("controller class"), "{e:?}");
    // What they do care about still reaches them.
    assert_eq!(
        names(&idx.lookup(&op(Operation::Delete, change("/a/x", "us-east-1")))),
        ["app/pinned"]
    );
}

/// Stores without a role read with ESO's own credentials: with `--eso-account` the index
/// knows whose they are.
#[test]
fn stores_without_a_role_read_the_eso_account() {
    let mut idx = Index::with_config(IndexConfig {
        eso_account: Some("123456789012".into()),
        ..Default::default()
    });
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    idx.apply_reader(es("app", "a", data("ps", "SecretStore", &["/k"])));
    let from = |account: &str| Change {
        account: Some(account.into()),
        ..change("/k", "us-east-1")
    };
    assert_eq!(names(&idx.lookup(&from("123456789012"))), ["app/a"]);
    assert!(idx.lookup(&from("999999999999")).targets.is_empty());
    assert!(
        idx.explain(&from("999999999999")).near_misses[0]
            .reason
            .contains("ESO's credentials")
    );
    // Unknown (the default): any account, as before.
    let mut any = Index::new();
    any.apply_store(ss("app", "ps", "us-east-1", ""));
    any.apply_reader(es("app", "a", data("ps", "SecretStore", &["/k"])));
    assert_eq!(names(&any.lookup(&from("999999999999"))), ["app/a"]);
}

/// A store that changes service re-files its readers: names, finds and references to Secrets
/// Manager mean something else there.
#[test]
fn a_store_changing_service_refiles_its_readers() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_reader(es(
        "app",
        "a",
        data("s", "SecretStore", &["/aws/reference/secretsmanager/x"]),
    ));
    assert_eq!(names(&idx.lookup(&sm_change("x"))), ["app/a"]);
    idx.apply_store(sm_store("app", "s", json!({})));
    assert!(idx.lookup(&sm_change("x")).targets.is_empty());
    assert_eq!(
        names(&idx.lookup(&sm_change("/aws/reference/secretsmanager/x"))),
        ["app/a"]
    );
}

/// Audit case 14: ESO v2.7+ sync windows hold back periodic refreshes only; the match
/// carries them so the service can defer the patch (OnChange and CreatedOnce ignore them).
#[test]
fn fidelity_14_sync_windows_travel_with_the_match() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    let windows =
        json!({"kind": "deny", "windows": [{"schedule": "0 22 * * 1-5", "duration": "8h"}]});
    let mut spec = data("ps", "SecretStore", &["/k"]);
    spec["syncWindows"] = windows.clone();
    idx.apply_reader(es("app", "windowed", spec.clone()));
    spec["refreshPolicy"] = json!("OnChange");
    idx.apply_reader(es("app", "onchange", spec));
    let m = idx.lookup(&change("/k", "us-east-1"));
    let w = |name: &str| {
        m.targets
            .iter()
            .find(|t| t.target.name == name)
            .unwrap()
            .sync_windows
            .clone()
    };
    let got = w("windowed").expect("windows kept");
    assert!(!got.allow && got.windows == [("0 22 * * 1-5".to_owned(), "8h".to_owned())]);
    assert!(!got.open_at(time::macros::datetime!(2026-12-01 23:00 UTC)));
    assert_eq!(w("onchange"), None);
    // A kind ESO does not know allows every refresh: nothing to hold back.
    let mut odd = data("ps", "SecretStore", &["/k"]);
    odd["syncWindows"] =
        json!({"kind": "sometimes", "windows": [{"schedule": "@daily", "duration": "1h"}]});
    assert_eq!(es("app", "odd", odd).sync_windows, None);
}

/// The largest `k` for which `pattern(k)` (a run of `\w{k}`: Unicode word characters make
/// each repetition expensive) compiles within the per-pattern limit.
fn largest_word_run(pattern: impl Fn(usize) -> String) -> usize {
    let (mut lo, mut hi) = (0, 1);
    while compile_pattern(&pattern(hi)).is_ok() {
        (lo, hi) = (hi, hi * 2);
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if compile_pattern(&pattern(mid)).is_ok() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Tenants' patterns that each compile alone but not together (the combined set would pass
/// its size limit; the index used to `expect` it): the index matches them one by one instead
/// of panicking, and still right.
#[test]
fn patterns_too_large_to_combine_are_matched_one_by_one() {
    let k = largest_word_run(|k| format!(r"^/big/99/\w{{{k}}}$"));
    assert!(k > 0);
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    // Past the set's limit, within the budget.
    let n = 120;
    for i in 0..n {
        idx.apply_reader(es(
            "app",
            &format!("big{i}"),
            find(
                "s",
                json!({"name": {"regexp": format!(r"^/big/{i}/\w{{{k}}}$")}}),
            ),
        ));
    }
    assert_eq!(idx.stats().rejected, 0, "each pattern compiles on its own");
    let word = "a".repeat(k);
    assert_eq!(
        names(&idx.lookup(&change(&format!("/big/3/{word}"), "us-east-1"))),
        ["app/big3"]
    );
    assert!(
        idx.scan_set().set.is_none(),
        "the set was expected to be too large"
    );
    assert!(
        idx.lookup(&change(&format!("/big/3/{word}x"), "us-east-1"))
            .targets
            .is_empty()
    );
}

/// A pattern too large on its own matches every name (ESO's Go regexp would accept it, so a
/// missed change would leave a stale Secret) and is reported; one that does not compile reads
/// nothing (ESO fails it too) and is reported; both leave with their resource.
#[test]
fn rejected_patterns_are_reported_and_fail_safe() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    let huge = format!(
        r"^/huge/\w{{{}}}$",
        largest_word_run(|k| format!(r"\w{{{k}}}")) * 2
    );
    idx.apply_reader(es(
        "app",
        "huge",
        find("s", json!({"name": {"regexp": huge}})),
    ));
    idx.apply_reader(es(
        "app",
        "broken",
        find("s", json!({"name": {"regexp": "^/x/(unclosed$"}})),
    ));
    assert_eq!(idx.stats().rejected, 2);
    // The huge one matches any name in its store's scope; the broken one none.
    assert_eq!(
        names(&idx.lookup(&change("/anything", "us-east-1"))),
        ["app/huge"]
    );
    let explained = idx.explain(&change("/anything", "us-east-1"));
    let reasons: Vec<(&str, &str)> = explained
        .rejected
        .iter()
        .map(|r| (r.reader.name.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].0 == "broken" && reasons[0].1.contains("does not compile"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == "huge" && reasons[1].1.contains("as matching every name"),
        "{reasons:?}"
    );
    let key = ResourceKey {
        kind: ReaderKind::ExternalSecret,
        namespace: "app".into(),
        name: "huge".into(),
    };
    assert_eq!(idx.rejected_of(&key).len(), 1);
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "huge");
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "broken");
    assert_eq!(idx.stats().rejected, 0);
    assert!(idx.rejected_of(&key).is_empty());
}

/// However many patterns tenants create, together they cost at most the budget: past it a
/// pattern is treated as too large (matching every name) and reported; deleting resources
/// gives their share back.
#[test]
fn patterns_share_one_budget() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    // Each `\w` pattern compiles past 8 KiB: charged 64 KiB + two 32 KiB DFA caches.
    let each = REGEX_SIZE_LIMIT + 2 * REGEX_DFA_LIMIT;
    let fit = REGEX_BUDGET / each;
    for i in 0..fit + 12 {
        idx.apply_reader(es(
            "app",
            &format!("p{i}"),
            find("s", json!({"name": {"regexp": format!(r"^/p/{i}/\w$")}})),
        ));
    }
    assert_eq!(idx.stats().rejected, 12);
    assert!(idx.pattern_bytes <= REGEX_BUDGET);
    let over = idx.explain(&change("/p/0/x", "us-east-1")).rejected;
    assert!(over[0].reason.contains("budget"), "{over:?}");
    // Past the budget they match every name; within it, their own.
    let l = idx.lookup(&change("/p/0/x", "us-east-1"));
    assert_eq!(l.targets.len(), 1 + 12, "{:?}", names(&l));
    for i in 0..20 {
        idx.delete_reader(ReaderKind::ExternalSecret, "app", &format!("p{i}"));
    }
    idx.apply_reader(es(
        "app",
        "late",
        find("s", json!({"name": {"regexp": r"^/late/\w$"}})),
    ));
    assert!(
        idx.rejected_of(&ResourceKey {
            kind: ReaderKind::ExternalSecret,
            namespace: "app".into(),
            name: "late".into(),
        })
        .is_empty()
    );
}

/// What `stats()` keeps as counters, recomputed by walking the index.
fn walked_stats(idx: &Index) -> (usize, usize, usize) {
    let kes = idx
        .readers
        .keys()
        .filter(|k| k.kind == ReaderKind::KesExternalSecret)
        .count();
    let rejected = idx.rejected.values().map(Vec::len).sum();
    (idx.readers.len() - kes, kes, rejected)
}

fn kes_reader(ns: &str, name: &str, key: &str) -> Reader {
    Reader::from_kes(&json!({
        "apiVersion": "kubernetes-client.io/v1", "kind": "ExternalSecret",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"backendType": "systemManager", "region": "us-east-1",
                 "data": [{"key": key, "name": "v"}]}
    }))
    .unwrap()
}

/// `stats()` is exported on every watch event, so it counts instead of walking: the counts
/// stay what a walk finds through applies, updates, deletes, re-lists and store changes.
#[test]
fn stats_counts_stay_what_a_walk_finds() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    let check = |idx: &Index, step: &str| {
        let s = idx.stats();
        assert_eq!(
            (s.external_secrets, s.kes_external_secrets, s.rejected),
            walked_stats(idx),
            "after {step}"
        );
    };
    for i in 0..5 {
        idx.apply_reader(es(
            "app",
            &format!("e{i}"),
            data("s", "SecretStore", &["/a"]),
        ));
        idx.apply_reader(kes_reader("app", &format!("k{i}"), "/a"));
        // An invalid pattern is rejected (and reported), twice for the odd ones.
        let bad = if i % 2 == 0 {
            vec!["("]
        } else {
            vec!["(", "["]
        };
        idx.apply_reader(es(
            "app",
            &format!("r{i}"),
            json!({"secretStoreRef": {"name": "s", "kind": "SecretStore"},
                   "dataFrom": bad.iter().map(|re| json!({"find": {"name": {"regexp": re}}})).collect::<Vec<_>>()}),
        ));
        check(&idx, "applies");
    }
    assert_eq!(idx.stats().kes_external_secrets, 5);
    assert_eq!(idx.stats().rejected, 7);
    // Same references again (a status write), then changed ones.
    idx.apply_reader(kes_reader("app", "k0", "/a"));
    idx.apply_reader(es("app", "r0", find("s", json!({"name": {"regexp": "["}}))));
    idx.apply_reader(es("app", "r1", data("s", "SecretStore", &["/b"])));
    check(&idx, "updates");
    assert_eq!(idx.stats().rejected, 5);
    idx.delete_reader(ReaderKind::KesExternalSecret, "app", "k1");
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "r2");
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "nobody");
    check(&idx, "deletes");
    idx.apply_store(ss("app", "s", "us-east-1", "/prefix"));
    idx.delete_store(&StoreId::namespaced("app", "s"));
    check(&idx, "store changes");
    idx.replace_readers(
        ReaderKind::KesExternalSecret,
        vec![kes_reader("app", "k0", "/a"), kes_reader("app", "k9", "/z")],
    );
    idx.replace_readers(ReaderKind::ExternalSecret, vec![]);
    check(&idx, "re-lists");
    assert_eq!(idx.stats().external_secrets, 0);
    assert_eq!(idx.stats().kes_external_secrets, 2);
}

/// The operator writes status after every sync; the watch hands back the whole object. With
/// the references unchanged the filing stays (no pattern compiled, the scan set kept) and
/// the reader's status is the new one.
#[test]
fn a_status_write_keeps_the_filing_and_takes_the_status() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    let spec = find("s", json!({"name": {"regexp": "^/app/[a-z]+$"}}));
    let with_status = |refresh: &str| {
        Reader::from_external_secret(&json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"namespace": "app", "name": "f"}, "spec": spec,
            "status": {"refreshTime": refresh, "syncedResourceVersion": refresh}
        }))
        .unwrap()
    };
    idx.apply_reader(with_status("2026-12-05T10:00:00Z"));
    assert_eq!(
        names(&idx.lookup(&change("/app/db", "us-east-1"))),
        ["app/f"]
    );
    let set = idx
        .scan_set
        .lock()
        .clone()
        .expect("the lookup built the scan set");
    let cost = idx.pattern_bytes;
    idx.apply_reader(with_status("2026-12-05T11:00:00Z"));
    let kept = idx.scan_set.lock().clone().expect("the scan set was kept");
    assert!(Arc::ptr_eq(&set, &kept), "the scan set was rebuilt");
    assert_eq!(idx.pattern_bytes, cost);
    let key = ResourceKey {
        kind: ReaderKind::ExternalSecret,
        namespace: "app".into(),
        name: "f".into(),
    };
    assert_eq!(
        idx.readers[&key].synced_at,
        Some(time::macros::datetime!(2026-12-05 11:00:00 UTC))
    );
    assert_eq!(
        names(&idx.lookup(&change("/app/db", "us-east-1"))),
        ["app/f"]
    );
    // A spec change re-files it.
    idx.apply_reader(es(
        "app",
        "f",
        find("s", json!({"name": {"regexp": "^/other/.+$"}})),
    ));
    assert!(
        idx.lookup(&change("/app/db", "us-east-1"))
            .targets
            .is_empty()
    );
    assert_eq!(
        names(&idx.lookup(&change("/other/x", "us-east-1"))),
        ["app/f"]
    );
}

/// A ClusterExternalSecret's outcome waits on its children: `children_of` finds exactly the
/// ExternalSecrets it owns now, with their latest sync fingerprints, through adoption, a
/// status write, a release to another owner and deletion.
#[test]
fn children_of_follows_ownership() {
    let mut idx = Index::new();
    idx.apply_store(css("global", "ParameterStore", "us-east-1"));
    let child = |ns: &str, owner: Option<&str>, synced: Option<&str>| {
        let mut obj = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"namespace": ns, "name": "db"},
            "spec": data("global", "ClusterSecretStore", &["/shared/db"])
        });
        if let Some(o) = owner {
            obj["metadata"]["ownerReferences"] = json!([{"apiVersion": "external-secrets.io/v1",
                "kind": "ClusterExternalSecret", "name": o, "controller": true}]);
        }
        if let Some(v) = synced {
            obj["status"] = json!({"syncedResourceVersion": v});
        }
        Reader::from_external_secret(&obj).unwrap()
    };
    let children = |idx: &Index, ces: &str| {
        let mut c: Vec<(String, u64)> = idx
            .children_of(ces)
            .into_iter()
            .map(|(k, s)| (k.namespace, s))
            .collect();
        c.sort();
        c
    };
    let fp = |v: &str| crate::index::model::sync_fingerprint(Some(v));
    idx.apply_reader(child("a", Some("db-everywhere"), None));
    idx.apply_reader(child("b", Some("db-everywhere"), None));
    idx.apply_reader(child("c", None, None));
    assert_eq!(
        children(&idx, "db-everywhere"),
        [("a".into(), 0), ("b".into(), 0)]
    );
    // ESO's status write after a sync: same references, new fingerprint.
    idx.apply_reader(child("a", Some("db-everywhere"), Some("1-x")));
    assert_eq!(
        children(&idx, "db-everywhere"),
        [("a".into(), fp("1-x")), ("b".into(), 0)]
    );
    // Adopted by another owner, with the same references; and one adopted from nobody.
    idx.apply_reader(child("b", Some("db-elsewhere"), None));
    idx.apply_reader(child("c", Some("db-everywhere"), None));
    assert_eq!(
        children(&idx, "db-everywhere"),
        [("a".into(), fp("1-x")), ("c".into(), 0)]
    );
    assert_eq!(children(&idx, "db-elsewhere"), [("b".into(), 0)]);
    idx.delete_reader(ReaderKind::ExternalSecret, "a", "db");
    idx.delete_reader(ReaderKind::ExternalSecret, "c", "db");
    assert!(idx.children_of("db-everywhere").is_empty());
    assert!(
        !idx.by_parent.contains_key("db-everywhere"),
        "emptied sets go"
    );
    assert!(idx.children_of("nobody").is_empty());
}

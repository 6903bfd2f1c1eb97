//! Stores and scope: which store a reference reads through, and its region, account and
//! namespace conditions; a store's edit re-files its readers.

use super::*;

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

//! How a reader's references are filed: every way a resource reads a key (keys, versions,
//! prefixes, `find` by path, name and tags).

use super::*;

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
    let deleted = Change {
        operation: Operation::Delete,
        ..change("prod/db/password", "us-east-1")
    };
    assert_eq!(names(&idx.lookup(&deleted)), ["app/a", "app/b", "app/c"]);
    // A new parameter has version 1 and no label: neither b nor c has anything new to read.
    let created = Change {
        operation: Operation::Create,
        ..change("prod/db/password", "us-east-1")
    };
    assert_eq!(names(&idx.lookup(&created)), ["app/a"]);
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

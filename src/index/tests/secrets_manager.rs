//! Secrets Manager: exact names, ARNs with and without their random suffix, `find` paths as
//! string prefixes, and Parameter Store references to secrets.

use super::*;

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
    // Its new value is not what the find reads (it reads `team/app/db`): the oracle's
    // needless re-syncs of double-prefix finds on a Put or a stage move of the listed name.
    for value in [Operation::PutSecretValue, Operation::LabelUpdated] {
        assert!(
            idx.lookup(&op(value, sm_change("app/db")))
                .targets
                .is_empty(),
            "{value:?}"
        );
    }
    assert_eq!(
        names(&idx.lookup(&op(Operation::DeleteSecret, sm_change("app/db")))),
        ["app/find"]
    );
}

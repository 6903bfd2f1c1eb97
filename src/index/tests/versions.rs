//! What an event says about the versions, labels and stages it touched decides which pinned,
//! labelled and staged readers it reaches (issue 32, item 7): one test per class of needless
//! re-sync the oracle found at scale, each through the event as AWS sends it, and the readers
//! the same class must still reach.

use super::*;

/// Readers of one Parameter Store name, one per way to read it.
fn ps_readers(idx: &mut Index, name: &str) {
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    let key = |k: &str, version: Option<&str>| {
        let mut r = json!({"secretKey": "k", "remoteRef": {"key": k}});
        if let Some(v) = version {
            r["remoteRef"]["version"] = json!(v);
        }
        json!({"secretStoreRef": {"name": "ps", "kind": "SecretStore"}, "data": [r]})
    };
    idx.apply_reader(es("app", "latest", key(name, None)));
    idx.apply_reader(es("app", "v1", key(name, Some("1"))));
    idx.apply_reader(es("app", "v2", key(&format!("{name}:2"), None)));
    idx.apply_reader(es("app", "prod", key(name, Some("prod"))));
    idx.apply_reader(es("app", "beta", key(name, Some("beta"))));
    let parent = name.rsplit_once('/').map_or("/", |(p, _)| p);
    idx.apply_reader(es(
        "app",
        "find",
        find("ps", json!({"path": parent, "name": {"regexp": ".*"}})),
    ));
}

/// Readers of one secret: AWSCURRENT, AWSPREVIOUS, a custom stage, a version id, a find.
fn sm_readers(idx: &mut Index, name: &str) {
    idx.apply_store(sm_store("app", "sm", json!({})));
    let key = |version: Option<&str>| {
        let mut r = json!({"secretKey": "k", "remoteRef": {"key": name}});
        if let Some(v) = version {
            r["remoteRef"]["version"] = json!(v);
        }
        json!({"secretStoreRef": {"name": "sm", "kind": "SecretStore"}, "data": [r]})
    };
    idx.apply_reader(es("app", "current", key(None)));
    idx.apply_reader(es("app", "previous", key(Some("AWSPREVIOUS"))));
    idx.apply_reader(es("app", "blue", key(Some("blue"))));
    idx.apply_reader(es("app", "by-id", key(Some("uuid/5f0c-new"))));
    idx.apply_reader(es("app", "old-id", key(Some("uuid/5f0c-old"))));
    idx.apply_reader(es(
        "app",
        "find",
        find("sm", json!({"name": {"regexp": "^prod/"}})),
    ));
}

/// The ARN AWS puts in the responses about `prod/db`.
const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";

/// Everything the events in `messages` reach.
fn reached(idx: &Index, messages: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = messages
        .iter()
        .flat_map(|m| changes(&m.to_string()))
        .flat_map(|c| names(&idx.lookup(&c)))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn trail(service: &str, call: &str, request: Value, response: Value) -> Value {
    json!({"source": format!("aws.{service}"), "detail-type": "AWS API Call via CloudTrail",
        "region": "us-east-1", "account": "123456789012",
        "detail": {"eventSource": format!("{service}.amazonaws.com"), "eventName": call,
                   "awsRegion": "us-east-1", "requestParameters": request, "responseElements": response}})
}

fn ps_native(name: &str, operation: &str) -> Value {
    json!({"source": "aws.ssm", "detail-type": "Parameter Store Change", "region": "us-east-1",
        "account": "123456789012", "detail": {"name": name, "operation": operation}})
}

/// A parameter that did not exist has version 1 and no label: its label readers and readers
/// of other versions keep reading nothing (the oracle's "Create reaching label-pinned
/// readers"). Both the native event and CloudTrail's PutParameter say it.
#[test]
fn a_new_parameter_reaches_no_label_and_no_other_version() {
    let mut idx = Index::new();
    ps_readers(&mut idx, "/app/db");
    let created = ["app/find", "app/latest", "app/v1"];
    assert_eq!(reached(&idx, &[ps_native("/app/db", "Create")]), created);
    assert_eq!(
        reached(
            &idx,
            &[trail(
                "ssm",
                "PutParameter",
                json!({"name": "/app/db"}),
                json!({"version": 1})
            )]
        ),
        created
    );
    let why = idx.explain(&changes(&ps_native("/app/db", "Create").to_string())[0]);
    assert!(
        why.near_misses
            .iter()
            .any(|m| m.reader.name == "prod" && m.reason.contains("a new parameter has no label")),
        "{:?}",
        why.near_misses
    );
}

/// A new version reaches the newest value's readers and a reader pinned to exactly that
/// version (it read nothing until now), when the event says which version it is.
#[test]
fn a_new_version_reaches_the_reader_pinned_to_it() {
    let mut idx = Index::new();
    ps_readers(&mut idx, "/app/db");
    assert_eq!(
        reached(
            &idx,
            &[trail(
                "ssm",
                "PutParameter",
                json!({"name": "/app/db"}),
                json!({"version": 2})
            )]
        ),
        ["app/find", "app/latest", "app/v2"]
    );
    // The native event does not say the version: the pinned readers are left alone.
    assert_eq!(
        reached(&idx, &[ps_native("/app/db", "Update")]),
        ["app/find", "app/latest"]
    );
}

/// DeleteParameters: `responseElements` lists what was deleted and what was not there
/// (`invalidParameters`); only the deleted names reach anyone.
#[test]
fn delete_parameters_reaches_only_what_it_deleted() {
    let mut idx = Index::new();
    ps_readers(&mut idx, "/app/db");
    idx.apply_reader(es(
        "app",
        "other",
        data("ps", "SecretStore", &["/app/gone"]),
    ));
    let delete = |response: Value| {
        trail(
            "ssm",
            "DeleteParameters",
            json!({"names": ["/app/db", "/app/gone"]}),
            response,
        )
    };
    let all = [
        "app/beta",
        "app/find",
        "app/latest",
        "app/other",
        "app/prod",
        "app/v1",
        "app/v2",
    ];
    assert_eq!(
        reached(
            &idx,
            &[delete(
                json!({"deletedParameters": ["/app/gone"], "invalidParameters": ["/app/db"]})
            )]
        ),
        ["app/find", "app/other"]
    );
    // Nothing deleted: a message with nothing to act on, not a malformed one.
    assert!(matches!(
        crate::event::decode(
            &delete(
                json!({"deletedParameters": [], "invalidParameters": ["/app/db", "/app/gone"]})
            )
            .to_string()
        ),
        Ok(crate::event::Decoded::Ignored {
            kind: "nothing_deleted",
            ..
        })
    ));
    // A record without the response (older trails): every name asked for.
    assert_eq!(reached(&idx, &[delete(Value::Null)]), all);
}

/// LabelParameterVersion and UnlabelParameterVersion move the labels they name (less those
/// AWS refused): readers of other labels are left alone. The native event does not name the
/// label, so it reaches every label reader.
#[test]
fn a_label_move_reaches_readers_of_that_label_only() {
    let mut idx = Index::new();
    ps_readers(&mut idx, "/app/db");
    assert_eq!(
        reached(
            &idx,
            &[trail(
                "ssm",
                "LabelParameterVersion",
                json!({"name": "/app/db", "parameterVersion": 2, "labels": ["prod", "Bad label"]}),
                json!({"invalidLabels": ["Bad label"], "parameterVersion": 2})
            )]
        ),
        ["app/prod"]
    );
    assert_eq!(
        reached(
            &idx,
            &[trail(
                "ssm",
                "UnlabelParameterVersion",
                json!({"name": "/app/db", "parameterVersion": 2, "labels": ["prod", "beta"]}),
                json!({"removedLabels": ["beta"], "invalidLabels": ["prod"]})
            )]
        ),
        ["app/beta"]
    );
    assert_eq!(
        reached(&idx, &[ps_native("/app/db", "LabelParameterVersion")]),
        ["app/beta", "app/prod"]
    );
}

/// CreateSecret writes one version, staged AWSCURRENT only: readers of other stages and of
/// other version ids keep reading nothing.
#[test]
fn a_new_secret_reaches_no_other_stage_and_no_other_version_id() {
    let mut idx = Index::new();
    sm_readers(&mut idx, "prod/db");
    assert_eq!(
        reached(
            &idx,
            &[trail(
                "secretsmanager",
                "CreateSecret",
                json!({"name": "prod/db", "clientRequestToken": "5f0c-new"}),
                json!({"arn": ARN, "versionId": "5f0c-new"})
            )]
        ),
        ["app/by-id", "app/current", "app/find"]
    );
    // Without a version id in the record, a reader by id may be reading the new one.
    assert_eq!(
        reached(
            &idx,
            &[trail(
                "secretsmanager",
                "CreateSecret",
                json!({"name": "prod/db"}),
                json!({"arn": ARN})
            )]
        ),
        ["app/by-id", "app/current", "app/find", "app/old-id"]
    );
}

/// PutSecretValue attaches the stages it names, AWSCURRENT when it names none (AWSPREVIOUS
/// moves with AWSCURRENT): a value staged elsewhere reaches no AWSCURRENT reader.
#[test]
fn a_new_secret_value_reaches_the_stages_it_moved() {
    let mut idx = Index::new();
    sm_readers(&mut idx, "prod/db");
    let put = |request: Value, response: Value| {
        trail("secretsmanager", "PutSecretValue", request, response)
    };
    assert_eq!(
        reached(
            &idx,
            &[put(
                json!({"secretId": "prod/db", "clientRequestToken": "5f0c-new"}),
                json!({"arn": ARN, "versionId": "5f0c-new", "versionStages": ["AWSCURRENT"]})
            )]
        ),
        ["app/by-id", "app/current", "app/find", "app/previous"]
    );
    assert_eq!(
        reached(
            &idx,
            &[put(
                json!({"secretId": "prod/db", "versionStages": ["blue"]}),
                json!({"arn": ARN, "versionId": "5f0c-other", "versionStages": ["blue"]})
            )]
        ),
        ["app/blue"]
    );
    // The request alone (no response): its stages; none named means AWSCURRENT.
    assert_eq!(
        reached(&idx, &[put(json!({"secretId": "prod/db"}), Value::Null)]),
        ["app/current", "app/find", "app/previous"]
    );
}

/// A stage move (Secrets Manager's own `Secret Label Updated`, or CloudTrail's
/// UpdateSecretVersionStage) reaches the readers of the stage that moved: AWSCURRENT takes
/// AWSPREVIOUS and every `find` with it; another stage reaches its readers only.
#[test]
fn a_stage_move_reaches_readers_of_that_stage_only() {
    let mut idx = Index::new();
    sm_readers(&mut idx, "prod/db");
    let native = |label: &str| {
        json!({"source": "aws.secretsmanager", "detail-type": "Secret Label Updated", "region": "us-east-1",
            "account": "123456789012", "detail": {"name": "prod/db", "labelUpdated": label, "versionId": "5f0c-old"}})
    };
    let staged = |stage: &str| {
        trail(
            "secretsmanager",
            "UpdateSecretVersionStage",
            json!({"secretId": "prod/db", "versionStage": stage, "moveToVersionId": "5f0c-old"}),
            json!({"arn": ARN}),
        )
    };
    for current in [native("AWSCURRENT"), staged("AWSCURRENT")] {
        assert_eq!(
            reached(&idx, &[current]),
            ["app/current", "app/find", "app/previous"]
        );
    }
    for blue in [native("blue"), staged("blue")] {
        assert_eq!(reached(&idx, &[blue]), ["app/blue"]);
    }
    let why = idx.explain(&changes(&native("blue").to_string())[0]);
    assert!(
        why.near_misses
            .iter()
            .any(|m| m.reader.name == "current" && m.reason.contains("moved blue only")),
        "{:?}",
        why.near_misses
    );
    // An event that does not say which stage moved reaches every stage's readers.
    let mut unsaid = native("AWSCURRENT");
    unsaid["detail"]
        .as_object_mut()
        .unwrap()
        .remove("labelUpdated");
    assert_eq!(
        reached(&idx, &[unsaid]),
        ["app/blue", "app/current", "app/find", "app/previous"]
    );
}

/// A scheduled deletion (DeleteSecret with a recovery window, AWS's default) and its
/// RestoreSecret leave the tags readable: a `metadataPolicy: Fetch` reader gets nothing new.
/// A forced deletion removes them.
#[test]
fn a_scheduled_deletion_leaves_the_tags_readers_alone() {
    let mut idx = Index::new();
    sm_readers(&mut idx, "prod/db");
    idx.apply_reader(es(
        "app",
        "tags",
        json!({"secretStoreRef": {"name": "sm", "kind": "SecretStore"},
               "data": [{"secretKey": "t", "remoteRef": {"key": "prod/db", "metadataPolicy": "Fetch"}}]}),
    ));
    let every_value = [
        "app/blue",
        "app/by-id",
        "app/current",
        "app/find",
        "app/old-id",
        "app/previous",
    ];
    let delete = |request: Value| {
        trail(
            "secretsmanager",
            "DeleteSecret",
            request,
            json!({"arn": ARN}),
        )
    };
    for scheduled in [
        delete(json!({"secretId": "prod/db", "recoveryWindowInDays": 7})),
        delete(json!({"secretId": "prod/db"})),
        trail(
            "secretsmanager",
            "RestoreSecret",
            json!({"secretId": "prod/db"}),
            json!({"arn": ARN}),
        ),
    ] {
        assert_eq!(reached(&idx, &[scheduled]), every_value);
    }
    let mut forced = every_value.to_vec();
    forced.push("app/tags");
    forced.sort();
    assert_eq!(
        reached(
            &idx,
            &[delete(
                json!({"secretId": "prod/db", "forceDeleteWithoutRecovery": true})
            )]
        ),
        forced
    );
}

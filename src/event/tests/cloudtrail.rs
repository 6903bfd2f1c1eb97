use serde_json::{Value, json};

use super::decoded;
use crate::event::{Decoded, MAX_PLAIN_PARAMETERS, decode};

#[test]
fn cloudtrail_secrets_manager_calls() {
    let call = |event_name: &str, secret_id: &str, error: Option<&str>| {
        let mut d = json!({"eventSource": "secretsmanager.amazonaws.com", "eventName": event_name, "awsRegion": "eu-west-1",
            "requestParameters": {"secretId": secret_id}});
        if let Some(e) = error {
            d["errorCode"] = json!(e);
        }
        json!({"source": "aws.secretsmanager", "detail-type": "AWS API Call via CloudTrail", "region": "eu-west-1",
            "account": "123456789012", "detail": d})
    };
    for (op, operation) in [
        ("PutSecretValue", "PutSecretValue"),
        ("UpdateSecret", "UpdateSecret"),
        ("RotateSecret", "RotateSecret"),
        ("DeleteSecret", "DeleteSecret"),
        ("RestoreSecret", "RestoreSecret"),
        ("UpdateSecretVersionStage", "UpdateSecretVersionStage"),
        ("TagResource", "TagsChanged"),
        ("UntagResource", "TagsChanged"),
    ] {
        // The caller's ARN may be partial: both readings.
        let Decoded::Changes(c) = decoded(call(
            op,
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/key-x1Y2z3",
            None,
        )) else {
            panic!("{op}")
        };
        let got: Vec<(&str, &str, &str)> = c
            .iter()
            .map(|c| (c.name.as_str(), c.operation.as_str(), c.region.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("app/key-x1Y2z3", operation, "eu-west-1"),
                ("app/key", operation, "eu-west-1")
            ]
        );
        // AWS's own full ARN in the response is unambiguous.
        let mut e = call(op, "app/key-x1Y2z3", None);
        e["detail"]["responseElements"] =
            json!({"arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/key-x1Y2z3"});
        let Decoded::Changes(c) = decoded(e) else {
            panic!("{op}")
        };
        assert_eq!(
            c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["app/key"]
        );
    }
    assert!(matches!(
        decoded(call("GetSecretValue", "app/key", None)),
        Decoded::Ignored {
            kind: "unhandled_api_call",
            ..
        }
    ));
    assert!(matches!(
        decoded(call("PutSecretValue", "app/key", Some("AccessDenied"))),
        Decoded::Ignored {
            kind: "failed_api_call",
            ..
        }
    ));
    // A name that only looks like it has a suffix keeps it: only ARNs carry the random suffix.
    let Decoded::Changes(c) = decoded(call("PutSecretValue", "db-abcdef", None)) else {
        panic!()
    };
    assert_eq!(c[0].name, "db-abcdef");
    assert!(decode(&call("PutSecretValue", "bad name!", None).to_string()).is_err());
}

fn trail(source: &str, call: &str, request: Value, response: Value) -> Value {
    json!({"source": source, "detail-type": "AWS API Call via CloudTrail", "region": "eu-west-1", "account": "123456789012",
        "detail": {"eventSource": format!("{}.amazonaws.com", source.trim_start_matches("aws.")), "eventName": call,
                   "awsRegion": "eu-west-1", "requestParameters": request, "responseElements": response}})
}

fn changed(e: Value) -> Vec<(String, &'static str)> {
    let Decoded::Changes(c) = decoded(e.clone()) else {
        panic!("not a change: {e}")
    };
    c.into_iter()
        .map(|c| (c.name, c.operation.as_str()))
        .collect()
}

/// Parameter Store calls from CloudTrail: what the native event does not report
/// (UnlabelParameterVersion, DeleteParameters, tags), and the rest for CloudTrail-only set-ups.
#[test]
fn cloudtrail_parameter_store_calls() {
    let ssm =
        |call: &str, request: Value, response: Value| trail("aws.ssm", call, request, response);
    assert_eq!(
        changed(ssm(
            "PutParameter",
            json!({"name": "/a"}),
            json!({"version": 1})
        )),
        [("/a".into(), "Create")]
    );
    assert_eq!(
        changed(ssm(
            "PutParameter",
            json!({"name": "/a"}),
            json!({"version": 7})
        )),
        [("/a".into(), "Update")]
    );
    assert_eq!(
        changed(ssm("DeleteParameter", json!({"name": "flat"}), Value::Null)),
        [("flat".into(), "Delete")]
    );
    assert_eq!(
        changed(ssm(
            "DeleteParameters",
            json!({"names": ["/a", "/b/c"]}),
            Value::Null
        )),
        [("/a".into(), "Delete"), ("/b/c".into(), "Delete")]
    );
    assert_eq!(
        changed(ssm(
            "LabelParameterVersion",
            json!({"name": "/a", "parameterVersion": 2, "labels": ["l"]}),
            Value::Null
        )),
        [("/a".into(), "LabelParameterVersion")]
    );
    assert_eq!(
        changed(ssm(
            "UnlabelParameterVersion",
            json!({"name": "/a", "parameterVersion": 2, "labels": ["l"]}),
            Value::Null
        )),
        [("/a".into(), "UnlabelParameterVersion")]
    );
    // Tag calls take a name or the parameter's ARN.
    for id in ["/a/b", "arn:aws:ssm:eu-west-1:123456789012:parameter/a/b"] {
        assert_eq!(
            changed(ssm(
                "AddTagsToResource",
                json!({"resourceType": "Parameter", "resourceId": id, "tags": []}),
                Value::Null
            )),
            [("/a/b".into(), "TagsChanged")]
        );
    }
    assert_eq!(
        changed(ssm(
            "RemoveTagsFromResource",
            json!({"resourceType": "Parameter", "resourceId": "arn:aws:ssm:eu-west-1:123456789012:parameter/flat", "tagKeys": ["t"]}),
            Value::Null
        )),
        [("/flat".into(), "TagsChanged")]
    );
    // Not a parameter, not a change, not successful, or not naming one.
    for (e, kind) in [
        (
            ssm(
                "AddTagsToResource",
                json!({"resourceType": "Document", "resourceId": "d"}),
                Value::Null,
            ),
            "unhandled_api_call",
        ),
        (
            ssm("GetParameter", json!({"name": "/a"}), Value::Null),
            "unhandled_api_call",
        ),
    ] {
        assert!(matches!(decoded(e), Decoded::Ignored { kind: k, .. } if k == kind));
    }
    let mut failed = ssm("DeleteParameter", json!({"name": "/a"}), Value::Null);
    failed["detail"]["errorCode"] = json!("ParameterNotFound");
    assert!(matches!(
        decoded(failed),
        Decoded::Ignored {
            kind: "failed_api_call",
            ..
        }
    ));
    assert!(decode(&ssm("DeleteParameter", json!({}), Value::Null).to_string()).is_err());
    let many: Vec<String> = (0..=MAX_PLAIN_PARAMETERS)
        .map(|i| format!("/p{i}"))
        .collect();
    assert!(
        decode(&ssm("DeleteParameters", json!({"names": many}), Value::Null).to_string()).is_err()
    );
    assert!(
        decode(&ssm("DeleteParameter", json!({"name": "bad name!"}), Value::Null).to_string())
            .is_err()
    );
}

/// Secrets Manager: CreateSecret names the secret in `name`; AWS's ARN in the response (or
/// `aRN`, as records before 2024 spell it) is the full one; replicas appear and go in other
/// regions; RotationSucceeded is a service event.
#[test]
fn cloudtrail_secrets_manager_create_replicas_and_rotation() {
    let sm = |call: &str, request: Value, response: Value| {
        trail("aws.secretsmanager", call, request, response)
    };
    assert_eq!(
        changed(sm(
            "CreateSecret",
            json!({"name": "app/db-backup"}),
            Value::Null
        )),
        [("app/db-backup".into(), "CreateSecret")]
    );
    assert_eq!(
        changed(sm(
            "RestoreSecret",
            json!({"secretId": "x"}),
            json!({"aRN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db-Ab12Cd"})
        )),
        [("app/db".into(), "RestoreSecret")]
    );
    let Decoded::Changes(c) = decoded(sm(
        "ReplicateSecretToRegions",
        json!({"secretId": "app/db", "addReplicaRegions": [{"region": "us-west-2"}, {"region": "ap-south-1"}]}),
        Value::Null,
    )) else {
        panic!()
    };
    let got: Vec<(&str, &str, &str)> = c
        .iter()
        .map(|c| (c.name.as_str(), c.region.as_str(), c.operation.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("app/db", "us-west-2", "ReplicaCreated"),
            ("app/db", "ap-south-1", "ReplicaCreated")
        ]
    );
    let Decoded::Changes(c) = decoded(sm(
        "RemoveRegionsFromReplication",
        json!({"secretId": "app/db", "removeReplicaRegions": ["us-west-2"]}),
        Value::Null,
    )) else {
        panic!()
    };
    assert_eq!(
        (c[0].region.as_str(), c[0].operation.as_str()),
        ("us-west-2", "ReplicaRemoved")
    );
    assert!(matches!(
        decoded(sm(
            "CancelRotateSecret",
            json!({"secretId": "x"}),
            Value::Null
        )),
        Decoded::Ignored {
            kind: "unhandled_api_call",
            ..
        }
    ));
    let rotation = json!({"source": "aws.secretsmanager", "detail-type": "AWS Service Event via CloudTrail", "region": "eu-west-1",
        "account": "123456789012", "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": "RotationSucceeded",
        "requestParameters": null, "additionalEventData": {"SecretId": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db-Ab12Cd"}}});
    assert_eq!(
        changed(rotation.clone()),
        [("app/db".into(), "RotationSucceeded")]
    );
    let mut started = rotation;
    started["detail"]["eventName"] = json!("RotationStarted");
    assert!(matches!(decoded(started), Decoded::Ignored { .. }));
}

/// What a record says it touched is read only when it is what AWS sends: labels and stages
/// as strings of at most 256 characters, at most 20 of them; anything else reads as "not
/// said" (every reader of the operation's effect is reached), never as an error or a
/// truncated label that would match nobody.
#[test]
fn cloudtrail_touched_labels_and_versions_are_bounded() {
    let touched = |call: &str, request: Value, response: Value| {
        let source = if call.contains("Secret") {
            "aws.secretsmanager"
        } else {
            "aws.ssm"
        };
        match decoded(trail(source, call, request, response)) {
            Decoded::Changes(c) => c[0].touched.clone(),
            other => panic!("{other:?}"),
        }
    };
    let label = |labels: Value| {
        touched(
            "LabelParameterVersion",
            json!({"name": "/a", "labels": labels}),
            Value::Null,
        )
        .labels
    };
    assert_eq!(label(json!(["prod"])), Some(vec!["prod".to_owned()]));
    assert_eq!(label(json!(["x".repeat(257)])), None);
    assert_eq!(label(json!(vec!["l"; 21])), None);
    assert_eq!(label(json!([1, 2])), None);
    assert_eq!(label(json!({"prod": true})), None);
    assert_eq!(
        touched("PutParameter", json!({"name": "/a"}), json!({"version": 7})).number,
        Some(7)
    );
    assert_eq!(
        touched(
            "PutParameter",
            json!({"name": "/a"}),
            json!({"version": "7"})
        )
        .number,
        None
    );
    let put = touched(
        "PutSecretValue",
        json!({"secretId": "a", "clientRequestToken": "t".repeat(65)}),
        Value::Null,
    );
    assert_eq!(
        (put.id, put.labels),
        (None, Some(vec!["AWSCURRENT".to_owned()]))
    );
    let stage = touched(
        "UpdateSecretVersionStage",
        json!({"secretId": "a", "versionStage": ["AWSCURRENT", 3]}),
        Value::Null,
    );
    assert_eq!(stage.labels, None);
}

use super::*;
use serde_json::json;

fn ssm_event(operation: &str, name: &str) -> String {
    json!({
        "version": "0",
        "id": "6a7e4feb-b491-4cf7-a9f1-bf3703497718",
        "detail-type": "Parameter Store Change",
        "source": "aws.ssm",
        "account": "123456789012",
        "time": "2017-05-22T16:43:48Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:ssm:us-east-1:123456789012:parameter{}{}", if name.starts_with('/') { "" } else { "/" }, name)],
        "detail": {"operation": operation, "name": name, "type": "String", "description": "Sample Parameter"}
    })
    .to_string()
}

#[test]
fn all_four_operations_decode() {
    for op in ["Create", "Update", "Delete", "LabelParameterVersion"] {
        let d = decode(&ssm_event(op, "/app/db/password")).unwrap();
        let Decoded::Changes(changes) = d else {
            panic!("{op}: {d:?}")
        };
        assert_eq!(changes.len(), 1);
        let c = &changes[0];
        assert_eq!(c.operation.as_str(), op);
        assert_eq!(c.name, "/app/db/password");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.account.as_deref(), Some("123456789012"));
        assert_eq!(c.service, Service::ParameterStore);
    }
}

#[test]
fn root_names_keep_their_form() {
    let Decoded::Changes(c) = decode(&ssm_event("Update", "foo")).unwrap() else {
        panic!()
    };
    assert_eq!(c[0].name, "foo");
}

#[test]
fn name_falls_back_to_the_resource_arn() {
    let mut v: Value = serde_json::from_str(&ssm_event("Update", "/a/b")).unwrap();
    v["detail"].as_object_mut().unwrap().remove("name");
    let Decoded::Changes(c) = decode(&v.to_string()).unwrap() else {
        panic!()
    };
    assert_eq!(c[0].name, "/a/b");
}

#[test]
fn unknown_operation_and_missing_detail_are_malformed() {
    let err = decode(&ssm_event("Rename", "/a")).unwrap_err();
    assert!(err.0.contains("Rename"), "{err}");
    let mut v: Value = serde_json::from_str(&ssm_event("Update", "/a")).unwrap();
    v.as_object_mut().unwrap().remove("detail");
    assert!(decode(&v.to_string()).unwrap_err().0.contains("detail"));
    let mut v: Value = serde_json::from_str(&ssm_event("Update", "/a")).unwrap();
    v["region"] = json!("not a region");
    assert!(decode(&v.to_string()).unwrap_err().0.contains("region"));
}

#[test]
fn names_with_characters_ssm_forbids_are_malformed() {
    for bad in ["", "/a b", "/a\nb", "/a;rm", &"a".repeat(2049)] {
        assert!(decode(&ssm_event("Update", bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn other_events_are_ignored_not_errors() {
    let e = json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}});
    match decode(&e.to_string()).unwrap() {
        Decoded::Ignored { kind, detail } => {
            assert_eq!(kind, "unhandled_event");
            assert!(detail.contains("aws.ec2"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decode("hello").unwrap(),
        Decoded::Ignored {
            kind: "not_json",
            ..
        }
    ));
    assert!(matches!(
        decode("[1]").unwrap(),
        Decoded::Ignored {
            kind: "not_json",
            ..
        }
    ));
    assert!(matches!(
        decode("{\"a\":1}").unwrap(),
        Decoded::Ignored {
            kind: "unrecognized",
            ..
        }
    ));
}

#[test]
fn plain_format() {
    let m = json!({"parameters": ["/app/db/password", "plain"], "region": "eu-west-1", "account": "111122223333"});
    let Decoded::Changes(c) = decode(&m.to_string()).unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].name, "plain");
    assert_eq!(c[1].region, "eu-west-1");
    assert_eq!(c[0].account.as_deref(), Some("111122223333"));
    assert_eq!(c[0].operation, Operation::Update);

    let no_account = json!({"parameters": ["/a"], "region": "eu-west-1"});
    let Decoded::Changes(c) = decode(&no_account.to_string()).unwrap() else {
        panic!()
    };
    assert_eq!(c[0].account, None);
}

#[test]
fn plain_format_errors_say_what_was_expected() {
    for (m, want) in [
        (json!({"parameters": [], "region": "eu-west-1"}), "1 to 100"),
        (json!({"parameters": "/a", "region": "eu-west-1"}), "array"),
        (json!({"parameters": ["/a"]}), "region"),
        (json!({"parameters": [1], "region": "eu-west-1"}), "strings"),
        (
            json!({"parameters": ["/a"], "region": "eu-west-1", "account": "12"}),
            "12 digits",
        ),
        (
            json!({"parameters": vec!["/a"; 101], "region": "eu-west-1"}),
            "1 to 100",
        ),
    ] {
        let err = decode(&m.to_string()).unwrap_err();
        assert!(err.0.contains(want), "{m}: {err}");
    }
}

fn decoded(v: Value) -> Decoded {
    decode(&v.to_string()).unwrap()
}

#[test]
fn policy_action_expiration_is_a_change_notifications_are_not() {
    let base = |policy: &str, detail: Value| {
        let mut d = detail;
        d["policy-type"] = json!(policy);
        json!({"source": "aws.ssm", "detail-type": "Parameter Store Policy Action", "region": "us-east-1",
            "account": "123456789012", "resources": ["arn:aws:ssm:us-east-1:123456789012:parameter/from/arn"], "detail": d})
    };
    for (detail, want) in [
        (json!({"name": "/a/b"}), "/a/b"),
        (json!({"parameter-name": "/c/d"}), "/c/d"),
        (json!({}), "/from/arn"),
    ] {
        let Decoded::Changes(c) = decoded(base("Expiration", detail)) else {
            panic!()
        };
        assert_eq!(
            (c[0].name.as_str(), c[0].operation),
            (want, Operation::Expiration)
        );
    }
    for p in ["ExpirationNotification", "NoChangeNotification"] {
        assert!(matches!(
            decoded(base(p, json!({"name": "/a"}))),
            Decoded::Ignored {
                kind: "policy_notification",
                ..
            }
        ));
    }
    assert!(decode(&base("Bogus", json!({"name": "/a"})).to_string()).is_err());
}

#[test]
fn secret_label_updated_by_name_or_arn() {
    // An ARN written by a caller may be partial: a name that ends in `-` and six characters
    // may be the name's own (`db-backup`), so both readings are changes.
    for (name, want) in [
        ("prod/db", vec!["prod/db"]),
        (
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
            vec!["prod/db-AbCdEf", "prod/db"],
        ),
        (
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db",
            vec!["prod/db"],
        ),
    ] {
        let e = json!({"source": "aws.secretsmanager", "detail-type": "Secret Label Updated", "region": "us-east-1",
            "account": "123456789012", "detail": {"name": name, "labelUpdated": "AWSCURRENT", "versionId": "v2"}});
        let Decoded::Changes(c) = decoded(e) else {
            panic!()
        };
        assert!(c.iter().all(
            |c| c.service == Service::SecretsManager && c.operation == Operation::LabelUpdated
        ));
        assert_eq!(c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), want);
    }
}

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

/// The typed fast path for Parameter Store Change must answer exactly as the `Value` path,
/// errors included, for complete, partial, odd and hostile variants of the event.
#[test]
fn typed_fast_path_agrees_with_the_value_path() {
    let good = ssm_event("Update", "/app/db/password");
    let mut cases: Vec<String> = vec![
        good.clone(),
        ssm_event("Rename", "/a"),
        ssm_event("Update", "bad name!"),
        ssm_event("Update", ""),
        ssm_event("Delete", &"a".repeat(2049)),
        ssm_event("Create", &"a".repeat(2048)),
        // JSON escapes in the name (borrowed fields cannot hold them; Cow must).
        good.replace("/app/db/password", "\\/app\\/db\\/password"),
        good.replace("/app/db/password", "/app/\\u00e9"),
        // A duplicate key: the Value path keeps the last one.
        good.replacen('{', "{\"region\":\"eu-west-1\",", 1),
    ];
    let base: Value = serde_json::from_str(&good).unwrap();
    let variants: Vec<(&str, Value)> = vec![
        ("/account", Value::Null),
        ("/account", json!(123456789012u64)),
        ("/account", json!("12345")),
        ("/account", json!("12345678901x")),
        ("/region", json!("moon-1")),
        ("/region", json!(7)),
        ("/detail", json!("not an object")),
        ("/detail/operation", json!(3)),
        ("/detail/name", Value::Null),
        ("/detail/name", json!(["/a"])),
        ("/source", json!("aws.secretsmanager")),
        ("/detail-type", json!("Parameter Store Policy Action")),
    ];
    for (pointer, value) in variants {
        let mut v = base.clone();
        *v.pointer_mut(pointer).unwrap() = value;
        cases.push(v.to_string());
    }
    for field in ["/account", "/region", "/detail/name", "/detail/operation"] {
        let mut v = base.clone();
        let (parent, key) = field.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() {
            &mut v
        } else {
            v.pointer_mut(parent).unwrap()
        };
        parent.as_object_mut().unwrap().remove(key);
        cases.push(v.to_string());
    }
    let mut fast = 0;
    for m in &cases {
        assert_eq!(decode(m), decode_value(m), "{m}");
        fast += usize::from(native::parameter_store_change_typed(m).is_some());
    }
    // The fast path took the well-formed and the malformed-but-complete ones.
    assert!(
        fast >= 10,
        "fast path used for {fast} of {} cases",
        cases.len()
    );
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

/// What each operation can change of its item (the index reads it to pick readers).
#[test]
fn operations_say_what_they_change() {
    use Effect::*;
    for (op, effect) in [
        (Operation::Create, Existence),
        (Operation::Delete, Existence),
        (Operation::Expiration, Existence),
        (Operation::CreateSecret, Existence),
        (Operation::DeleteSecret, Existence),
        (Operation::RestoreSecret, Existence),
        (Operation::ReplicaCreated, Existence),
        (Operation::ReplicaRemoved, Existence),
        (Operation::Update, Value),
        (Operation::PutSecretValue, Value),
        (Operation::UpdateSecretVersionStage, Value),
        (Operation::LabelUpdated, Value),
        (Operation::RotationSucceeded, Value),
        (Operation::LabelParameterVersion, Label),
        (Operation::UnlabelParameterVersion, Label),
        (Operation::TagsChanged, Tags),
    ] {
        assert_eq!(op.effect(), effect, "{op:?}");
    }
}

/// The plain test format is a change only where it is allowed (`--accept-plain-format`).
#[test]
fn the_plain_format_is_off_unless_allowed() {
    let plain = r#"{"parameters": ["/a"], "region": "us-east-1"}"#;
    assert!(matches!(
        decode_delivered(plain, true),
        Ok(Decoded::Changes(_))
    ));
    assert!(matches!(
        decode_delivered(plain, false),
        Ok(Decoded::Ignored {
            kind: "plain_format_disabled",
            ..
        })
    ));
    // AWS's events are unaffected; a malformed plain payload is ignored too while the format
    // is off, and malformed once it is on.
    assert!(matches!(
        decode_delivered(&ssm_event("Update", "/a"), false),
        Ok(Decoded::Changes(_))
    ));
    assert!(matches!(
        decode_delivered(r#"{"parameters": []}"#, false),
        Ok(Decoded::Ignored {
            kind: "plain_format_disabled",
            ..
        })
    ));
    assert!(decode_delivered(r#"{"parameters": []}"#, true).is_err());
}

use serde_json::{Value, json};

use super::{decoded, ssm_event};
use crate::event::native::parameter_store_change_typed;
use crate::event::{Decoded, Operation, Service, decode, decode_value};

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
        fast += usize::from(parameter_store_change_typed(m).is_some());
    }
    // The fast path took the well-formed and the malformed-but-complete ones.
    assert!(
        fast >= 10,
        "fast path used for {fast} of {} cases",
        cases.len()
    );
}

/// An error quotes the input it refuses clipped: a `resources[0]` of any length (the event is
/// verified, but its fields are AWS's or a rule's, not ours) cannot make a log line that long.
#[test]
fn a_long_resource_arn_is_clipped_in_the_error() {
    let huge = "x".repeat(100_000);
    let event = json!({"source": "aws.ssm", "detail-type": "Parameter Store Policy Action",
        "region": "us-east-1", "account": "123456789012", "resources": [huge],
        "detail": {"policy-type": "Expiration"}});
    let err = decode(&event.to_string()).unwrap_err();
    assert!(err.0.contains("is not a parameter ARN"), "{}", err.0);
    assert!(err.0.len() < 200, "{} bytes", err.0.len());
}

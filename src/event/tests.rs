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

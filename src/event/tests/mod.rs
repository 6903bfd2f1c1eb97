mod cloudtrail;
mod native;
mod plain;

use serde_json::{Value, json};

use super::{Decoded, Effect, Operation, decode, decode_delivered};

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

fn decoded(v: Value) -> Decoded {
    decode(&v.to_string()).unwrap()
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

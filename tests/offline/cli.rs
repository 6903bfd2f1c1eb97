//! The operator commands as a user runs them: `sns verify` on real AWS-signed messages, and
//! `sample` + `dev-cert` producing what `sns verify` accepts.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ssm-resync");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sns/aws-real");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SSM_RESYNC_TOPIC_ARN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(n: usize) -> (tempfile::TempDir, String, Value) {
    let all: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(format!("{DIR}/notifications-2022-us-east-2.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("msg.json");
    std::fs::write(&path, all[n].to_string()).unwrap();
    (dir, path.display().to_string(), all[n].clone())
}

#[test]
fn sns_verify_real_messages_and_reasons() {
    let cert = format!("{DIR}/SimpleNotificationService-7ff53184-2022.pem");
    for n in 0..4 {
        let (_d, path, msg) = fixture(n);
        let at = msg["Timestamp"].as_str().unwrap();
        let topic = msg["TopicArn"].as_str().unwrap();
        assert_eq!(
            run(&[
                "sns",
                "verify",
                &path,
                "--cert",
                &cert,
                "--at",
                at,
                "--topic-arn",
                topic
            ])
            .0,
            0,
            "fixture {n}"
        );
        let (code, out, _) = run(&["sns", "verify", &path, "--cert", &cert, "--at", at]);
        assert_eq!(
            (code, out.trim()),
            (0, "valid"),
            "without --topic-arn the check is skipped"
        );
        // Today the certificate has expired and the message is years old.
        let (code, out, _) = run(&["sns", "verify", &path, "--cert", &cert]);
        assert_eq!((code, out.trim()), (1, "invalid: message_too_old"));
        let (code, out, _) = run(&[
            "sns",
            "verify",
            &path,
            "--cert",
            &cert,
            "--at",
            at,
            "--topic-arn",
            "arn:aws:sns:us-east-2:111111111111:other",
        ]);
        assert_eq!((code, out.trim()), (1, "invalid: topic_not_allowed"));
    }
    let (_d, path, msg) = fixture(0);
    let at = msg["Timestamp"].as_str().unwrap().to_owned();
    let mut tampered = msg.clone();
    tampered["Message"] = Value::from("tampered");
    std::fs::write(&path, tampered.to_string()).unwrap();
    let (code, out, err) = run(&["sns", "verify", &path, "--cert", &cert, "--at", &at]);
    assert_eq!(
        (code, out.trim()),
        (1, "invalid: signature_invalid"),
        "{err}"
    );
    // A certificate of the wrong kind is a verdict, not a usage error.
    let (code, out, _) = run(&[
        "sns",
        "verify",
        &path,
        "--cert",
        &format!("{DIR}/README.md"),
        "--at",
        &at,
    ]);
    assert_eq!((code, out.trim()), (1, "invalid: cert_invalid"));
    // Usage errors exit 2.
    assert_eq!(run(&["sns", "verify", "/nonexistent.json"]).0, 2);
    assert_eq!(run(&["sns", "verify", &path, "--at", "yesterday"]).0, 2);
    assert_eq!(run(&["sns", "verify"]).0, 2);
}

#[test]
fn sample_signed_with_a_dev_cert_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    assert_eq!(run(&["dev-cert", "--out", &d]).0, 0);
    let key = format!("{d}/key.pem");
    let cert = format!("{d}/cert.pem");
    let topic = "arn:aws:sns:us-east-1:123456789012:t";
    let (code, body, err) = run(&[
        "sample",
        "--parameter",
        "/app/db",
        "--sign-key",
        &key,
        "--topic-arn",
        topic,
    ]);
    assert_eq!(code, 0, "{err}");
    let path = format!("{d}/msg.json");
    std::fs::write(&path, &body).unwrap();
    let (code, out, err) = run(&[
        "sns",
        "verify",
        &path,
        "--cert",
        &cert,
        "--topic-arn",
        topic,
    ]);
    assert_eq!((code, out.trim()), (0, "valid"), "{err}");
    // Unsigned samples say so and do not verify.
    let (code, body, err) = run(&["sample", "--parameter", "/app/db", "--topic-arn", topic]);
    assert!(code == 0 && err.contains("unsigned"));
    std::fs::write(&path, &body).unwrap();
    assert_eq!(
        run(&["sns", "verify", &path, "--cert", &cert]).1.trim(),
        "invalid: missing_field",
        "an unsigned envelope has an empty Signature"
    );
}

/// `explain` refuses bad input with a clear message before it contacts any cluster.
#[test]
fn explain_rejects_bad_input_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    let f = file.display().to_string();
    for (body, want) in [
        ("not json", "not JSON"),
        (
            r#"{"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"}"#,
            "ignores such messages",
        ),
        (
            r#"{"source": "aws.ssm", "detail-type": "Parameter Store Change", "region": "us-east-1", "detail": {"operation": "Rename", "name": "/a"}}"#,
            "malformed event",
        ),
        (
            r#"{"parameters": [], "region": "us-east-1"}"#,
            "malformed event",
        ),
    ] {
        std::fs::write(&file, body).unwrap();
        let out = Command::new(BIN)
            .args(["explain", &f])
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}: {err}");
        assert!(err.contains(want), "{body}: {err}");
    }
}

/// A pinned certificate must still pass the policy: pinning replaces only the fetch.
#[test]
fn serve_refuses_a_pin_outside_the_url_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    assert_eq!(run(&["dev-cert", "--out", &d]).0, 0);
    let topic = "--topic-arn=arn:aws:sns:us-east-1:123456789012:t";
    let good = format!(
        "--sns-signing-cert=https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123.pem={d}/cert.pem"
    );
    let (code, out, err) = run(&["serve", topic, &good, "--check-config"]);
    assert_eq!(code, 0, "{out}{err}");
    let evil = format!(
        "--sns-signing-cert=https://evil.example/SimpleNotificationService-0123.pem={d}/cert.pem"
    );
    let (code, _, err) = run(&["serve", topic, &evil, "--check-config"]);
    assert_eq!(code, 1);
    assert!(err.contains("SigningCertURL rejected"), "{err}");
    let (code, _, err) = run(&["serve", "--check-config"]);
    assert_eq!(code, 2, "no --topic-arn is a usage error: {err}");
}

/// A wildcard in the partition or account of `--topic-arn` would admit topics anyone can
/// create in their own AWS account: `serve` refuses to start, naming the segment.
#[test]
fn serve_refuses_wildcard_accounts_and_partitions() {
    for (arn, segment) in [
        ("arn:aws:sns:*:*:ssm-resync", "account"),
        ("arn:aws:sns:us-east-1:*:ssm-resync", "account"),
        ("arn:aws:sns:us-east-1:1234*:ssm-resync", "account"),
        ("arn:*:sns:us-east-1:123456789012:ssm-resync", "partition"),
    ] {
        let (code, _, err) = run(&["serve", "--check-config", "--topic-arn", arn]);
        assert_eq!(code, 1, "{arn} accepted");
        assert!(
            err.contains(&format!("`*` in the {segment}")),
            "{arn}: {err}"
        );
    }
    let (code, _, err) = run(&[
        "serve",
        "--check-config",
        "--topic-arn",
        "arn:aws:sns:us-east-1:12345:ssm-resync",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("the account must be 12 digits"), "{err}");
    // The region and the topic name may carry wildcards.
    let (code, out, err) = run(&[
        "serve",
        "--check-config",
        "--topic-arn",
        "arn:aws:sns:*:123456789012:ssm-*",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("config ok"), "{out}");
}

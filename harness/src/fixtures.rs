//! Fixture builders: signed SNS Notifications carrying a Parameter Store Change (built on the
//! product's own `sample` payloads, the ones `ssm-resync sample` prints) and names no other
//! test uses.

use ssm_resync::sns::sign::{SigningKey, sns_timestamp};
use time::OffsetDateTime;

use crate::Stack;

/// A Notification on `topic` carrying a Parameter Store Change (Update, us-east-1, account
/// 123456789012) of `parameter`, signed by `key` for `cert_url`, stamped `at` (SNS stamps a
/// message when it publishes it) or now: the JSON body SNS would POST.
pub fn change_notification(
    key: &SigningKey,
    topic: &str,
    cert_url: &str,
    parameter: &str,
    at: Option<OffsetDateTime>,
) -> String {
    let event = ssm_resync::sample::parameter_store_change(
        parameter,
        "Update",
        "us-east-1",
        "123456789012",
    );
    let mut env = ssm_resync::sample::notification(event.to_string(), topic, cert_url, None);
    if let Some(at) = at {
        env.timestamp = sns_timestamp(at);
    }
    key.sign_envelope(&mut env);
    serde_json::to_string(&env).unwrap()
}

/// A signed SNS Notification carrying a Parameter Store Change for `parameter`, signed with
/// the stack's sample key (the certificate the stack's services pin).
pub fn signed_change(stack: &Stack, topic: &str, parameter: &str) -> String {
    change_notification(
        &stack.signing_key(),
        topic,
        stack.cert_url(),
        parameter,
        None,
    )
}

/// A parameter name no other test uses: every service on a shared stack watches every
/// namespace, so two tests reading the same key would patch each other's resources.
pub fn param(base: &str) -> String {
    format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// What `bin explain --output json` (the service's executable) says of a Parameter Store
/// Change (Update, us-east-1) of `parameter` on `stack`'s cluster: its JSON.
pub fn explain_change(bin: &str, stack: &Stack, parameter: &str) -> serde_json::Value {
    use std::io::Write as _;
    let event = ssm_resync::sample::parameter_store_change(
        parameter,
        "Update",
        "us-east-1",
        "123456789012",
    );
    let mut child = std::process::Command::new(bin)
        .args(["explain", "--output", "json", "-"])
        .env("KUBECONFIG", stack.get("KUBECONFIG"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} explain: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(event.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{bin} explain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

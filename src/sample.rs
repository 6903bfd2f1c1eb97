//! The payloads of `ssm-resync sample`, which a user curls at the webhook: a Parameter Store
//! Change as EventBridge emits it and the SNS envelope around it, shaped as AWS sends them.

use crate::sns::Envelope;
use crate::sns::sign::{SigningKey, sns_timestamp};

/// The EventBridge "Parameter Store Change" event, as AWS emits it.
pub fn parameter_store_change(
    name: &str,
    operation: &str,
    region: &str,
    account: &str,
) -> serde_json::Value {
    let sep = if name.starts_with('/') { "" } else { "/" };
    serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Parameter Store Change",
        "source": "aws.ssm",
        "account": account,
        "time": time::OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 ns").format(&time::format_description::well_known::Rfc3339).expect("formats"),
        "region": region,
        "resources": [format!("arn:aws:ssm:{region}:{account}:parameter{sep}{name}")],
        "detail": {"operation": operation, "name": name, "type": "String", "description": ""}
    })
}

/// An SNS Notification envelope around `message`, signed when a key is given.
pub fn notification(
    message: String,
    topic_arn: &str,
    cert_url: &str,
    key: Option<&SigningKey>,
) -> Envelope {
    let mut env = Envelope {
        kind: "Notification".into(),
        message_id: uuid::Uuid::new_v4().to_string(),
        topic_arn: topic_arn.into(),
        subject: None,
        message,
        timestamp: sns_timestamp(time::OffsetDateTime::now_utc()),
        signature_version: "2".into(),
        signature: String::new(),
        signing_cert_url: cert_url.into(),
        subscribe_url: None,
        token: None,
        unsubscribe_url: Some(format!(
            "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic_arn}:00000000-0000-0000-0000-000000000000"
        )),
        message_attributes: None,
    };
    if let Some(k) = key {
        k.sign_envelope(&mut env);
    }
    env
}

//! The SNS HTTP delivery body and the exact string SNS signs.
//!
//! SNS POSTs a JSON object whose fields are all strings (`MessageAttributes` excepted).
//! Parsing is strict where strictness is free: duplicate keys and non-string values are
//! malformed, and the fields each message type needs must be present. Unknown keys are
//! tolerated because AWS adds fields over time.

use serde::{Deserialize, Serialize};

use super::Reject;

/// The three message types SNS delivers to HTTP(S) endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl MessageType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Notification" => Some(Self::Notification),
            "SubscriptionConfirmation" => Some(Self::SubscriptionConfirmation),
            "UnsubscribeConfirmation" => Some(Self::UnsubscribeConfirmation),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notification => "Notification",
            Self::SubscriptionConfirmation => "SubscriptionConfirmation",
            Self::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }
}

/// An SNS message body exactly as received. Values are kept verbatim: the signature covers
/// the bytes SNS sent, so nothing (not even `Timestamp`) may be reformatted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(
        default,
        rename = "SubscribeURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub subscribe_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(
        default,
        rename = "UnsubscribeURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub unsubscribe_url: Option<String>,
    /// Not signed; kept as the raw text (never parsed into a tree: a body of nested empty
    /// arrays would cost many times its size) so a parsed body can be re-serialised faithfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_attributes: Option<RawJson>,
}

/// A JSON value kept as its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for RawJson {}

impl Envelope {
    /// Parses a delivery body. Errors name what was expected and what came.
    pub fn parse(body: &[u8]) -> Result<Self, Reject> {
        let text = std::str::from_utf8(body)
            .map_err(|e| Reject::MalformedJson(format!("body is not UTF-8: {e}")))?;
        // One pass, straight into the struct: serde_json rejects duplicate keys, non-string
        // values and nesting deeper than 128 on its own.
        let env: Envelope = serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            if msg.starts_with("missing field") {
                Reject::MissingField(msg)
            } else {
                Reject::MalformedJson(msg)
            }
        })?;
        env.check_fields()?;
        Ok(env)
    }

    pub fn message_type(&self) -> Result<MessageType, Reject> {
        MessageType::parse(&self.kind).ok_or_else(|| {
            Reject::UnknownType(format!(
                "Type must be Notification, SubscriptionConfirmation or UnsubscribeConfirmation, got {:?}",
                crate::text::truncate(&self.kind, 64)
            ))
        })
    }

    fn check_fields(&self) -> Result<(), Reject> {
        let t = self.message_type()?;
        for (name, value) in [
            ("Type", &self.kind),
            ("MessageId", &self.message_id),
            ("TopicArn", &self.topic_arn),
            ("Timestamp", &self.timestamp),
            ("SignatureVersion", &self.signature_version),
            ("Signature", &self.signature),
            ("SigningCertURL", &self.signing_cert_url),
        ] {
            if value.is_empty() {
                return Err(Reject::MissingField(format!("{name} is empty")));
            }
        }
        if t != MessageType::Notification {
            if self.subscribe_url.as_deref().unwrap_or("").is_empty() {
                return Err(Reject::MissingField(format!(
                    "{} needs SubscribeURL",
                    t.as_str()
                )));
            }
            if self.token.as_deref().unwrap_or("").is_empty() {
                return Err(Reject::MissingField(format!("{} needs Token", t.as_str())));
            }
        }
        Ok(())
    }

    /// The string SNS signs: `Key\nValue\n` for each present key, in the order AWS documents
    /// for the message type. Values verbatim.
    pub fn string_to_sign(&self) -> Result<String, Reject> {
        let t = self.message_type()?;
        let mut out = String::with_capacity(self.message.len() + 256);
        let mut push = |k: &str, v: &str| {
            out.push_str(k);
            out.push('\n');
            out.push_str(v);
            out.push('\n');
        };
        match t {
            MessageType::Notification => {
                push("Message", &self.message);
                push("MessageId", &self.message_id);
                if let Some(subject) = &self.subject {
                    push("Subject", subject);
                }
                push("Timestamp", &self.timestamp);
                push("TopicArn", &self.topic_arn);
                push("Type", &self.kind);
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                push("Message", &self.message);
                push("MessageId", &self.message_id);
                push(
                    "SubscribeURL",
                    self.subscribe_url.as_deref().unwrap_or_default(),
                );
                push("Timestamp", &self.timestamp);
                push("Token", self.token.as_deref().unwrap_or_default());
                push("TopicArn", &self.topic_arn);
                push("Type", &self.kind);
            }
        }
        Ok(out)
    }
}

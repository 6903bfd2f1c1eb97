//! Verification of a parsed envelope: the order of checks is chosen so that nothing is
//! fetched for a message that fails a cheap local check, and nothing from an unlisted topic
//! is ever acted on.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{CertStore, Envelope, Reject, TopicPolicy};

pub struct Verifier {
    pub topics: TopicPolicy,
    pub certs: Arc<CertStore>,
    /// Older messages are rejected (`message_too_old`): replay protection. SNS retries for at
    /// most an hour, keeping the original Timestamp.
    pub max_age: Duration,
    /// `--min-signature-version`: 2 refuses SHA-1 signatures (SignatureVersion 1).
    pub min_signature_version: u8,
}

/// How far a Timestamp may lie in the future (clock skew between AWS and this node).
pub const FUTURE_TOLERANCE: Duration = Duration::from_secs(300);

impl Verifier {
    pub fn new(topics: TopicPolicy, certs: Arc<CertStore>) -> Self {
        Self {
            topics,
            certs,
            max_age: Duration::from_secs(3600),
            min_signature_version: 1,
        }
    }

    pub fn with_min_signature_version(mut self, version: u8) -> Self {
        self.min_signature_version = version;
        self
    }

    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Rejects a Timestamp that does not parse, is older than `max_age` or lies further in
    /// the future than the clock-skew tolerance; returns it parsed.
    fn check_age(&self, env: &Envelope, now: OffsetDateTime) -> Result<OffsetDateTime, Reject> {
        let sent = OffsetDateTime::parse(&env.timestamp, &Rfc3339).map_err(|e| {
            Reject::TimestampInvalid(format!(
                "expected RFC 3339 like 2022-07-28T21:23:58.317Z, got {:?}: {e}",
                crate::text::truncate(&env.timestamp, 64)
            ))
        })?;
        let age = now - sent;
        if age > self.max_age {
            return Err(Reject::MessageTooOld(format!(
                "sent {sent}, {}s ago; the limit is {}s",
                age.whole_seconds(),
                self.max_age.as_secs()
            )));
        }
        if -age > FUTURE_TOLERANCE {
            return Err(Reject::TimestampInvalid(format!(
                "sent {sent}, {}s in the future",
                (-age).whole_seconds()
            )));
        }
        Ok(sent)
    }

    /// Verifies `env` as of `now`. On success the envelope's signed fields are authentic, its
    /// topic is allowed, and the returned value is its (signed) Timestamp.
    pub async fn verify(
        &self,
        env: &Envelope,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, Reject> {
        let sha256 = match env.signature_version.as_str() {
            "1" if self.min_signature_version > 1 => {
                return Err(Reject::UnsupportedSignatureVersion(
                    "SignatureVersion 1 (SHA-1) is refused by --min-signature-version 2: set the topic's SignatureVersion attribute to 2".into(),
                ));
            }
            "1" => false,
            "2" => true,
            other => {
                return Err(Reject::UnsupportedSignatureVersion(format!(
                    "expected \"1\" or \"2\", got {:?}",
                    crate::text::truncate(other, 16)
                )));
            }
        };
        // Topic before anything that could cause an outbound request: an unlisted topic's
        // message is rejected even if it is genuinely signed.
        if !self.topics.allows(&env.topic_arn) {
            return Err(Reject::TopicNotAllowed(format!(
                "{:?} is not in --topic-arn",
                crate::text::truncate(&env.topic_arn, 256)
            )));
        }
        let sent = self.check_age(env, now)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(env.signature.as_bytes())
            .map_err(|e| Reject::SignatureEncoding(e.to_string()))?;
        let string_to_sign = env.string_to_sign()?;
        let (cert, region) = self
            .certs
            .get(&env.signing_cert_url, &env.topic_arn)
            .await?;
        cert.check_subject(region)?;
        cert.check_validity(now)?;
        if cert.verify(sha256, string_to_sign.as_bytes(), &signature) {
            Ok(sent)
        } else {
            Err(Reject::SignatureInvalid(format!(
                "RSA PKCS#1 v1.5 SHA-{} over the string to sign",
                if sha256 { "256" } else { "1" }
            )))
        }
    }
}

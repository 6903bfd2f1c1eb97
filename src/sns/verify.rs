//! Verification of a parsed envelope: the order of checks is chosen so that nothing is
//! fetched for a message that fails a cheap local check, and nothing from an unlisted topic
//! is ever acted on.

use std::sync::Arc;

use base64::Engine as _;
use time::OffsetDateTime;

use super::{CertStore, Envelope, Reject, TopicPolicy};

pub struct Verifier {
    pub topics: TopicPolicy,
    pub certs: Arc<CertStore>,
}

impl Verifier {
    pub fn new(topics: TopicPolicy, certs: Arc<CertStore>) -> Self {
        Self { topics, certs }
    }

    /// Verifies `env` as of `now`. On success the envelope's signed fields are authentic and
    /// its topic is allowed.
    pub async fn verify(&self, env: &Envelope, now: OffsetDateTime) -> Result<(), Reject> {
        let sha256 = match env.signature_version.as_str() {
            "1" => false,
            "2" => true,
            other => {
                return Err(Reject::UnsupportedSignatureVersion(format!(
                    "expected \"1\" or \"2\", got {:?}",
                    super::envelope::truncate(other, 16)
                )));
            }
        };
        // Topic before anything that could cause an outbound request: an unlisted topic's
        // message is rejected even if it is genuinely signed.
        if !self.topics.allows(&env.topic_arn) {
            return Err(Reject::TopicNotAllowed(format!(
                "{:?} is not in --topic-arn",
                super::envelope::truncate(&env.topic_arn, 256)
            )));
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(env.signature.as_bytes())
            .map_err(|e| Reject::SignatureEncoding(e.to_string()))?;
        let string_to_sign = env.string_to_sign()?;
        let region = super::cert::check_cert_url(&env.signing_cert_url)?;
        let cert = self.certs.get(&env.signing_cert_url).await?;
        cert.check_subject(region)?;
        cert.check_validity(now)?;
        if cert.verify(sha256, string_to_sign.as_bytes(), &signature) {
            Ok(())
        } else {
            Err(Reject::SignatureInvalid(format!(
                "RSA PKCS#1 v1.5 SHA-{} over the string to sign",
                if sha256 { "256" } else { "1" }
            )))
        }
    }
}

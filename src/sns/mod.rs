//! Everything between the bytes SNS POSTs and a message we can trust: the envelope, the
//! string to sign, the certificate-URL policy, the certificate cache and RSA verification.

pub mod cert;
pub mod confirm;
pub mod envelope;
pub mod partition;
pub mod sign;
pub mod topic;
pub mod verify;

pub use cert::{CertStore, SigningCert};
pub use confirm::{Confirmer, SdkConfirmer};
pub use envelope::{Envelope, MessageType};
pub use topic::TopicPolicy;
pub use verify::Verifier;

use http::StatusCode;

/// Why a delivery was rejected. The set is closed: each variant is one stable metric label
/// value (`reason`) and one documented string; the payload is for the log line only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("body too large: {0}")]
    BodyTooLarge(String),
    #[error("body too slow: {0}")]
    BodyReadTimeout(String),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("missing field: {0}")]
    MissingField(String),
    #[error("unknown message type: {0}")]
    UnknownType(String),
    #[error("header disagrees with body: {0}")]
    HeaderMismatch(String),
    #[error("raw message delivery carries no signature: {0}")]
    RawDelivery(String),
    #[error("unsupported SignatureVersion: {0}")]
    UnsupportedSignatureVersion(String),
    #[error("Signature is not valid base64: {0}")]
    SignatureEncoding(String),
    #[error("SigningCertURL rejected: {0}")]
    CertUrl(String),
    #[error("signing certificate unavailable: {0}")]
    CertUnavailable(String),
    #[error("signing certificate fetch deferred: {0}")]
    CertFetchLimited(String),
    #[error("signing certificate rejected: {0}")]
    CertInvalid(String),
    #[error("signature does not verify: {0}")]
    SignatureInvalid(String),
    #[error("topic not allowed: {0}")]
    TopicNotAllowed(String),
    #[error("malformed event: {0}")]
    EventMalformed(String),
    #[error("message too old: {0}")]
    MessageTooOld(String),
    #[error("bad Timestamp: {0}")]
    TimestampInvalid(String),
    #[error("not an SNS envelope: {0}")]
    Unsigned(String),
    /// `--request-deadline` passed before the message was verified (its body, or its
    /// certificate, took too long): a failure on the word of an unauthenticated sender, so a
    /// rejection, not a failed notification.
    #[error("deadline passed before the message was verified: {0}")]
    DeadlineUnverified(String),
}

impl Reject {
    /// Every reason, for documentation and for pre-registering metric label values.
    pub const REASONS: &'static [&'static str] = &[
        "body_too_large",
        "body_read_timeout",
        "malformed_json",
        "missing_field",
        "unknown_type",
        "header_mismatch",
        "raw_delivery",
        "unsupported_signature_version",
        "signature_encoding",
        "cert_url_rejected",
        "cert_unavailable",
        "cert_fetch_limited",
        "cert_invalid",
        "signature_invalid",
        "topic_not_allowed",
        "event_malformed",
        "message_too_old",
        "timestamp_invalid",
        "unsigned_message",
        "deadline_exceeded",
    ];

    /// The stable label value.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BodyTooLarge(_) => "body_too_large",
            Self::BodyReadTimeout(_) => "body_read_timeout",
            Self::MalformedJson(_) => "malformed_json",
            Self::MissingField(_) => "missing_field",
            Self::UnknownType(_) => "unknown_type",
            Self::HeaderMismatch(_) => "header_mismatch",
            Self::RawDelivery(_) => "raw_delivery",
            Self::UnsupportedSignatureVersion(_) => "unsupported_signature_version",
            Self::SignatureEncoding(_) => "signature_encoding",
            Self::CertUrl(_) => "cert_url_rejected",
            Self::CertUnavailable(_) => "cert_unavailable",
            Self::CertFetchLimited(_) => "cert_fetch_limited",
            Self::CertInvalid(_) => "cert_invalid",
            Self::SignatureInvalid(_) => "signature_invalid",
            Self::TopicNotAllowed(_) => "topic_not_allowed",
            Self::EventMalformed(_) => "event_malformed",
            Self::MessageTooOld(_) => "message_too_old",
            Self::TimestampInvalid(_) => "timestamp_invalid",
            Self::Unsigned(_) => "unsigned_message",
            Self::DeadlineUnverified(_) => "deadline_exceeded",
        }
    }

    /// Whether the same message may pass later: only when the failure is on our side (the
    /// certificate could not be fetched, or not yet). Everything else is final.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::CertUnavailable(_) | Self::CertFetchLimited(_) | Self::DeadlineUnverified(_)
        )
    }

    /// The HTTP status SNS sees. 4xx means "delivered, do not retry"; only a failure on our
    /// side that a retry can cure (the certificate could not be fetched, or not yet) is a 5xx.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyReadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MalformedJson(_)
            | Self::MissingField(_)
            | Self::UnknownType(_)
            | Self::HeaderMismatch(_)
            | Self::EventMalformed(_) => StatusCode::BAD_REQUEST,
            Self::CertUnavailable(_) | Self::CertFetchLimited(_) | Self::DeadlineUnverified(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RawDelivery(_)
            | Self::UnsupportedSignatureVersion(_)
            | Self::SignatureEncoding(_)
            | Self::CertUrl(_)
            | Self::CertInvalid(_)
            | Self::SignatureInvalid(_)
            | Self::TopicNotAllowed(_)
            | Self::MessageTooOld(_)
            | Self::TimestampInvalid(_)
            | Self::Unsigned(_) => StatusCode::FORBIDDEN,
        }
    }
}

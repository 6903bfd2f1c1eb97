//! Signing, for the other side of the wire: `ssm-resync sample`, `dev-cert`, the load
//! generator and the tests produce messages exactly as SNS would (SignatureVersion 2).
//! Production never signs anything.

use aws_lc_rs::{rand::SystemRandom, signature::RsaKeyPair};
use base64::Engine as _;
use time::OffsetDateTime;

use super::Envelope;

pub struct SigningKey {
    pair: RsaKeyPair,
}

impl SigningKey {
    /// Reads a PEM RSA private key (`PRIVATE KEY` PKCS#8, or `RSA PRIVATE KEY` PKCS#1).
    pub fn from_pem(text: &str) -> anyhow::Result<Self> {
        let block = pem::parse(text.trim()).map_err(|e| anyhow::anyhow!("key PEM: {e}"))?;
        let pair = match block.tag() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(block.contents()),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()),
            other => anyhow::bail!("expected an RSA private key PEM, got {other}"),
        }
        .map_err(|e| anyhow::anyhow!("RSA key rejected: {e}"))?;
        Ok(Self { pair })
    }

    pub fn from_file(path: &str) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading signing key {path}: {e}"))?;
        Self::from_pem(&text)
    }

    /// RSA PKCS#1 v1.5 with SHA-256, base64: SignatureVersion 2.
    pub fn sign_v2(&self, message: &[u8]) -> String {
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut sig,
            )
            .expect("RSA signing with a valid key");
        base64::engine::general_purpose::STANDARD.encode(sig)
    }

    /// Sets SignatureVersion 2 and the Signature over the envelope's current fields.
    pub fn sign_envelope(&self, env: &mut Envelope) {
        env.signature_version = "2".into();
        env.signature = "unsigned".into();
        let sts = env.string_to_sign().expect("envelope with a known Type");
        env.signature = self.sign_v2(sts.as_bytes());
    }
}

/// SNS's timestamp format: RFC 3339 UTC with milliseconds, e.g. `2022-07-28T21:23:58.317Z`.
pub fn sns_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A self-signed certificate shaped like SNS's (subject CN `sns.amazonaws.com`, RSA 2048),
/// with its private key, both PEM. Pin the certificate with `--sns-signing-cert URL=FILE`.
pub struct DevCert {
    pub key_pem: String,
    pub cert_pem: String,
}

pub fn dev_cert(valid_days: i64) -> anyhow::Result<DevCert> {
    let now = OffsetDateTime::now_utc();
    cert_with(
        "sns.amazonaws.com",
        now - time::Duration::days(1),
        now + time::Duration::days(valid_days),
    )
}

/// A self-signed RSA certificate with the given subject CN and validity (tests use it for
/// wrong-subject, expired and not-yet-valid certificates).
pub fn cert_with(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> anyhow::Result<DevCert> {
    cert_named(
        Some(rcgen::DnValue::Utf8String(common_name.into())),
        &[],
        not_before,
        not_after,
    )
}

/// A self-signed RSA certificate with any subject CN value (any ASN.1 string type, or none)
/// and DNS subject-alternative names: the shapes SNS certificates have had over the years.
pub fn cert_named(
    common_name: Option<rcgen::DnValue>,
    dns_names: &[&str],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> anyhow::Result<DevCert> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
    let mut params =
        rcgen::CertificateParams::new(dns_names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = common_name {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.self_signed(&key)?;
    Ok(DevCert {
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
    })
}

//! Signing certificates: the URL policy that decides whether a `SigningCertURL` may be
//! fetched at all, parsing of the PEM body, and the cache (pinned certificates first, then
//! fetched ones, single-flight, each kept until its own notAfter).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ParsedPublicKey};
use regex::Regex;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Reject;

/// The only shape of `SigningCertURL` AWS uses: https, host exactly `sns.<region>.amazonaws.com`
/// (`.com.cn` in China), no userinfo, port, query or fragment, and a
/// `/SimpleNotificationService-<hex>.pem` path. Matching the raw string as a whole (rather than
/// a parsed URL) leaves no room for normalisation tricks: `%2e`, `@`, `\`, `:443`, `?x=.pem`
/// and `#` all fail to match.
static CERT_URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^https://sns\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2})\.amazonaws\.com(?:\.cn)?/SimpleNotificationService-[0-9a-f]{1,64}\.pem$",
    )
    .expect("static regex")
});

/// Checks a `SigningCertURL` against the policy; returns the region it names.
pub fn check_cert_url(url: &str) -> Result<&str, Reject> {
    CERT_URL
        .captures(url)
        .and_then(|c| c.name("region"))
        .map(|m| m.as_str())
        .ok_or_else(|| {
            Reject::CertUrl(format!(
                "expected https://sns.<region>.amazonaws.com/SimpleNotificationService-<hex>.pem, got {:?}",
                super::envelope::truncate(url, 200)
            ))
        })
}

/// The region of a URL that already passed `check_cert_url` (no regex needed for its shape).
fn region_of_accepted(url: &str) -> Result<&str, Reject> {
    match url
        .strip_prefix("https://sns.")
        .and_then(|rest| rest.split_once(".amazonaws.com"))
    {
        Some((region, _)) => Ok(region),
        None => check_cert_url(url),
    }
}

/// A parsed signing certificate: the RSA key ready for both signature versions, and what the
/// policy checks need.
pub struct SigningCert {
    pub common_name: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    sha1: ParsedPublicKey,
    sha256: ParsedPublicKey,
}

impl std::fmt::Debug for SigningCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCert")
            .field("common_name", &self.common_name)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl SigningCert {
    /// Parses a certificate body as served at a `SigningCertURL`: exactly one PEM
    /// `CERTIFICATE` block and nothing else but surrounding whitespace (an XML error page
    /// that happens to contain a PEM block is not a certificate).
    pub fn from_pem(body: &[u8]) -> Result<Self, Reject> {
        let text = std::str::from_utf8(body)
            .map_err(|_| Reject::CertInvalid("certificate body is not UTF-8".into()))?;
        let trimmed = text.trim();
        if !trimmed.starts_with("-----BEGIN CERTIFICATE-----")
            || !trimmed.ends_with("-----END CERTIFICATE-----")
        {
            return Err(Reject::CertInvalid(
                "expected a single PEM CERTIFICATE block and nothing else".into(),
            ));
        }
        let blocks = pem::parse_many(trimmed)
            .map_err(|e| Reject::CertInvalid(format!("PEM does not parse: {e}")))?;
        if blocks.len() != 1 {
            return Err(Reject::CertInvalid(format!(
                "expected exactly one PEM block, got {}",
                blocks.len()
            )));
        }
        let block = &blocks[0];
        if block.tag() != "CERTIFICATE" {
            return Err(Reject::CertInvalid(format!(
                "expected a CERTIFICATE PEM block, got {}",
                block.tag()
            )));
        }
        Self::from_der(block.contents())
    }

    pub fn from_der(der: &[u8]) -> Result<Self, Reject> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| Reject::CertInvalid(format!("X.509 does not parse: {e}")))?;
        if !rest.is_empty() {
            return Err(Reject::CertInvalid(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| Reject::CertInvalid("certificate subject has no common name".into()))?
            .to_owned();
        let spki = cert.public_key();
        if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
            return Err(Reject::CertInvalid(format!(
                "expected an RSA public key, got algorithm {}",
                spki.algorithm.algorithm.to_id_string()
            )));
        }
        let key = spki.subject_public_key.data.as_ref();
        let parse = |alg| {
            ParsedPublicKey::new(alg, key)
                .map_err(|e| Reject::CertInvalid(format!("RSA public key rejected: {e}")))
        };
        let validity = cert.validity();
        Ok(Self {
            common_name,
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            sha1: parse(&signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY)?,
            sha256: parse(&signature::RSA_PKCS1_2048_8192_SHA256)?,
        })
    }

    /// The subject SNS certificates carry: `sns.amazonaws.com`, or in opt-in regions
    /// `sns-signing.<region>.amazonaws.com` for the region the URL names.
    pub fn check_subject(&self, region: &str) -> Result<(), Reject> {
        let cn = self.common_name.as_str();
        let regional = cn
            .strip_prefix("sns-signing.")
            .and_then(|r| r.strip_suffix(".amazonaws.com"))
            .is_some_and(|r| r == region);
        if cn == "sns.amazonaws.com" || regional {
            Ok(())
        } else {
            Err(Reject::CertInvalid(format!(
                "expected subject CN sns.amazonaws.com or sns-signing.{region}.amazonaws.com, got {cn:?}"
            )))
        }
    }

    pub fn check_validity(&self, now: OffsetDateTime) -> Result<(), Reject> {
        if now < self.not_before {
            return Err(Reject::CertInvalid(format!(
                "certificate not valid before {}, now {now}",
                self.not_before
            )));
        }
        if now > self.not_after {
            return Err(Reject::CertInvalid(format!(
                "certificate expired at {}, now {now}",
                self.not_after
            )));
        }
        Ok(())
    }

    /// Verifies an RSA PKCS#1 v1.5 signature; `sha256` selects SignatureVersion 2.
    pub fn verify(&self, sha256: bool, message: &[u8], signature: &[u8]) -> bool {
        let key = if sha256 { &self.sha256 } else { &self.sha1 };
        key.verify_sig(message, signature).is_ok()
    }
}

/// Where certificates come from: pinned ones (`--sns-signing-cert URL=FILE`, never fetched)
/// and an HTTPS fetch under the URL policy, cached by URL until the certificate's notAfter.
pub struct CertStore {
    pinned: HashMap<String, Arc<SigningCert>>,
    cache: moka::future::Cache<String, Arc<SigningCert>>,
    http: reqwest::Client,
    /// `sns verify --cert`: the body every fetch returns, instead of a request.
    fixed_body: Option<Vec<u8>>,
    max_bytes: usize,
    fetches: Arc<dyn Fn(&'static str) + Send + Sync>,
}

/// Expire each cached certificate at its own notAfter.
struct UntilNotAfter;

impl moka::Expiry<String, Arc<SigningCert>> for UntilNotAfter {
    fn expire_after_create(
        &self,
        _key: &String,
        cert: &Arc<SigningCert>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = cert.not_after - OffsetDateTime::now_utc();
        Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
    }
}

pub struct CertStoreConfig {
    pub fetch_timeout: Duration,
    pub max_bytes: usize,
    pub capacity: u64,
    /// Tests only: resolve the SNS host to a loopback server and trust its CA instead of the
    /// system roots. The URL policy is unchanged; production never sets this.
    #[doc(hidden)]
    pub test_tls: Option<TestTls>,
}

#[doc(hidden)]
pub struct TestTls {
    pub resolve: Vec<(String, std::net::SocketAddr)>,
    pub root_pem: Vec<u8>,
}

impl Default for CertStoreConfig {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(5),
            max_bytes: 16 * 1024,
            capacity: 256,
            test_tls: None,
        }
    }
}

impl CertStore {
    pub fn new(config: CertStoreConfig) -> Self {
        let mut http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(t) = &config.test_tls {
            for (host, addr) in &t.resolve {
                http = http.resolve(host, *addr);
            }
            let root = reqwest::Certificate::from_pem(&t.root_pem).expect("test root PEM");
            http = http.tls_certs_only([root]);
        }
        let http = http.build().expect("TLS client builds");
        Self {
            pinned: HashMap::new(),
            cache: moka::future::Cache::builder()
                .max_capacity(config.capacity)
                .expire_after(UntilNotAfter)
                .build(),
            http,
            fixed_body: None,
            max_bytes: config.max_bytes,
            fetches: Arc::new(|_| {}),
        }
    }

    /// Answers every fetch with `body` instead of a request (offline verification). Only the
    /// fetch is replaced: the URL policy and every certificate check still apply.
    pub fn with_fixed_body(mut self, body: Vec<u8>) -> Self {
        self.fixed_body = Some(body);
        self
    }

    /// Called with "ok" or "error" for each certificate fetch (for the metric).
    pub fn on_fetch(mut self, f: impl Fn(&'static str) + Send + Sync + 'static) -> Self {
        self.fetches = Arc::new(f);
        self
    }

    /// Pins `cert` for `url`. The URL must itself pass the policy: pinning replaces only the
    /// fetch, never a check.
    pub fn pin(&mut self, url: &str, cert: SigningCert) -> Result<(), Reject> {
        check_cert_url(url)?;
        self.pinned.insert(url.to_owned(), Arc::new(cert));
        Ok(())
    }

    /// Parses a `URL=FILE` pin specification and pins it.
    pub fn pin_spec(&mut self, spec: &str) -> anyhow::Result<()> {
        let (url, file) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("expected URL=FILE, got {spec:?}"))?;
        let body = std::fs::read(file)
            .map_err(|e| anyhow::anyhow!("reading pinned certificate {file}: {e}"))?;
        let cert = SigningCert::from_pem(&body)
            .map_err(|e| anyhow::anyhow!("pinned certificate {file}: {e}"))?;
        self.pin(url, cert)
            .map_err(|e| anyhow::anyhow!("pinned URL: {e}"))
    }

    pub fn pinned_count(&self) -> usize {
        self.pinned.len()
    }

    /// The certificate for `url` and the region the URL names, or why there is none.
    ///
    /// The URL policy runs for a URL not seen before, ahead of any fetch. A pinned or cached
    /// URL passed it when it was pinned or fetched (both maps are keyed by the exact string),
    /// so a hit skips the regex: almost every message names a URL already seen.
    pub async fn get<'u>(&self, url: &'u str) -> Result<(Arc<SigningCert>, &'u str), Reject> {
        let known = match self.pinned.get(url) {
            Some(cert) => Some(cert.clone()),
            None => self.cache.get(url).await,
        };
        if let Some(cert) = known {
            return Ok((cert, region_of_accepted(url)?));
        }
        let region = check_cert_url(url)?;
        let cert = self
            .cache
            .try_get_with(url.to_owned(), self.fetch(url))
            .await
            .map_err(|e: Arc<Reject>| (*e).clone())?;
        Ok((cert, region))
    }

    async fn fetch(&self, url: &str) -> Result<Arc<SigningCert>, Reject> {
        let result = self
            .fetch_body(url)
            .await
            .and_then(|body| SigningCert::from_pem(&body));
        (self.fetches)(if result.is_ok() { "ok" } else { "error" });
        result.map(Arc::new)
    }

    async fn fetch_body(&self, url: &str) -> Result<Vec<u8>, Reject> {
        if let Some(body) = &self.fixed_body {
            return Ok(body.clone());
        }
        let unavailable = |e: String| Reject::CertUnavailable(format!("GET {url}: {e}"));
        let mut resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("status {}", resp.status())));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(Reject::CertInvalid(format!(
                "certificate body larger than {} bytes",
                self.max_bytes
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(Reject::CertInvalid(format!(
                    "certificate body larger than {} bytes",
                    self.max_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem";

    #[test]
    fn real_urls_pass_and_name_their_region() {
        assert_eq!(check_cert_url(GOOD).unwrap(), "us-east-1");
        for (url, region) in [
            (
                "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
                "us-gov-west-1",
            ),
            (
                "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
                "cn-north-1",
            ),
            (
                "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-0.pem",
                "ap-southeast-2",
            ),
        ] {
            assert_eq!(check_cert_url(url).unwrap(), region, "{url}");
            assert_eq!(region_of_accepted(url).unwrap(), region, "{url}");
        }
    }

    /// Every known validator bypass, each a real-world trick.
    #[test]
    fn known_bypasses_fail() {
        let hex = "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem";
        for url in [
            format!("http://sns.us-east-1.amazonaws.com/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com.evil.example/{hex}"),
            format!("https://evil.example/sns.us-east-1.amazonaws.com/{hex}"),
            format!("https://s3.amazonaws.com/sns/{hex}"),
            format!("https://sns.s3-us-west-2.amazonaws.com/{hex}"),
            format!("https://sns.s3.us-west-2.amazonaws.com/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com@evil.example/{hex}"),
            format!("https://evil.example@sns.us-east-1.amazonaws.com/{hex}"),
            format!("https://user:pw@sns.us-east-1.amazonaws.com/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com:443/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com:8443/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com/{hex}?x=.pem"),
            format!("https://sns.us-east-1.amazonaws.com/evil?x=/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com/{hex}#frag"),
            format!("https://sns.us-east-1.amazonaws.com/%2e%2e/{hex}"),
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-7ff5%2e.pem".into(),
            format!("https://sns%2eus-east-1.amazonaws.com/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com/../{hex}"),
            format!("https://sns.us-east-1.amazonaws.com\\@evil.example/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com/{hex}.txt"),
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-7ff5.pem.exe".into(),
            "https://sns.us-east-1.amazonaws.com/cert.pem".into(),
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-XYZ.pem".into(),
            format!("HTTPS://SNS.US-EAST-1.AMAZONAWS.COM/{hex}"),
            format!(" https://sns.us-east-1.amazonaws.com/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com/{hex}\n"),
            format!("https://sns.us-east-1.amazonaws.com//{hex}"),
            format!("https://sns..amazonaws.com/{hex}"),
            format!("https://sns.amazonaws.com/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com.cn.evil/{hex}"),
            format!("https:///sns.us-east-1.amazonaws.com/{hex}"),
            format!("https://sns.us-east-1.amazonaws.com/{hex}/"),
            format!("https://sns.us-east-1.amazonaws.com/{hex}%00"),
            String::new(),
        ] {
            let err = check_cert_url(&url).expect_err(&url);
            assert_eq!(err.reason(), "cert_url_rejected");
        }
    }

    proptest! {
        /// Any URL of the documented shape passes.
        #[test]
        fn documented_shape_passes(
            geo in "[a-z]{2}", words in proptest::collection::vec("[a-z]{3,9}", 1..3),
            n in 1u8..20, cn in any::<bool>(), hex in "[0-9a-f]{1,64}",
        ) {
            let region = format!("{geo}-{}-{n}", words.join("-"));
            let url = format!("https://sns.{region}.amazonaws.com{}/SimpleNotificationService-{hex}.pem", if cn { ".cn" } else { "" });
            prop_assert_eq!(check_cert_url(&url).unwrap(), region.as_str());
            // A cache hit reads the region without the regex: it must read the same one.
            prop_assert_eq!(region_of_accepted(&url).unwrap(), region.as_str());
        }

        /// Inserting any character that can carry a host, port, query, fragment, escape or
        /// path change anywhere into a valid URL makes it fail.
        #[test]
        fn injected_url_syntax_fails(pos in 0usize..GOOD.len(), c in prop::sample::select(vec!['@', ':', '?', '#', '%', '\\', '/', ' ', '.', '\n', '\0', '&', '='])) {
            let mut url = GOOD.to_owned();
            let pos = (0..=pos).rev().find(|p| url.is_char_boundary(*p)).unwrap();
            url.insert(pos, c);
            // None of these characters fits the grammar anywhere, so every insertion must fail;
            // the message names the URL that slipped through.
            prop_assert!(check_cert_url(&url).is_err(), "accepted {url:?}");
        }

        /// Arbitrary strings are accepted only if they have the documented shape.
        #[test]
        fn arbitrary_strings_are_rejected_unless_shaped(s in ".{0,200}") {
            if check_cert_url(&s).is_ok() {
                prop_assert!(s.starts_with("https://sns.") && s.ends_with(".pem"));
                prop_assert!(!s.contains(['@', '?', '#', '%', '\\']) && s.matches(':').count() == 1);
            }
        }
    }
}

//! Signing certificates: the URL policy that decides whether a `SigningCertURL` may be
//! fetched at all, parsing of the PEM body, and the cache (pinned certificates first, then
//! fetched ones, single-flight, each kept until its own notAfter). New URLs are fetched at a
//! bounded rate; half of it is a reserve for the URL asked for most ([`super::fetch_queue`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ParsedPublicKey};
use regex::Regex;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::fetch_queue::{FetchQueue, Standing};
use super::{Reject, partition};

/// The only shape of `SigningCertURL` AWS uses: https, host exactly `sns.<region>.<dnsSuffix>`
/// (the SNS endpoint of a region, with its partition's DNS suffix), no userinfo, port, query or
/// fragment, and a `/SimpleNotificationService-<hex>.pem` path. Matching the raw string as a
/// whole (rather than a parsed URL) leaves no room for normalisation tricks: `%2e`, `@`, `\`,
/// `:443`, `?x=.pem` and `#` all fail to match.
static CERT_URL: LazyLock<Regex> = LazyLock::new(|| {
    let suffixes: Vec<String> = partition::PARTITIONS
        .iter()
        .map(|p| regex::escape(p.dns_suffix))
        .collect();
    Regex::new(&format!(
        r"^https://sns\.(?P<region>[a-z]{{2,4}}(?:-[a-z]+)+-[0-9]{{1,2}})\.(?P<suffix>{})/SimpleNotificationService-[0-9a-f]{{1,64}}\.pem$",
        suffixes.join("|")
    ))
    .expect("static regex")
});

/// Checks a `SigningCertURL` against the policy (its DNS suffix must be the one of its
/// region's partition); returns the region it names.
pub fn check_cert_url(url: &str) -> Result<&str, Reject> {
    let rejected = || {
        Reject::CertUrl(format!(
            "expected https://sns.<region>.<partition DNS suffix>/SimpleNotificationService-<hex>.pem, got {:?}",
            crate::text::truncate(url, 200)
        ))
    };
    let caps = CERT_URL.captures(url).ok_or_else(rejected)?;
    let (region, suffix) = (caps.name("region").ok_or_else(rejected)?, &caps["suffix"]);
    if partition::of_region(region.as_str()).dns_suffix != suffix {
        return Err(rejected());
    }
    Ok(region.as_str())
}

/// The partition and region of a topic ARN (`arn:<partition>:sns:<region>:<account>:<name>`).
pub fn topic_location(topic_arn: &str) -> Option<(&str, &str)> {
    let mut parts = topic_arn.splitn(6, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(partition), Some("sns"), Some(region)) => Some((partition, region)),
        _ => None,
    }
}

/// Binds a `SigningCertURL` to the topic: the certificate must come from the SNS endpoint of
/// the topic's own region and partition, as AWS's SDK validators require (they pin the host
/// to the region the message manager serves). A certificate host in another region or
/// partition is never fetched. Returns the topic's region.
pub fn check_cert_url_for<'t>(url: &str, topic_arn: &'t str) -> Result<&'t str, Reject> {
    let (part, region) = topic_location(topic_arn).ok_or_else(|| {
        Reject::CertUrl(format!(
            "TopicArn {:?} is not an SNS topic ARN",
            crate::text::truncate(topic_arn, 200)
        ))
    })?;
    let prefix = partition::cert_url_prefix(part, region).ok_or_else(|| {
        Reject::CertUrl(format!(
            "TopicArn {:?} names no known partition holding region {region:?}",
            crate::text::truncate(topic_arn, 200)
        ))
    })?;
    if !url.starts_with(&prefix) {
        return Err(Reject::CertUrl(format!(
            "expected a certificate from {prefix} (the SNS endpoint of the topic's region), got {:?}",
            crate::text::truncate(url, 200)
        )));
    }
    Ok(region)
}

/// A parsed signing certificate: the RSA key ready for both signature versions, and what the
/// policy checks need.
pub struct SigningCert {
    /// The subject CN, decoded whatever its string type (`None` without one).
    pub common_name: Option<String>,
    /// The names the certificate is for: its DNS subject-alternative names, or its CN when it
    /// has none (as AWS's Java SDK matches them, with Apache's `DefaultHostnameVerifier`).
    pub names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    sha1: ParsedPublicKey,
    sha256: ParsedPublicKey,
}

impl std::fmt::Debug for SigningCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCert")
            .field("common_name", &self.common_name)
            .field("names", &self.names)
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
            .and_then(|cn| attribute_string(cn.attr_value()));
        let sans: Vec<String> = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                return Err(Reject::CertInvalid(format!(
                    "subject alternative names do not parse: {e}"
                )));
            }
        };
        let names = if !sans.is_empty() {
            sans
        } else if let Some(cn) = &common_name {
            vec![cn.clone()]
        } else {
            return Err(Reject::CertInvalid(
                "certificate names no DNS subject alternative name and no subject common name"
                    .into(),
            ));
        };
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
            names,
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            sha1: parse(&signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY)?,
            sha256: parse(&signature::RSA_PKCS1_2048_8192_SHA256)?,
        })
    }

    /// The name SNS certificates carry for `region` (see [`partition::signing_names`]):
    /// `sns.amazonaws.com` or `sns-signing.<region>.amazonaws.com` in the commercial partition,
    /// each other partition's own names elsewhere.
    pub fn check_subject(&self, region: &str) -> Result<(), Reject> {
        let want = partition::signing_names(region);
        if self
            .names
            .iter()
            .any(|n| want.iter().any(|w| w.eq_ignore_ascii_case(n)))
        {
            Ok(())
        } else {
            Err(Reject::CertInvalid(format!(
                "expected a certificate for {} (region {region}), got one for {:?}",
                want.join(" or "),
                self.names
                    .iter()
                    .map(|n| crate::text::truncate(n, 80))
                    .collect::<Vec<_>>()
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

/// An X.509 name attribute as text, whatever its ASN.1 string type: UTF8String and the ASCII
/// types as they are, T61String (TeletexString, which AWS's 2010–2015 VeriSign-issued
/// certificates use for their CN) and VideotexString as Latin-1 (as Go's `crypto/x509` and
/// BoringSSL read them), BMPString as UTF-16 and UniversalString as UTF-32.
fn attribute_string(v: &x509_parser::der_parser::asn1_rs::Any) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let data = v.data;
    match v.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::T61String | Tag::VideotexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString if data.len().is_multiple_of(2) => char::decode_utf16(
            data.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        Tag::UniversalString if data.len().is_multiple_of(4) => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

/// Where certificates come from: pinned ones (`--sns-signing-cert URL=FILE`, never fetched)
/// and an HTTPS fetch under the URL policy, cached by URL until the certificate's notAfter.
pub struct CertStore {
    pinned: HashMap<String, Arc<SigningCert>>,
    cache: moka::future::Cache<String, Arc<SigningCert>>,
    /// Fetches of URLs not yet cached, first come, first served: a rate (a burst, then a
    /// steady trickle; half of the configured one)...
    fetch_rate: governor::DefaultDirectRateLimiter,
    /// ...and a bound on distinct URLs being fetched at once.
    fetch_slots: Arc<tokio::sync::Semaphore>,
    /// The other half: the reserve, only ever spent on the top of `queue` (a URL named more
    /// than once, by the most distinct deliveries), so that a storm of fresh URLs cannot
    /// starve the certificate genuine deliveries keep asking for.
    reserve_rate: governor::DefaultDirectRateLimiter,
    reserve_slots: Arc<tokio::sync::Semaphore>,
    fetcher: Fetcher,
}

/// What a fetch needs, owned, so that a fetch made for another delivery's URL runs on its
/// own task: a client that hangs up cannot cancel it and waste the reserve's token.
#[derive(Clone)]
struct Fetcher {
    /// URLs whose fetch failed, with why, for [`CertStoreConfig::failure_ttl`]: a stream of
    /// messages naming a URL that does not serve a certificate costs one request, not one each.
    failures: moka::sync::Cache<String, Reject>,
    queue: Arc<parking_lot::Mutex<FetchQueue>>,
    http: reqwest::Client,
    /// `sns verify --cert`: the body every fetch returns, instead of a request.
    fixed_body: Option<Arc<Vec<u8>>>,
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
    /// How long a failed fetch is remembered (the same URL answers the same error meanwhile).
    pub failure_ttl: Duration,
    /// Fetches of new URLs allowed at once after a quiet spell...
    pub fetch_burst: u32,
    /// ...then one per this interval (in all: half first come, first served, half the
    /// reserve for the URL asked for most). SNS signs with one certificate per region for months
    /// (they rotate yearly), so genuine traffic fetches a handful of URLs a year; anything
    /// more is someone naming fresh URLs to make this service fetch them.
    pub fetch_interval: Duration,
    /// Distinct URLs being fetched at once (in all, split as the rate is).
    pub max_fetches_in_flight: usize,
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

/// Half of the configured fetch rate: the shared part and the reserve each get one.
fn half_rate(config: &CertStoreConfig) -> governor::DefaultDirectRateLimiter {
    let period = config.fetch_interval.max(Duration::from_millis(1)) * 2;
    governor::RateLimiter::direct(
        governor::Quota::with_period(period)
            .expect("non-zero period")
            .allow_burst(
                std::num::NonZeroU32::new(config.fetch_burst.div_ceil(2).max(1)).expect("non-zero"),
            ),
    )
}

impl Default for CertStoreConfig {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(5),
            max_bytes: 16 * 1024,
            capacity: 256,
            failure_ttl: Duration::from_secs(30),
            fetch_burst: 4,
            fetch_interval: Duration::from_secs(10),
            max_fetches_in_flight: 2,
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
            fetch_rate: half_rate(&config),
            fetch_slots: Arc::new(tokio::sync::Semaphore::new(
                config.max_fetches_in_flight.div_ceil(2).max(1),
            )),
            reserve_rate: half_rate(&config),
            reserve_slots: Arc::new(tokio::sync::Semaphore::new(
                (config.max_fetches_in_flight / 2).max(1),
            )),
            fetcher: Fetcher {
                failures: moka::sync::Cache::builder()
                    .max_capacity(1024)
                    .time_to_live(config.failure_ttl)
                    .build(),
                queue: Arc::new(parking_lot::Mutex::new(FetchQueue::new(Instant::now()))),
                http,
                fixed_body: None,
                max_bytes: config.max_bytes,
                fetches: Arc::new(|_| {}),
            },
        }
    }

    /// Answers every fetch with `body` instead of a request (offline verification). Only the
    /// fetch is replaced: the URL policy and every certificate check still apply.
    pub fn with_fixed_body(mut self, body: Vec<u8>) -> Self {
        self.fetcher.fixed_body = Some(Arc::new(body));
        self
    }

    /// Called with "ok" or "error" for each certificate fetch, "limited" or "outranked" for
    /// each one refused (for the metric).
    pub fn on_fetch(mut self, f: impl Fn(&'static str) + Send + Sync + 'static) -> Self {
        self.fetcher.fetches = Arc::new(f);
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

    /// The certificate for `url`, a `SigningCertURL` in a message from `topic_arn`, and the
    /// topic's region (the one the certificate must be for), or why there is none.
    ///
    /// The URL must come from the SNS endpoint of the topic's own region and partition
    /// (checked on every call: two string comparisons). For a URL not seen before the full URL
    /// policy runs ahead of any fetch; a pinned or cached URL passed it when it was pinned or
    /// fetched (both maps are keyed by the exact string), so a hit skips the regex: almost
    /// every message names a URL already seen. A URL whose fetch failed lately answers the
    /// same error without a request; fetches of new URLs are rate-limited and bounded.
    ///
    /// `delivery` (the MessageId) says who asks: the reserve goes to the URL most distinct
    /// deliveries keep naming.
    pub async fn get<'t>(
        &self,
        url: &str,
        topic_arn: &'t str,
        delivery: &str,
    ) -> Result<(Arc<SigningCert>, &'t str), Reject> {
        let region = check_cert_url_for(url, topic_arn)?;
        let known = match self.pinned.get(url) {
            Some(cert) => Some(cert.clone()),
            None => self.cache.get(url).await,
        };
        if let Some(cert) = known {
            return Ok((cert, region));
        }
        check_cert_url(url)?;
        if let Some(e) = self.fetcher.failures.get(url) {
            return Err(e);
        }
        let standing = self
            .fetcher
            .queue
            .lock()
            .name(url, delivery, Instant::now());
        let result = self
            .cache
            .try_get_with(url.to_owned(), self.fetch(url, standing))
            .await
            .map_err(|e: Arc<Reject>| (*e).clone());
        if let Err(Reject::CertFetchLimited(_)) = &result {
            // If the reserve is free and not this URL's, spend it on the URL that is owed
            // it, so that URL's certificate is cached before its next delivery.
            self.fetch_top_from_reserve(url).await;
        }
        Ok((result?, region))
    }

    /// A fetch slot and a token: from the shared, first-come half, else (only for the
    /// highest-ranked URL named more than once) from the reserve.
    fn admit(
        &self,
        url: &str,
        standing: Standing,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Reject> {
        if let Ok(slot) = self.fetch_slots.clone().try_acquire_owned()
            && self.fetch_rate.check().is_ok()
        {
            return Ok(slot);
        }
        if standing == Standing::Fresh {
            (self.fetcher.fetches)("limited");
            return Err(Reject::CertFetchLimited(
                "new certificate URLs are fetched at a bounded rate; retry".into(),
            ));
        }
        if self.fetcher.queue.lock().top(Instant::now()) != Some(url) {
            (self.fetcher.fetches)("outranked");
            return Err(Reject::CertFetchLimited(
                "the reserve of certificate fetches goes to a URL more deliveries are waiting for; retry".into(),
            ));
        }
        self.take_reserve().ok_or_else(|| {
            (self.fetcher.fetches)("limited");
            Reject::CertFetchLimited("certificate fetches are at their bounded rate; retry".into())
        })
    }

    fn take_reserve(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slot = self.reserve_slots.clone().try_acquire_owned().ok()?;
        self.reserve_rate.check().ok()?;
        Some(slot)
    }

    /// Starts a fetch of the top of the queue (not `asking`, which was just refused) with a
    /// reserve token, if one is free, on a task of its own (the asking client may hang up);
    /// the outcome is cached or remembered as a failure as usual.
    async fn fetch_top_from_reserve(&self, asking: &str) {
        let Some(top) = self
            .fetcher
            .queue
            .lock()
            .top(Instant::now())
            .filter(|t| *t != asking)
            .map(str::to_owned)
        else {
            return;
        };
        if self.cache.contains_key(&top) || self.fetcher.failures.contains_key(&top) {
            self.fetcher.queue.lock().remove(&top);
            return;
        }
        let Some(slot) = self.take_reserve() else {
            return;
        };
        let (cache, fetcher) = (self.cache.clone(), self.fetcher.clone());
        tokio::spawn(async move {
            let _ = cache
                .try_get_with(top.clone(), async move {
                    let result = fetcher.fetch_admitted(&top).await;
                    drop(slot);
                    result
                })
                .await;
        });
    }

    async fn fetch(&self, url: &str, standing: Standing) -> Result<Arc<SigningCert>, Reject> {
        // Single-flight (the cache runs one of these per URL); across URLs, a bound and a rate.
        let _slot = self.admit(url, standing)?;
        self.fetcher.fetch_admitted(url).await
    }
}

impl Fetcher {
    async fn fetch_admitted(&self, url: &str) -> Result<Arc<SigningCert>, Reject> {
        self.queue.lock().remove(url);
        let result = self
            .fetch_body(url)
            .await
            .and_then(|body| SigningCert::from_pem(&body));
        (self.fetches)(if result.is_ok() { "ok" } else { "error" });
        if let Err(e) = &result {
            self.failures.insert(url.to_owned(), e.clone());
        }
        result.map(Arc::new)
    }

    async fn fetch_body(&self, url: &str) -> Result<Vec<u8>, Reject> {
        if let Some(body) = &self.fixed_body {
            return Ok(body.to_vec());
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
        }
        // Each partition's own suffix only.
        for url in [
            "https://sns.cn-north-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.c2s.ic.gov/SimpleNotificationService-abc.pem",
        ] {
            assert_eq!(
                check_cert_url(url).unwrap_err().reason(),
                "cert_url_rejected"
            );
        }
        assert_eq!(
            check_cert_url(
                "https://sns.eusc-de-east-1.amazonaws.eu/SimpleNotificationService-a.pem"
            )
            .unwrap(),
            "eusc-de-east-1"
        );
    }

    #[test]
    fn the_certificate_comes_from_the_topics_own_region_and_partition() {
        let topic = "arn:aws:sns:us-east-1:123456789012:t";
        assert_eq!(check_cert_url_for(GOOD, topic).unwrap(), "us-east-1");
        for (url, topic) in [
            // Another region of the same partition.
            (GOOD, "arn:aws:sns:eu-west-1:123456789012:t"),
            // The commercial host for a GovCloud topic, and the other way round.
            (GOOD, "arn:aws-us-gov:sns:us-gov-west-1:123456789012:t"),
            (
                "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-a.pem",
                topic,
            ),
            // A partition that does not hold the topic's region.
            (GOOD, "arn:aws-cn:sns:us-east-1:123456789012:t"),
            (GOOD, "not an arn"),
        ] {
            let err = check_cert_url_for(url, topic).unwrap_err();
            assert_eq!(err.reason(), "cert_url_rejected", "{url} {topic}");
        }
        assert_eq!(
            check_cert_url_for(
                "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-a.pem",
                "arn:aws-cn:sns:cn-north-1:123456789012:t"
            )
            .unwrap(),
            "cn-north-1"
        );
    }

    fn dev(cn: Option<rcgen::DnValue>, sans: &[&str]) -> SigningCert {
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let c = crate::sns::sign::cert_named(cn, sans, now - day, now + day).unwrap();
        SigningCert::from_pem(c.cert_pem.as_bytes()).unwrap()
    }

    /// AWS's 2010–2015 certificates encode their CN as a T61String; others have used UTF8String,
    /// PrintableString; BMPString and UniversalString are legal too. The name reads the same.
    #[test]
    fn the_common_name_reads_whatever_its_string_type() {
        use rcgen::string::{BmpString, PrintableString, TeletexString, UniversalString};
        let name = "sns.amazonaws.com";
        for (what, value) in [
            (
                "T61String",
                rcgen::DnValue::TeletexString(TeletexString::try_from(name).unwrap()),
            ),
            ("UTF8String", rcgen::DnValue::Utf8String(name.into())),
            (
                "PrintableString",
                rcgen::DnValue::PrintableString(PrintableString::try_from(name).unwrap()),
            ),
            (
                "BMPString",
                rcgen::DnValue::BmpString(BmpString::try_from(name).unwrap()),
            ),
            (
                "UniversalString",
                rcgen::DnValue::UniversalString(UniversalString::try_from(name).unwrap()),
            ),
        ] {
            let cert = dev(Some(value), &[]);
            assert_eq!(cert.common_name.as_deref(), Some(name), "{what}");
            assert_eq!(cert.names, [name], "{what}");
            cert.check_subject("us-east-1")
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }

    /// The DNS subject-alternative names decide when there are any (as in AWS's Java SDK);
    /// the CN only without them.
    #[test]
    fn subject_alternative_names_come_before_the_common_name() {
        let cn = |n: &str| Some(rcgen::DnValue::Utf8String(n.into()));
        dev(cn("evil.example"), &["sns.amazonaws.com"])
            .check_subject("us-east-1")
            .unwrap();
        let err = dev(cn("sns.amazonaws.com"), &["evil.example"])
            .check_subject("us-east-1")
            .unwrap_err();
        assert_eq!(err.reason(), "cert_invalid", "{err}");
        assert!(err.to_string().contains("evil.example"), "{err}");
        // Opt-in regions sign with their regional name, and only their own.
        let regional = dev(None, &["sns-signing.af-south-1.amazonaws.com"]);
        regional.check_subject("af-south-1").unwrap();
        assert!(regional.check_subject("eu-south-1").is_err());
        // Neither a SAN nor a CN: not a certificate for anything.
        let c = crate::sns::sign::cert_named(
            None,
            &[],
            OffsetDateTime::now_utc(),
            OffsetDateTime::now_utc() + time::Duration::days(1),
        )
        .unwrap();
        let err = SigningCert::from_pem(c.cert_pem.as_bytes()).unwrap_err();
        assert_eq!(err.reason(), "cert_invalid");
    }

    /// Each partition's certificate passes for its own regions and no other.
    #[test]
    fn each_partition_accepts_its_own_signing_name_only() {
        let cases = [
            ("cn-north-1", "sns-cn-north-1.amazonaws.com.cn"),
            ("us-gov-east-1", "sns-us-gov-west-1.amazonaws.com"),
            ("us-iso-east-1", "sns-us-iso-east-1.c2s.ic.gov"),
            ("eusc-de-east-1", "sns-signing.eusc-de-east-1.amazonaws.eu"),
        ];
        for (region, name) in cases {
            dev(None, &[name]).check_subject(region).unwrap();
            // The commercial certificate is no good there...
            assert!(
                dev(None, &["sns.amazonaws.com"])
                    .check_subject(region)
                    .is_err()
            );
            // ...nor this one in the commercial partition.
            assert!(dev(None, &[name]).check_subject("us-east-1").is_err());
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
            n in 1u8..20, hex in "[0-9a-f]{1,64}",
        ) {
            let region = format!("{geo}-{}-{n}", words.join("-"));
            let p = partition::of_region(&region);
            let url = format!("https://sns.{region}.{}/SimpleNotificationService-{hex}.pem", p.dns_suffix);
            prop_assert_eq!(check_cert_url(&url).unwrap(), region.as_str());
            let topic = format!("arn:{}:sns:{region}:123456789012:t", p.name);
            prop_assert_eq!(check_cert_url_for(&url, &topic).unwrap(), region.as_str());
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

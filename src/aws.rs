//! AWS SDK clients, one per region: a topic is confirmed in its own region and parameters are
//! described in their store's region, so clients are built on first use and kept.
//!
//! A region comes from a tenant's SecretStore (`provider.aws.region`): it is checked against
//! the shape of AWS's region names before the SDK builds an endpoint from it (a `/`, `@`, `.`
//! or `:` would move the host of a signed request), the clients are bounded in number, and
//! every call has connect, read and operation timeouts, so an endpoint that never answers
//! costs a timeout, not a stalled sweep.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

/// At most this many regions get a client: AWS has about 40, and a tenant naming more cannot
/// make the service build a client (and a connection pool) for each.
pub const MAX_REGIONS: usize = 64;

/// AWS's region names: a partition prefix of 2 to 4 letters (`us`, `cn`, `eusc`), words, and a
/// number: `us-east-1`, `us-gov-west-1`, `eu-isoe-west-1`, `eusc-de-east-1`.
static REGION: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[a-z]{2,4}(-[a-z]{1,12}){1,3}-[0-9]{1,2}$").expect("valid regex")
});

/// Whether `region` has the shape of an AWS region name (it may still not exist).
pub fn valid_region(region: &str) -> bool {
    region.len() <= 32 && REGION.is_match(region)
}

/// The timeouts of every SDK call here: a TCP connect, one attempt, the whole operation with
/// its retries.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .read_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(15))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("{0:?} is not an AWS region name")]
    Invalid(String),
    #[error("{0:?}: clients for {MAX_REGIONS} regions exist already")]
    TooMany(String),
}

pub struct Regional<C> {
    clients: tokio::sync::Mutex<HashMap<String, C>>,
    retry: RetryConfig,
    make: fn(&aws_config::SdkConfig) -> C,
}

impl<C: Clone> Regional<C> {
    /// `make` is the SDK's `Client::new`; credentials and endpoint come from the standard
    /// chain (IRSA, `AWS_ENDPOINT_URL`, ...).
    pub fn new(make: fn(&aws_config::SdkConfig) -> C, retry: RetryConfig) -> Self {
        Self {
            clients: tokio::sync::Mutex::new(HashMap::new()),
            retry,
            make,
        }
    }

    pub async fn get(&self, region: &str) -> Result<C, RegionError> {
        if !valid_region(region) {
            return Err(RegionError::Invalid(
                crate::text::truncate(region, 64).into(),
            ));
        }
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(region) {
            return Ok(c.clone());
        }
        if clients.len() >= MAX_REGIONS {
            return Err(RegionError::TooMany(region.into()));
        }
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .retry_config(self.retry.clone())
            .timeout_config(timeouts())
            .load()
            .await;
        let c = (self.make)(&config);
        clients.insert(region.to_owned(), c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ssm::config::endpoint::{Params, ResolveEndpoint as _};

    use super::*;

    /// The SDK's own endpoint resolution, for a region as a tenant may write it.
    async fn ssm_endpoint(region: &str) -> String {
        let params = Params::builder().region(region).build().unwrap();
        aws_sdk_ssm::config::endpoint::DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map(|e| e.url().to_owned())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    /// Every region name AWS uses passes, and the SDK builds the SSM endpoint of that region.
    #[tokio::test]
    async fn aws_region_names_pass_and_resolve_to_their_own_endpoint() {
        for (region, host) in [
            ("us-east-1", "https://ssm.us-east-1.amazonaws.com"),
            ("ap-southeast-7", "https://ssm.ap-southeast-7.amazonaws.com"),
            ("us-gov-west-1", "https://ssm.us-gov-west-1.amazonaws.com"),
            ("cn-north-1", "https://ssm.cn-north-1.amazonaws.com.cn"),
            ("us-isob-east-1", "https://ssm.us-isob-east-1.sc2s.sgov.gov"),
            (
                "eu-isoe-west-1",
                "https://ssm.eu-isoe-west-1.cloud.adc-e.uk",
            ),
            ("eusc-de-east-1", "https://ssm.eusc-de-east-1.amazonaws.eu"),
        ] {
            assert!(valid_region(region), "{region}");
            assert_eq!(ssm_endpoint(region).await, host, "{region}");
        }
    }

    /// What a tenant could write. The SDK checks a region only as a host label that may have
    /// sub-domains: a dotted one resolves to a host that is no region's endpoint, so the
    /// shape check comes first and none of these reaches the SDK.
    #[tokio::test]
    async fn regions_that_would_move_the_host_are_refused() {
        assert_eq!(
            ssm_endpoint("us-east-1.evil.example.com").await,
            "https://ssm.us-east-1.evil.example.com.amazonaws.com"
        );
        for region in [
            "us-east-1.evil.example.com",
            "evil.example.com#",
            "us-east-1/..",
            "user@evil",
            "us-east-1:443",
            "US-EAST-1",
            "",
            "us-east-1 ",
            "-east-1",
            &"a".repeat(100),
        ] {
            assert!(!valid_region(region), "{region:?}");
        }
    }

    #[tokio::test]
    async fn clients_are_bounded_and_invalid_regions_get_none() {
        let regional = Regional::new(aws_sdk_ssm::Client::new, RetryConfig::standard());
        assert_eq!(
            regional.get("../x").await.err(),
            Some(RegionError::Invalid("../x".into()))
        );
        for i in 0..MAX_REGIONS {
            regional.get(&format!("xx-test-{i}")).await.unwrap();
        }
        assert!(regional.get("xx-test-0").await.is_ok(), "an existing one");
        assert_eq!(
            regional.get("yy-test-1").await.err(),
            Some(RegionError::TooMany("yy-test-1".into()))
        );
    }
}

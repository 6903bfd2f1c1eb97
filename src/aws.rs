//! AWS SDK clients, one per region: a topic is confirmed in its own region and parameters are
//! described in their store's region, so clients are built on first use and kept.

use std::collections::HashMap;

use aws_config::retry::RetryConfig;

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

    pub async fn get(&self, region: &str) -> C {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(region) {
            return c.clone();
        }
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .retry_config(self.retry.clone())
            .load()
            .await;
        let c = (self.make)(&config);
        clients.insert(region.to_owned(), c.clone());
        c
    }
}

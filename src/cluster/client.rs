//! Kubernetes clients: kube's own stack (timeouts, retries of 429/5xx, authentication, extra
//! headers), on connections with `TCP_NODELAY`.
//!
//! kube-client 5.0's `ClientBuilder` builds its `HttpConnector` without `set_nodelay(true)`
//! (`src/client/builder.rs`, `TryFrom<(Config, E)>`), so Nagle's algorithm is on for every
//! API-server connection: a request written in more than one segment (TLS record, then body)
//! waits for the ACK of the first, which the server delays by up to 40 ms. Measured
//! (docs/performance.md, "The tail"): five runs of 1,000 end-to-end iterations each, the
//! maximum was 48.9-52.1 ms in every run with kube's connector and 17.0-42.8 ms with this one.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt as _;
use tower::{BoxError, ServiceBuilder};

/// A client for `config`, as `kube::Client::try_from(config)` builds it but with
/// `TCP_NODELAY`. A proxy in the kubeconfig (`proxy-url`) keeps kube's own builder, which
/// knows how to tunnel.
pub fn build(config: kube::Config) -> anyhow::Result<kube::Client> {
    if config.proxy_url.is_some() {
        return Ok(kube::Client::try_from(config)?);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}

//! Confirming a subscription: through the SNS API (`ConfirmSubscription`), never by fetching
//! the SubscribeURL a message names (a known SSRF in SNS endpoints).

use futures::FutureExt as _;

/// Confirms a subscription. A trait so the request path does not depend on the AWS SDK.
pub trait Confirmer: Send + Sync {
    fn confirm<'a>(
        &'a self,
        topic_arn: &'a str,
        token: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, String>>;
}

/// `ConfirmSubscription(TopicArn, Token, AuthenticateOnUnsubscribe=true)` through the AWS
/// SDK, in the topic's own region. Clients are built once per region.
pub struct SdkConfirmer {
    clients: crate::aws::Regional<aws_sdk_sns::Client>,
}

impl Default for SdkConfirmer {
    fn default() -> Self {
        Self {
            clients: crate::aws::Regional::new(
                aws_sdk_sns::Client::new,
                aws_config::retry::RetryConfig::standard(),
            ),
        }
    }
}

impl Confirmer for SdkConfirmer {
    fn confirm<'a>(
        &'a self,
        topic_arn: &'a str,
        token: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, String>> {
        async move {
            let region = topic_arn
                .split(':')
                .nth(3)
                .filter(|r| !r.is_empty())
                .ok_or("topic ARN without region")?;
            let out = self
                .clients
                .get(region)
                .await
                .map_err(|e| e.to_string())?
                .confirm_subscription()
                .topic_arn(topic_arn)
                .token(token)
                .authenticate_on_unsubscribe("true")
                .send()
                .await
                .map_err(|e| aws_sdk_sns::error::DisplayErrorContext(e).to_string())?;
            Ok(out.subscription_arn().unwrap_or_default().to_owned())
        }
        .boxed()
    }
}

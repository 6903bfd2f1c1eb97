//! The queue door: for clusters SNS cannot reach (SNS does not deliver to private endpoints),
//! the same notifications pulled from an SQS queue subscribed to the topic.
//!
//! A message is deleted only once every patch it caused is applied, exactly as the webhook
//! answers 2xx only then; while its patches run its visibility is extended; a failure lets it
//! reappear after a backoff, and the queue's redrive policy moves it to a dead-letter queue
//! after `maxReceiveCount` receives. A message that can never pass (forged, another topic,
//! malformed, too large) is deleted with its rejection reason. SQS delivers at least once:
//! the use case's MessageId dedupe and the trigger's coalescing absorb the duplicates.
//!
//! What a message may hold:
//! - an SNS envelope (raw message delivery off), verified as the webhook verifies it (topic
//!   allow-list, certificate, signature), except for its age: the queue's policy admits only
//!   the topic, so a message that waited out an outage or came back from the dead-letter
//!   queue is a change still to apply, not a replay;
//! - with `--sqs-accept-eventbridge`, an EventBridge event put on the queue by a rule
//!   directly: it carries no signature, so trust rests on the queue policy alone.
//!
//! Messages are received only while every watch is in sync: one received before would only be
//! put back.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName,
};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::health::Condition;
use crate::log_budget::LogBudget;
use crate::metrics::{CallResult, Metrics, Reason, Result_};
use crate::resync::{Report, Resync};
use crate::sns::{Envelope, MessageType, Reject, Verifier};

/// ReceiveMessage's longest long poll, and its largest batch.
pub const WAIT_SECONDS: i32 = 20;
pub const BATCH: i32 = 10;
/// A failed message reappears after this times 2^(receives − 1), at most [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Receive failures in a row before readiness goes off.
const UNHEALTHY_AFTER: u32 = 3;

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub url: String,
    /// Receive loops on this queue; at most `BATCH` messages each in flight.
    pub receivers: usize,
    /// Visibility timeout asked for at receive and renewed while a message's patches run.
    pub visibility: Duration,
    pub max_body_bytes: usize,
    /// `--sqs-accept-eventbridge`.
    pub accept_eventbridge: bool,
}

pub struct Queue {
    config: QueueConfig,
    client: aws_sdk_sqs::Client,
    resync: Arc<Resync>,
    /// The webhook's checks without the age limit.
    verifier: Verifier,
    metrics: Arc<Metrics>,
    health: Arc<Condition>,
    log: LogBudget,
}

/// What becomes of one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// Done with (applied, nothing to do, or never valid): deleted.
    Delete(&'static str),
    /// Must come again: released after a backoff.
    Retry,
}

/// The region a queue URL names (`https://sqs.<region>.amazonaws.com/...` or the legacy
/// `https://<region>.queue.amazonaws.com/...`), if it names one.
pub fn region_of(url: &str) -> Option<String> {
    let host = url::Url::parse(url).ok()?.host_str()?.to_owned();
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        ["sqs", region, "amazonaws", ..] => Some((*region).to_owned()),
        [region, "queue", "amazonaws", ..] => Some((*region).to_owned()),
        _ => None,
    }
}

/// An SQS client for `region`: the endpoint from the standard chain (`AWS_ENDPOINT_URL_SQS`
/// for a local stack), a connect timeout, and an attempt timeout above the long poll.
pub async fn client(region: String) -> aws_sdk_sqs::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(WAIT_SECONDS as u64 + 10))
        .build();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard())
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

impl Queue {
    pub fn new(
        config: QueueConfig,
        client: aws_sdk_sqs::Client,
        resync: Arc<Resync>,
        verifier: Verifier,
        metrics: Arc<Metrics>,
    ) -> Self {
        let health = Arc::new(Condition::new(format!("queue {}", config.url)));
        Self {
            config,
            client,
            resync,
            verifier,
            metrics,
            health,
            log: LogBudget::default(),
        }
    }

    /// Readiness: the queue can be received from.
    pub fn health(&self) -> Arc<Condition> {
        self.health.clone()
    }

    /// Receives and handles messages until `stop` turns true, then finishes what is in flight.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        self.describe().await;
        let loops: Vec<_> = (0..self.config.receivers.max(1))
            .map(|_| tokio::spawn(self.clone().receive_loop(stop.clone())))
            .collect();
        for l in loops {
            let _ = l.await;
        }
        tracing::info!(queue = %self.config.url, "queue consumer stopped");
    }

    /// Logs what the queue's own settings mean for delivery (a missing redrive policy means a
    /// message that always fails is retried until its retention ends).
    async fn describe(&self) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let got = self
            .client
            .get_queue_attributes()
            .queue_url(&self.config.url)
            .attribute_names(A::RedrivePolicy)
            .attribute_names(A::MessageRetentionPeriod)
            .send()
            .await;
        self.count_call("GetQueueAttributes", got.is_ok());
        match got {
            Ok(out) => {
                // Reachable with these credentials: ready now, not only after the first long
                // poll returns (up to 20 s on an empty queue).
                self.health.met();
                let attrs = out.attributes();
                let redrive = attrs.and_then(|a| a.get(&A::RedrivePolicy));
                let retention = attrs.and_then(|a| a.get(&A::MessageRetentionPeriod));
                if redrive.is_none() {
                    tracing::warn!(queue = %self.config.url, "the queue has no redrive policy: a message that always fails is retried until its retention period ends");
                }
                tracing::info!(queue = %self.config.url, redrive_policy = ?redrive, retention_seconds = ?retention, receivers = self.config.receivers, "consuming the queue");
            }
            Err(e) => {
                tracing::warn!(queue = %self.config.url, error = %aws_sdk_sqs::error::DisplayErrorContext(e), "cannot read the queue's attributes (sqs:GetQueueAttributes); receiving anyway")
            }
        }
    }

    async fn receive_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let pause = if !self.resync.ready() {
                Duration::from_millis(200)
            } else {
                let received = tokio::select! {
                    r = self.receive() => r,
                    _ = stop.changed() => return,
                };
                match received {
                    Ok(messages) => {
                        failures = 0;
                        self.health.met();
                        if !messages.is_empty() {
                            self.handle_batch(messages).await;
                        }
                        continue;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures >= UNHEALTHY_AFTER {
                            self.health.failing(format!(
                                "ReceiveMessage failed {failures} times in a row: {e}"
                            ));
                        }
                        if self.log.take().is_some() {
                            tracing::warn!(queue = %self.config.url, error = %e, failures, "ReceiveMessage failed; retrying");
                        }
                        Duration::from_secs(1 << failures.min(5))
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn receive(&self) -> Result<Vec<Message>, String> {
        let got = self
            .client
            .receive_message()
            .queue_url(&self.config.url)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(WAIT_SECONDS)
            .visibility_timeout(self.visibility_seconds())
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        self.count_call("ReceiveMessage", got.is_ok());
        got.map(|out| out.messages.unwrap_or_default())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
    }

    fn visibility_seconds(&self) -> i32 {
        self.config.visibility.as_secs().clamp(1, 12 * 3600) as i32
    }

    /// Handles a batch concurrently, renewing its visibility until every message is done,
    /// then deletes what is done and releases what must come again.
    async fn handle_batch(&self, messages: Vec<Message>) {
        self.metrics.queue_in_flight.inc_by(messages.len() as i64);
        let work = futures::future::join_all(messages.iter().map(|m| self.handle(m)));
        let every = (self.config.visibility / 3).max(Duration::from_secs(1));
        let renew = async {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let entries = messages
                    .iter()
                    .map(|m| (m, self.visibility_seconds()))
                    .collect::<Vec<_>>();
                let n = self.change_visibility(&entries).await;
                self.metrics.queue_visibility_extensions.inc_by(n as u64);
            }
        };
        let dispositions = tokio::select! {
            d = work => d,
            () = renew => unreachable!("the renewal loop never ends"),
        };
        let mut done = Vec::new();
        let mut again = Vec::new();
        for (m, d) in messages.iter().zip(&dispositions) {
            match d {
                Disposition::Delete(result) => {
                    self.metrics
                        .queue_messages
                        .get_or_create(&Result_ { result })
                        .inc();
                    done.push(m);
                }
                Disposition::Retry => {
                    self.metrics
                        .queue_messages
                        .get_or_create(&Result_ { result: "retry" })
                        .inc();
                    again.push((m, backoff(receive_count(m)).as_secs() as i32));
                }
            }
        }
        self.delete(&done).await;
        self.change_visibility(&again).await;
        self.metrics.queue_in_flight.dec_by(messages.len() as i64);
    }

    /// Deletes `messages` in one call; returns how many were deleted. A message whose delete
    /// failed comes again and is a duplicate then.
    async fn delete(&self, messages: &[&Message]) -> usize {
        if messages.is_empty() {
            return 0;
        }
        let entries = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        let got = self
            .client
            .delete_message_batch()
            .queue_url(&self.config.url)
            .set_entries(Some(entries))
            .send()
            .await;
        self.count_call("DeleteMessageBatch", got.is_ok());
        match got {
            Ok(out) => {
                for f in out.failed() {
                    tracing::warn!(queue = %self.config.url, code = f.code(), message = ?f.message(), "DeleteMessage failed: the message comes again and is absorbed as a duplicate");
                }
                out.successful().len()
            }
            Err(e) => {
                tracing::warn!(queue = %self.config.url, error = %aws_sdk_sqs::error::DisplayErrorContext(e), "DeleteMessageBatch failed: the messages come again and are absorbed as duplicates");
                0
            }
        }
    }

    /// Sets each message's visibility timeout; returns how many were changed.
    async fn change_visibility(&self, messages: &[(&Message, i32)]) -> usize {
        if messages.is_empty() {
            return 0;
        }
        let entries = messages
            .iter()
            .enumerate()
            .filter_map(|(i, (m, seconds))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .visibility_timeout(*seconds)
                    .build()
                    .ok()
            })
            .collect();
        let got = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.config.url)
            .set_entries(Some(entries))
            .send()
            .await;
        self.count_call("ChangeMessageVisibilityBatch", got.is_ok());
        match got {
            Ok(out) => out.successful().len(),
            Err(e) => {
                if self.log.take().is_some() {
                    tracing::warn!(queue = %self.config.url, error = %aws_sdk_sqs::error::DisplayErrorContext(e), "ChangeMessageVisibilityBatch failed");
                }
                0
            }
        }
    }

    /// One message, from its body to what becomes of it.
    async fn handle(&self, m: &Message) -> Disposition {
        let body = m.body().unwrap_or_default();
        if body.len() > self.config.max_body_bytes {
            return self.rejected(
                m,
                Reject::BodyTooLarge(format!(
                    "{} bytes exceeds --max-body-bytes {}",
                    body.len(),
                    self.config.max_body_bytes
                )),
            );
        }
        let sent_to_queue = sent_timestamp(m);
        let disposition = match shape_of(body) {
            Err(r) => return self.rejected(m, r),
            Ok(Shape::Envelope) => self.envelope(m, body).await,
            Ok(Shape::Event) if self.config.accept_eventbridge => {
                // Unsigned: the SQS MessageId names it, and it was sent to the queue after
                // the change happened.
                let id = m.message_id().unwrap_or_default();
                let at = sent_to_queue.unwrap_or_else(OffsetDateTime::now_utc);
                self.report(m, self.resync.notification(id, at, body).await)
            }
            Ok(Shape::Event) => {
                return self.rejected(
                    m,
                    Reject::Unsigned(
                        "an EventBridge event without an SNS signature; --sqs-accept-eventbridge accepts them from a queue only the topic's rules may write to".into(),
                    ),
                );
            }
        };
        if let (Disposition::Delete("applied"), Some(sent)) = (disposition, sent_to_queue) {
            let lag = (OffsetDateTime::now_utc() - sent).as_seconds_f64();
            self.metrics.queue_lag.observe(lag.max(0.0));
        }
        disposition
    }

    async fn envelope(&self, m: &Message, body: &str) -> Disposition {
        let env = match Envelope::parse(body.as_bytes()) {
            Ok(e) => e,
            Err(r) => return self.rejected(m, r),
        };
        let kind = match env.message_type() {
            Ok(k) => k,
            Err(r) => return self.rejected(m, r),
        };
        let sent = match self.verifier.verify(&env, OffsetDateTime::now_utc()).await {
            Ok(sent) => sent,
            Err(r) => return self.rejected(m, r),
        };
        match kind {
            MessageType::Notification => {
                let report = self
                    .resync
                    .notification(&env.message_id, sent, &env.message)
                    .await;
                self.report(m, report)
            }
            MessageType::SubscriptionConfirmation => {
                // SNS confirms a queue subscription made from the queue's own account; one
                // made from elsewhere must be confirmed there (the token is in this message).
                tracing::warn!(queue = %self.config.url, topic = %env.topic_arn, "SubscriptionConfirmation received on the queue: the queue path does not confirm subscriptions; subscribe the queue from its own account (auto-confirmed), or confirm with `aws sns confirm-subscription` and this message's Token. Deleted.");
                Disposition::Delete("subscription_confirmation")
            }
            MessageType::UnsubscribeConfirmation => {
                tracing::warn!(queue = %self.config.url, topic = %env.topic_arn, "UnsubscribeConfirmation received on the queue: it is no longer subscribed; not re-subscribing");
                Disposition::Delete("recorded")
            }
        }
    }

    fn report(&self, m: &Message, report: Report) -> Disposition {
        match report {
            Report::Duplicate => Disposition::Delete("duplicate"),
            Report::Ignored { .. } => Disposition::Delete("ignored"),
            Report::Malformed(e) => self.rejected(m, Reject::EventMalformed(e.0)),
            Report::NotReady(why) => self.retry(m, "not_ready", &why),
            Report::Applied(applied) => {
                let failures = applied.failures();
                if failures.is_empty() {
                    Disposition::Delete(applied.result())
                } else {
                    self.retry(m, "patch_failed", &failures.join("; "))
                }
            }
        }
    }

    fn retry(&self, m: &Message, why: &'static str, detail: &str) -> Disposition {
        if self.log.take().is_some() {
            tracing::warn!(queue = %self.config.url, sqs_message_id = m.message_id().unwrap_or_default(), receives = receive_count(m), reason = why, detail, "message left to come again");
        }
        Disposition::Retry
    }

    fn rejected(&self, m: &Message, r: Reject) -> Disposition {
        if r.retryable() {
            return self.retry(m, r.reason(), &r.to_string());
        }
        if let Some(skipped) = self.log.take() {
            tracing::warn!(queue = %self.config.url, sqs_message_id = m.message_id().unwrap_or_default(), reason = r.reason(), error = %r, skipped, "rejected SQS message; deleted");
        }
        self.metrics
            .rejections
            .get_or_create(&Reason { reason: r.reason() })
            .inc();
        Disposition::Delete("rejected")
    }

    fn count_call(&self, call: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.metrics
            .queue_api_calls
            .get_or_create(&CallResult { call, result })
            .inc();
    }
}

/// How long a failed message stays hidden before it comes again, after `receives` receives.
fn backoff(receives: u32) -> Duration {
    let doublings = receives.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

fn receive_count(m: &Message) -> u32 {
    m.attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// When the message was sent to the queue (its `SentTimestamp`, epoch milliseconds).
fn sent_timestamp(m: &Message) -> Option<OffsetDateTime> {
    let ms: i128 = m
        .attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()
}

/// What a message body is, from its top-level keys alone.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    /// An SNS envelope (it has `Type`).
    Envelope,
    /// An EventBridge event (it has `detail-type` and no `Type`).
    Event,
}

fn shape_of(body: &str) -> Result<Shape, Reject> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "Type")]
        kind: Option<serde::de::IgnoredAny>,
        #[serde(rename = "detail-type")]
        detail_type: Option<serde::de::IgnoredAny>,
    }
    // serde reads a struct from an array too, by position.
    if !body.trim_start().starts_with('{') {
        return Err(Reject::MalformedJson(
            "the message body is not a JSON object".into(),
        ));
    }
    let probe: Probe = serde_json::from_str(body).map_err(|e| {
        Reject::MalformedJson(format!("the message body is not a JSON object: {e}"))
    })?;
    match (probe.kind, probe.detail_type) {
        (Some(_), _) => Ok(Shape::Envelope),
        (None, Some(_)) => Ok(Shape::Event),
        (None, None) => Err(Reject::MissingField(
            "neither an SNS envelope (`Type`) nor an EventBridge event (`detail-type`)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_url_names_its_region() {
        assert_eq!(
            region_of("https://sqs.eu-west-1.amazonaws.com/123456789012/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("https://us-east-2.queue.amazonaws.com/123456789012/q").as_deref(),
            Some("us-east-2")
        );
        assert_eq!(
            region_of("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(region_of("http://127.0.0.1:15000/123456789012/q"), None);
        assert_eq!(region_of("not a url"), None);
    }

    #[test]
    fn failed_messages_come_again_later_each_time_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_body_is_an_envelope_an_event_or_rejected() {
        assert_eq!(
            shape_of(r#"{"Type":"Notification","Message":"{}"}"#),
            Ok(Shape::Envelope)
        );
        assert_eq!(
            shape_of(r#"{"detail-type":"Parameter Store Change","detail":{}}"#),
            Ok(Shape::Event)
        );
        assert_eq!(
            shape_of(r#"{"hello": 1}"#).unwrap_err().reason(),
            "missing_field"
        );
        assert_eq!(shape_of("[1,2]").unwrap_err().reason(), "malformed_json");
        assert_eq!(shape_of("not json").unwrap_err().reason(), "malformed_json");
    }

    #[test]
    fn the_sent_timestamp_is_read_in_milliseconds() {
        let m = Message::builder()
            .attributes(MessageSystemAttributeName::SentTimestamp, "1764979200123")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .build();
        assert_eq!(
            sent_timestamp(&m),
            Some(time::macros::datetime!(2025-12-06 00:00:00.123 UTC))
        );
        assert_eq!(receive_count(&m), 3);
        assert_eq!(receive_count(&Message::builder().build()), 1);
    }
}

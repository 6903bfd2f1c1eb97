//! What the two listeners answer: the public webhook (`POST /sns` only: an SNS delivery is
//! read, verified and handed to the use case, whose report becomes the HTTP status SNS's
//! retry rules need) and the admin port (`/healthz`, `/readyz`, `/metrics`).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use serde_json::json;

use crate::health::Condition;
use crate::log_budget::LogBudget;
use crate::metrics::Metrics;
use crate::resync::{Report, Resync};
use crate::sns::{Confirmer, Envelope, MessageType, Reject, Verifier};

/// What the webhook needs besides the use case: verification and the request limits.
pub struct Webhook {
    pub resync: Arc<Resync>,
    pub verifier: Verifier,
    pub confirmer: Arc<dyn Confirmer>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    /// Slots for deliveries larger than [`SMALL_BODY_BYTES`] (`--max-concurrent-requests`).
    pub large_slots: tokio::sync::Semaphore,
    /// A body must arrive within this long after its head (`--read-timeout`).
    pub read_timeout: Duration,
    /// The whole delivery is answered within this (`--request-deadline`).
    pub deadline: Duration,
    /// Rejections are logged at most `LogBudget::LINES` a window; the metric counts them all.
    pub reject_log: LogBudget,
}

/// What the admin port reports on.
pub struct Admin {
    pub resync: Arc<Resync>,
    pub metrics: Arc<Metrics>,
    /// Flips to false on shutdown so /readyz fails before the listener closes.
    pub accepting: Arc<AtomicBool>,
    /// Further conditions of readiness (each queue consumer's).
    pub conditions: Vec<Arc<Condition>>,
}

/// The public router: `POST /sns` only. A delivery whose body may exceed
/// [`SMALL_BODY_BYTES`] needs one of `--max-concurrent-requests` slots, or is shed at once
/// with 503 (so SNS retries it) instead of buffering another large body.
pub fn public_router(state: Arc<Webhook>) -> Router {
    Router::new()
        .route("/sns", post(sns))
        .layer(axum::middleware::from_fn_with_state(state.clone(), admit))
        .layer(DefaultBodyLimit::disable())
        // Request spans at debug level (`RUST_LOG=tower_http=debug`), but no line of its own
        // for a 5xx: tower-http logs each at ERROR, unbudgeted, so a flood of hostile
        // deliveries answered 503 (`cert_fetch_limited`, `overloaded`) would flood the log.
        // Every 503 is already logged by its handler, under `LogBudget` where input can
        // provoke it, and counted in the metrics.
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}

/// Bodies declared this small pass without a slot. Every change notification SNS sends is
/// 1–6 KiB, so genuine deliveries are never shed for want of one, however many large bodies
/// are held; what small bodies cost is bounded by the connection cap (`--max-connections` ×
/// 16 KiB × 3).
pub const SMALL_BODY_BYTES: u64 = 16 * 1024;

async fn admit(
    State(s): State<Arc<Webhook>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let small = header_str(req.headers(), &header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= SMALL_BODY_BYTES);
    if small {
        return next.run(req).await;
    }
    let Ok(_slot) = s.large_slots.try_acquire() else {
        return overloaded(&s).into_response();
    };
    next.run(req).await
}

fn overloaded(s: &Webhook) -> Answer {
    s.metrics.shed.inc();
    if s.reject_log.take().is_some() {
        tracing::warn!(
            "shedding a delivery: --max-concurrent-requests large requests are in flight; answering 503 so SNS retries"
        );
    }
    Answer {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: json!({"result": "retry", "reason": "overloaded", "detail": "too many large requests in flight (--max-concurrent-requests)"}),
    }
}

pub fn admin_router(state: Arc<Admin>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<Admin>>) -> Response {
    if !s.accepting.load(std::sync::atomic::Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let mut not_ready = Vec::new();
    if !s.resync.ready() {
        not_ready.push(format!(
            "watches not in sync: {}",
            s.resync.unsynced().join(", ")
        ));
    }
    for c in &s.conditions {
        if let Err(why) = c.state() {
            not_ready.push(format!("{}: {why}", c.name()));
        }
    }
    if not_ready.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", not_ready.join("\n")),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<Admin>>) -> Response {
    s.resync.export(&s.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// The answer to one delivery: status, a JSON body for curl users, and the log line.
struct Answer {
    status: StatusCode,
    body: serde_json::Value,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        // Answered before the body was read (shed, too large, too slow): close the connection
        // rather than read and discard the rest of a body nobody wants.
        let close = matches!(
            self.status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
        ) || self.body["reason"] == "overloaded";
        let mut r = (self.status, Json(self.body)).into_response();
        if close {
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        r
    }
}

fn rejected(s: &Webhook, t: &'static str, r: Reject) -> Answer {
    match s.reject_log.take() {
        Some(0) => {
            tracing::warn!(reason = r.reason(), r#type = t, error = %r, "rejected SNS delivery")
        }
        Some(skipped) => {
            tracing::warn!(reason = r.reason(), r#type = t, error = %r, skipped, "rejected SNS delivery (earlier rejections were not logged: at most {} lines per {:?}; ssm_resync_rejections_total counts every one)", LogBudget::LINES, LogBudget::WINDOW)
        }
        None => {}
    }
    s.metrics.reject(t, r.reason());
    Answer {
        status: r.status(),
        body: json!({"result": "rejected", "reason": r.reason(), "detail": r.to_string()}),
    }
}

fn unavailable(s: &Webhook, t: &'static str, why: &'static str, detail: String) -> Answer {
    // Verified messages only (an unverified one past the deadline is a rejection), but within
    // the budget all the same: a 503 storm of genuine deliveries must not flood the log.
    if let Some(skipped) = s.reject_log.take() {
        tracing::warn!(reason = why, r#type = t, detail = %detail, skipped, "answering 503 so SNS redelivers");
    }
    s.metrics.notification(t, "failed");
    Answer {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: json!({"result": "retry", "reason": why, "detail": detail}),
    }
}

/// The headers SNS sends, parsed once (a `&str` name is parsed and validated on every lookup).
const MESSAGE_TYPE: HeaderName = HeaderName::from_static("x-amz-sns-message-type");
const MESSAGE_ID: HeaderName = HeaderName::from_static("x-amz-sns-message-id");
const TOPIC_ARN: HeaderName = HeaderName::from_static("x-amz-sns-topic-arn");
const RAW_DELIVERY: HeaderName = HeaderName::from_static("x-amz-sns-rawdelivery");

async fn sns(State(s): State<Arc<Webhook>>, headers: HeaderMap, body: Body) -> Answer {
    let started = Instant::now();
    // The metric label until the body says otherwise.
    let label = header_str(&headers, &MESSAGE_TYPE)
        .and_then(MessageType::parse)
        .map_or("unknown", MessageType::as_str);
    // One deadline for the whole delivery (a certificate fetch included), below SNS's 15 s
    // timeout: past it SNS gets a 503 and redelivers; spawned patches keep going.
    let verified = OnceLock::new();
    let answer = match tokio::time::timeout(
        s.deadline,
        handle(&s, &headers, label, body, &verified),
    )
    .await
    {
        Ok(answer) => answer,
        Err(_) => {
            let detail = format!("not answered within --request-deadline {:?}", s.deadline);
            match verified.get() {
                // A genuine delivery that failed: what the 503 alert pages on.
                Some(kind) => unavailable(&s, kind, "deadline_exceeded", detail),
                // Anyone may send a message that is still unverified at the deadline (a
                // body sent slowly, then a certificate to fetch): counted as a rejection, so
                // `notifications_total{result="failed"}` stays a count of verified failures.
                None => rejected(&s, label, Reject::DeadlineUnverified(detail)),
            }
        }
    };
    s.metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    answer
}

/// How much of the deadline a body may use at most: the body's own limit must end first, so a
/// body that stalls is always the client's 408, never a 503 that SNS would retry and that
/// would count as a failed delivery (with the defaults both limits are 10 s).
pub const BODY_DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// A body must arrive at this rate after [`BODY_START`]: SNS sends a delivery's body with its
/// head (a few KiB in milliseconds), and a client trickling a small one must not hold its
/// connection slot for the whole `--read-timeout`.
pub const MIN_BODY_RATE: u64 = 16 * 1024;
pub const BODY_START: Duration = Duration::from_secs(2);

/// How long a body of `declared` bytes may take within `within`: [`BODY_START`] plus its
/// length at [`MIN_BODY_RATE`] (a body of unknown length, all of `within`).
fn body_allowance(declared: Option<u64>, within: Duration) -> Duration {
    match declared {
        Some(len) => {
            within.min(BODY_START + Duration::from_secs_f64(len as f64 / MIN_BODY_RATE as f64))
        }
        None => within,
    }
}

/// How long a body may take: `--read-timeout`, but always ending before the deadline.
fn body_within(read_timeout: Duration, deadline: Duration) -> Duration {
    read_timeout.min(deadline.saturating_sub(BODY_DEADLINE_MARGIN))
}

/// `verified` is set to the message's type once its signature is verified: the deadline's
/// answer tells a genuine delivery that failed from an unverified one.
async fn handle(
    s: &Webhook,
    headers: &HeaderMap,
    label: &'static str,
    body: Body,
    verified: &OnceLock<&'static str>,
) -> Answer {
    let within = body_within(s.read_timeout, s.deadline);
    let bytes = match read_limited(headers, body, s.max_body_bytes, within).await {
        Ok(b) => b,
        Err(r) => return rejected(s, label, r),
    };
    if header_str(headers, &RAW_DELIVERY).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return rejected(
            s,
            label,
            Reject::RawDelivery(
                "x-amz-sns-rawdelivery: true; disable RawMessageDelivery on the subscription"
                    .into(),
            ),
        );
    }
    let env = match Envelope::parse(&bytes) {
        Ok(e) => e,
        Err(r) => return rejected(s, label, r),
    };
    let kind = match env.message_type() {
        Ok(k) => k,
        Err(r) => return rejected(s, label, r),
    };
    let label = kind.as_str();
    if let Err(r) = headers_agree(headers, &env) {
        return rejected(s, label, r);
    }
    let sent = match s
        .verifier
        .verify(&env, time::OffsetDateTime::now_utc())
        .await
    {
        Ok(sent) => sent,
        Err(r) => return rejected(s, label, r),
    };
    let _ = verified.set(label);
    match kind {
        MessageType::SubscriptionConfirmation => confirm(s, &env).await,
        MessageType::UnsubscribeConfirmation => {
            // Recorded, never acted on: re-subscribing would undo an operator's decision.
            tracing::warn!(topic = %env.topic_arn, message_id = %env.message_id, "UnsubscribeConfirmation received: this endpoint is no longer subscribed; not re-subscribing");
            s.metrics.notification(label, "recorded");
            Answer {
                status: StatusCode::OK,
                body: json!({"result": "recorded"}),
            }
        }
        MessageType::Notification => notification(s, &env, sent).await,
    }
}

async fn confirm(s: &Webhook, env: &Envelope) -> Answer {
    let token = env.token.as_deref().unwrap_or_default();
    match s.confirmer.confirm(&env.topic_arn, token).await {
        Ok(subscription) => {
            tracing::info!(topic = %env.topic_arn, subscription = %subscription, "subscription confirmed");
            s.metrics
                .notification("SubscriptionConfirmation", "confirmed");
            Answer {
                status: StatusCode::OK,
                body: json!({"result": "confirmed", "subscription_arn": subscription}),
            }
        }
        Err(e) => {
            tracing::warn!(topic = %env.topic_arn, error = %e, "ConfirmSubscription failed");
            s.metrics.notification("SubscriptionConfirmation", "failed");
            Answer {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({"result": "retry", "reason": "confirm_failed", "detail": e}),
            }
        }
    }
}

async fn notification(s: &Webhook, env: &Envelope, sent: time::OffsetDateTime) -> Answer {
    const T: &str = "Notification";
    let applied = match s
        .resync
        .notification(&env.message_id, sent, &env.message)
        .await
    {
        Report::Duplicate => {
            s.metrics.notification(T, "duplicate");
            return Answer {
                status: StatusCode::OK,
                body: json!({"result": "duplicate", "message_id": env.message_id}),
            };
        }
        Report::Ignored { kind } => {
            s.metrics.notification(T, "ignored");
            return Answer {
                status: StatusCode::OK,
                body: json!({"result": "ignored", "kind": kind}),
            };
        }
        Report::Malformed(e) => return rejected(s, T, Reject::EventMalformed(e.0)),
        // SNS redelivers once the watches are in sync.
        Report::NotReady(detail) => return unavailable(s, T, "not_ready", detail),
        Report::Applied(applied) => applied,
    };
    let failures = applied.failures();
    if !failures.is_empty() {
        return unavailable(s, T, "patch_failed", failures.join("; "));
    }
    let result = applied.result();
    s.metrics.notification(T, result);
    let body = match result {
        "deferred" => {
            json!({"result": result, "changes": applied.changes, "targets": 0, "deferred": applied.deferred, "unforceable": applied.unforceable})
        }
        "no_match" => {
            json!({"result": result, "changes": applied.changes, "targets": 0, "unforceable": applied.unforceable})
        }
        _ => json!({
            "result": result,
            "changes": applied.changes,
            "targets": applied.outcomes.len(),
            "deferred": applied.deferred,
            "unforceable": applied.unforceable,
            "patched": applied.patched().map(ToString::to_string).collect::<Vec<_>>(),
        }),
    };
    Answer {
        status: StatusCode::OK,
        body,
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// SNS sends the type, id and topic in headers too; a disagreement means someone edited one.
fn headers_agree(headers: &HeaderMap, env: &Envelope) -> Result<(), Reject> {
    for (name, body) in [
        (&MESSAGE_TYPE, &env.kind),
        (&MESSAGE_ID, &env.message_id),
        (&TOPIC_ARN, &env.topic_arn),
    ] {
        if let Some(h) = header_str(headers, name)
            && h != body
        {
            return Err(Reject::HeaderMismatch(format!(
                "{name} is {h:?} but the body says {body:?}"
            )));
        }
    }
    Ok(())
}

/// Reads at most `max` bytes, refusing early on a too-large Content-Length and stopping the
/// stream as soon as the limit is passed (never buffering more than `max`).
async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    within: Duration,
) -> Result<bytes::Bytes, Reject> {
    let declared = header_str(headers, &header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > max as u64
    {
        return Err(Reject::BodyTooLarge(format!(
            "Content-Length {len} exceeds {max} bytes"
        )));
    }
    let within = body_allowance(declared, within);
    let read = http_body_util::Limited::new(body, max).collect();
    match tokio::time::timeout(within, read).await {
        Err(_) => Err(Reject::BodyReadTimeout(format!(
            "the body did not arrive within {within:?} (--read-timeout, and {} KiB/s after the first {:?})",
            MIN_BODY_RATE >> 10,
            BODY_START
        ))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Reject::BodyTooLarge(format!("body exceeds {max} bytes")))
        }
        Ok(Err(e)) => Err(Reject::MalformedJson(format!("reading body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_small_body_must_arrive_at_the_minimum_rate() {
        let s = Duration::from_secs;
        let within = Duration::from_millis(9500);
        // A 2 KiB delivery: 2 s and an eighth.
        assert_eq!(
            super::body_allowance(Some(2048), within),
            Duration::from_millis(2125)
        );
        // The largest SNS body (256 KiB) gets all of it; an unknown length too.
        assert_eq!(super::body_allowance(Some(256 * 1024), within), within);
        assert_eq!(super::body_allowance(None, within), within);
        assert_eq!(super::body_allowance(Some(0), s(1)), s(1));
    }

    #[test]
    fn a_body_limit_always_ends_before_the_deadline() {
        let s = Duration::from_secs;
        // The shipped defaults: both 10 s.
        assert_eq!(
            super::body_within(s(10), s(10)),
            Duration::from_millis(9500)
        );
        assert_eq!(super::body_within(s(2), s(10)), s(2));
        assert_eq!(
            super::body_within(s(30), s(10)),
            Duration::from_millis(9500)
        );
        assert_eq!(super::body_within(s(10), Duration::ZERO), Duration::ZERO);
    }
}

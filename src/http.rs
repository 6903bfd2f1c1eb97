//! The two listeners: the public webhook (`POST /sns` only) and the admin port
//! (`/healthz`, `/readyz`, `/metrics`), which is never exposed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::cluster::events::Events;
use crate::cluster::patch::{Outcome, Trigger};
use crate::cluster::watch::Watches;
use crate::event::{self, Decoded};
use crate::index::{Index, Match, Target};
use crate::metrics::{ChangeLabels, Kind, Metrics};
use crate::sns::{Envelope, MessageType, Reject, Verifier};

/// Confirms a subscription through the SNS API (`ConfirmSubscription`, never a fetch of the
/// SubscribeURL). A trait so the request path does not depend on the AWS SDK.
pub trait Confirmer: Send + Sync {
    fn confirm<'a>(
        &'a self,
        topic_arn: &'a str,
        token: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, String>>;
}

pub struct AppState {
    pub verifier: Verifier,
    pub index: Arc<RwLock<Index>>,
    pub watches: Arc<Watches>,
    pub trigger: Trigger,
    pub events: Events,
    /// Follows applied patches to the operator's outcome.
    pub confirmations: Option<crate::cluster::confirm::Confirmations>,
    pub confirmer: Arc<dyn Confirmer>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    /// Slots for deliveries larger than [`SMALL_BODY_BYTES`] (`--max-concurrent-requests`).
    pub large_slots: tokio::sync::Semaphore,
    /// A body must arrive within this long after its head (`--read-timeout`).
    pub read_timeout: Duration,
    pub deadline: Duration,
    /// MessageIds already applied, so SNS redeliveries patch nothing twice.
    pub applied: crate::dedupe::Dedupe,
    /// Unhandled event types already logged (the log line appears once per type).
    pub ignored_logged: Mutex<HashSet<String>>,
    /// Rejections are logged at most `LogBudget::LINES` a window; the metric counts them all.
    pub reject_log: LogBudget,
    /// `--accept-plain-format`.
    pub accept_plain: bool,
    /// Flips to false on shutdown so /readyz fails before the listener closes.
    pub accepting: AtomicBool,
    /// Clock for certificate validity; tests may fix it.
    pub clock: fn() -> OffsetDateTime,
}

/// Accept-queue length asked for on both listeners. tokio's `TcpListener::bind` asks for 128
/// (mio's default). When more connections than that arrive before the server accepts them
/// (SNS spreading a burst of deliveries over new connections, a load balancer reconnecting,
/// a generator catching up), the kernel drops the surplus SYNs and each of those clients
/// waits for its own retransmit: 1 s, then 3 s, then 7 s, with nothing logged on either side.
/// The kernel caps the value at `net.core.somaxconn` (4096 by default since Linux 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener (`SO_REUSEADDR`, as `TcpListener::bind` sets it) with [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The public router: `POST /sns` only. A delivery whose body may exceed
/// [`SMALL_BODY_BYTES`] needs one of `--max-concurrent-requests` slots, or is shed at once
/// with 503 (so SNS retries it) instead of buffering another large body.
pub fn public_router(state: Arc<AppState>) -> Router {
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
    State(s): State<Arc<AppState>>,
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

fn overloaded(s: &AppState) -> Answer {
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

/// How `serve` treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// A connection must deliver a complete request head within this long from the moment the
    /// server waits for one (so an idle keep-alive connection is closed after it too).
    pub read_timeout: Duration,
    /// Connections open at once; while that many are open, further ones wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
}

/// Largest request head accepted (SNS sends a few hundred bytes of headers): a longer one gets
/// 431 and the connection is closed, so an open connection costs at most this much buffer.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long a served connection must have been idle before the cap closes it. Closing an idle
/// keep-alive connection races with a client that is writing its next request on it (the
/// client sees "connection closed before message completed"); clients reuse their most
/// recently returned connection first (hyper's pool, browsers), so one idle this long is one
/// the client is not about to use. A connection in a request closes after its answer instead,
/// which cannot race.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_millis(250);

/// What the cap needs to know of one connection.
#[derive(Default)]
struct ConnState {
    /// A request has been answered (or is being answered) on it.
    served: AtomicBool,
    /// Requests being answered.
    in_request: AtomicU32,
    /// When the last answer was handed to hyper, in ms since the server started.
    idle_since_ms: AtomicU64,
}

impl ConnState {
    /// When the connection may be closed without racing its client: now if it is in a
    /// request (it closes after the answer), else once idle for [`IDLE_CLOSE_GRACE`].
    fn close_at(&self, epoch: Instant) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        if self.in_request.load(Relaxed) > 0 {
            return now;
        }
        let idle_since = epoch + Duration::from_millis(self.idle_since_ms.load(Relaxed));
        tokio::time::Instant::from_std(idle_since + IDLE_CLOSE_GRACE).max(now)
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets in-flight requests finish. hyper's
/// HTTP/1 connection with a timer (the header read timeout) and a cap on open connections:
/// a slow or silent client can neither hold a connection for ever nor exhaust memory.
///
/// At the cap the port stops accepting, so new connections wait in the kernel's accept
/// queue ([`LISTEN_BACKLOG`]) instead of being closed, as Go's `netutil.LimitListener`
/// makes them wait; and every connection that has already been served is asked to close
/// once its current request is answered (an idle keep-alive one once it has been idle for
/// [`IDLE_CLOSE_GRACE`]), as nginx reuses idle keep-alive connections when it runs out: idle
/// connections must not hold the slots while deliveries queue. While the port waits, every
/// answer carries `Connection: close`.
/// A connection not yet served keeps its slot until its first request is answered (or the
/// read timeout), so a delivery accepted just before the cap is never cut.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
    opts: ServeOptions,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let max = opts
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    // Each send asks connections to close after their current request: `false` for those
    // already served (at the cap), `true` for all of them (shutdown).
    let (drain, _) = tokio::sync::watch::channel(false);
    // Set while the port waits for a slot: every answer then closes its connection, so one
    // first served during the wait gives its slot back too.
    let paused = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.read_timeout)
        .max_buf_size(MAX_HEADER_BYTES * 2)
        .max_header_size(MAX_HEADER_BYTES);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                metrics.accept_paused.inc();
                paused.store(true, Relaxed);
                drain.send_replace(false);
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                };
                paused.store(false, Relaxed);
                permit
            }
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small answers on a request/response protocol: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::default());
        let service = {
            let (app, state, paused) = (app.clone(), state.clone(), paused.clone());
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                state.served.store(true, Relaxed);
                state.in_request.fetch_add(1, Relaxed);
                let close = paused.load(Relaxed);
                let answer = tower::ServiceExt::oneshot(app.clone(), req.map(Body::new));
                let state = state.clone();
                async move {
                    let answered = answer.await;
                    state
                        .idle_since_ms
                        .store(epoch.elapsed().as_millis() as u64, Relaxed);
                    state.in_request.fetch_sub(1, Relaxed);
                    let mut r = answered?;
                    if close {
                        r.headers_mut().insert(
                            header::CONNECTION,
                            header::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(r)
                }
            })
        };
        let mut asked = drain.subscribe();
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            // Set once asked to give the slot back: when to check again.
            let mut close_at: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    Ok(()) = asked.changed() => {
                        let all = *asked.borrow_and_update();
                        if all {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.as_mut().await;
                            break;
                        }
                        if state.served.load(Relaxed) && close_at.is_none() {
                            close_at = Some(state.close_at(epoch));
                        }
                    }
                    () = tokio::time::sleep_until(close_at.unwrap_or_else(tokio::time::Instant::now)), if close_at.is_some() => {
                        // A request may have come in or ended meanwhile: ask again.
                        let at = state.close_at(epoch);
                        if at <= tokio::time::Instant::now() {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.as_mut().await;
                            break;
                        }
                        close_at = Some(at);
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    drain.send_replace(true);
    // Every connection's slot back: all of them closed.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let unsynced = s.watches.unsynced();
    if !s.accepting.load(std::sync::atomic::Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if unsynced.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("watches not in sync: {}\n", unsynced.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    s.watches.export(&s.metrics);
    s.metrics.dedupe_ids.set(s.applied.len() as i64);
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

/// A budget of log lines per window: a flood of hostile requests must not flood the log (each
/// line costs I/O and log storage), while every one is still counted in the metrics.
#[derive(Debug, Default)]
pub struct LogBudget {
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl LogBudget {
    /// Lines per window.
    pub const LINES: u32 = 20;
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// Whether to log this one; `Some(n)` also says `n` lines were skipped before it.
    pub fn take(&self) -> Option<u64> {
        let mut st = self.state.lock();
        let now = Instant::now();
        if st
            .0
            .is_none_or(|start| now.duration_since(start) >= Self::WINDOW)
        {
            *st = (Some(now), 0, st.2);
        }
        if st.1 >= Self::LINES {
            st.2 += 1;
            return None;
        }
        st.1 += 1;
        Some(std::mem::take(&mut st.2))
    }
}

fn rejected(s: &AppState, t: &'static str, r: Reject) -> Answer {
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

fn unavailable(s: &AppState, t: &'static str, why: &'static str, detail: String) -> Answer {
    tracing::warn!(reason = why, r#type = t, detail = %detail, "answering 503 so SNS redelivers");
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

async fn sns(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Answer {
    let started = Instant::now();
    // The metric label until the body says otherwise.
    let label = header_str(&headers, &MESSAGE_TYPE)
        .and_then(MessageType::parse)
        .map_or("unknown", MessageType::as_str);
    // One deadline for the whole delivery (a certificate fetch included), below SNS's 15 s
    // timeout: past it SNS gets a 503 and redelivers; spawned patches keep going.
    let answer = match tokio::time::timeout(s.deadline, handle(&s, &headers, label, body)).await {
        Ok(answer) => answer,
        Err(_) => unavailable(
            &s,
            label,
            "deadline_exceeded",
            format!("not answered within --request-deadline {:?}", s.deadline),
        ),
    };
    s.metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    answer
}

async fn handle(s: &AppState, headers: &HeaderMap, label: &'static str, body: Body) -> Answer {
    let bytes = match read_limited(headers, body, s.max_body_bytes, s.read_timeout).await {
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
    let sent = match s.verifier.verify(&env, (s.clock)()).await {
        Ok(sent) => sent,
        Err(r) => return rejected(s, label, r),
    };
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

async fn confirm(s: &AppState, env: &Envelope) -> Answer {
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

async fn notification(s: &AppState, env: &Envelope, sent: OffsetDateTime) -> Answer {
    const T: &str = "Notification";
    if s.applied.contains(&env.message_id) {
        s.metrics.notification(T, "duplicate");
        return Answer {
            status: StatusCode::OK,
            body: json!({"result": "duplicate", "message_id": env.message_id}),
        };
    }
    let changes = match event::decode_delivered(&env.message, s.accept_plain) {
        Ok(Decoded::Changes(c)) => c,
        Ok(Decoded::Ignored { kind, detail }) => {
            s.metrics.events_ignored.get_or_create(&Kind { kind }).inc();
            s.metrics.notification(T, "ignored");
            // Clipped: the detail quotes the event (a `source` may be 500 KiB long).
            let detail = crate::text::truncate(&detail, 160).to_owned();
            let mut logged = s.ignored_logged.lock();
            if logged.len() < 1000 && logged.insert(detail.clone()) {
                tracing::info!(kind, detail = %detail, "ignoring messages of this type (logged once per type)");
            }
            return Answer {
                status: StatusCode::OK,
                body: json!({"result": "ignored", "kind": kind}),
            };
        }
        Err(e) => return rejected(s, T, Reject::EventMalformed(e.0)),
    };
    // An incomplete index could miss a resource: let SNS redeliver once the watches are in sync.
    if !s.watches.ready() {
        return unavailable(
            s,
            T,
            "not_ready",
            format!("watches not in sync: {}", s.watches.unsynced().join(", ")),
        );
    }
    // Each target once, with the first match that named it and the parameter it read.
    let mut matched: Vec<(Match, String)> = Vec::new();
    let mut unforceable = 0;
    {
        let index = s.index.read();
        for c in &changes {
            s.metrics
                .changes
                .get_or_create(&ChangeLabels {
                    service: c.service.as_str(),
                    operation: c.operation.as_str(),
                })
                .inc();
            let found = index.lookup(c);
            for m in found.unforceable {
                tracing::warn!(message_id = %env.message_id, parameter = %c.name, target = %m.target, reference = %m.reference, reason = %m.reason, "matched, but this resource ignores force-sync: not patched");
                s.metrics.unforceable.inc();
                s.events.not_forceable(&m, &c.name, &env.message_id);
                unforceable += 1;
            }
            for m in found.targets {
                tracing::info!(message_id = %env.message_id, parameter = %c.name, operation = c.operation.as_str(), target = %m.target, reference = %m.reference, reason = %m.reason, "matched");
                if !matched.iter().any(|(o, _)| o.target == m.target) {
                    matched.push((m, c.name.clone()));
                }
            }
        }
    }
    // A closed ESO sync window holds the patch until it opens (the annotation would bypass
    // the window, which the user set to keep the Secret still).
    let now = (s.clock)();
    let mut deferred = 0;
    matched.retain(|(m, parameter)| {
        let Some(w) = m.sync_windows.as_ref().filter(|w| !w.open_at(now)) else {
            return true;
        };
        match w.next_open(now) {
            Some(at) => {
                tracing::info!(message_id = %env.message_id, parameter = %parameter, target = %m.target, opens = %at, "sync window closed: force-sync deferred to its opening");
                s.metrics.deferred.inc();
                s.trigger.defer(m.target.clone(), at, Some(sent));
            }
            None => {
                tracing::warn!(message_id = %env.message_id, parameter = %parameter, target = %m.target, "sync window closed and never opens within a year: not patched");
                s.metrics.unforceable.inc();
            }
        }
        deferred += 1;
        false
    });
    let targets: Vec<Target> = matched.iter().map(|(m, _)| m.target.clone()).collect();
    s.metrics
        .targets_matched
        .inc_by((targets.len() + deferred) as u64);
    if targets.is_empty() && deferred > 0 {
        s.applied.insert(&env.message_id);
        s.metrics.notification(T, "deferred");
        return Answer {
            status: StatusCode::OK,
            body: json!({"result": "deferred", "changes": changes.len(), "targets": 0, "deferred": deferred, "unforceable": unforceable}),
        };
    }
    if targets.is_empty() {
        tracing::debug!(message_id = %env.message_id, parameters = ?changes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), unforceable, "no resource to force-sync for the changed parameter");
        s.applied.insert(&env.message_id);
        s.metrics.notification(T, "no_match");
        return Answer {
            status: StatusCode::OK,
            body: json!({"result": "no_match", "changes": changes.len(), "targets": 0, "unforceable": unforceable}),
        };
    }
    // A change happened before its SNS Timestamp: patches sent after it cover it.
    let outcomes = s.trigger.force_sync(&targets, Some(sent)).await;
    let failed: Vec<String> = targets
        .iter()
        .zip(&outcomes)
        .filter_map(|(t, o)| match o {
            Outcome::Failed(why) => Some(format!("{t}: {why}")),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        return unavailable(s, T, "patch_failed", failed.join("; "));
    }
    s.applied.insert(&env.message_id);
    let message_id: Arc<str> = env.message_id.as_str().into();
    for ((m, parameter), outcome) in matched.iter().zip(&outcomes) {
        if *outcome == Outcome::Applied {
            s.events.force_sync(m, parameter, &env.message_id);
            // The answer does not wait for the outcome: 200 means the patches are applied.
            if let Some(c) = &s.confirmations {
                c.attach(
                    &m.target,
                    crate::cluster::confirm::Waiter {
                        message_id: message_id.clone(),
                        parameter: parameter.as_str().into(),
                        since: sent,
                    },
                );
            }
        }
    }
    let lag = (OffsetDateTime::now_utc() - sent).as_seconds_f64();
    s.metrics.end_to_end.observe(lag.max(0.0));
    let dry = outcomes.iter().all(|o| *o == Outcome::DryRun);
    let result = if dry { "dry_run" } else { "applied" };
    s.metrics.notification(T, result);
    Answer {
        status: StatusCode::OK,
        body: json!({
            "result": result,
            "changes": changes.len(),
            "targets": targets.len(),
            "deferred": deferred,
            "unforceable": unforceable,
            "patched": targets.iter().zip(&outcomes).filter(|(_, o)| **o == Outcome::Applied).map(|(t, _)| t.to_string()).collect::<Vec<_>>(),
        }),
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
    if let Some(len) =
        header_str(headers, &header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(Reject::BodyTooLarge(format!(
            "Content-Length {len} exceeds {max} bytes"
        )));
    }
    let read = http_body_util::Limited::new(body, max).collect();
    match tokio::time::timeout(within, read).await {
        Err(_) => Err(Reject::BodyReadTimeout(format!(
            "the body did not arrive within --read-timeout {within:?}"
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
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    /// `serve` with a cap of two connections and a read timeout far longer than any wait
    /// below, answering `GET /` with "ok".
    async fn capped() -> (std::net::SocketAddr, Arc<crate::metrics::Metrics>) {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let opts = super::ServeOptions {
            read_timeout: Duration::from_secs(60),
            max_connections: 2,
        };
        tokio::spawn(super::serve(
            listener,
            app,
            std::future::pending(),
            opts,
            metrics.clone(),
        ));
        (addr, metrics)
    }

    /// Sends `GET /` and reads one answer, leaving the connection open (keep-alive).
    async fn get(c: &mut TcpStream) -> String {
        c.write_all(GET).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let mut got = Vec::new();
        while !got.ends_with(b"ok") {
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("no answer within 5 s")
                .unwrap();
            assert!(
                n > 0,
                "closed before answering: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Whether the server closed `c` within `within` (reads nothing more and sees EOF).
    async fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, c.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// A client writing its next request on a keep-alive connection just after the cap asked
    /// that connection to close gets its answer (with `Connection: close`), not a closed
    /// connection: an idle connection is closed only once idle for `IDLE_CLOSE_GRACE`.
    #[tokio::test]
    async fn a_request_on_a_connection_just_asked_to_close_is_answered() {
        let (addr, _metrics) = capped().await;
        let mut a = TcpStream::connect(addr).await.unwrap();
        get(&mut a).await;
        // The second connection (not served yet, so it keeps its slot) fills the cap: the
        // port pauses and asks `a` to close.
        let mut b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        let answer = get(&mut a).await;
        assert!(
            t.elapsed() < super::IDLE_CLOSE_GRACE,
            "the test itself was too slow"
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(closed_within(&mut a, Duration::from_secs(2)).await);
        assert!(get(&mut b).await.starts_with("HTTP/1.1 200"));
    }

    /// Both slots held by idle keep-alive connections (each served once): a third client
    /// waits in the accept queue only until the idle ones are asked to close, not for the
    /// 60 s read timeout; the idle ones are closed.
    #[tokio::test]
    async fn idle_keep_alive_connections_give_their_slots_to_waiting_ones() {
        let (addr, metrics) = capped().await;
        let mut idle = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            get(&mut c).await;
            idle.push(c);
        }
        let t = Instant::now();
        let mut third = TcpStream::connect(addr).await.unwrap();
        let answer = get(&mut third).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the third connection waited {:?}",
            t.elapsed()
        );
        for c in &mut idle {
            assert!(
                closed_within(c, Duration::from_secs(2)).await,
                "an idle keep-alive connection kept its slot"
            );
        }
        assert!(metrics.accept_paused.get() >= 1);
    }

    /// A connection accepted but not yet served (its request may be on the wire) keeps its
    /// slot when the cap is hit: only the served one gives way, and the fresh one is still
    /// answered afterwards.
    #[tokio::test]
    async fn a_connection_not_yet_served_is_never_cut_to_make_room() {
        let (addr, _) = capped().await;
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        let mut served = TcpStream::connect(addr).await.unwrap();
        get(&mut served).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        let answer = get(&mut third).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(closed_within(&mut served, Duration::from_secs(2)).await);
        assert!(!closed_within(&mut fresh, Duration::from_millis(300)).await);
        let answer = get(&mut fresh).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// 400 clients connect while nothing accepts: every handshake completes at once. With
    /// `TcpListener::bind`'s backlog of 128 the kernel drops the SYNs past the 129th and those
    /// connects would only be retried after 1 s (so they time out here: 129 of 400).
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_accept_queue_instead_of_being_dropped() {
        // The kernel caps any backlog at net.core.somaxconn (4096 by default since 5.4).
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let expected = 400.min(cap + 1);
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..400).map(|_| {
            tokio::time::timeout(
                Duration::from_millis(700),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures::future::join_all(connects).await;
        let established = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(
            established, expected,
            "connections established without a SYN retransmit (somaxconn {cap})"
        );
        drop(listener);
    }
}

//! The listeners' HTTP/1 server: binding with a deep accept queue, a header-read timeout,
//! bounded request heads and a cap on open connections that idle keep-alive connections give
//! way to. Knows nothing of SNS: `routes` is what it serves.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::header;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

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

/// How long a connection may go without delivering a complete request head once the port is
/// at its cap, before its slot goes to a connection waiting behind it. SNS (and a load
/// balancer in front) send the head with the connection; a client that has not in this long
/// is a slow one, and holding its slot for the whole `--read-timeout` is what let about 51
/// slow connections a second keep 512 slots full while genuine deliveries queued past SNS's
/// 15 s timeout.
pub const UNSERVED_GRACE: Duration = Duration::from_secs(1);

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

/// When the cap may take back the slot of a connection accepted at `accepted` that has not
/// delivered a request head: [`UNSERVED_GRACE`] after it was accepted.
fn unserved_close_at(accepted: tokio::time::Instant) -> tokio::time::Instant {
    (accepted + UNSERVED_GRACE).max(tokio::time::Instant::now())
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
/// A connection not yet served keeps its slot while it is new: a delivery accepted just
/// before the cap sends its head at once and is never cut; one that has not delivered a
/// complete head [`UNSERVED_GRACE`] after it was accepted gives its slot back while the port
/// is at the cap (`connections_evicted_total`).
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
        let accepted = tokio::time::Instant::now();
        let metrics = metrics.clone();
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
                        if close_at.is_none() {
                            close_at = Some(if state.served.load(Relaxed) {
                                state.close_at(epoch)
                            } else {
                                unserved_close_at(accepted)
                            });
                        }
                    }
                    () = tokio::time::sleep_until(close_at.unwrap_or_else(tokio::time::Instant::now)), if close_at.is_some() => {
                        if !state.served.load(Relaxed) {
                            // No complete head yet, past the grace: nothing to answer, the
                            // slot goes to a connection waiting behind it.
                            metrics.connections_evicted.inc();
                            break;
                        }
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

//! `loadgen`: a load generator for `POST /sns`, and the trivial server it is compared with.
//!
//! Four modes:
//!
//! - `loadgen --generate FILE --count N --sign-key KEY ...` signs N distinct Notifications
//!   (unique MessageIds, each a Parameter Store Change of its own parameter) and writes them
//!   one per line. Signing (RSA-2048, SignatureVersion 2) runs on every core, before and
//!   outside any measured run.
//! - `loadgen --url URL --bodies FILE ...` sends them. `--rate 0` (default) is a closed loop:
//!   `--connections` keep-alive connections, each sending its next body as soon as the last
//!   one was answered. `--rate R` is an open loop: body i is due at start + i/R, whatever
//!   happened before, and its latency is measured from that scheduled time (so a stalled
//!   server is charged for every request it delayed: no coordinated omission).
//! - `loadgen --serve-trivial ADDR` answers `POST /sns` with 200 and a small JSON body after
//!   reading the request body: the HTTP floor the service is measured against.
//! - `loadgen --serve-verify ADDR --verify-pin URL=PEM` does the least any correct SNS
//!   endpoint must do per message and nothing else: `Envelope::parse` and
//!   `Verifier::verify` (the service's own code, the certificate pinned as the service's
//!   `--sns-signing-cert` pins it, `--topic-arn` allowed), then answers like the trivial
//!   server (403 if verification fails). The floor once verification, which no endpoint may
//!   skip, is paid.
//!
//! Only loopback addresses are accepted as targets. Latencies are kept one per request and
//! the quantiles are exact (sorted), not bucketed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Load generator for ssm-resync's POST /sns (and the trivial HTTP floor)")]
struct Args {
    /// Serve the trivial handler (200 to every POST /sns) on this loopback address.
    #[arg(long, value_name = "ADDR")]
    serve_trivial: Option<SocketAddr>,
    /// Serve the verify-only floor on this loopback address (needs `--verify-pin`); it
    /// allows `--topic-arn`.
    #[arg(long, value_name = "ADDR", requires = "verify_pin")]
    serve_verify: Option<SocketAddr>,
    /// `URL=FILE`: the certificate the verify-only floor pins (as `--sns-signing-cert`).
    #[arg(long, value_name = "URL=PEM")]
    verify_pin: Option<String>,

    /// Write `--count` signed Notifications to this file (one JSON body per line) and exit.
    #[arg(long, value_name = "FILE")]
    generate: Option<PathBuf>,
    /// Bodies to generate (or to generate in memory when no `--bodies` file is given).
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// PEM RSA private key whose certificate the server pins (`--sns-signing-cert`).
    #[arg(long, env = "SSM_RESYNC_SAMPLE_SIGN_KEY")]
    sign_key: Option<PathBuf>,
    #[arg(
        long,
        env = "SSM_RESYNC_SAMPLE_CERT_URL",
        default_value = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef0123456789abcdef.pem"
    )]
    cert_url: String,
    #[arg(
        long,
        default_value = "arn:aws:sns:us-east-1:123456789012:ssm-resync-local"
    )]
    topic_arn: String,
    /// Parameter names are PREFIX/<run>/<i>: distinct, and by default read by nothing.
    #[arg(long, default_value = "/loadgen/nomatch")]
    parameter_prefix: String,

    /// Target, e.g. http://127.0.0.1:8080/sns (loopback only).
    #[arg(long)]
    url: Option<String>,
    /// Bodies written by `--generate`; each is sent at most once.
    #[arg(long, value_name = "FILE")]
    bodies: Option<PathBuf>,
    /// Skip this many bodies of the file first (to use disjoint slices of one file).
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// Send at most this many bodies (after the warm-up); default: all that are left.
    #[arg(long)]
    requests: Option<usize>,
    /// Requests sent before measuring (taken from the same bodies).
    #[arg(long, default_value_t = 1000)]
    warmup: usize,
    /// Keep-alive connections (closed loop); the open loop opens what it needs.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests per second (open loop); 0 = closed loop at the maximum rate.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this long even if bodies are left (seconds).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Open loop: give up when more than this many requests are in flight (overload).
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Runtime worker threads (default: one per core, like the service).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the result as one JSON line on stdout (human summary on stderr).
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    let rt = rt.build()?;
    if let Some(addr) = args.serve_trivial {
        require_loopback(&addr.ip().to_string())?;
        return rt.block_on(serve_trivial(addr));
    }
    if let (Some(addr), Some(pin)) = (args.serve_verify, &args.verify_pin) {
        require_loopback(&addr.ip().to_string())?;
        return rt.block_on(serve_verify(addr, pin, &args.topic_arn));
    }
    if let Some(out) = &args.generate {
        let bodies = generate(&args)?;
        let mut text = String::with_capacity(bodies.iter().map(|b| b.len() + 1).sum());
        for b in &bodies {
            text.push_str(std::str::from_utf8(b)?);
            text.push('\n');
        }
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "wrote {} signed notifications to {}",
            bodies.len(),
            out.display()
        );
        return Ok(());
    }
    let url = args
        .url
        .clone()
        .context("--url is required (or --serve-trivial / --generate)")?;
    let target = Arc::new(Target::parse(&url)?);
    let all = match &args.bodies {
        Some(f) => read_bodies(f)?,
        None => generate(&args)?,
    };
    let bodies: Vec<Request> = all
        .into_iter()
        .skip(args.skip)
        .map(Request::new)
        .collect::<anyhow::Result<_>>()?;
    if bodies.len() <= args.warmup {
        bail!(
            "{} bodies left after --skip, not more than --warmup {}",
            bodies.len(),
            args.warmup
        );
    }
    let (warm, rest) = bodies.split_at(args.warmup);
    let n = args.requests.unwrap_or(rest.len()).min(rest.len());
    let rest = rest[..n].to_vec();
    let result = rt.block_on(run(&args, &url, target, warm.to_vec(), rest))?;
    eprintln!("{}", result.human());
    if args.json {
        println!("{}", result.to_json());
    }
    if result.ok == 0 {
        bail!("no request succeeded");
    }
    Ok(())
}

fn require_loopback(host: &str) -> anyhow::Result<()> {
    let ip: std::net::IpAddr = match host {
        "localhost" => return Ok(()),
        h => h
            .trim_matches(['[', ']'])
            .parse()
            .with_context(|| format!("{h:?} is not an IP address"))?,
    };
    if !ip.is_loopback() {
        bail!("{ip} is not a loopback address: loadgen only targets this machine");
    }
    Ok(())
}

/// Signs `--count` distinct notifications on every core.
fn generate(args: &Args) -> anyhow::Result<Vec<Bytes>> {
    use ssm_resync::sns::sign::SigningKey;
    let key_path = args
        .sign_key
        .as_ref()
        .context("--sign-key (or SSM_RESYNC_SAMPLE_SIGN_KEY) is required to sign")?;
    let key = SigningKey::from_file(&key_path.to_string_lossy())?;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let mut out: Vec<(usize, Bytes)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.count {
                            return mine;
                        }
                        let name = format!("{}/{run}/{i}", args.parameter_prefix);
                        let event = ssm_resync::sample::parameter_store_change(
                            &name,
                            "Update",
                            "us-east-1",
                            "123456789012",
                        );
                        let env = ssm_resync::sample::notification(
                            event.to_string(),
                            &args.topic_arn,
                            &args.cert_url,
                            Some(&key),
                        );
                        let body = serde_json::to_vec(&env).expect("envelope serialises");
                        mine.push((i, Bytes::from(body)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    eprintln!(
        "signed {} notifications in {:.1} s on {threads} threads",
        out.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(out.into_iter().map(|(_, b)| b).collect())
}

fn read_bodies(path: &PathBuf) -> anyhow::Result<Vec<Bytes>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = Bytes::from(text);
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in text.iter().enumerate() {
        if *b == b'\n' {
            if i > start {
                out.push(text.slice(start..i));
            }
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push(text.slice(start..));
    }
    Ok(out)
}

/// One body with the `x-amz-sns-*` header values SNS sends along (read before the run).
#[derive(Clone)]
struct Request {
    body: Bytes,
    message_id: String,
    topic_arn: String,
}

impl Request {
    fn new(body: Bytes) -> anyhow::Result<Self> {
        let v: serde_json::Value = serde_json::from_slice(&body).context("body is not JSON")?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_owned)
                .with_context(|| format!("body without {k}"))
        };
        Ok(Self {
            message_id: field("MessageId")?,
            topic_arn: field("TopicArn")?,
            body,
        })
    }

    fn http(&self, target: &Target) -> http::Request<Full<Bytes>> {
        http::Request::post(target.path.as_str())
            .header(http::header::HOST, target.authority.as_str())
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", "Notification")
            .header("x-amz-sns-message-id", self.message_id.as_str())
            .header("x-amz-sns-topic-arn", self.topic_arn.as_str())
            .body(Full::new(self.body.clone()))
            .expect("static request parts are valid")
    }
}

/// Where requests go: resolved once, so a request costs no URL parsing or lookup.
struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let u = url::Url::parse(url).with_context(|| format!("--url {url:?}"))?;
        if u.scheme() != "http" {
            bail!("--url must be http://127.0.0.1:PORT/sns");
        }
        let host = u.host_str().context("--url without a host")?;
        require_loopback(host)?;
        let port = u.port_or_known_default().unwrap_or(80);
        let addr =
            std::net::ToSocketAddrs::to_socket_addrs(&(host.trim_matches(['[', ']']), port))?
                .next()
                .with_context(|| format!("{host} does not resolve"))?;
        Ok(Self {
            addr,
            authority: format!("{host}:{port}"),
            path: u.path().to_owned(),
        })
    }
}

/// One HTTP/1.1 keep-alive connection, driven by hyper's client connection directly (no
/// pool, no per-request URL handling): the generator's CPU per request is what limits the
/// closed loop on a 2-core machine, where it shares the cores with the server under test.
type Conn = SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> Result<Conn, String> {
    let stream = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connecting to {}: {e}", target.addr))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One finished request: when it finished (since the measured start) and how long it took.
#[derive(Clone, Copy)]
struct Sample {
    done_us: u64,
    latency_ns: u64,
    ok: bool,
}

#[derive(Default)]
struct Collected {
    samples: Vec<Sample>,
    errors: Vec<String>,
}

impl Collected {
    fn error(&mut self, e: String) {
        if self.errors.len() < 5 {
            self.errors.push(e);
        } else if self.errors.len() == 5 {
            self.errors.push("(more errors not shown)".into());
        }
    }
}

async fn exchange(conn: &mut Conn, target: &Target, req: &Request) -> Result<(), String> {
    // The wait for the connection is bounded too: one left busy by an earlier timeout
    // must fail the request, not hang the generator.
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, async {
        conn.ready().await?;
        let resp = conn.send_request(req.http(target)).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    })
    .await
    .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?;
    let (status, body) = resp.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ))
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn run(
    args: &Args,
    url: &str,
    target: Arc<Target>,
    warm: Vec<Request>,
    bodies: Vec<Request>,
) -> anyhow::Result<RunResult> {
    let cpu0 = own_cpu_seconds();
    if !warm.is_empty() {
        closed_loop(
            &target,
            args.connections,
            Arc::new(warm),
            Duration::from_secs(60),
        )
        .await?;
    }
    let cpu1 = own_cpu_seconds();
    let offered = bodies.len();
    let started = Instant::now();
    let collected = if args.rate > 0.0 {
        open_loop(
            &target,
            args.rate,
            Arc::new(bodies),
            Duration::from_secs_f64(args.duration),
            args.max_in_flight,
        )
        .await?
    } else {
        closed_loop(
            &target,
            args.connections,
            Arc::new(bodies),
            Duration::from_secs_f64(args.duration),
        )
        .await?
    };
    let wall = started.elapsed().as_secs_f64();
    let cpu2 = own_cpu_seconds();
    Ok(RunResult::new(
        args,
        url,
        offered,
        wall,
        cpu2 - cpu1,
        cpu1 - cpu0,
        collected,
    ))
}

/// N keep-alive connections, each sending the next unsent body as soon as its previous
/// request was answered (a connection that fails is replaced).
async fn closed_loop(
    target: &Arc<Target>,
    connections: usize,
    bodies: Arc<Vec<Request>>,
    limit: Duration,
) -> anyhow::Result<Collected> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (target, bodies, next) = (target.clone(), bodies.clone(), next.clone());
        let mut conn = connect(&target).await.map_err(anyhow::Error::msg)?;
        tasks.push(tokio::spawn(async move {
            let mut c = Collected::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() || Instant::now() >= deadline {
                    return c;
                }
                let t0 = Instant::now();
                let r = exchange(&mut conn, &target, &bodies[i]).await;
                let t1 = Instant::now();
                c.samples.push(Sample {
                    done_us: (t1 - started).as_micros() as u64,
                    latency_ns: (t1 - t0).as_nanos() as u64,
                    ok: r.is_ok(),
                });
                if let Err(e) = r {
                    c.error(e);
                    if conn.is_closed() {
                        match connect(&target).await {
                            Ok(fresh) => conn = fresh,
                            Err(e) => {
                                c.error(e);
                                return c;
                            }
                        }
                    }
                }
            }
        }));
    }
    let mut all = Collected::default();
    for t in tasks {
        let c = t.await?;
        all.samples.extend(c.samples);
        for e in c.errors {
            all.error(e);
        }
    }
    Ok(all)
}

/// Body i is due at start + i/rate. A dedicated OS thread keeps the schedule (nanosleep is
/// far finer than tokio's millisecond timer) and spawns each request on the runtime; each
/// latency runs from the scheduled time, so dispatcher or server stalls are all counted.
async fn open_loop(
    target: &Arc<Target>,
    rate: f64,
    bodies: Arc<Vec<Request>>,
    limit: Duration,
    max_in_flight: usize,
) -> anyhow::Result<Collected> {
    // Idle keep-alive connections; a request takes one or opens a new one.
    let pool: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
    let handle = tokio::runtime::Handle::current();
    let collected = Arc::new(Mutex::new(Collected::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let n = bodies
        .len()
        .min((rate * limit.as_secs_f64()).ceil() as usize);
    let target = target.clone();
    let (c2, f2) = (collected.clone(), in_flight.clone());
    let dispatcher = std::thread::spawn(move || -> Result<Instant, String> {
        let started = Instant::now() + Duration::from_millis(5);
        for i in 0..n {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if f2.load(Ordering::Relaxed) >= max_in_flight {
                return Err(format!(
                    "more than {max_in_flight} requests in flight after {i} sent: the target cannot keep up with {rate}/s"
                ));
            }
            f2.fetch_add(1, Ordering::Relaxed);
            let (pool, bodies, target, c, f) = (
                pool.clone(),
                bodies.clone(),
                target.clone(),
                c2.clone(),
                f2.clone(),
            );
            handle.spawn(async move {
                let idle = pool.lock().pop();
                let r = match idle {
                    Some(conn) => Ok(conn),
                    None => connect(&target).await,
                };
                let r = match r {
                    Ok(mut conn) => {
                        let r = exchange(&mut conn, &target, &bodies[i]).await;
                        // Only a connection whose exchange completed goes back to the pool.
                        if r.is_ok() && !conn.is_closed() {
                            pool.lock().push(conn);
                        }
                        r
                    }
                    Err(e) => Err(e),
                };
                let t1 = Instant::now();
                f.fetch_sub(1, Ordering::Relaxed);
                let mut c = c.lock();
                c.samples.push(Sample {
                    done_us: (t1.saturating_duration_since(started)).as_micros() as u64,
                    latency_ns: t1.saturating_duration_since(due).as_nanos() as u64,
                    ok: r.is_ok(),
                });
                if let Err(e) = r {
                    c.error(e);
                }
            });
        }
        Ok(started)
    });
    let started = tokio::task::spawn_blocking(move || dispatcher.join())
        .await?
        .map_err(|_| anyhow::anyhow!("dispatcher panicked"))?;
    let aborted = started.as_ref().err().cloned();
    // Wait for the stragglers (bounded).
    let wait_until = Instant::now() + Duration::from_secs(30);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut c = std::mem::take(&mut *collected.lock());
    if let Some(e) = aborted {
        c.errors.insert(0, e);
    }
    let left = in_flight.load(Ordering::Relaxed);
    if left > 0 {
        c.errors.insert(
            0,
            format!("{left} requests still unanswered 30 s after the last was due"),
        );
    }
    Ok(c)
}

struct RunResult {
    mode: &'static str,
    url: String,
    connections: usize,
    rate: f64,
    offered: usize,
    ok: usize,
    failed: usize,
    wall_s: f64,
    throughput: f64,
    per_second_median: f64,
    per_second_min: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    cpu_s: f64,
    warmup_cpu_s: f64,
    errors: Vec<String>,
}

impl RunResult {
    fn new(
        args: &Args,
        url: &str,
        offered: usize,
        wall_s: f64,
        cpu_s: f64,
        warmup_cpu_s: f64,
        c: Collected,
    ) -> Self {
        let ok = c.samples.iter().filter(|s| s.ok).count();
        let mut lat: Vec<u64> = c
            .samples
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.latency_ns)
            .collect();
        lat.sort_unstable();
        let q = |p: f64| -> f64 {
            if lat.is_empty() {
                return f64::NAN;
            }
            let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i] as f64 / 1000.0
        };
        // Completions per whole second of the run, the partial last one left out.
        let mut per_sec: Vec<u64> = Vec::new();
        for s in c.samples.iter().filter(|s| s.ok) {
            let b = (s.done_us / 1_000_000) as usize;
            if per_sec.len() <= b {
                per_sec.resize(b + 1, 0);
            }
            per_sec[b] += 1;
        }
        let full: Vec<u64> = if per_sec.len() > 2 {
            per_sec[..per_sec.len() - 1].to_vec()
        } else {
            Vec::new()
        };
        let mut sorted = full.clone();
        sorted.sort_unstable();
        let throughput = ok as f64 / wall_s;
        Self {
            mode: if args.rate > 0.0 { "open" } else { "closed" },
            url: url.to_owned(),
            connections: args.connections,
            rate: args.rate,
            offered,
            ok,
            failed: c.samples.len() - ok,
            wall_s,
            throughput,
            per_second_median: sorted
                .get(sorted.len() / 2)
                .map_or(throughput, |v| *v as f64),
            per_second_min: sorted.first().map_or(throughput, |v| *v as f64),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: lat.last().map_or(f64::NAN, |v| *v as f64 / 1000.0),
            cpu_s,
            warmup_cpu_s,
            errors: c.errors,
        }
    }

    fn human(&self) -> String {
        let what = if self.mode == "open" {
            format!("open loop at {}/s", self.rate)
        } else {
            format!("closed loop, {} connections", self.connections)
        };
        let mut s = format!(
            "{} {what}: {} ok, {} failed of {} in {:.2} s = {:.0}/s (per second: median {:.0}, min {:.0}); latency p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs; loadgen CPU {:.2} s",
            self.url,
            self.ok,
            self.failed,
            self.offered,
            self.wall_s,
            self.throughput,
            self.per_second_median,
            self.per_second_min,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.cpu_s
        );
        for e in &self.errors {
            s.push_str(&format!("\n  error: {e}"));
        }
        s
    }

    fn to_json(&self) -> String {
        json!({
            "mode": self.mode, "url": self.url, "connections": self.connections,
            "rate": self.rate, "offered": self.offered, "ok": self.ok, "failed": self.failed,
            "wall_s": self.wall_s, "throughput": self.throughput,
            "per_second_median": self.per_second_median, "per_second_min": self.per_second_min,
            "p50_us": self.p50_us, "p90_us": self.p90_us, "p99_us": self.p99_us,
            "p999_us": self.p999_us, "max_us": self.max_us, "cpu_s": self.cpu_s,
            "warmup_cpu_s": self.warmup_cpu_s, "errors": self.errors,
        })
        .to_string()
    }
}

/// User + system CPU time of this process, from /proc (clock ticks of 10 ms).
fn own_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// The JSON answer of both floors: the size of the service's `no_match` answer.
fn floor_answer(body: &Bytes) -> axum::Json<serde_json::Value> {
    axum::Json(json!({
        "result": "no_match", "changes": 1, "targets": 0, "unforceable": 0,
        "bytes": body.len()
    }))
}

async fn serve_floor(addr: SocketAddr, app: axum::Router, what: &str) -> anyhow::Result<()> {
    // The service's own listener (same accept-queue length), so a floor differs from it
    // only in the handler.
    let listener = ssm_resync::http::bind(addr).with_context(|| format!("binding {addr}"))?;
    eprintln!("{what} server on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// The HTTP floor: read the body, answer 200 with a JSON body of the size the service's
/// `no_match` answer has.
async fn serve_trivial(addr: SocketAddr) -> anyhow::Result<()> {
    use axum::routing::post;
    async fn handler(body: Bytes) -> axum::Json<serde_json::Value> {
        floor_answer(&body)
    }
    serve_floor(
        addr,
        axum::Router::new().route("/sns", post(handler)),
        "trivial",
    )
    .await
}

/// The verification floor: the trivial server plus what no SNS endpoint may skip, with the
/// service's own code: `Envelope::parse` and `Verifier::verify` against a pinned certificate.
async fn serve_verify(addr: SocketAddr, pin: &str, topic: &str) -> anyhow::Result<()> {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse as _, Response};
    use axum::routing::post;
    use ssm_resync::sns::{CertStore, Envelope, TopicPolicy, Verifier};
    let mut certs = CertStore::new(Default::default());
    certs.pin_spec(pin)?;
    let verifier = Verifier::new(TopicPolicy::new(&[topic])?, Arc::new(certs));
    async fn handler(State(verifier): State<Arc<Verifier>>, body: Bytes) -> Response {
        let verified = match Envelope::parse(&body) {
            Ok(env) => verifier
                .verify(&env, time::OffsetDateTime::now_utc())
                .await
                .is_ok(),
            Err(_) => false,
        };
        if verified {
            floor_answer(&body).into_response()
        } else {
            StatusCode::FORBIDDEN.into_response()
        }
    }
    let app = axum::Router::new()
        .route("/sns", post(handler))
        .with_state(Arc::new(verifier));
    serve_floor(addr, app, "verify-only").await
}

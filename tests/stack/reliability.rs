//! Faults, injected for real: a frozen TCP connection between the service and the API server,
//! an API server outage under load, `kill -9` mid-burst, SIGTERM with work in flight, changes
//! made while the service was down (the catch-up sweep), two replicas sharing the sweep Lease.
//! Each asserts that nothing was dropped and nothing hung, and where a change was made, that
//! ESO's Secret ends up holding it. (The soak, which judges latency, runs alone:
//! tests/serial/soak.rs.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use parking_lot::Mutex;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP proxy whose existing connections can be frozen: they stop forwarding in both
/// directions but stay open, as a connection through a dead NAT entry or a hung peer does.
/// New connections are forwarded normally.
struct FreezableProxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    /// When non-zero, connections accepted from then on freeze once this many bytes have
    /// gone back to the client: a response that stops half-way.
    freeze_after: Arc<std::sync::atomic::AtomicUsize>,
}

impl FreezableProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let freeze_after: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (c, after) = (conns.clone(), freeze_after.clone());
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let frozen = Arc::new(AtomicBool::new(false));
                c.lock().push(frozen.clone());
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                let after = match after.load(Ordering::SeqCst) {
                    0 => usize::MAX,
                    n => n,
                };
                tokio::spawn(pipe(dr, uw, frozen.clone(), usize::MAX));
                tokio::spawn(pipe(ur, dw, frozen, after));
            }
        });
        Self {
            addr,
            conns,
            freeze_after,
        }
    }

    fn freeze_existing(&self) -> usize {
        let conns = self.conns.lock();
        for f in conns.iter() {
            f.store(true, Ordering::SeqCst);
        }
        conns.len()
    }
}

/// Forwards `r` to `w` until either ends; freezes (both directions) once `freeze_after`
/// bytes have been forwarded.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    freeze_after: usize,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut forwarded = 0;
    loop {
        if forwarded >= freeze_after {
            frozen.store(true, Ordering::SeqCst);
        }
        if frozen.load(Ordering::SeqCst) {
            // Hold both halves open forever, forwarding nothing.
            std::future::pending::<()>().await;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let n = n.min(freeze_after - forwarded);
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
        forwarded += n;
    }
}

/// A replica that reaches the API server only through a `FreezableProxy`.
async fn behind_proxy(
    stack: &Stack,
    topic: &str,
    args: &[&str],
    dir: &std::path::Path,
) -> (FreezableProxy, Replica) {
    let api: SocketAddr = format!("127.0.0.1:{}", stack.get("STACK_API_PORT"))
        .parse()
        .unwrap();
    let proxy = FreezableProxy::start(api).await;
    let kc = kubeconfig_via(stack, proxy.addr, dir);
    let svc = Replica::new(BIN, stack, &[topic], args, &[("KUBECONFIG", &kc)], dir);
    (proxy, svc)
}

/// A copy of the stack's kubeconfig pointing at `server`.
fn kubeconfig_via(stack: &Stack, server: SocketAddr, dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(stack.get("KUBECONFIG")).unwrap();
    let port = stack.get("STACK_API_PORT");
    let text = text.replace(
        &format!("https://127.0.0.1:{port}"),
        &format!("https://{server}"),
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Sends like SNS: on a 5xx, a timeout or a refused connection, the same body again after
/// `retry` (SNS waits 20 s; the tests compress time), until 2xx or `give_up`.
async fn deliver(
    url: String,
    body: String,
    retry: Duration,
    give_up: Duration,
) -> (u16, Value, u32) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let deadline = Instant::now() + give_up;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let resp = client
            .post(format!("{url}/sns"))
            .header("content-type", "text/plain; charset=UTF-8")
            .body(body.clone())
            .send()
            .await;
        if let Ok(r) = resp {
            let status = r.status().as_u16();
            let v = r.json::<Value>().await.unwrap_or(Value::Null);
            if status < 500 {
                return (status, v, attempts);
            }
        }
        if Instant::now() > deadline {
            return (599, Value::Null, attempts);
        }
        tokio::time::sleep(retry).await;
    }
}

/// The time a notification body claims (its SNS Timestamp).
fn timestamp_of(body: &str) -> OffsetDateTime {
    let v: Value = serde_json::from_str(body).unwrap();
    OffsetDateTime::parse(
        v["Timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Every ExternalSecret was force-synced by a patch sent after the last change reported for
/// it: its annotation (the patch time) is not older than the newest Timestamp.
async fn assert_none_missed(
    kube: &kube::Client,
    ns: &str,
    newest: &HashMap<String, OffsetDateTime>,
) {
    let mut missed = Vec::new();
    for (name, t) in newest {
        let v = annotation(kube, ns, name, "force-sync").await;
        let patched = v.as_deref().and_then(|v| {
            OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()
        });
        // The SNS Timestamp has millisecond precision.
        if patched.is_none_or(|p| p + time::Duration::milliseconds(1) < *t) {
            missed.push(format!("{name}: patched {v:?}, newest change {t}"));
        }
    }
    assert!(
        missed.is_empty(),
        "{} of {} missed: {missed:?}",
        missed.len(),
        newest.len()
    );
}

/// Puts `final-<i>` into every parameter: the change the notifications report.
async fn change_all(stack: &Stack, params: &[String]) {
    for (i, p) in params.iter().enumerate() {
        stack.put_parameter(p, &format!("final-{i}")).await;
    }
}

/// Every reader's Secret holds its parameter's last value: what the user sees.
async fn assert_secrets_final(kube: &kube::Client, ns: &str, n: usize) {
    let started = Instant::now();
    for i in 0..n {
        wait_secret(
            kube,
            ns,
            &format!("es-{i}"),
            "k0",
            &format!("final-{i}"),
            Duration::from_secs(60),
        )
        .await;
    }
    eprintln!(
        "{n} Secrets hold their final value ({:?} after the last answer)",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_frozen_watch_connection_is_detected_and_relisted() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("rel-freeze").await;
    let params = readers(&stack, &kube, &ns, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, mut svc) = behind_proxy(
        &stack,
        &topic,
        &["--watch-stall-timeout=4s", "--sweep-interval=0s"],
        dir.path(),
    )
    .await;
    svc.start().await;

    let frozen = proxy.freeze_existing();
    assert!(frozen >= 3, "the three watches hold connections ({frozen})");
    // Created while the watch connections are frozen: only a re-list can find it.
    let late = format!("{}-late", params[0]);
    stack.put_parameter(&late, "v1").await;
    external_secret(&kube, &ns, "late", "aws", &[&late]).await;
    wait_secret(&kube, &ns, "late", "k0", "v1", Duration::from_secs(30)).await;
    stack.put_parameter(&late, "v2").await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    while svc
        .metric(r#"ssm_resync_watch_stalls_total{kind="ExternalSecret"}"#)
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "stall not detected:\n{}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detected = started.elapsed();
    svc.wait_ready(Duration::from_secs(20)).await;
    let msg = signed_change(&stack, &topic, &late);
    let (status, body, _) = deliver(
        svc.url(),
        msg,
        Duration::from_millis(200),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert!(annotation(&kube, &ns, "late", "force-sync").await.is_some());
    wait_secret(&kube, &ns, "late", "k0", "v2", Duration::from_secs(20)).await;
    assert!(svc.logs().contains("watch stalled"), "the stall is logged");
    eprintln!(
        "stall detected {} ms after the freeze (timeout 4 s)",
        detected.as_millis()
    );
    assert!(detected < Duration::from_secs(10), "{detected:?}");
}

/// A list response that stops half-way (the connection stays open, nothing more arrives)
/// fails the list after the silence limit instead of holding the kind out of sync forever;
/// the next list, on a healthy connection, succeeds.
#[tokio::test]
async fn a_list_response_that_goes_silent_fails_and_the_next_list_succeeds() {
    use ssm_resync::cluster::watch::{self, Freshness, WatchKind};
    let Scenario {
        stack, kube, ns, ..
    } = Scenario::new("rel-list-freeze").await;
    // Enough objects that the response is far larger than the TLS handshake and headers.
    let keys: Vec<String> = (0..40).map(|i| format!("/{ns}/param/{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let names: Vec<String> = (0..60).map(|i| format!("es-{i}")).collect();
    futures::future::join_all(
        names
            .iter()
            .map(|name| external_secret(&kube, &ns, name, "aws", &keys)),
    )
    .await;
    let api_addr: SocketAddr = format!("127.0.0.1:{}", stack.get("STACK_API_PORT"))
        .parse()
        .unwrap();
    let proxy = FreezableProxy::start(api_addr).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig_via(&stack, proxy.addr, dir.path());
    let ar = ssm_resync::cluster::external_secret_resource(ssm_resync::cluster::EsoVersion::V1);
    let index = parking_lot::RwLock::new(ssm_resync::index::Index::new());
    let metrics = ssm_resync::metrics::Metrics::new();
    let silence = Duration::from_secs(2);

    proxy.freeze_after.store(20 * 1024, Ordering::SeqCst);
    let api = kube::Api::namespaced_with(kube_client(&kc).await, &ns, &ar);
    let started = Instant::now();
    let listed = tokio::time::timeout(
        Duration::from_secs(30),
        watch::list(
            &api,
            WatchKind::ExternalSecret,
            &index,
            &metrics,
            Freshness::Cached,
            silence,
        ),
    )
    .await
    .expect("the list hung on a frozen response instead of failing");
    let err = listed.expect_err("a response cut off half-way cannot be a complete list");
    let waited = started.elapsed();
    assert!(
        err.to_string().contains("silent"),
        "failed for the wrong reason: {err}"
    );
    assert!(waited >= silence && waited < silence * 4, "{waited:?}");
    assert_eq!(
        index.read().stats().external_secrets,
        0,
        "a partial list is never applied"
    );

    proxy.freeze_after.store(0, Ordering::SeqCst);
    let api = kube::Api::namespaced_with(kube_client(&kc).await, &ns, &ar);
    watch::list(
        &api,
        WatchKind::ExternalSecret,
        &index,
        &metrics,
        Freshness::Consistent,
        silence,
    )
    .await
    .expect("a list on a healthy connection");
    assert_eq!(index.read().stats().external_secrets, 60);
    eprintln!(
        "frozen list failed after {} ms (silence limit {} ms)",
        waited.as_millis(),
        silence.as_millis()
    );
}

#[tokio::test]
async fn a_thousand_notifications_across_a_20s_outage_none_missed() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::on(Stack::private(), "rel-outage").await;
    let params = readers(&stack, &kube, &ns, 50).await;
    change_all(&stack, &params).await;
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Replica::new(
        BIN,
        &stack,
        &[&topic],
        &[
            "--sweep-interval=0s",
            "--request-deadline=5s",
            "--patch-retries=2",
        ],
        &[],
        dir.path(),
    );
    svc.start().await;

    // 1,000 notifications, 20 per parameter, sent over ~25 s by 20 SNS-like senders; the API
    // server is down from 2 s to 22 s. Each is signed and stamped when it is sent, as SNS
    // stamps at publish time: a message stamped before a refresh that ESO already confirmed
    // is answered without a patch, so stamping all of them up front would let the outage go
    // unfelt.
    let key = Arc::new(stack.signing_key());
    let cert_url = stack.cert_url().to_owned();
    let queue = Arc::new(Mutex::new(
        (0..1000)
            .map(|i| (i % 50, params[i % 50].clone()))
            .collect::<Vec<_>>(),
    ));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..20 {
        let (q, url) = (queue.clone(), svc.url());
        let (key, cert_url, topic) = (key.clone(), cert_url.clone(), topic.clone());
        senders.push(tokio::spawn(async move {
            let mut results = Vec::new();
            loop {
                let Some((i, param)) = q.lock().pop() else {
                    return results;
                };
                let event = ssm_resync::sample::parameter_store_change(
                    &param,
                    "Update",
                    "us-east-1",
                    "123456789012",
                );
                let env = ssm_resync::sample::notification(
                    event.to_string(),
                    &topic,
                    &cert_url,
                    Some(&key),
                );
                let b = serde_json::to_string(&env).unwrap();
                let stamped = timestamp_of(&b);
                let (status, body, attempts) = deliver(
                    url.clone(),
                    b,
                    Duration::from_millis(500),
                    Duration::from_secs(90),
                )
                .await;
                results.push((i, stamped, status, body, attempts));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(20)).await;
    stack.start_apiserver();
    let mut retried = 0;
    let mut answered = 0;
    let mut newest: HashMap<String, OffsetDateTime> = HashMap::new();
    for s in senders {
        for (i, stamped, status, body, attempts) in s.await.unwrap() {
            assert_eq!(status, 200, "{body}");
            answered += 1;
            retried += u32::from(attempts > 1);
            let e = newest.entry(format!("es-{i}")).or_insert(stamped);
            *e = (*e).max(stamped);
        }
    }
    assert_eq!(answered, 1000);
    eprintln!(
        "1000 notifications in {:?}; {retried} needed SNS-style retries",
        started.elapsed()
    );
    assert!(retried > 0, "the outage was felt");
    assert_none_missed(&kube, &ns, &newest).await;
    assert_secrets_final(&kube, &ns, 50).await;
}

#[tokio::test]
async fn kill_9_mid_burst_then_redelivery_none_missed() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("rel-kill").await;
    let params = readers(&stack, &kube, &ns, 30).await;
    change_all(&stack, &params).await;
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Replica::new(
        BIN,
        &stack,
        &[&topic],
        &["--sweep-interval=0s"],
        &[],
        dir.path(),
    );
    svc.start().await;
    let mut newest: HashMap<String, OffsetDateTime> = HashMap::new();
    let mut bodies = Vec::new();
    for i in 0..300 {
        let b = signed_change(&stack, &topic, &params[i % 30]);
        newest.insert(format!("es-{}", i % 30), timestamp_of(&b));
        bodies.push(b);
    }
    let url = svc.url();
    let tasks: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let url = url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
                deliver(url, b, Duration::from_millis(300), Duration::from_secs(60)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    svc.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    svc.start().await;
    let mut retried = 0;
    for t in tasks {
        let (status, body, attempts) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        retried += u32::from(attempts > 1);
    }
    eprintln!("300 notifications; {retried} redelivered after the kill");
    assert!(retried > 0, "the kill was felt");
    assert_none_missed(&kube, &ns, &newest).await;
    assert_secrets_final(&kube, &ns, 30).await;
}

#[tokio::test]
async fn sigterm_fails_readiness_first_and_answers_in_flight_work_honestly() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("rel-term").await;
    let params = readers(&stack, &kube, &ns, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, mut svc) = behind_proxy(
        &stack,
        &topic,
        &["--sweep-interval=0s", "--request-deadline=6s"],
        dir.path(),
    )
    .await;
    svc.start().await;
    // Warm the patch connection, then freeze it so the next patch hangs in flight.
    let (s, b, _) = deliver(
        svc.url(),
        signed_change(&stack, &topic, &params[0]),
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let before = annotation(&kube, &ns, "es-0", "force-sync").await;
    proxy.freeze_existing();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = svc.url();
    stack.put_parameter(&params[0], "final-0").await;
    let msg = signed_change(&stack, &topic, &params[0]);
    let in_flight = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(format!("{url}/sns"))
            .body(msg)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    Command::new("kill")
        .args(["-TERM", &svc.pid().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = reqwest::get(format!("{}/readyz", svc.admin()))
        .await
        .map(|r| r.status().as_u16());
    assert!(
        matches!(ready, Ok(503) | Err(_)),
        "readiness fails at once after SIGTERM: {ready:?}"
    );
    let (status, body) = in_flight.await.unwrap();
    let after = annotation(&kube, &ns, "es-0", "force-sync").await;
    // Honest either way: 200 only if the patch landed, otherwise 503 for SNS to redeliver.
    match status {
        200 => {
            assert_ne!(after, before, "200 means the patch was applied: {body}");
            assert_secrets_final(&kube, &ns, 1).await;
        }
        503 => {}
        other => panic!("in-flight request answered {other}: {body}"),
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while svc.try_wait().is_none() {
        assert!(
            Instant::now() < deadline,
            "no exit within the deadline after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "SIGTERM: in-flight answered {status}, exit after {:?}",
        t0.elapsed()
    );
}

/// Parameters changed while no service listened (no SNS message at all): the catch-up sweep
/// finds the readers whose ESO `status.refreshTime` is older than the parameter's
/// LastModifiedDate and forces them, and their Secrets catch up; the reader whose parameter
/// did not change is left alone. Two other regions fail meanwhile: one that is no region, and
/// one whose endpoint answers and never finishes (until the 60 s operation timeout). Neither
/// holds up the catch-up of the region that answers.
#[tokio::test]
async fn changes_made_while_down_are_caught_up_by_the_sweep() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::on(Stack::private(), "rel-sweep").await;
    let base = param(&format!("/{ns}"));
    let params: Vec<String> = (0..3).map(|i| format!("{base}/{i}")).collect();
    for p in &params {
        stack.put_parameter(p, &initial(p)).await;
    }
    // ESO's refreshTime has whole seconds: a sync in the same second as the parameter's
    // creation would look older than it (the sweep then re-syncs once, harmlessly; here it
    // would blur what is asserted).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (i, p) in params.iter().enumerate() {
        external_secret(&kube, &ns, &format!("es-{i}"), "aws", &[p]).await;
        wait_secret(
            &kube,
            &ns,
            &format!("es-{i}"),
            "k0",
            &initial(p),
            Duration::from_secs(30),
        )
        .await;
    }
    // A tenant's store naming a region that is no region: its readers cannot be swept, the
    // others still are. ESO's validating webhook refuses such a store ("region not found"),
    // but not every cluster runs it (the chart's webhook.create=false), ClusterSecretStores of
    // other controllers and KES's spec.region have none, and an existing region that is not
    // enabled or denied by policy passes it: here the webhook is removed from this private
    // stack so the store gets in.
    let vwcs: kube::Api<
        k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    > = kube::Api::all(kube.clone());
    vwcs.delete("secretstore-validate", &Default::default())
        .await
        .expect("ESO's SecretStore webhook configuration");
    let tenant = namespace(&kube, "rel-sweep-tenant").await;
    create(&kube, &ss_resource(), &tenant, json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "aws", "namespace": tenant},
        "spec": {"provider": {"aws": {"service": "ParameterStore", "region": "us-east-1.evil.example.com"}}}
    })).await;
    external_secret(&kube, &tenant, "elsewhere", "aws", &[&params[0]]).await;
    // A region whose endpoint trickles: every request signed for eu-west-3 gets a body that
    // never ends; the others are passed to moto.
    secret_store(&kube, &tenant, "slow", "eu-west-3").await;
    external_secret(&kube, &tenant, "slow", "slow", &[&params[1]]).await;
    let (endpoint, trickled) = trickling_endpoint(Some((
        "eu-west-3",
        stack.get("AWS_ENDPOINT_URL").to_owned(),
    )))
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // es-0 and es-1 change while nobody listens; es-2 does not.
    for p in &params[..2] {
        stack
            .put_parameter(p, "rotated while nobody listened")
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let lease = format!("sweep-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut svc = Replica::new(
        BIN,
        &stack,
        &[&topic],
        &[
            &format!("--sweep-lease={lease}"),
            "--lease-duration=3s",
            "--sweep-interval=10m",
        ],
        &[("AWS_ENDPOINT_URL", &endpoint)],
        dir.path(),
    );
    let t0 = Instant::now();
    svc.start().await;
    for i in 0..2 {
        wait_secret(
            &kube,
            &ns,
            &format!("es-{i}"),
            "k0",
            "rotated while nobody listened",
            Duration::from_secs(30),
        )
        .await;
    }
    let caught_up = t0.elapsed();
    // The slow region's request went out beside the others (a loaded machine may take a
    // moment to show it); its answer is due only at the 60 s operation timeout.
    while trickled.load(Ordering::Relaxed) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the slow region was never described"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        svc.metric(r#"ssm_resync_sweep_runs_total{result="partial"}"#)
            .await,
        0.0,
        "caught up while the slow region was still being described"
    );
    while svc
        .metric(r#"ssm_resync_sweep_runs_total{result="partial"}"#)
        .await
        < 1.0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the sweep did not end"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "sweep: caught up after {caught_up:?}; the slow region failed and the sweep ended after {:?}",
        t0.elapsed()
    );
    assert_eq!(
        annotation(&kube, &ns, "es-2", "force-sync").await,
        None,
        "in sync: left alone"
    );
    assert_secret(&kube, &ns, "es-2", "k0", &initial(&params[2])).await;
    assert!(
        svc.metric(r#"ssm_resync_sweep_api_calls_total{result="ok"}"#)
            .await
            >= 1.0
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        2.0,
        "no SNS message was sent"
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_sweep_runs_total{result="partial"}"#)
            .await,
        1.0,
        "two regions failed, the sweep went on"
    );
    assert_eq!(svc.metric("ssm_resync_sweep_failed_regions").await, 2.0);
    assert!(
        svc.logs().contains("is not an AWS region name"),
        "the failing region is named"
    );
}

/// An AWS endpoint that answers 200 and then trickles its body a byte every half second:
/// fast enough for the SDK's stalled-stream protection (which ends a silent response after a
/// few seconds), slow enough never to end. Only an operation timeout ends that call: the sweep
/// ends and says so, and the service stays ready. Without one the sweep, the safety net of
/// lost deliveries, would wait for ever.
#[tokio::test]
async fn a_trickling_aws_endpoint_fails_the_sweep_instead_of_stalling_it() {
    let stack = Stack::shared();
    let topic = stack
        .topic(&format!("rel-trickle-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let kube = stack.kube().await;
    let ns = namespace(&kube, "rel-trickle").await;
    secret_store(&kube, &ns, "aws", "us-east-1").await;
    let p = param("/rel/trickle");
    external_secret(&kube, &ns, "r", "aws", &[&p]).await;
    let (endpoint, connections) = trickling_endpoint(None).await;
    let svc = Service::start_with(
        BIN,
        &stack,
        &[&topic],
        &["--sweep-interval=1h", "--sweep-lease="],
        &[("AWS_ENDPOINT_URL", &endpoint)],
    )
    .await;
    let t0 = Instant::now();
    // The shared stack may hold stores of other regions, all sent to the same endpoint: the
    // sweep ends as `error` or, if some region was answered by nothing, `partial`.
    while svc
        .metric(r#"ssm_resync_sweep_runs_total{result="error"}"#)
        .await
        + svc
            .metric(r#"ssm_resync_sweep_runs_total{result="partial"}"#)
            .await
        < 1.0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the sweep did not end: {} connection(s) to the trickling endpoint",
            connections.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "sweep against a trickling endpoint ended after {:?}, {} connection(s)",
        t0.elapsed(),
        connections.load(Ordering::Relaxed)
    );
    assert!(connections.load(Ordering::Relaxed) >= 1);
    assert!(
        svc.metric("ssm_resync_sweep_failed_regions").await >= 1.0,
        "us-east-1 is counted as failed"
    );
    let ready = reqwest::get(format!("{}/readyz", svc.admin)).await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// `http://127.0.0.1:<port>`: reads a request, answers `200` with a large Content-Length, then
/// sends its body a byte every 500 ms; counts those connections. With `Some((region,
/// upstream))` only requests signed for `region` are answered so; any other is passed to
/// `upstream`, one request per connection (so a kept-alive connection never carries two
/// regions' requests).
async fn trickling_endpoint(
    only: Option<(&'static str, String)>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    let only = Arc::new(only);
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = listener.accept().await else {
                return;
            };
            let (count, only) = (count.clone(), only.clone());
            tokio::spawn(async move {
                let Some((request, head_end)) = read_request(&mut c).await else {
                    return;
                };
                if let Some((region, upstream)) = only.as_ref()
                    && signing_region(&request) != Some(*region)
                {
                    pass_on(c, &request, head_end, upstream).await;
                    return;
                }
                count.fetch_add(1, Ordering::Relaxed);
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 1000000\r\n\r\n{";
                if c.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if c.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, n)
}

/// One HTTP/1.1 request: its head and a body of its Content-Length, and where its head ends
/// (after the blank line).
async fn read_request(c: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, usize)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let k = c.read(&mut chunk).await.ok().filter(|&k| k > 0)?;
        buf.extend_from_slice(&chunk[..k]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    while buf.len() < head_end + length {
        let k = c.read(&mut chunk).await.ok().filter(|&k| k > 0)?;
        buf.extend_from_slice(&chunk[..k]);
    }
    Some((buf, head_end))
}

/// The region of a SigV4 request's credential scope (`Credential=AKID/date/region/...`).
fn signing_region(request: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(request).ok()?;
    let scope = text.split("Credential=").nth(1)?;
    scope.split('/').nth(2)
}

/// Sends `request` to `upstream` (`http://host:port`) asking it to close after its answer,
/// and copies the answer back.
async fn pass_on(mut c: tokio::net::TcpStream, request: &[u8], head_end: usize, upstream: &str) {
    let Ok(mut up) = tokio::net::TcpStream::connect(upstream.trim_start_matches("http://")).await
    else {
        return;
    };
    // The extra header goes before the blank line that ends the head.
    let mut sent = request[..head_end - 2].to_vec();
    sent.extend_from_slice(b"Connection: close\r\n\r\n");
    sent.extend_from_slice(&request[head_end..]);
    if up.write_all(&sent).await.is_err() {
        return;
    }
    let _ = tokio::io::copy(&mut up, &mut c).await;
    let _ = c.shutdown().await;
}

#[tokio::test]
async fn two_replicas_one_sweeps_and_the_other_takes_over() {
    // Private: a sweep every second would force the shared cluster's readers.
    let stack = Stack::private();
    let topic = stack
        .topic(&format!("rel-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let lease = format!("ha-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let args = [
        format!("--sweep-lease={lease}"),
        "--lease-duration=3s".into(),
        "--sweep-interval=1s".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Replica::new(
        BIN,
        &stack,
        &[&topic],
        &args,
        &[("POD_NAME", "replica-a")],
        dir.path(),
    );
    let mut b = Replica::new(
        BIN,
        &stack,
        &[&topic],
        &args,
        &[("POD_NAME", "replica-b")],
        dir.path(),
    );
    a.start().await;
    b.start().await;
    let leader_of = async |r: &Replica| r.metric("ssm_resync_sweep_leader").await == 1.0;
    let deadline = Instant::now() + Duration::from_secs(15);
    let (la, lb) = loop {
        let (la, lb) = (leader_of(&a).await, leader_of(&b).await);
        if la || lb {
            break (la, lb);
        }
        assert!(Instant::now() < deadline, "no replica took the lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(la != lb, "exactly one leader (a={la}, b={lb})");
    let (leader, follower) = if la {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(
        follower
            .metric(r#"ssm_resync_sweep_runs_total{result="ok"}"#)
            .await,
        0.0,
        "the follower does not sweep"
    );
    // Both serve the webhook meanwhile.
    for r in [&*leader, &*follower] {
        let (s, body, _) = deliver(
            r.url(),
            signed_change(&stack, &topic, &param("/rel/ha")),
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            (s, body["result"].as_str()),
            (200, Some("no_match")),
            "{body}"
        );
    }
    leader.kill9();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(20);
    while follower
        .metric(r#"ssm_resync_sweep_runs_total{result="ok"}"#)
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the follower never took over:\n{}",
            follower.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("take-over after {:?} (lease 3 s)", t0.elapsed());
}

//! The certificate fetch path, on real HTTPS over loopback: a TLS server (its own CA,
//! a certificate for `sns.<region>.amazonaws.com`) stands in for AWS, reached through a DNS
//! override; the URL policy itself is unchanged. Proves single-flight, caching until notAfter,
//! the size cap, the timeout, no redirects, and that every malformed certificate body is
//! rejected with its reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ssm_resync::sns::cert::{CertStoreConfig, TestTls};
use ssm_resync::sns::sign::{DevCert, SigningKey, cert_with, dev_cert};
use ssm_resync::sns::{CertStore, Envelope, TopicPolicy, Verifier};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:hostile";

#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    delay: Duration,
    extra_headers: String,
}

impl Reply {
    fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
            extra_headers: String::new(),
        }
    }
}

/// A minimal HTTPS/1.1 server: one reply per path, every request counted.
struct FakeSns {
    addr: SocketAddr,
    root_pem: String,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<AtomicUsize>,
}

impl FakeSns {
    async fn start() -> Self {
        let (acceptor, root_pem) = ssm_resync_harness::fake_sns::tls_acceptor(&[
            "sns.us-east-1.amazonaws.com",
            "sns.eu-west-1.amazonaws.com",
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (r, h) = (replies.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, replies, hits) = (acceptor.clone(), r.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    let line = String::from_utf8_lossy(&req);
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let reply = replies.lock().get(&path).cloned().unwrap_or(Reply {
                        status: 404,
                        body: b"<Error>NotFound</Error>".to_vec(),
                        delay: Duration::ZERO,
                        extra_headers: String::new(),
                    });
                    tokio::time::sleep(reply.delay).await;
                    let head = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
                        reply.status,
                        reply.body.len(),
                        reply.extra_headers
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&reply.body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        FakeSns {
            addr,
            root_pem,
            replies,
            hits,
        }
    }

    fn serve(&self, name: &str, reply: Reply) -> String {
        self.replies.lock().insert(format!("/{name}"), reply);
        format!("https://sns.us-east-1.amazonaws.com/{name}")
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// A verifier fetching from this server. The fetch rate is not limited here (these tests
    /// fetch many URLs on purpose; `tests/serial/attacks.rs` tests the limit) and failures are
    /// remembered for 300 ms.
    fn verifier(&self, timeout: Duration) -> Verifier {
        let certs = CertStore::new(CertStoreConfig {
            fetch_timeout: timeout,
            failure_ttl: FAILURE_TTL,
            fetch_burst: 10_000,
            fetch_interval: Duration::from_millis(1),
            max_fetches_in_flight: 64,
            test_tls: Some(TestTls {
                resolve: vec![
                    ("sns.us-east-1.amazonaws.com".into(), self.addr),
                    ("sns.eu-west-1.amazonaws.com".into(), self.addr),
                ],
                root_pem: self.root_pem.clone().into_bytes(),
            }),
            ..Default::default()
        });
        Verifier::new(TopicPolicy::new(&[TOPIC]).unwrap(), Arc::new(certs))
    }
}

const FAILURE_TTL: Duration = Duration::from_millis(300);

fn hex_name(n: u32) -> String {
    format!("SimpleNotificationService-{n:032x}.pem")
}

fn signed(cert: &DevCert, url: &str) -> Envelope {
    let key = SigningKey::from_pem(&cert.key_pem).unwrap();
    ssm_resync::sample::notification("{\"hello\":1}".into(), TOPIC, url, Some(&key))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[tokio::test]
async fn a_hundred_concurrent_messages_cause_one_fetch_then_the_cache_answers() {
    let sns = FakeSns::start().await;
    let cert = dev_cert(30).unwrap();
    let url = sns.serve(
        &hex_name(1),
        Reply {
            delay: Duration::from_millis(200),
            ..Reply::ok(cert.cert_pem.clone())
        },
    );
    let verifier = Arc::new(sns.verifier(Duration::from_secs(5)));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (v, env) = (verifier.clone(), signed(&cert, &url));
        tasks.push(tokio::spawn(async move { v.verify(&env, now()).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(sns.hits(), 1, "single-flight: one fetch for 100 messages");
    verifier.verify(&signed(&cert, &url), now()).await.unwrap();
    assert_eq!(sns.hits(), 1, "cached by URL");
}

#[tokio::test]
async fn cached_certificate_expires_at_its_not_after() {
    let sns = FakeSns::start().await;
    let cert = cert_with(
        "sns.amazonaws.com",
        now() - time::Duration::days(1),
        now() + time::Duration::seconds(2),
    )
    .unwrap();
    let url = sns.serve(&hex_name(2), Reply::ok(cert.cert_pem.clone()));
    let verifier = sns.verifier(Duration::from_secs(5));
    verifier.verify(&signed(&cert, &url), now()).await.unwrap();
    verifier.verify(&signed(&cert, &url), now()).await.unwrap();
    assert_eq!(sns.hits(), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = verifier
        .verify(&signed(&cert, &url), now())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "cert_invalid", "{err}");
    assert_eq!(
        sns.hits(),
        2,
        "the expired entry left the cache and was fetched again"
    );
}

#[tokio::test]
async fn malformed_certificate_bodies_are_rejected_by_name() {
    let sns = FakeSns::start().await;
    let good = dev_cert(30).unwrap();
    let other = dev_cert(30).unwrap();
    let pem = good.cert_pem.trim().to_owned();
    let wrong_cn = cert_with(
        "evil.example",
        now() - time::Duration::days(1),
        now() + time::Duration::days(1),
    )
    .unwrap();
    let regional_east = cert_with(
        "sns-signing.us-east-1.amazonaws.com",
        now() - time::Duration::days(1),
        now() + time::Duration::days(1),
    )
    .unwrap();
    let regional_west = cert_with(
        "sns-signing.eu-west-1.amazonaws.com",
        now() - time::Duration::days(1),
        now() + time::Duration::days(1),
    )
    .unwrap();
    let expired = cert_with(
        "sns.amazonaws.com",
        now() - time::Duration::days(10),
        now() - time::Duration::days(1),
    )
    .unwrap();
    let future = cert_with(
        "sns.amazonaws.com",
        now() + time::Duration::days(1),
        now() + time::Duration::days(10),
    )
    .unwrap();
    let big = format!("{pem}\n{}", " ".repeat(20 * 1024));
    let cases: Vec<(&str, &DevCert, Reply, &str)> = vec![
        (
            "xml-wrapped PEM",
            &good,
            Reply::ok(format!("<?xml version=\"1.0\"?><Cert>{pem}</Cert>")),
            "cert_invalid",
        ),
        (
            "two certificates",
            &good,
            Reply::ok(format!("{pem}\n{}", other.cert_pem)),
            "cert_invalid",
        ),
        (
            "garbage",
            &good,
            Reply::ok("not a certificate at all"),
            "cert_invalid",
        ),
        ("empty body", &good, Reply::ok(""), "cert_invalid"),
        (
            "PEM of a private key",
            &good,
            Reply::ok(good.key_pem.clone()),
            "cert_invalid",
        ),
        (
            "truncated PEM",
            &good,
            Reply::ok(pem[..pem.len() / 2].to_owned()),
            "cert_invalid",
        ),
        (
            "body over the size cap",
            &good,
            Reply::ok(big),
            "cert_invalid",
        ),
        (
            "wrong subject CN",
            &wrong_cn,
            Reply::ok(wrong_cn.cert_pem.clone()),
            "cert_invalid",
        ),
        (
            "regional CN of another region",
            &regional_west,
            Reply::ok(regional_west.cert_pem.clone()),
            "cert_invalid",
        ),
        (
            "expired",
            &expired,
            Reply::ok(expired.cert_pem.clone()),
            "cert_invalid",
        ),
        (
            "not yet valid",
            &future,
            Reply::ok(future.cert_pem.clone()),
            "cert_invalid",
        ),
        (
            "certificate of another key",
            &good,
            Reply::ok(other.cert_pem.clone()),
            "signature_invalid",
        ),
        (
            "404",
            &good,
            Reply {
                status: 404,
                ..Reply::ok("nope")
            },
            "cert_unavailable",
        ),
        (
            "500",
            &good,
            Reply {
                status: 500,
                ..Reply::ok("")
            },
            "cert_unavailable",
        ),
        (
            "redirect is not followed",
            &good,
            Reply {
                status: 302,
                extra_headers: "Location: https://evil.example/x.pem\r\n".into(),
                ..Reply::ok("")
            },
            "cert_unavailable",
        ),
        (
            "slower than the fetch timeout",
            &good,
            Reply {
                delay: Duration::from_secs(3),
                ..Reply::ok(pem.clone())
            },
            "cert_unavailable",
        ),
    ];
    let verifier = sns.verifier(Duration::from_secs(1));
    for (i, (what, key, reply, want)) in cases.into_iter().enumerate() {
        let url = sns.serve(&hex_name(100 + i as u32), reply);
        let err = verifier
            .verify(&signed(key, &url), now())
            .await
            .expect_err(what);
        assert_eq!(err.reason(), want, "{what}: {err}");
    }
    // The opt-in-region subject is accepted for its own region.
    let url = sns.serve(&hex_name(99), Reply::ok(regional_east.cert_pem.clone()));
    verifier
        .verify(&signed(&regional_east, &url), now())
        .await
        .unwrap();
}

/// A failed fetch is remembered briefly (a stream of messages naming a URL that serves no
/// certificate costs one request), then tried again (a transient failure heals).
#[tokio::test]
async fn a_failed_fetch_is_remembered_briefly_then_retried() {
    let sns = FakeSns::start().await;
    let cert = dev_cert(30).unwrap();
    let name = hex_name(3);
    let url = sns.serve(
        &name,
        Reply {
            status: 503,
            ..Reply::ok("")
        },
    );
    let verifier = sns.verifier(Duration::from_secs(5));
    for _ in 0..10 {
        assert_eq!(
            verifier
                .verify(&signed(&cert, &url), now())
                .await
                .unwrap_err()
                .reason(),
            "cert_unavailable"
        );
    }
    assert_eq!(sns.hits(), 1, "the failure was not remembered");
    sns.serve(&name, Reply::ok(cert.cert_pem.clone()));
    tokio::time::sleep(FAILURE_TTL + Duration::from_millis(100)).await;
    verifier.verify(&signed(&cert, &url), now()).await.unwrap();
    assert_eq!(sns.hits(), 2);
}

#[tokio::test]
async fn urls_outside_the_policy_are_never_fetched() {
    let sns = FakeSns::start().await;
    let cert = dev_cert(30).unwrap();
    sns.serve(&hex_name(4), Reply::ok(cert.cert_pem.clone()));
    let verifier = sns.verifier(Duration::from_secs(5));
    for url in [
        format!("http://sns.us-east-1.amazonaws.com/{}", hex_name(4)),
        format!("https://sns.us-east-1.amazonaws.com:443/{}", hex_name(4)),
        format!("https://sns.us-east-1.amazonaws.com/{}?x=.pem", hex_name(4)),
        format!("https://sns.us-east-1.amazonaws.com/x/../{}", hex_name(4)),
    ] {
        let err = verifier
            .verify(&signed(&cert, &url), now())
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "cert_url_rejected", "{url}");
    }
    assert_eq!(sns.hits(), 0);
}

/// The reserve of fetches: a URL named once never gets it; the URL named again by the most
/// distinct deliveries does, and when its own retry is not there to take a freed reserve token,
/// any refused delivery starts its fetch (so the next retry finds it cached). Half the budget
/// (here a burst of 1 and one per 2 s) is first come, first served, half the reserve.
#[tokio::test]
async fn the_reserve_goes_to_the_url_most_deliveries_ask_for() {
    let sns = FakeSns::start().await;
    let genuine = dev_cert(30).unwrap();
    let url = sns.serve(&hex_name(0x9e), Reply::ok(genuine.cert_pem.clone()));
    let fresh = |n: u32| {
        format!(
            "https://sns.us-east-1.amazonaws.com/{}",
            hex_name(0xf00 + n)
        )
    };
    let certs = CertStore::new(CertStoreConfig {
        fetch_burst: 2,
        fetch_interval: Duration::from_secs(1),
        max_fetches_in_flight: 2,
        test_tls: Some(TestTls {
            resolve: vec![("sns.us-east-1.amazonaws.com".into(), sns.addr)],
            root_pem: sns.root_pem.clone().into_bytes(),
        }),
        ..Default::default()
    });
    let verifier = Verifier::new(TopicPolicy::new(&[TOPIC]).unwrap(), Arc::new(certs));
    let reason = |r: Result<OffsetDateTime, ssm_resync::sns::Reject>| match r {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    };
    // A fresh URL takes the first-come token (404: unavailable); the next fresh one is limited.
    assert_eq!(
        reason(verifier.verify(&signed(&genuine, &fresh(1)), now()).await),
        "cert_unavailable"
    );
    assert_eq!(
        reason(verifier.verify(&signed(&genuine, &fresh(2)), now()).await),
        "cert_fetch_limited"
    );
    // A stuffed URL (two forged deliveries) wins the reserve once, and fails.
    let stuffed = fresh(3);
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(reason(
            verifier.verify(&signed(&genuine, &stuffed), now()).await,
        ));
    }
    assert_eq!(outcomes, ["cert_fetch_limited", "cert_unavailable"]);
    // The genuine delivery and its retry: the reserve is spent, so it waits at the top.
    let delivery = signed(&genuine, &url);
    for _ in 0..2 {
        assert_eq!(
            reason(verifier.verify(&delivery, now()).await),
            "cert_fetch_limited"
        );
    }
    assert_eq!(sns.hits(), 2);
    // Both halves refill (2 s); a fresh URL takes the first-come token, the next one is
    // refused and starts the genuine URL's fetch with the reserve's.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        reason(verifier.verify(&signed(&genuine, &fresh(4)), now()).await),
        "cert_unavailable"
    );
    assert_eq!(
        reason(verifier.verify(&signed(&genuine, &fresh(5)), now()).await),
        "cert_fetch_limited"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sns.hits(),
        4,
        "the genuine URL was fetched on another delivery's behalf"
    );
    // SNS's next retry finds it cached.
    assert_eq!(reason(verifier.verify(&delivery, now()).await), "ok");
    assert_eq!(sns.hits(), 4);
}

//! What an outsider who can reach the public port can hold of it, with the shipped defaults.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One slow client for as long as `stop` is unset: connects, starts a request head and sends
/// one more byte of it every 2 s, never finishing; connects again when closed.
async fn slow_client(addr: String, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(c) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut r, mut w) = c.into_split();
        if w.write_all(b"POST /sns HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .is_err()
        {
            continue;
        }
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                n = r.read(&mut buf) => if matches!(n, Ok(0) | Err(_)) { break },
                () = tokio::time::sleep(Duration::from_secs(2)) => {
                    if stop.load(Ordering::Relaxed) || w.write_all(b"a").await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// The review's attack on the connection cap: 2,000 slow clients (four times the shipped
/// `--max-connections` of 512), each trickling a request head and reconnecting when cut, for
/// 60 s. A slot held to the 10 s read timeout let about 51 such connections a second keep the
/// cap full, so a genuine delivery waited in the accept queue behind them past SNS's 15 s
/// timeout. Now a connection without a complete head a second after it was accepted gives
/// its slot back while others wait: every genuine delivery (one a second, each on a new
/// connection, as SNS sends them) is applied within 15 s.
#[tokio::test]
async fn slow_clients_above_the_cap_cannot_keep_genuine_deliveries_out() {
    let _alone = crate::ALONE.lock().await;
    let s = Scenario::new("out-cap").await;
    let p = param("/out/cap");
    synced_reader(&s.stack, &s.kube, &s.ns, "db", &[&p]).await;
    let bin = std::env::var("ATTACK_SERVICE_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| BIN.to_owned());
    let svc = Service::start(&bin, &s.stack, &[&s.topic], &[]).await;
    let addr = svc
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..2_000)
        .map(|_| tokio::spawn(slow_client(addr.clone(), stop.clone())))
        .collect();
    // Let them fill the cap and the accept queue.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seconds: u64 = std::env::var("ATTACK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let started = Instant::now();
    let mut deliveries = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        let (url, body) = (svc.url.clone(), signed_change(&s.stack, &s.topic, &p));
        deliveries.push(tokio::spawn(async move {
            let sent = Instant::now();
            // SNS's HTTP timeout: 15 s per attempt.
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let (status, answer) = post(&client, &format!("{url}/sns"), body).await;
            (status, answer, sent.elapsed())
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut latencies = Vec::new();
    let mut failed = Vec::new();
    for d in deliveries {
        let (status, answer, took) = d.await.unwrap();
        if status == 200 && answer["result"] == "applied" {
            latencies.push(took);
        } else {
            failed.push(format!("{status} {answer} after {took:?}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.abort();
    }
    latencies.sort();
    let evicted = svc.metric("ssm_resync_connections_evicted_total").await;
    eprintln!(
        "2000 slow clients for {seconds} s: {} genuine deliveries applied within 15 s, {} not; median {:?}, max {:?}; {evicted} connections evicted",
        latencies.len(),
        failed.len(),
        latencies.get(latencies.len() / 2),
        latencies.last()
    );
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(evicted > 0.0);
}

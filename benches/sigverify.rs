//! Figure 1: SNS signature verification with the certificate cached, per core, next to
//! `openssl speed -seconds 3 rsa2048` verifies/s measured in the same run (interleaved).
//!
//! - SignatureVersion 1 (SHA-1): the genuine AWS-signed fixtures of tests/data/sns/aws-real,
//!   each verified at its own Timestamp with its certificate pinned (we cannot sign SHA-1).
//! - SignatureVersion 2 (SHA-256): a Parameter Store Change notification signed with
//!   `sns::sign` and a dev certificate.
//!
//! Each is measured twice: the full `Verifier::verify` (topic check, age check, base64,
//! string to sign, URL policy, certificate lookup, subject and validity, RSA) and the raw
//! RSA verify alone (`SigningCert::verify`: the hash of the string to sign plus the RSA
//! public-key operation), so the overhead is the difference. Rates are per CPU-second of the
//! measuring thread (as openssl reports them), single-threaded: per core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ssm_resync::sns::{CertStore, Envelope, SigningCert, TopicPolicy, Verifier};
use ssm_resync_harness::bench::{self, Row, median, thread_cpu_seconds};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sns/aws-real");
const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_millis(1500);

struct Case {
    env: Envelope,
    body: Vec<u8>,
    now: OffsetDateTime,
    cert: Arc<SigningCert>,
    sts: Vec<u8>,
    sig: Vec<u8>,
}

fn fixture_cases() -> (Vec<Case>, Verifier) {
    let mut cases = Vec::new();
    let mut store = CertStore::new(Default::default());
    let mut topics = Vec::new();
    for (file, cert) in [
        (
            "notifications-2022-us-east-2.json",
            "SimpleNotificationService-7ff53184-2022.pem",
        ),
        (
            "notifications-2017-us-west-2.json",
            "SimpleNotificationService-b95095be-2017.pem",
        ),
    ] {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).unwrap();
        let cert_pem = std::fs::read(format!("{FIXTURES}/{cert}")).unwrap();
        let signing = Arc::new(SigningCert::from_pem(&cert_pem).unwrap());
        let bodies: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        let mut pinned = false;
        for b in bodies {
            let body = serde_json::to_vec(&b).unwrap();
            let env = Envelope::parse(&body).unwrap();
            if env.signature_version != "1" {
                continue;
            }
            if !pinned {
                store
                    .pin_spec(&format!("{}={FIXTURES}/{cert}", env.signing_cert_url))
                    .unwrap();
                pinned = true;
            }
            topics.push(env.topic_arn.clone());
            cases.push(Case {
                now: OffsetDateTime::parse(&env.timestamp, &Rfc3339).unwrap(),
                sts: env.string_to_sign().unwrap().into_bytes(),
                sig: base64::engine::general_purpose::STANDARD
                    .decode(&env.signature)
                    .unwrap(),
                cert: signing.clone(),
                body,
                env,
            });
        }
    }
    let verifier = Verifier::new(TopicPolicy::new(&topics).unwrap(), Arc::new(store));
    (cases, verifier)
}

fn v2_case() -> (Vec<Case>, Verifier) {
    let dev = bench::DevKey::ensure();
    let topic = "arn:aws:sns:us-east-1:123456789012:ssm-resync-bench";
    let now = OffsetDateTime::now_utc();
    let body = dev.change(topic, "/bench/sigverify/db/password", now);
    let env = Envelope::parse(body.as_bytes()).unwrap();
    let mut store = CertStore::new(Default::default());
    store
        .pin_spec(&format!("{}={}", bench::CERT_URL, dev.cert_path.display()))
        .unwrap();
    let cert = Arc::new(SigningCert::from_pem(&std::fs::read(&dev.cert_path).unwrap()).unwrap());
    let case = Case {
        now,
        sts: env.string_to_sign().unwrap().into_bytes(),
        sig: base64::engine::general_purpose::STANDARD
            .decode(&env.signature)
            .unwrap(),
        cert,
        body: body.into_bytes(),
        env,
    };
    let verifier = Verifier::new(TopicPolicy::new(&[topic]).unwrap(), Arc::new(store));
    (vec![case], verifier)
}

/// Calls `f` (which does `batch` verifications) for ROUND; returns verifications per
/// thread-CPU-second and per wall second.
fn rate(batch: usize, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm
    let (cpu0, t0) = (thread_cpu_seconds(), Instant::now());
    let mut n = 0usize;
    while t0.elapsed() < ROUND {
        f();
        n += batch;
    }
    let (cpu, wall) = (thread_cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    (n as f64 / cpu, n as f64 / wall)
}

fn raw(cases: &[Case], sha256: bool) -> (f64, f64) {
    rate(cases.len() * 64, || {
        for _ in 0..64 {
            for c in cases {
                assert!(c.cert.verify(sha256, &c.sts, &c.sig));
            }
        }
    })
}

fn full(cases: &[Case], v: &Verifier) -> (f64, f64) {
    rate(cases.len() * 64, || {
        futures::executor::block_on(async {
            for _ in 0..64 {
                for c in cases {
                    v.verify(&c.env, c.now).await.expect("verifies");
                }
            }
        })
    })
}

fn parse_and_full(cases: &[Case], v: &Verifier) -> (f64, f64) {
    rate(cases.len() * 64, || {
        futures::executor::block_on(async {
            for _ in 0..64 {
                for c in cases {
                    let env = Envelope::parse(&c.body).unwrap();
                    v.verify(&env, c.now).await.expect("verifies");
                }
            }
        })
    })
}

/// `openssl speed -seconds 3 rsa2048`: the verify/s column of the last line
/// (`rsa 2048 bits 0.000258s 0.000016s   3876.8  60622.8`); openssl times CPU, single process.
fn openssl_verifies() -> f64 {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()
        .expect("running openssl speed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with("rsa 2048 bits") || l.starts_with("rsa  2048 bits"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("could not parse openssl speed output:\n{text}"))
}

fn main() {
    let (v1, v1_verifier) = fixture_cases();
    let (v2, v2_verifier) = v2_case();
    assert_eq!(v1.len(), 4, "the four SignatureVersion 1 AWS fixtures");
    // Everything verifies before anything is timed.
    for c in &v1 {
        futures::executor::block_on(v1_verifier.verify(&c.env, c.now)).expect("AWS fixture");
    }

    let names = ["v1 raw", "v1 full", "v2 raw", "v2 full", "v2 parse+full"];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut openssl = Vec::new();
    for round in 0..ROUNDS {
        openssl.push(openssl_verifies());
        let results = [
            raw(&v1, false),
            full(&v1, &v1_verifier),
            raw(&v2, true),
            full(&v2, &v2_verifier),
            parse_and_full(&v2, &v2_verifier),
        ];
        for (i, (c, w)) in results.into_iter().enumerate() {
            cpu[i].push(c);
            wall[i].push(w);
        }
        eprintln!(
            "round {round}: openssl {:.0}/s; {}",
            openssl[round],
            names
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{n} {:.0}/s", cpu[i][round]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let base = median(&openssl);
    let m: Vec<f64> = cpu.iter().map(|v| median(v)).collect();
    let us = |r: f64| 1e6 / r;
    let label = "openssl speed rsa2048 verify/s";
    let note = |i: usize, raw: usize| {
        format!(
            "{:.1} µs per verify, {:.1} µs of it outside RSA; wall-clock rate {:.0}/s; openssl runs {:?}",
            us(m[i]),
            us(m[i]) - us(m[raw]),
            median(&wall[i]),
            openssl.iter().map(|v| v.round()).collect::<Vec<_>>()
        )
    };
    Row::new(
        "1a",
        "SNS verify v1 (SHA-1), raw RSA only",
        m[0],
        "verifies/s/core",
    )
    .baseline(base, label)
    .note(format!("{:.1} µs per verify; AWS fixtures", us(m[0])))
    .emit();
    Row::new(
        "1b",
        "SNS verify v1 (SHA-1), full Verifier::verify",
        m[1],
        "verifies/s/core",
    )
    .baseline(base, label)
    .target(">= 0.8 x openssl", m[1] >= 0.8 * base)
    .note(note(1, 0))
    .emit();
    Row::new(
        "1c",
        "SNS verify v2 (SHA-256), raw RSA only",
        m[2],
        "verifies/s/core",
    )
    .baseline(base, label)
    .note(format!("{:.1} µs per verify; sns::sign dev key", us(m[2])))
    .emit();
    Row::new(
        "1d",
        "SNS verify v2 (SHA-256), full Verifier::verify",
        m[3],
        "verifies/s/core",
    )
    .baseline(base, label)
    .target(">= 0.8 x openssl", m[3] >= 0.8 * base)
    .note(note(3, 2))
    .emit();
    Row::new(
        "1e",
        "SNS v2 Envelope::parse + Verifier::verify (info)",
        m[4],
        "verifies/s/core",
    )
    .baseline(base, label)
    .note(note(4, 2))
    .emit();
}

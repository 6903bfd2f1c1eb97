//! Verification against genuine AWS-signed SNS deliveries (tests/data/sns/aws-real, copied
//! from shared/fixtures): every one must verify, and any change to a signed field must not.

use std::sync::Arc;

use serde_json::Value;
use ssm_resync::sns::{CertStore, Envelope, Reject, TopicPolicy, Verifier, cert::CertStoreConfig};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sns/aws-real");

struct Set {
    file: &'static str,
    cert: &'static str,
}

const SETS: &[Set] = &[
    Set {
        file: "notifications-2022-us-east-2.json",
        cert: "SimpleNotificationService-7ff53184-2022.pem",
    },
    Set {
        file: "notifications-2017-us-west-2.json",
        cert: "SimpleNotificationService-b95095be-2017.pem",
    },
    // The VeriSign-issued certificate of 2014–2015, whose subject CN is a T61String.
    Set {
        file: "notifications-2015-us-east-1.json",
        cert: "SimpleNotificationService-d6d679a1-2015.pem",
    },
];

/// Every fixture body (as raw JSON text, exactly as SNS sent it), with a verifier that has the
/// set's certificate pinned at the URL the messages name.
fn fixtures() -> Vec<(String, Arc<Verifier>)> {
    let mut out = Vec::new();
    for set in SETS {
        let text = std::fs::read_to_string(format!("{DIR}/{}", set.file)).unwrap();
        let bodies: Vec<Value> = serde_json::from_str(&text).unwrap();
        let mut certs = CertStore::new(CertStoreConfig::default());
        let url = bodies[0]["SigningCertURL"].as_str().unwrap();
        certs
            .pin_spec(&format!("{url}={DIR}/{}", set.cert))
            .unwrap();
        let topics = TopicPolicy::new(&[
            "arn:aws:sns:*:604091128280:*",
            "arn:aws:sns:*:295079676684:*",
            "arn:aws:sns:*:041977924901:*",
        ])
        .unwrap();
        let verifier = Arc::new(Verifier::new(topics, Arc::new(certs)));
        for body in bodies {
            out.push((body.to_string(), verifier.clone()));
        }
    }
    out
}

fn at(env: &Envelope) -> OffsetDateTime {
    OffsetDateTime::parse(&env.timestamp, &Rfc3339).unwrap()
}

#[tokio::test]
async fn every_real_message_verifies_at_its_own_timestamp() {
    let all = fixtures();
    assert_eq!(all.len(), 7);
    let mut versions = std::collections::BTreeSet::new();
    let mut with_subject = 0;
    for (body, verifier) in &all {
        let env = Envelope::parse(body.as_bytes()).unwrap();
        versions.insert(env.signature_version.clone());
        with_subject += usize::from(env.subject.is_some());
        verifier
            .verify(&env, at(&env))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", env.message_id));
    }
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(with_subject, 4);
}

#[tokio::test]
async fn string_to_sign_has_the_documented_order() {
    let (body, _) = &fixtures()[0];
    let env = Envelope::parse(body.as_bytes()).unwrap();
    let sts = env.string_to_sign().unwrap();
    let keys: Vec<&str> = sts.lines().step_by(2).collect();
    let want: &[&str] = if env.subject.is_some() {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &["Message", "MessageId", "Timestamp", "TopicArn", "Type"]
    };
    assert_eq!(keys, want);
    assert!(sts.ends_with("Type\nNotification\n"));
}

#[tokio::test]
async fn tampering_with_any_signed_field_fails() {
    for (body, verifier) in fixtures() {
        let orig = Envelope::parse(body.as_bytes()).unwrap();
        let now = at(&orig);
        let mut cases: Vec<(&str, Envelope)> = Vec::new();
        let mut e = orig.clone();
        e.message.push('!');
        cases.push(("Message", e));
        let mut e = orig.clone();
        e.message_id = e.message_id.replace('a', "b").replace('1', "2");
        cases.push(("MessageId", e));
        let mut e = orig.clone();
        e.timestamp = e.timestamp.replace(".", ".9");
        cases.push(("Timestamp", e));
        let mut e = orig.clone();
        e.topic_arn.push('x');
        cases.push(("TopicArn", e));
        let mut e = orig.clone();
        e.subject = match e.subject {
            Some(_) => None,
            None => Some("added".into()),
        };
        cases.push(("Subject", e));
        let mut e = orig.clone();
        e.signature_version = if e.signature_version == "1" {
            "2".into()
        } else {
            "1".into()
        };
        cases.push(("SignatureVersion relabelled", e));
        for (what, env) in cases {
            let err = verifier.verify(&env, now).await.expect_err(what);
            assert_eq!(err.reason(), "signature_invalid", "{what}: {err}");
        }
    }
}

#[tokio::test]
async fn unsigned_fields_do_not_matter_but_are_not_trusted() {
    // UnsubscribeURL is not signed: changing it keeps the signature valid (so the service
    // must never act on it).
    let (body, verifier) = fixtures().remove(0);
    let mut env = Envelope::parse(body.as_bytes()).unwrap();
    env.unsubscribe_url = Some("https://evil.example/".into());
    verifier.verify(&env, at(&env)).await.unwrap();
}

#[tokio::test]
async fn today_they_are_too_old_and_their_certificates_expired() {
    let (body, _) = fixtures().remove(0);
    let env = Envelope::parse(body.as_bytes()).unwrap();
    let certs = {
        let mut c = CertStore::new(CertStoreConfig::default());
        c.pin_spec(&format!("{}={DIR}/{}", env.signing_cert_url, SETS[0].cert))
            .unwrap();
        Arc::new(c)
    };
    let topics = || TopicPolicy::new(&["arn:aws:sns:*:295079676684:*"]).unwrap();
    // The age check comes first (no certificate work for a replay)...
    let err = Verifier::new(topics(), certs.clone())
        .verify(&env, OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "message_too_old", "{err}");
    // ...and past it, the certificate's validity is checked against the clock.
    let lenient = Verifier::new(topics(), certs)
        .with_max_age(std::time::Duration::from_secs(20 * 365 * 86400));
    let err = lenient
        .verify(&env, OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Reject::CertInvalid(ref m) if m.contains("expired")),
        "{err}"
    );
}

const DEV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sns/dev-signed");

/// The dev-signed message of each partition (tests/data/sns/dev-signed, NOT AWS-signed) with
/// the certificate of region `cert_of` pinned at its SigningCertURL.
async fn verify_dev(region: &str, cert_of: &str) -> Result<(), Reject> {
    let body = std::fs::read(format!("{DEV}/{region}.json")).unwrap();
    let env = Envelope::parse(&body).unwrap();
    let mut certs = CertStore::new(CertStoreConfig::default());
    certs
        .pin_spec(&format!("{}={DEV}/{cert_of}.pem", env.signing_cert_url))
        .unwrap();
    let topics = TopicPolicy::new(&[env.topic_arn.as_str()]).unwrap();
    Verifier::new(topics, Arc::new(certs))
        .verify(&env, at(&env))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn each_partition_verifies_with_its_own_signing_name_only() {
    let regions: Vec<String> = std::fs::read_dir(DEV)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    assert_eq!(regions.len(), 9, "{regions:?}");
    for region in &regions {
        verify_dev(region, region)
            .await
            .unwrap_or_else(|e| panic!("{region}: {e}"));
        // The commercial certificate does not sign for another partition, nor theirs for it.
        if region != "us-east-1" && region != "af-south-1" {
            let err = verify_dev(region, "us-east-1").await.unwrap_err();
            assert_eq!(err.reason(), "cert_invalid", "{region}: {err}");
            let err = verify_dev("us-east-1", region).await;
            assert!(
                err.is_err(),
                "us-east-1 accepted the certificate of {region}"
            );
        }
    }
}

/// `--min-signature-version 2` refuses the real SHA-1 messages with their reason and still
/// verifies the real SHA-256 ones.
#[tokio::test]
async fn a_minimum_signature_version_of_2_refuses_the_real_sha1_messages() {
    let (mut refused, mut verified) = (0, 0);
    for (body, verifier) in fixtures() {
        let strict = Verifier::new(verifier.topics.clone(), verifier.certs.clone())
            .with_min_signature_version(2);
        let env = Envelope::parse(body.as_bytes()).unwrap();
        match (
            env.signature_version.as_str(),
            strict.verify(&env, at(&env)).await,
        ) {
            ("1", Err(r)) => {
                assert_eq!(r.reason(), "unsupported_signature_version");
                assert!(r.to_string().contains("--min-signature-version"), "{r}");
                refused += 1;
            }
            ("2", Ok(_)) => verified += 1,
            (v, other) => panic!("SignatureVersion {v}: {other:?}"),
        }
    }
    assert!(
        refused > 0 && verified > 0,
        "{refused} refused, {verified} verified"
    );
}

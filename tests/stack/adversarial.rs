//! The trust boundary under attack, over real HTTP against the real binary: every case is
//! rejected with its exact reason, nothing is patched, and the service makes no outbound
//! request (its HTTP(S) proxy and its AWS endpoint are counting listeners that must stay
//! silent: no certificate fetch, no SubscribeURL fetch, no ConfirmSubscription).

use std::sync::atomic::Ordering;

use crate::common::*;
use serde_json::{Value, json};
use ssm_resync::sns::sign::{SigningKey, cert_with, sns_timestamp};
use ssm_resync::sns::{Envelope, Reject};
use time::OffsetDateTime;

struct Case {
    name: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    chunked: bool,
    status: u16,
    reason: &'static str,
}

fn to_bytes(env: &Envelope) -> Vec<u8> {
    serde_json::to_vec(env).unwrap()
}

/// A case whose headers are what SNS sends for this body.
fn case(name: &str, env: &Envelope, status: u16, reason: &'static str) -> Case {
    Case {
        name: name.into(),
        headers: sns_headers(env),
        body: to_bytes(env),
        chunked: false,
        status,
        reason,
    }
}

fn raw(name: &str, body: impl Into<Vec<u8>>, status: u16, reason: &'static str) -> Case {
    Case {
        name: name.into(),
        body: body.into(),
        headers: vec![],
        chunked: false,
        status,
        reason,
    }
}

fn sns_headers(env: &Envelope) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "text/plain; charset=UTF-8".into()),
        ("x-amz-sns-message-type".into(), env.kind.clone()),
        ("x-amz-sns-message-id".into(), env.message_id.clone()),
        ("x-amz-sns-topic-arn".into(), env.topic_arn.clone()),
    ]
}

#[tokio::test]
async fn every_hostile_input_is_rejected_by_name_and_changes_nothing() {
    let stack = Stack::shared();
    let kube = stack.kube().await;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let topic = format!("arn:aws:sns:us-east-1:123456789012:adv-{id}");
    let topic2 = format!("arn:aws:sns:us-east-1:123456789012:adv-{id}-2");
    let foreign = "arn:aws:sns:us-east-1:999999999999:attacker";
    let p = param("/adv/db/password");
    let ns = namespace(&kube, "adv").await;
    secret_store(&kube, &ns, "aws", "us-east-1").await;
    external_secret(&kube, &ns, "db", "aws", &[&p]).await;

    // Certificates that are well-formed but must fail their checks, pinned at their own URLs.
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let dir = tempfile::tempdir().unwrap();
    let mut pins = vec![format!(
        "--sns-signing-cert={}",
        stack.get("SSM_RESYNC_SNS_SIGNING_CERT")
    )];
    let mut bad_keys = Vec::new();
    for (i, (cn, from, to)) in [
        ("evil.example", now - day, now + day),
        ("sns.amazonaws.com", now - 10 * day, now - day),
        ("sns.amazonaws.com", now + day, now + 10 * day),
    ]
    .into_iter()
    .enumerate()
    {
        let c = cert_with(cn, from, to).unwrap();
        let path = dir.path().join(format!("c{i}.pem"));
        std::fs::write(&path, &c.cert_pem).unwrap();
        let url = format!(
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{:032x}.pem",
            0xbad0 + i
        );
        pins.push(format!("--sns-signing-cert={url}={}", path.display()));
        bad_keys.push((SigningKey::from_pem(&c.key_pem).unwrap(), url));
    }

    let (proxy, proxy_hits) = counting_listener();
    let (aws, aws_hits) = counting_listener();
    let mut args: Vec<&str> = pins.iter().map(String::as_str).collect();
    args.push("--max-body-bytes=65536");
    // The catch-up sweep calls DescribeParameters on its own schedule; it is not driven by
    // input, and would be counted by the AWS listener below.
    args.push("--sweep-interval=0s");
    let svc = Service::start_with(
        BIN,
        &stack,
        &[&topic, &topic2],
        &args,
        &[
            ("HTTPS_PROXY", &proxy),
            ("HTTP_PROXY", &proxy),
            ("NO_PROXY", "127.0.0.1,localhost"),
            ("AWS_ENDPOINT_URL", &aws),
        ],
    )
    .await;

    let key = stack.signing_key();
    let url = stack.cert_url().to_owned();
    let change = |op: &str| {
        ssm_resync::sample::parameter_store_change(&p, op, "us-east-1", "123456789012").to_string()
    };
    let signed = |f: &dyn Fn(&mut Envelope)| {
        let mut env = ssm_resync::sample::notification(change("Update"), &topic, &url, None);
        f(&mut env);
        key.sign_envelope(&mut env);
        env
    };
    let good = signed(&|_| {});
    let with_subject = signed(&|e| e.subject = Some("ssm".into()));
    let confirmation = |t: &str| {
        let mut env =
            ssm_resync::sample::notification("You have chosen to subscribe".into(), t, &url, None);
        env.kind = "SubscriptionConfirmation".into();
        env.token = Some("2336412f37fb687f5d51e6e2425c464de12884".into());
        env.subscribe_url = Some(format!("{proxy}/?Action=ConfirmSubscription&Token=x"));
        env.unsubscribe_url = None;
        key.sign_envelope(&mut env);
        env
    };
    let edit = |env: &Envelope, f: &dyn Fn(&mut Envelope)| {
        let mut e = env.clone();
        f(&mut e);
        e
    };
    let with_url = |u: &str| edit(&good, &|e| e.signing_cert_url = u.to_owned());
    let hex = "SimpleNotificationService-0123456789abcdef0123456789abcdef.pem";
    let mut cases: Vec<Case> = Vec::new();

    // Every signed field tampered.
    for (name, env) in [
        (
            "Message tampered",
            edit(&good, &|e| e.message = change("Delete")),
        ),
        (
            "MessageId tampered",
            edit(&good, &|e| e.message_id = uuid::Uuid::new_v4().to_string()),
        ),
        (
            "Timestamp tampered",
            edit(&good, &|e| {
                e.timestamp = sns_timestamp(now - time::Duration::milliseconds(1))
            }),
        ),
        (
            "TopicArn moved to another allowed topic",
            edit(&good, &|e| e.topic_arn = topic2.clone()),
        ),
        (
            "Type relabelled UnsubscribeConfirmation",
            edit(&good, &|e| {
                e.kind = "UnsubscribeConfirmation".into();
                e.token = Some("t".into());
                e.subscribe_url = Some("https://sns.us-east-1.amazonaws.com/".into());
            }),
        ),
        (
            "Subject added",
            edit(&good, &|e| e.subject = Some("added".into())),
        ),
        (
            "Subject removed",
            edit(&with_subject, &|e| e.subject = None),
        ),
        (
            "Subject changed",
            edit(&with_subject, &|e| e.subject = Some("other".into())),
        ),
        (
            "SignatureVersion 2 relabelled 1",
            edit(&good, &|e| e.signature_version = "1".into()),
        ),
        (
            "Signature truncated",
            edit(&good, &|e| e.signature = e.signature[..40].to_owned()),
        ),
        (
            "Signature of another message",
            edit(&good, &|e| e.signature = with_subject.signature.clone()),
        ),
    ] {
        cases.push(case(name, &env, 403, "signature_invalid"));
    }
    cases.push(case(
        "SignatureVersion 3",
        &edit(&good, &|e| e.signature_version = "3".into()),
        403,
        "unsupported_signature_version",
    ));
    cases.push(case(
        "SignatureVersion 02",
        &edit(&good, &|e| e.signature_version = "02".into()),
        403,
        "unsupported_signature_version",
    ));
    cases.push(case(
        "SignatureVersion empty",
        &edit(&good, &|e| e.signature_version = String::new()),
        400,
        "missing_field",
    ));
    cases.push(case(
        "Signature not base64",
        &edit(&good, &|e| e.signature = "!!!not base64!!!".into()),
        403,
        "signature_encoding",
    ));
    cases.push(case(
        "Signature empty",
        &edit(&good, &|e| e.signature = String::new()),
        400,
        "missing_field",
    ));

    // SigningCertURL outside the policy: rejected before any fetch.
    for u in [
        format!("http://sns.us-east-1.amazonaws.com/{hex}"),
        format!("https://sns.us-east-1.amazonaws.com.evil.example/{hex}"),
        format!("https://evil.example/sns.us-east-1.amazonaws.com/{hex}"),
        format!("https://s3.amazonaws.com/sns/{hex}"),
        format!("https://sns.s3-us-west-2.amazonaws.com/{hex}"),
        format!("https://sns.us-east-1.amazonaws.com@evil.example/{hex}"),
        format!("https://sns.us-east-1.amazonaws.com:8443/{hex}"),
        format!("https://sns.us-east-1.amazonaws.com/{hex}?x=.pem"),
        format!("https://sns.us-east-1.amazonaws.com/{hex}#x"),
        format!("https://sns.us-east-1.amazonaws.com/%2e%2e/{hex}"),
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123.pem.txt".into(),
        format!("https://sns.us-east-1.amazonaws.com\\@evil.example/{hex}"),
        format!("{proxy}/{hex}"),
        // A real SNS host, but not the endpoint of the topic's region and partition.
        format!("https://sns.us-west-2.amazonaws.com/{hex}"),
        format!("https://sns.us-gov-west-1.amazonaws.com/{hex}"),
        format!("https://sns.cn-north-1.amazonaws.com.cn/{hex}"),
        format!("https://sns.us-east-1.amazonaws.com.cn/{hex}"),
    ] {
        cases.push(case(
            &format!("cert URL {u}"),
            &with_url(&u),
            403,
            "cert_url_rejected",
        ));
    }

    // Well-formed certificates that fail their checks (wrong subject, expired, not yet valid).
    for ((k, u), what) in bad_keys.iter().zip([
        "wrong subject CN",
        "expired certificate",
        "not-yet-valid certificate",
    ]) {
        let mut env = ssm_resync::sample::notification(change("Update"), &topic, u, None);
        k.sign_envelope(&mut env);
        cases.push(case(what, &env, 403, "cert_invalid"));
    }

    // Topic, age, replay window.
    let foreign_msg = {
        let mut env = ssm_resync::sample::notification(change("Update"), foreign, &url, None);
        key.sign_envelope(&mut env);
        env
    };
    cases.push(case(
        "genuinely signed, topic not allowed",
        &foreign_msg,
        403,
        "topic_not_allowed",
    ));
    cases.push(case(
        "SubscriptionConfirmation for a topic not allowed",
        &confirmation(foreign),
        403,
        "topic_not_allowed",
    ));
    cases.push(case(
        "SubscriptionConfirmation with a tampered Token",
        &edit(&confirmation(&topic), &|e| e.token = Some("other".into())),
        403,
        "signature_invalid",
    ));
    cases.push(case(
        "two hours old",
        &signed(&|e| e.timestamp = sns_timestamp(now - time::Duration::hours(2))),
        403,
        "message_too_old",
    ));
    cases.push(case(
        "a day in the future",
        &signed(&|e| e.timestamp = sns_timestamp(now + day)),
        403,
        "timestamp_invalid",
    ));
    cases.push(case(
        "Timestamp not RFC 3339",
        &signed(&|e| e.timestamp = "yesterday".into()),
        403,
        "timestamp_invalid",
    ));

    // Envelope shape.
    let mut raw_delivery = raw(
        "raw message delivery",
        change("Update"),
        403,
        "raw_delivery",
    );
    raw_delivery.headers = vec![("x-amz-sns-rawdelivery".into(), "true".into())];
    cases.push(raw_delivery);
    cases.push(case(
        "Type unknown",
        &edit(&good, &|e| e.kind = "Notificationx".into()),
        400,
        "unknown_type",
    ));
    let good_json: Value = serde_json::to_value(&good).unwrap();
    for field in [
        "MessageId",
        "TopicArn",
        "SigningCertURL",
        "Signature",
        "Timestamp",
        "Type",
        "SignatureVersion",
        "Message",
    ] {
        let mut v = good_json.clone();
        v.as_object_mut().unwrap().remove(field);
        cases.push(raw(
            &format!("missing {field}"),
            v.to_string(),
            400,
            "missing_field",
        ));
    }
    cases.push(case(
        "SubscriptionConfirmation without Token",
        &edit(&confirmation(&topic), &|e| e.token = None),
        400,
        "missing_field",
    ));
    let text = serde_json::to_string(&good).unwrap();
    cases.push(raw(
        "duplicate Message key",
        text.replacen(
            '{',
            &format!("{{\"Message\":{},", json!(change("Delete"))),
            1,
        ),
        400,
        "malformed_json",
    ));
    let mut bad_utf8 = text.clone().into_bytes();
    let at = bad_utf8.iter().position(|b| *b == b'N').unwrap();
    bad_utf8[at] = 0xff;
    cases.push(raw("non-UTF-8 byte", bad_utf8, 400, "malformed_json"));
    // Deep nesting in the unsigned MessageAttributes is skipped without building a tree (see
    // tests/serial/attacks.rs for what that saves); the forged Message next to it still fails.
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let forged = serde_json::to_string(&edit(&good, &|e| e.message = change("Delete"))).unwrap();
    let mut nested = raw(
        "MessageAttributes nesting 300 deep on a forged message",
        forged.replacen('{', &format!("{{\"MessageAttributes\":{deep},"), 1),
        403,
        "signature_invalid",
    );
    nested.headers = sns_headers(&good);
    cases.push(nested);
    cases.push(raw("empty body", "", 400, "malformed_json"));
    cases.push(raw("JSON array", "[]", 400, "malformed_json"));
    cases.push(raw(
        "JSON string",
        "\"Notification\"",
        400,
        "malformed_json",
    ));
    cases.push(raw(
        "Message not a string",
        text.replacen('{', "{\"Subject\":5,", 1),
        400,
        "malformed_json",
    ));
    let mut mismatch = case(
        "x-amz-sns-message-type disagrees",
        &good,
        400,
        "header_mismatch",
    );
    mismatch.headers[1].1 = "SubscriptionConfirmation".into();
    cases.push(mismatch);
    let mut topic_mismatch = case(
        "x-amz-sns-topic-arn disagrees",
        &good,
        400,
        "header_mismatch",
    );
    topic_mismatch.headers[3].1 = topic2.clone();
    cases.push(topic_mismatch);

    // Size: declared, and streamed without a length.
    let big = format!("{{\"Message\":\"{}\"}}", "a".repeat(70_000));
    cases.push(raw(
        "over the limit with Content-Length",
        big.clone(),
        413,
        "body_too_large",
    ));
    let mut streamed = raw("over the limit, chunked", big, 413, "body_too_large");
    streamed.chunked = true;
    cases.push(streamed);

    // Verified, allowed, but the event inside is broken.
    cases.push(case(
        "verified message with a broken event",
        &signed(&|e| e.message = change("Rename")),
        400,
        "event_malformed",
    ));

    // The plain test format names any parameters: off unless --accept-plain-format. Verified
    // and allowed, it is answered 200 "ignored" (SNS must not retry) and changes nothing.
    let plain = json!({"parameters": [p.clone()]}).to_string();
    let plain_msg = signed(&|e| e.message = plain.clone());
    let (status, body) = svc
        .post_raw(
            reqwest::Body::from(to_bytes(&plain_msg)),
            &sns_headers(&plain_msg)
                .iter()
                .map(|(h, v)| (h.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(
        (status, body["result"].as_str(), body["kind"].as_str()),
        (200, Some("ignored"), Some("plain_format_disabled")),
        "{body}"
    );

    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut expected: std::collections::HashMap<&str, u32> = Default::default();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(h, v)| (h.as_str(), v.as_str()))
            .collect();
        let body = if c.chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                c.body.chunks(4096).map(|b| Ok(b.to_vec())).collect();
            reqwest::Body::wrap_stream(futures::stream::iter(chunks))
        } else {
            reqwest::Body::from(c.body.clone())
        };
        let (status, body) = svc.post_raw(body, &headers).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (c.status, Some(c.reason)),
            "case {:?}: {body}",
            c.name
        );
        *expected.entry(c.reason).or_default() += 1;
    }

    // Nothing patched, nothing fetched, nothing confirmed.
    assert_eq!(annotation(&kube, &ns, "db", "force-sync").await, None);
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        0.0
    );
    assert_eq!(
        proxy_hits.load(Ordering::SeqCst),
        0,
        "an outbound HTTP(S) request was made"
    );
    assert_eq!(
        aws_hits.load(Ordering::SeqCst),
        0,
        "an AWS API call was made"
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_cert_fetches_total{result="ok"}"#)
            .await,
        0.0
    );
    // Each rejection counted under its own reason, and every reason is a known one.
    for (reason, n) in &expected {
        assert!(Reject::REASONS.contains(reason), "{reason}");
        let got = svc
            .metric(&format!(
                "ssm_resync_rejections_total{{reason=\"{reason}\"}}"
            ))
            .await;
        assert_eq!(got, f64::from(*n), "rejections_total{{reason={reason}}}");
    }
    eprintln!(
        "{} hostile cases, {} distinct reasons",
        cases.len(),
        expected.len()
    );

    // Positive controls: the counting listeners do see what the service would send. A valid
    // message whose certificate is not pinned is fetched (through the proxy), and a valid
    // confirmation for an allowed topic calls ConfirmSubscription (at the AWS endpoint).
    let unpinned = format!(
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{:032x}.pem",
        0xf00d
    );
    let mut env = ssm_resync::sample::notification(change("Update"), &topic, &unpinned, None);
    key.sign_envelope(&mut env);
    let (status, body) = svc.post_raw(reqwest::Body::from(to_bytes(&env)), &[]).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (503, Some("cert_unavailable")),
        "{body}"
    );
    assert!(
        proxy_hits.load(Ordering::SeqCst) >= 1,
        "the proxy listener saw the fetch"
    );
    let (status, body) = svc
        .post_raw(reqwest::Body::from(to_bytes(&confirmation(&topic))), &[])
        .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (503, Some("confirm_failed")),
        "{body}"
    );
    assert!(
        aws_hits.load(Ordering::SeqCst) >= 1,
        "the AWS listener saw ConfirmSubscription"
    );

    // The untouched message still goes through: the rejections were about the tampering.
    let (status, body) = svc
        .post_raw(reqwest::Body::from(to_bytes(&good)), &[])
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
}

//! The queue door on real parts: moto's SNS delivering to moto's SQS (raw message delivery
//! off, as infra/ subscribes the queue), `ssm-resync serve --webhook off --sqs-queue-url`,
//! the API server and the real ESO. Each test ends at the Secret, or at the queue's depth:
//! a message leaves the queue only once what it asked for is applied.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

/// `--webhook off --sqs-queue-url=<queue>` and `extra`.
async fn consumer(stack: &Stack, topic: &str, queue: &str, extra: &[&str]) -> Service {
    let url = format!("--sqs-queue-url={queue}");
    let mut args = vec!["--webhook=off", url.as_str()];
    args.extend_from_slice(extra);
    Service::start(BIN, stack, &[topic], &args).await
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn publish(stack: &Stack, topic: &str, event: &Value) {
    stack
        .sns()
        .await
        .publish()
        .topic_arn(topic)
        .message(event.to_string())
        .send()
        .await
        .unwrap();
}

/// Puts `body` on the queue as SNS would (for messages SNS would not send: old, forged,
/// foreign).
async fn send(stack: &Stack, queue: &str, body: &str) {
    stack
        .sqs()
        .await
        .send_message()
        .queue_url(queue)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// Waits until the queue holds nothing, visible or in flight.
async fn wait_drained(stack: &Stack, queue: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let depth = stack.queue_depth(queue).await;
        if depth == (0, 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the queue still holds {depth:?} (visible, in flight) after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn put_secret_value(secret: &str) -> Value {
    json!({"version": "0", "id": uuid::Uuid::new_v4().to_string(), "source": "aws.secretsmanager",
        "detail-type": "AWS API Call via CloudTrail", "account": "123456789012", "region": "us-east-1",
        "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": "PutSecretValue",
            "awsRegion": "us-east-1", "requestParameters": {"secretId": secret}}})
}

/// SNS → SQS → the service with no webhook → ESO → the Secret, for a Parameter Store Change
/// and a Secrets Manager CloudTrail event; both messages deleted, nothing else patched.
#[tokio::test]
async fn changes_through_the_queue_reach_their_secrets() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("queue-e2e").await;
    let p = param("/queue/db/password");
    synced_reader(&stack, &kube, &ns, "db", &[&p]).await;
    let secret = param("queue/api-key").trim_start_matches('/').to_owned();
    stack.put_secret(&secret, "v1").await;
    create(&kube, &ss_resource(), &ns, json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": {"name": "sm", "namespace": ns},
        "spec": {"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1"}}}
    })).await;
    external_secret(&kube, &ns, "api", "sm", &[&secret]).await;
    wait_secret(&kube, &ns, "api", "k0", "v1", Duration::from_secs(30)).await;
    let other = param("/queue/other");
    synced_reader(&stack, &kube, &ns, "unrelated", &[&other]).await;
    let queue = stack.queue(&topic, &unique("queue-e2e")).await;
    let svc = consumer(&stack, &topic, &queue, &[]).await;

    stack.put_parameter(&p, "rotated").await;
    let change =
        ssm_resync::sample::parameter_store_change(&p, "Update", "us-east-1", "123456789012");
    let published = Instant::now();
    publish(&stack, &topic, &change).await;
    wait_secret(&kube, &ns, "db", "k0", "rotated", Duration::from_secs(30)).await;
    eprintln!("publish -> queue -> Secret: {:?}", published.elapsed());
    stack.put_secret(&secret, "v2").await;
    publish(&stack, &topic, &put_secret_value(&secret)).await;
    wait_secret(&kube, &ns, "api", "k0", "v2", Duration::from_secs(30)).await;

    wait_drained(&stack, &queue, Duration::from_secs(10)).await;
    assert_eq!(
        svc.metric(r#"ssm_resync_queue_messages_total{result="applied"}"#)
            .await,
        2.0
    );
    assert_eq!(
        annotation(&kube, &ns, "unrelated", "force-sync").await,
        None
    );
    assert_secret(&kube, &ns, "unrelated", "k0", &initial(&other)).await;
    // The closed loop follows queue-borne changes as it follows webhook ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc
        .metric(r#"ssm_resync_refresh_total{outcome="refreshed"}"#)
        .await
        < 2.0
    {
        assert!(Instant::now() < deadline, "ESO's refresh was not seen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        svc.metric("ssm_resync_queue_lag_seconds_count").await >= 2.0,
        "the lag from SentTimestamp is measured"
    );
    // No public listener: nothing answers on --listen.
    assert!(
        reqwest::Client::new()
            .post(svc.sns_url())
            .body("{}")
            .send()
            .await
            .is_err(),
        "--webhook off must not open the public port"
    );
}

/// The webhook refuses a message older than --max-message-age (replay protection on a port
/// anyone can reach); the same message from the queue, which only the topic may write to, is
/// a change that waited out an outage, and is applied.
#[tokio::test]
async fn messages_older_than_the_webhooks_limit_are_applied_from_the_queue() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("queue-old").await;
    let p = param("/queue/old");
    synced_reader(&stack, &kube, &ns, "db", &[&p]).await;
    let queue = stack.queue(&topic, &unique("queue-old")).await;
    // Both doors, the shipped --max-message-age (1h).
    let url = format!("--sqs-queue-url={queue}");
    let svc = Service::start(BIN, &stack, &[&topic], &[&url]).await;
    stack.put_parameter(&p, "after-the-outage").await;
    let three_hours_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(3);
    let old = change_notification(
        &stack.signing_key(),
        &topic,
        stack.cert_url(),
        &p,
        Some(three_hours_ago),
    );

    let (status, body) = svc.post(&old).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("message_too_old")),
        "{body}"
    );
    assert_eq!(annotation(&kube, &ns, "db", "force-sync").await, None);

    send(&stack, &queue, &old).await;
    wait_secret(
        &kube,
        &ns,
        "db",
        "k0",
        "after-the-outage",
        Duration::from_secs(30),
    )
    .await;
    wait_drained(&stack, &queue, Duration::from_secs(10)).await;
    assert_eq!(
        svc.metric(r#"ssm_resync_queue_messages_total{result="applied"}"#)
            .await,
        1.0
    );
}

/// Messages that can never pass are deleted at once with their named reason, counted, and
/// patch nothing: a forged signature, another topic's (genuinely signed) message, garbage, an
/// oversized body, an unsigned EventBridge event without --sqs-accept-eventbridge.
#[tokio::test]
async fn poison_messages_are_deleted_with_their_reason_and_patch_nothing() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("queue-poison").await;
    let p = param("/queue/poison");
    synced_reader(&stack, &kube, &ns, "db", &[&p]).await;
    let queue = stack.queue(&topic, &unique("queue-poison")).await;
    let svc = consumer(&stack, &topic, &queue, &["--max-body-bytes=8192"]).await;
    let key = stack.signing_key();

    let mut forged: Value = serde_json::from_str(&signed_change(&stack, &topic, &p)).unwrap();
    forged["Message"] = json!(
        forged["Message"]
            .as_str()
            .unwrap()
            .replace("Update", "Delete")
    );
    let foreign_topic = "arn:aws:sns:us-east-1:999999999999:someone-elses";
    let foreign = change_notification(&key, foreign_topic, stack.cert_url(), &p, None);
    let oversized = json!({"Type": "Notification", "padding": "x".repeat(9000)});
    let bare =
        ssm_resync::sample::parameter_store_change(&p, "Update", "us-east-1", "123456789012");
    let cases = [
        (forged.to_string(), "signature_invalid"),
        (foreign, "topic_not_allowed"),
        ("this is not JSON".to_owned(), "malformed_json"),
        (oversized.to_string(), "body_too_large"),
        (bare.to_string(), "unsigned_message"),
    ];
    for (body, _) in &cases {
        send(&stack, &queue, body).await;
    }
    wait_drained(&stack, &queue, Duration::from_secs(30)).await;
    for (_, reason) in &cases {
        assert_eq!(
            svc.metric(&format!(
                r#"ssm_resync_rejections_total{{reason="{reason}"}}"#
            ))
            .await,
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        svc.metric(r#"ssm_resync_queue_messages_total{result="rejected"}"#)
            .await,
        cases.len() as f64
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_queue_messages_total{result="retry"}"#)
            .await,
        0.0,
        "a message that can never pass is not retried"
    );
    assert_eq!(annotation(&kube, &ns, "db", "force-sync").await, None);
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        0.0
    );
}

/// The API server goes away while changes arrive: no message is deleted while its patch
/// cannot be applied; they come again and are applied once it is back. Then the consumer is
/// killed (-9) with messages in flight: they reappear after their visibility timeout and the
/// next consumer applies them. Nothing is lost either way.
#[tokio::test]
async fn nothing_is_lost_when_the_api_server_or_the_consumer_dies() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::on(Stack::private(), "queue-outage").await;
    let params: Vec<String> = (0..3)
        .map(|i| param(&format!("/queue/outage{i}")))
        .collect();
    for (i, p) in params.iter().enumerate() {
        synced_reader(&stack, &kube, &ns, &format!("r{i}"), &[p]).await;
    }
    let queue = stack.queue(&topic, &unique("queue-outage")).await;
    let fast = ["--sqs-visibility-timeout=6s", "--patch-retries=1"];
    let svc = consumer(&stack, &topic, &queue, &fast).await;

    stack.stop_apiserver();
    for p in &params {
        stack.put_parameter(p, "during-the-outage").await;
        let change =
            ssm_resync::sample::parameter_store_change(p, "Update", "us-east-1", "123456789012");
        publish(&stack, &topic, &change).await;
    }
    // Received, failed, released, received again: never deleted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc
        .metric(r#"ssm_resync_queue_messages_total{result="retry"}"#)
        .await
        < 3.0
    {
        assert!(
            Instant::now() < deadline,
            "the messages were not tried while the API server was down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (visible, in_flight) = stack.queue_depth(&queue).await;
    assert_eq!(visible + in_flight, 3, "a message was deleted unapplied");
    assert_eq!(
        svc.metric(r#"ssm_resync_queue_messages_total{result="applied"}"#)
            .await,
        0.0
    );
    stack.start_apiserver();
    for (i, _) in params.iter().enumerate() {
        wait_secret(
            &kube,
            &ns,
            &format!("r{i}"),
            "k0",
            "during-the-outage",
            Duration::from_secs(90),
        )
        .await;
    }
    wait_drained(&stack, &queue, Duration::from_secs(30)).await;

    // kill -9 with messages in flight: the API server is frozen again so their patches hang
    // in retries when the consumer dies.
    stack.stop_apiserver();
    for p in &params {
        stack.put_parameter(p, "after-the-kill").await;
        let change =
            ssm_resync::sample::parameter_store_change(p, "Update", "us-east-1", "123456789012");
        publish(&stack, &topic, &change).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while stack.queue_depth(&queue).await.1 == 0 {
        assert!(Instant::now() < deadline, "nothing was received");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-9", &svc.pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(svc);
    stack.start_apiserver();
    let _next = consumer(&stack, &topic, &queue, &fast).await;
    for (i, _) in params.iter().enumerate() {
        wait_secret(
            &kube,
            &ns,
            &format!("r{i}"),
            "k0",
            "after-the-kill",
            Duration::from_secs(90),
        )
        .await;
    }
    wait_drained(&stack, &queue, Duration::from_secs(30)).await;
}

/// Three replicas on one queue as competing consumers, 1,000 changes to 50 ExternalSecrets
/// all made before the first patch (SNS-signed envelopes stamped then, put on the queue ten at
/// a time as a backlog would arrive after an outage): every Secret ends at its final value,
/// every message is handled and deleted, each replica takes a share, and each replica patches
/// each target once (every later message is covered by that patch).
#[tokio::test]
async fn three_replicas_share_a_queue_and_every_change_reaches_its_secret() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("queue-replicas").await;
    const READERS: usize = 50;
    const CHANGES: usize = 1000;
    let params: Vec<String> = (0..READERS)
        .map(|i| param(&format!("/queue/replicas{i}")))
        .collect();
    for p in &params {
        stack.put_parameter(p, &initial(p)).await;
    }
    for (i, p) in params.iter().enumerate() {
        external_secret(&kube, &ns, &format!("r{i}"), "aws", &[p]).await;
    }
    for (i, p) in params.iter().enumerate() {
        wait_secret(
            &kube,
            &ns,
            &format!("r{i}"),
            "k0",
            &initial(p),
            Duration::from_secs(60),
        )
        .await;
    }
    let queue = stack.queue(&topic, &unique("queue-replicas")).await;
    for p in &params {
        stack.put_parameter(p, "final").await;
    }
    let changed = time::OffsetDateTime::now_utc();
    let key = stack.signing_key();
    let bodies: Vec<String> = (0..CHANGES)
        .map(|n| {
            change_notification(
                &key,
                &topic,
                stack.cert_url(),
                &params[n % READERS],
                Some(changed),
            )
        })
        .collect();
    stack.fill_queue(&queue, &bodies, 1).await;
    let started = Instant::now();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(consumer(&stack, &topic, &queue, &[]).await);
    }
    for (i, _) in params.iter().enumerate() {
        wait_secret(
            &kube,
            &ns,
            &format!("r{i}"),
            "k0",
            "final",
            Duration::from_secs(120),
        )
        .await;
    }
    wait_drained(&stack, &queue, Duration::from_secs(120)).await;
    eprintln!(
        "{CHANGES} queued changes through 3 replicas: every Secret final and the queue empty after {:?}",
        started.elapsed()
    );
    let mut handled = 0.0;
    for (i, r) in replicas.iter().enumerate() {
        let applied = r
            .metric(r#"ssm_resync_queue_messages_total{result="applied"}"#)
            .await;
        let duplicate = r
            .metric(r#"ssm_resync_queue_messages_total{result="duplicate"}"#)
            .await;
        let patches = r
            .metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await;
        let coalesced = r
            .metric(r#"ssm_resync_patches_total{result="coalesced"}"#)
            .await;
        eprintln!(
            "replica {i}: {applied} applied, {duplicate} duplicates, {patches} patches, {coalesced} covered by one"
        );
        assert!(applied > 0.0, "replica {i} took no share of the queue");
        assert!(
            patches <= READERS as f64,
            "replica {i}: {patches} patches for {READERS} targets whose changes all came before the first"
        );
        handled += applied + duplicate;
    }
    assert!(
        handled >= CHANGES as f64,
        "{handled} messages handled of {CHANGES}"
    );
}

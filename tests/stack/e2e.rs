//! End to end on real parts: kube-apiserver + etcd, moto's SNS and SSM, the External Secrets
//! Operator, and `ssm-resync serve` as a separate process, all over loopback. Each test ends
//! at what the user sees: the Secret ESO writes.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

/// The whole path as in production: the parameter changes in SSM, its Parameter Store Change
/// is published to the SNS topic, moto POSTs the signed Notification to the service, the
/// ExternalSecret's annotation changes, ESO re-syncs, and the Secret holds the new value
/// (its refreshInterval is an hour: nothing else would have refreshed it).
#[tokio::test]
async fn publish_to_the_topic_updates_the_secret() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("e2e-publish").await;
    let p_other = param("/e2e/other");
    let p_db_password = param("/e2e/db/password");
    synced_reader(&stack, &kube, &ns, "db", &[&p_db_password]).await;
    synced_reader(&stack, &kube, &ns, "unrelated", &[&p_other]).await;
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;

    let sns = stack.sns().await;
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("http")
        .endpoint(format!("{}/sns", svc.url))
        .send()
        .await
        .unwrap();
    stack.put_parameter(&p_db_password, "rotated").await;
    let event = ssm_resync::sample::parameter_store_change(
        &p_db_password,
        "Update",
        "us-east-1",
        "123456789012",
    );
    // moto delivers synchronously and fails the Publish if the endpoint did not answer 2xx.
    let published = std::time::Instant::now();
    sns.publish()
        .topic_arn(&topic)
        .message(event.to_string())
        .send()
        .await
        .unwrap();

    let value = wait_annotation_change(&kube, &ns, "db", None, Duration::from_secs(10)).await;
    assert!(
        time::OffsetDateTime::parse(&value, &time::format_description::well_known::Rfc3339).is_ok(),
        "{value}"
    );
    wait_secret(&kube, &ns, "db", "k0", "rotated", Duration::from_secs(20)).await;
    eprintln!("publish -> Secret updated: {:?}", published.elapsed());
    assert_eq!(
        annotation(&kube, &ns, "unrelated", "force-sync").await,
        None,
        "only the reader is patched"
    );
    assert_secret(&kube, &ns, "unrelated", "k0", &initial(&p_other)).await;
    assert_eq!(
        svc.metric(r#"ssm_resync_notifications_total{type="Notification",result="applied"}"#)
            .await,
        1.0
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        1.0
    );
    assert!(
        svc.logs().contains("spec.data[0].remoteRef.key"),
        "the log names the matching reference"
    );
}

#[tokio::test]
async fn a_change_nobody_reads_is_200_and_patches_nothing() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("e2e-nomatch").await;
    let p_db_password = param("/e2e/db/password");
    synced_reader(&stack, &kube, &ns, "db", &[&p_db_password]).await;
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;

    let (status, body) = svc
        .post(&signed_change(&stack, &topic, "/nobody/reads/this"))
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("no_match")),
        "{body}"
    );
    assert_eq!(annotation(&kube, &ns, "db", "force-sync").await, None);
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        0.0
    );
}

#[tokio::test]
async fn tampered_or_foreign_messages_are_403_and_patch_nothing() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("e2e-tamper").await;
    let p_db_password = param("/e2e/db/password");
    synced_reader(&stack, &kube, &ns, "db", &[&p_db_password]).await;
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;
    // The value did change: only a verified message may make the Secret follow it.
    stack.put_parameter(&p_db_password, "changed").await;

    let good: Value = serde_json::from_str(&signed_change(&stack, &topic, &p_db_password)).unwrap();
    let mut tampered = good.clone();
    tampered["Message"] = json!(
        good["Message"]
            .as_str()
            .unwrap()
            .replace("Update", "Delete")
    );
    let (status, body) = svc.post(&tampered.to_string()).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("signature_invalid")),
        "{body}"
    );

    // Genuinely signed, but for a topic not on the allow-list.
    let foreign = signed_change(
        &stack,
        "arn:aws:sns:us-east-1:999999999999:attacker",
        &p_db_password,
    );
    let (status, body) = svc.post(&foreign).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("topic_not_allowed")),
        "{body}"
    );

    let (status, body) = svc.post("{not json").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("malformed_json")),
        "{body}"
    );

    assert_eq!(annotation(&kube, &ns, "db", "force-sync").await, None);
    assert_secret(&kube, &ns, "db", "k0", &initial(&p_db_password)).await;
    assert_eq!(
        svc.metric(r#"ssm_resync_rejections_total{reason="signature_invalid"}"#)
            .await,
        1.0
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_rejections_total{reason="topic_not_allowed"}"#)
            .await,
        1.0
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        0.0
    );

    // The untouched message still works: the rejections were about the tampering.
    let (status, body) = svc.post(&good.to_string()).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    wait_secret(&kube, &ns, "db", "k0", "changed", Duration::from_secs(20)).await;
}

#[tokio::test]
async fn redelivery_of_an_applied_message_patches_nothing_twice() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("e2e-dup").await;
    let p_db_password = param("/e2e/db/password");
    synced_reader(&stack, &kube, &ns, "db", &[&p_db_password]).await;
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;

    stack.put_parameter(&p_db_password, "v2").await;
    let msg = signed_change(&stack, &topic, &p_db_password);
    let (status, body) = svc.post(&msg).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    wait_secret(&kube, &ns, "db", "k0", "v2", Duration::from_secs(20)).await;
    let first = annotation(&kube, &ns, "db", "force-sync").await.unwrap();
    let (status, body) = svc.post(&msg).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    assert_eq!(
        annotation(&kube, &ns, "db", "force-sync").await.unwrap(),
        first
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        1.0
    );
}

/// Two notifications for one resource at the same time produce one patch; a change after
/// that patch was sent gets a patch of its own.
#[tokio::test]
async fn simultaneous_notifications_share_one_patch() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("e2e-coalesce").await;
    let p_db_user = param("/e2e/db/user");
    let p_db_password = param("/e2e/db/password");
    synced_reader(&stack, &kube, &ns, "db", &[&p_db_password, &p_db_user]).await;
    let svc = Service::start(BIN, &stack, &[&topic], &["--coalesce-window=100ms"]).await;

    stack.put_parameter(&p_db_password, "pw2").await;
    stack.put_parameter(&p_db_user, "user2").await;
    let a = signed_change(&stack, &topic, &p_db_password);
    let b = signed_change(&stack, &topic, &p_db_user);
    let ((sa, ba), (sb, bb)) = tokio::join!(svc.post(&a), svc.post(&b));
    assert_eq!((sa, sb), (200, 200), "{ba} {bb}");
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        1.0
    );
    let first = annotation(&kube, &ns, "db", "force-sync").await.unwrap();
    // The one patch brought both changes.
    wait_secret(&kube, &ns, "db", "k0", "pw2", Duration::from_secs(20)).await;
    assert_secret(&kube, &ns, "db", "k1", "user2").await;

    tokio::time::sleep(Duration::from_millis(20)).await;
    stack.put_parameter(&p_db_password, "pw3").await;
    let c = signed_change(&stack, &topic, &p_db_password);
    let (sc, bc) = svc.post(&c).await;
    assert_eq!((sc, bc["result"].as_str()), (200, Some("applied")), "{bc}");
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        2.0
    );
    assert_ne!(
        annotation(&kube, &ns, "db", "force-sync").await.unwrap(),
        first
    );
    wait_secret(&kube, &ns, "db", "k0", "pw3", Duration::from_secs(20)).await;
}

/// ConfirmSubscription goes through the SNS API, only for an allowed topic.
#[tokio::test]
async fn subscription_confirmation_for_an_allowed_topic_is_confirmed() {
    let stack = Stack::shared();
    let topic = stack
        .topic(&format!("e2e-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;
    let key = stack.signing_key();
    let mut env = ssm_resync::sample::notification(
        "You have chosen to subscribe".into(),
        &topic,
        stack.cert_url(),
        None,
    );
    env.kind = "SubscriptionConfirmation".into();
    env.token = Some("2336412f37fb687f5d51e6e2425c464de12884".into());
    env.subscribe_url = Some(format!(
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token=x"
    ));
    env.unsubscribe_url = None;
    key.sign_envelope(&mut env);
    let (status, body) = svc.post(&serde_json::to_string(&env).unwrap()).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("confirmed")),
        "{body}"
    );
    assert_eq!(
        svc.metric(
            r#"ssm_resync_notifications_total{type="SubscriptionConfirmation",result="confirmed"}"#
        )
        .await,
        1.0
    );
}

/// Posts `msg` again every 500 ms, as SNS redelivers the same message (same MessageId) after
/// its retry delay, until it is answered 200 `applied` (at most 30 s).
async fn redeliver_until_applied(svc: &Service, msg: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = svc.post(msg).await;
        if status == 200 {
            assert_eq!(body["result"].as_str(), Some("applied"), "{body}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} after the fault was repaired: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// API server down: 503 so SNS redelivers; once it is back, the redelivery applies.
#[tokio::test]
async fn api_server_outage_answers_503_then_the_redelivery_applies() {
    let stack = Stack::private();
    let kube = stack.kube().await;
    let p_db_password = param("/e2e/db/password");
    let topic = stack.topic("outage").await;
    let ns = namespace(&kube, "e2e-outage").await;
    secret_store(&kube, &ns, "aws", "us-east-1").await;
    synced_reader(&stack, &kube, &ns, "db", &[&p_db_password]).await;
    let svc = Service::start(
        BIN,
        &stack,
        &[&topic],
        &["--patch-retries=2", "--request-deadline=5s"],
    )
    .await;

    stack.stop_apiserver();
    stack.put_parameter(&p_db_password, "during-outage").await;
    let msg = signed_change(&stack, &topic, &p_db_password);
    let (status, body) = svc.post(&msg).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        matches!(
            body["reason"].as_str(),
            Some("patch_failed" | "deadline_exceeded")
        ),
        "{body}"
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="failed"}"#)
            .await,
        1.0
    );

    stack.start_apiserver();
    redeliver_until_applied(&svc, &msg).await;
    assert!(annotation(&kube, &ns, "db", "force-sync").await.is_some());
    wait_secret(
        &kube,
        &ns,
        "db",
        "k0",
        "during-outage",
        Duration::from_secs(30),
    )
    .await;
}

/// ESO's validating webhook down (failurePolicy Fail): every patch of an ExternalSecret is
/// refused, the service answers 503 so SNS redelivers, and once the webhook is back the
/// redelivery applies and the Secret follows.
#[tokio::test]
async fn eso_webhook_down_answers_503_then_the_redelivery_applies() {
    let stack = Stack::private();
    let kube = stack.kube().await;
    let p = param("/e2e/webhook/password");
    let topic = stack.topic("webhook-down").await;
    let ns = namespace(&kube, "e2e-webhook").await;
    secret_store(&kube, &ns, "aws", "us-east-1").await;
    synced_reader(&stack, &kube, &ns, "db", &[&p]).await;
    let svc = Service::start(BIN, &stack, &[&topic], &["--patch-retries=2"]).await;

    stack.stop("eso-webhook");
    stack.put_parameter(&p, "while-the-webhook-was-down").await;
    let msg = signed_change(&stack, &topic, &p);
    let (status, body) = svc.post(&msg).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (503, Some("patch_failed")),
        "{body}"
    );
    assert!(
        svc.logs().contains("failed calling webhook"),
        "the log names the webhook:\n{}",
        svc.logs()
    );
    assert_eq!(annotation(&kube, &ns, "db", "force-sync").await, None);

    stack.start("eso-webhook");
    redeliver_until_applied(&svc, &msg).await;
    wait_secret(
        &kube,
        &ns,
        "db",
        "k0",
        "while-the-webhook-was-down",
        Duration::from_secs(20),
    )
    .await;
}

/// `--initial-list=watch-list` on an API server that offers it (v1.35, its default): every
/// kind is read by a watch with sendInitialEvents, the index holds what the cluster holds,
/// and a change reaches the Secret through it.
#[tokio::test]
async fn started_by_watch_list_a_change_reaches_the_secret() {
    let scenario = Scenario::new("e2e-watchlist").await;
    let svc = start_by_watch_list(&scenario).await;
    let logs = svc.logs();
    for kind in ["ExternalSecret", "SecretStore", "ClusterSecretStore"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("streamed by watch-list; in sync")
                    && l.contains(&format!(" kind=\"{kind}\" "))),
            "{kind} was not read by watch-list:\n{logs}"
        );
    }
    assert!(!logs.contains("watch-list failed"), "{logs}");
}

/// The same on an API server with the WatchList gate off (as Kubernetes 1.33 ships): it
/// refuses sendInitialEvents, and the service reads each kind with a list instead, says so,
/// and a change still reaches the Secret.
#[tokio::test]
async fn a_server_without_watch_list_is_read_with_a_list() {
    let stack = Stack::private_with(&[("STACK_API_FEATURE_GATES", "WatchList=false")]);
    let scenario = Scenario::on(stack, "e2e-nowatchlist").await;
    let svc = start_by_watch_list(&scenario).await;
    let logs = svc.logs();
    assert!(
        !logs.contains("streamed by watch-list"),
        "the gate is off, yet:\n{logs}"
    );
    assert_eq!(
        logs.matches("watch-list failed; reading with a list instead")
            .count(),
        4,
        "one fallback per kind (ExternalSecret, SecretStore, ClusterSecretStore, ClusterExternalSecret):\n{logs}"
    );
}

/// A reader synced by ESO, then the service started with `--initial-list=watch-list`, then a
/// change published through SNS: the Secret must hold the new value.
async fn start_by_watch_list(s: &Scenario) -> Service {
    let p = param("/e2e/watchlist/token");
    synced_reader(&s.stack, &s.kube, &s.ns, "app", &[&p]).await;
    let svc = Service::start(BIN, &s.stack, &[&s.topic], &["--initial-list=watch-list"]).await;
    assert!(
        svc.metric(r#"ssm_resync_index_objects{kind="ExternalSecret"}"#)
            .await
            >= 1.0
    );
    s.stack.put_parameter(&p, "rotated").await;
    let (status, body) = svc.post(&signed_change(&s.stack, &s.topic, &p)).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    wait_secret(
        &s.kube,
        &s.ns,
        "app",
        "k0",
        "rotated",
        Duration::from_secs(30),
    )
    .await;
    svc
}

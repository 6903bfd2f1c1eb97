//! kubernetes-external-secrets end to end: a model of KES 8.x's daemon and poller
//! (tests/kes/run-poller.js, see docs/kes.md for the source lines it follows) runs against the
//! real API server; ssm-resync's status patch must make it poll within seconds, once, where an
//! annotation would wait out the whole poll interval.

use std::time::{Duration, Instant};

use crate::common::*;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Model {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Model {
    async fn next_matching(
        &mut self,
        within: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, self.lines.next_line()).await {
                Err(_) => return None,
                Ok(Ok(Some(l))) => l,
                Ok(other) => panic!("KES model ended: {other:?}"),
            };
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if f(&v) {
                return Some(v);
            }
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn start_model(stack: &Stack, ns: &str) -> Model {
    let mut child = tokio::process::Command::new("node")
        .arg(format!("{REPO}/tests/kes/run-poller.js"))
        .env("KUBECONFIG", stack.get("KUBECONFIG"))
        .env("POLLER_INTERVAL_MILLISECONDS", "600000")
        .env("WATCHED_NAMESPACES", ns)
        .env("KES_WRITE_SECRET", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node (Node.js) is needed for the KES model");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    Model { child, lines }
}

#[tokio::test]
async fn kes_polls_within_seconds_of_a_change_and_only_once() {
    let modules = format!("{REPO}/tests/kes/node_modules");
    assert!(
        std::path::Path::new(&modules).is_dir(),
        "{modules} missing: run `cd tests/kes && npm ci --ignore-scripts` (make test does)"
    );
    let stack = Stack::shared();
    let kube = stack.kube().await;
    let topic = stack
        .topic(&format!("kes-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let p = param("/kes/db/password");
    let ns = namespace(&kube, "kes").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(kube.clone(), &ns, &ssm_resync::cluster::kes_resource());
    api.create(&PostParams::default(), &serde_json::from_value(json!({
        "apiVersion": "kubernetes-client.io/v1", "kind": "ExternalSecret", "metadata": {"name": "legacy", "namespace": ns},
        "spec": {"backendType": "systemManager", "region": "us-east-1", "data": [{"key": p, "name": "password"}]}
    })).unwrap())
    .await
    .unwrap();

    let who = format!("{ns}/legacy");
    // The model (like KES) builds its client from the server's OpenAPI document, which
    // publishes a new CRD's status subresource a few seconds after the CRD is created: on a
    // fresh stack, start it again until its first poll goes through.
    let mut attempt = 0;
    let mut kes = loop {
        attempt += 1;
        let mut m = start_model(&stack, &ns);
        m.next_matching(Duration::from_secs(20), |v| v["ready"] == true)
            .await
            .expect("model ready");
        let first = m
            .next_matching(Duration::from_secs(20), |v| {
                v["poll"] == who.as_str() || v.get("error").is_some()
            })
            .await
            .expect("initial poll");
        if first.get("poll").is_some() {
            break m;
        }
        assert!(attempt < 15, "the KES model keeps failing: {first}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Steady state: the next poll is a whole interval away.
    kes.next_matching(Duration::from_secs(20), |v| {
        v["schedule"] == who.as_str() && v["in"].as_i64().is_some_and(|ms| ms > 500_000)
    })
    .await
    .expect("steady state");

    let svc = Service::start(BIN, &stack, &[&topic], &["--kes"]).await;
    let sent = Instant::now();
    let env = ssm_resync::sample::notification(
        ssm_resync::sample::parameter_store_change(&p, "Update", "us-east-1", "123456789012")
            .to_string(),
        &topic,
        stack.cert_url(),
        Some(&stack.signing_key()),
    );
    let (status, body) = svc.post(&serde_json::to_string(&env).unwrap()).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    kes.next_matching(Duration::from_secs(5), |v| v["poll"] == who.as_str())
        .await
        .expect("KES polls within 5 s of the notification");
    let waited = sent.elapsed();
    eprintln!(
        "KES model polled {} ms after the notification was sent",
        waited.as_millis()
    );
    // Exactly one poll: KES's own status write afterwards must not loop.
    assert!(
        kes.next_matching(Duration::from_secs(2), |v| v["poll"] == who.as_str())
            .await
            .is_none(),
        "a second poll: the status write looped"
    );
}

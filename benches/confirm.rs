//! Figure 10: the closed loop's cost (issue 18, item 5), in-process. `cluster::confirm`
//! follows every applied force-sync until ESO's status shows the outcome; this measures what
//! that costs with 10,000 targets in flight (BENCH_CONFIRM_TARGETS):
//!
//! - per pending confirmation: heap bytes (counted by a counting global allocator) and CPU
//!   for `patched` (the API server's answer to the patch, a realistic ExternalSecret with its
//!   status) plus `attach` (the change waiting on it);
//! - per outcome: CPU for `observe` of the watch event that shows the refresh (ESO's new
//!   `syncedResourceVersion`), and the heap left once all have settled (the one-minute
//!   `recent` outcomes and the sweep's last-refreshed times);
//! - per watch event of a resource nothing waits on: what the loop adds to every other event.
//!
//! Baseline, same run: the least a pending table can be, a `HashMap<Target, (Instant,
//! Vec<Waiter>)>` filled and emptied the same way (no status parsing, no outcome reporting).
//!
//! API requests: `Confirmations` holds no API client. It reads only the watch the service
//! already runs; the only writes it causes are the rate-limited `NotRefreshed` Events, for
//! failures and timeouts. Requests per notification with it are figure 3c (`apicost`).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde_json::{Value, json};
use ssm_resync::cluster::confirm::{Confirmations, Waiter};
use ssm_resync::cluster::events::Events;
use ssm_resync::index::{Index, ReaderKind, ResourceKey, Target, TargetKind};
use ssm_resync::metrics::Metrics;
use ssm_resync_harness::bench::counting::{Counting, live};
use ssm_resync_harness::bench::{Row, median};
use time::OffsetDateTime;

#[global_allocator]
static ALLOC: Counting = Counting;

const RUNS: usize = 5;

/// An ExternalSecret as the API server answers a merge patch of it: ESO's status from its
/// last sync, `revision` in its `syncedResourceVersion`.
fn external_secret(i: usize, revision: usize) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {
            "name": format!("payments-api-db-credentials-{i}"),
            "namespace": format!("team-{}", i % 100),
            "uid": format!("6f1c2d3e-4b5a-4c7d-8e9f-{i:012}"),
            "resourceVersion": format!("{}", 100_000 + i),
            "generation": 1,
            "annotations": {"force-sync": "1764583200.123456789"},
        },
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "aws-parameter-store", "kind": "SecretStore"},
            "target": {"name": format!("db-credentials-{i}"), "creationPolicy": "Owner"},
            "data": [{"secretKey": "password",
                      "remoteRef": {"key": format!("/prod/payments/db/password-{i}")}}],
        },
        "status": {
            "refreshTime": "2026-12-01T10:00:00Z",
            "syncedResourceVersion": format!("1-{revision:032x}"),
            "binding": {"name": format!("db-credentials-{i}")},
            "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                            "message": "secret synced",
                            "lastTransitionTime": "2026-12-01T10:00:00Z"}],
        },
    })
}

fn target(i: usize) -> Target {
    Target {
        kind: TargetKind::ExternalSecret,
        namespace: format!("team-{}", i % 100),
        name: format!("payments-api-db-credentials-{i}"),
    }
}

fn key(t: &Target) -> ResourceKey {
    ResourceKey {
        kind: ReaderKind::ExternalSecret,
        namespace: t.namespace.clone(),
        name: t.name.clone(),
    }
}

fn waiter(i: usize) -> Waiter {
    Waiter {
        message_id: Arc::from(format!("5e9a1c7e-3b2f-5d4a-9c8b-{i:012}")),
        parameter: Arc::from(format!("/prod/payments/db/password-{i}")),
        since: OffsetDateTime::now_utc(),
    }
}

struct Run {
    /// µs per target for `patched` + `attach`.
    pend_us: f64,
    /// Heap bytes per pending target.
    pend_bytes: f64,
    /// µs per `observe` that settles a target as refreshed.
    settle_us: f64,
    /// Heap bytes per target left after every target settled.
    retained_bytes: f64,
    /// µs per `observe` of a resource nothing waits on.
    idle_us: f64,
    base_pend_us: f64,
    base_pend_bytes: f64,
    base_settle_us: f64,
}

fn run(n: usize) -> Run {
    let metrics = Arc::new(Metrics::new());
    let confirm = Confirmations::new(
        Duration::from_secs(600),
        Arc::new(RwLock::new(Index::new())),
        metrics.clone(),
        Events::disabled(metrics.clone()),
    );
    // Built before the clock and the counter start: the inputs the watch and the patcher
    // already hold.
    let targets: Vec<Target> = (0..n).map(target).collect();
    let keys: Vec<ResourceKey> = targets.iter().map(key).collect();
    let answers: Vec<Value> = (0..n).map(|i| external_secret(i, 1)).collect();
    let refreshed: Vec<Value> = (0..n)
        .map(|i| external_secret(i, 2)["status"].clone())
        .collect();
    let mut waiters: Vec<Waiter> = (0..n).map(waiter).collect();
    let others: Vec<(ResourceKey, Value)> = (n..2 * n)
        .map(|i| (key(&target(i)), external_secret(i, 2)["status"].clone()))
        .collect();

    let before = live();
    let t = Instant::now();
    for ((target, answer), w) in targets.iter().zip(&answers).zip(waiters.drain(..)) {
        confirm.patched(target, answer);
        confirm.attach(target, w);
    }
    let pend_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let pend_bytes = (live() - before) as f64 / n as f64;

    let t = Instant::now();
    for (k, status) in &others {
        confirm.observe(k, status);
    }
    let idle_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    let t = Instant::now();
    for (k, status) in keys.iter().zip(&refreshed) {
        confirm.observe(k, status);
    }
    let settle_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let retained_bytes = live().saturating_sub(before) as f64 / n as f64;
    let settled = metrics_value(&metrics, "ssm_resync_refresh_total{outcome=\"refreshed\"}");
    assert!(
        settled >= n as f64,
        "only {settled} of {n} targets were reported refreshed"
    );

    // The baseline: insert each target with its waiter, then remove it.
    let mut waiters: Vec<Waiter> = (0..n).map(waiter).collect();
    let before = live();
    let t = Instant::now();
    let mut table: HashMap<Target, (Instant, Vec<Waiter>)> = HashMap::new();
    for (target, w) in targets.iter().zip(waiters.drain(..)) {
        table.insert(target.clone(), (Instant::now(), vec![w]));
    }
    let base_pend_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let base_pend_bytes = (live() - before) as f64 / n as f64;
    let t = Instant::now();
    for target in &targets {
        black_box(table.remove(target));
    }
    let base_settle_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(confirm);
    Run {
        pend_us,
        pend_bytes,
        settle_us,
        retained_bytes,
        idle_us,
        base_pend_us,
        base_pend_bytes,
        base_settle_us,
    }
}

fn metrics_value(metrics: &Metrics, series: &str) -> f64 {
    ssm_resync_harness::sample(&metrics.encode(), series)
}

fn main() {
    let n: usize = std::env::var("BENCH_CONFIRM_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // `Confirmations::new` starts its expiry ticker on the runtime; the deadlines (600 s) never
    // pass during a run, so the ticker is not driven.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let runs: Vec<Run> = (0..RUNS).map(|_| run(n)).collect();
    let m = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let label = format!("{n} targets in flight");
    let base = "HashMap<Target, (Instant, Vec<Waiter>)>, the least a pending table can be";
    Row::new(
        "10a",
        &format!("Closed loop: CPU per pending confirmation (patched + attach), {label}"),
        m(|r| r.pend_us),
        "µs",
    )
    .baseline(m(|r| r.base_pend_us), base)
    .note(format!(
        "median of {RUNS} runs; each run {n} targets, one change each; reads the status from the API server's answer to the patch"
    ))
    .emit();
    Row::new(
        "10b",
        &format!("Closed loop: heap per pending confirmation, {label}"),
        m(|r| r.pend_bytes),
        "B",
    )
    .baseline(m(|r| r.base_pend_bytes), base)
    .note(format!(
        "heap bytes requested (malloc overhead not included): the pending entry, its member, the watch-key map, the change's tally; {:.1} MiB for all {n}",
        m(|r| r.pend_bytes) * n as f64 / 1_048_576.0
    ))
    .emit();
    Row::new(
        "10c",
        "Closed loop: CPU per outcome (the watch event showing the refresh)",
        m(|r| r.settle_us),
        "µs",
    )
    .baseline(m(|r| r.base_settle_us), "HashMap remove")
    .note(format!(
        "includes the refresh metrics and the per-message tally; after all settled {:.0} B per target stay for up to a minute (recent outcomes) and a day (last refresh, for the sweep)",
        m(|r| r.retained_bytes)
    ))
    .emit();
    Row::new(
        "10d",
        "Closed loop: CPU added to a watch event nothing waits on",
        m(|r| r.idle_us),
        "µs",
    )
    .note(format!(
        "with {n} targets pending; API requests added per target: none (no API client in cluster::confirm; see 3c)"
    ))
    .emit();
}

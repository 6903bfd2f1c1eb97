//! The catch-up sweep: EventBridge delivery is best effort and SNS gives up after an hour,
//! so at start-up and every `--sweep-interval` the parameters the index references by name
//! are compared with what their readers last synced: `DescribeParameters` (metadata only,
//! never values; least privilege is `ssm:DescribeParameters`) gives each one's
//! LastModifiedDate, the reader's status gives its last sync (`status.refreshTime` for ESO,
//! `status.lastSync` for KES), and stale readers are force-synced.
//!
//! With several replicas only the holder of a `coordination.k8s.io` Lease sweeps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ssm::types::ParameterStringFilter;
use parking_lot::RwLock;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::cluster::confirm::Confirmations;
use crate::cluster::watch::Watches;
use crate::index::{Index, SweepItem, Target};
use crate::metrics::{Metrics, Result_};
use crate::resync::{Resync, Stale};

/// DescribeParameters accepts at most 50 values per filter.
pub const BATCH: usize = 50;

#[derive(Clone)]
pub struct SweepConfig {
    pub interval: Duration,
    /// The region for stores that leave it to the environment.
    pub default_region: Option<String>,
    /// The outcomes of patches: the sweep's own patches are followed too, and a reader seen
    /// refreshed after a change but still behind it is a bug to say loudly.
    pub confirmations: Option<Confirmations>,
}

/// SSM clients per region, for DescribeParameters only.
pub struct Ssm {
    clients: crate::aws::Regional<aws_sdk_ssm::Client>,
}

impl Ssm {
    pub fn new() -> Self {
        // Throttling (40 TPS by default for SSM) is retried with backoff by the SDK.
        let retry = aws_config::retry::RetryConfig::adaptive().with_max_attempts(5);
        Self {
            clients: crate::aws::Regional::new(aws_sdk_ssm::Client::new, retry),
        }
    }

    /// LastModifiedDate of each named parameter that exists, in batches of 50.
    async fn last_modified(
        &self,
        region: &str,
        names: &[String],
        metrics: &Metrics,
    ) -> Result<HashMap<String, OffsetDateTime>, String> {
        let client = self.clients.get(region).await;
        let mut out = HashMap::new();
        for batch in names.chunks(BATCH) {
            let filter = ParameterStringFilter::builder()
                .key("Name")
                .option("Equals")
                .set_values(Some(batch.to_vec()))
                .build()
                .map_err(|e| e.to_string())?;
            let mut token: Option<String> = None;
            loop {
                let result = client
                    .describe_parameters()
                    .parameter_filters(filter.clone())
                    .max_results(50)
                    .set_next_token(token.clone())
                    .send()
                    .await;
                let page = match result {
                    Ok(p) => {
                        metrics
                            .sweep_api_calls
                            .get_or_create(&Result_ { result: "ok" })
                            .inc();
                        p
                    }
                    Err(e) => {
                        metrics
                            .sweep_api_calls
                            .get_or_create(&Result_ { result: "error" })
                            .inc();
                        return Err(aws_sdk_ssm::error::DisplayErrorContext(e).to_string());
                    }
                };
                for p in page.parameters() {
                    if let (Some(name), Some(modified)) = (p.name(), p.last_modified_date()) {
                        let t = OffsetDateTime::from_unix_timestamp_nanos(modified.as_nanos())
                            .map_err(|e| e.to_string())?;
                        out.insert(name.to_owned(), t);
                    }
                }
                token = page.next_token().map(String::from);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }
}

impl Default for Ssm {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs sweeps forever: the first once every watch is in sync, then every interval, only
/// while `leader` says this replica holds the Lease (always when there is no Lease: `None`).
pub async fn run(
    config: SweepConfig,
    index: Arc<RwLock<Index>>,
    watches: Arc<Watches>,
    resync: Arc<Resync>,
    metrics: Arc<Metrics>,
    mut leader: Option<watch::Receiver<bool>>,
) {
    let ssm = Ssm::new();
    // What each target was already forced for, so a reader the operator has not re-synced
    // yet (or that nothing runs for) is not patched again every interval.
    let mut forced: HashMap<Target, OffsetDateTime> = HashMap::new();
    while !watches.ready() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        if leader.as_mut().is_none_or(|l| *l.borrow_and_update()) {
            metrics.sweep_leader.set(1);
            let result = sweep_once(&config, &index, &resync, &ssm, &metrics, &mut forced).await;
            crate::alloc::release_free_memory();
            let label = if result.is_ok() { "ok" } else { "error" };
            metrics
                .sweep_runs
                .get_or_create(&Result_ { result: label })
                .inc();
            match result {
                Ok(n) => tracing::info!(stale = n, "catch-up sweep done"),
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up sweep failed; next at the next interval")
                }
            }
        } else {
            metrics.sweep_leader.set(0);
        }
        // Sleep one interval, or until leadership changes (a new leader sweeps at once).
        let Some(l) = leader.as_mut() else {
            tokio::time::sleep(config.interval).await;
            continue;
        };
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            changed = l.changed() => {
                if changed.is_err() {
                    tracing::warn!("lease manager stopped; sweeping without a lease is refused");
                    metrics.sweep_leader.set(0);
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// One sweep; returns how many readers were stale.
async fn sweep_once(
    config: &SweepConfig,
    index: &RwLock<Index>,
    resync: &Resync,
    ssm: &Ssm,
    metrics: &Metrics,
    forced: &mut HashMap<Target, OffsetDateTime>,
) -> Result<usize, String> {
    let items = index.read().sweep_items();
    let mut by_region: BTreeMap<String, Vec<SweepItem>> = BTreeMap::new();
    for item in items {
        let Some(region) = item
            .region
            .clone()
            .or_else(|| config.default_region.clone())
        else {
            continue;
        };
        by_region.entry(region).or_default().push(item);
    }
    // Each stale target once, behind the newest change among the parameters it reads.
    let mut stale: HashMap<Target, Stale> = HashMap::new();
    for (region, items) in by_region {
        let names: Vec<String> = items
            .iter()
            .map(|i| i.name.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let modified = ssm.last_modified(&region, &names, metrics).await?;
        for item in items {
            let Some(m) = modified.get(&item.name) else {
                continue;
            };
            let behind = item.synced_at.is_none_or(|s| s < *m);
            let already = forced.get(&item.target).is_some_and(|f| f >= m);
            // ESO's refreshTime has whole seconds: a refresh the watch saw more than a second
            // after the change cannot leave the reader behind it.
            if behind
                && let Some(seen) = config
                    .confirmations
                    .as_ref()
                    .and_then(|c| c.last_refreshed(&item.target))
                && seen > *m + time::Duration::SECOND
            {
                tracing::error!(target = %item.target, parameter = %item.name, last_modified = %m, refreshed = %seen, refresh_time = ?item.synced_at, "reader behind its parameter although a refresh after the change was confirmed: ESO's status and the confirmation disagree");
                metrics.sweep_stale_after_refresh.inc();
            }
            if behind && !already {
                let s = stale.entry(item.target.clone()).or_insert_with(|| Stale {
                    target: item.target,
                    parameter: item.name.as_str().into(),
                    modified: *m,
                    sync_windows: None,
                });
                if *m > s.modified {
                    s.modified = *m;
                    s.parameter = item.name.as_str().into();
                }
                if item.sync_windows.is_some() {
                    s.sync_windows = item.sync_windows;
                }
            }
        }
    }
    let n = stale.len();
    metrics.sweep_stale.inc_by(n as u64);
    // Inside a closed sync window a reader is patched at its opening; the next sweep finds it
    // again if this process is gone by then, so a restart loses nothing.
    let modified: HashMap<Target, OffsetDateTime> =
        stale.iter().map(|(t, s)| (t.clone(), s.modified)).collect();
    let plan = crate::resync::plan_stale(stale.into_values().collect(), OffsetDateTime::now_utc());
    let applied = resync.apply(plan).await;
    // A reader whose patch failed is found again by the next sweep.
    for (t, outcome) in &applied.outcomes {
        if outcome.is_ok() {
            forced.insert(t.clone(), modified[t]);
        }
    }
    Ok(n)
}

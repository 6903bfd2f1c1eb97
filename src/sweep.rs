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
use futures::StreamExt as _;
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
        let client = self.clients.get(region).await.map_err(|e| e.to_string())?;
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
            let swept = sweep_once(&config, &index, &resync, &ssm, &metrics, &mut forced).await;
            crate::alloc::release_free_memory();
            metrics
                .sweep_runs
                .get_or_create(&Result_ {
                    result: swept.result(),
                })
                .inc();
            tracing::info!(stale = swept.stale, regions = swept.regions, failed_regions = ?swept.failed.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(), "catch-up sweep done");
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

/// What one sweep did.
#[derive(Debug, Default)]
struct Swept {
    stale: usize,
    regions: usize,
    /// Regions whose parameters could not be described, and why: the others were swept.
    failed: Vec<(String, String)>,
}

impl Swept {
    fn result(&self) -> &'static str {
        match self.failed.len() {
            0 => "ok",
            n if n == self.regions => "error",
            _ => "partial",
        }
    }
}

/// Regions described at once by one sweep.
const REGIONS_IN_FLIGHT: usize = 4;

/// One sweep. Each region is swept on its own: a store naming a region that does not exist,
/// is not enabled, or is denied by policy costs only its own readers their catch-up.
async fn sweep_once(
    config: &SweepConfig,
    index: &RwLock<Index>,
    resync: &Resync,
    ssm: &Ssm,
    metrics: &Metrics,
    forced: &mut HashMap<Target, OffsetDateTime>,
) -> Swept {
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
    let mut swept = Swept {
        regions: by_region.len(),
        ..Default::default()
    };
    // Regions are described side by side, and each region's stale readers are patched as soon
    // as its answer arrives: a region that answers slowly (up to the operation timeout)
    // delays no other region's catch-up. The describing goes on while a region's patches are
    // applied (both futures are polled by one `join`).
    let (answers, mut answered) = futures::channel::mpsc::unbounded();
    let describe = futures::stream::iter(by_region.into_iter().map(|(region, items)| async move {
        let names: Vec<String> = items
            .iter()
            .map(|i| i.name.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let modified = ssm.last_modified(&region, &names, metrics).await;
        (region, items, modified)
    }))
    .buffer_unordered(REGIONS_IN_FLIGHT)
    .for_each(move |answer| {
        // The receiver lives until every answer is in: it is the other half of the join.
        let _ = answers.unbounded_send(answer);
        std::future::ready(())
    });
    let mut stale_targets: HashSet<Target> = HashSet::new();
    let act = async {
        while let Some((region, items, modified)) = answered.next().await {
            let modified = match modified {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(region = %crate::text::truncate(&region, 64), readers = items.len(), error = %e, "catch-up sweep of this region failed; the other regions are swept");
                    swept
                        .failed
                        .push((crate::text::truncate(&region, 64).into(), e));
                    continue;
                }
            };
            let last_refreshed = |t: &Target| {
                config
                    .confirmations
                    .as_ref()
                    .and_then(|c| c.last_refreshed(t))
            };
            // `forced` holds what earlier regions of this sweep patched: a target reading
            // parameters of two regions is patched again only for a change newer than the one
            // it was patched for (its re-sync, after that patch, read the older ones).
            let found = stale_readers(items, &modified, forced, last_refreshed);
            for (item, m, seen) in &found.disagreeing {
                tracing::error!(target = %item.target, parameter = %item.name, last_modified = %m, refreshed = %seen, refresh_time = ?item.synced_at, "reader behind its parameter although a refresh after the change was confirmed: ESO's status and the confirmation disagree");
                metrics.sweep_stale_after_refresh.inc();
            }
            if found.stale.is_empty() {
                continue;
            }
            metrics.sweep_stale.inc_by(found.stale.len() as u64);
            stale_targets.extend(found.stale.keys().cloned());
            apply_stale(resync, found.stale, forced).await;
        }
    };
    futures::join!(describe, act);
    swept.failed.sort();
    metrics.sweep_failed_regions.set(swept.failed.len() as i64);
    swept.stale = stale_targets.len();
    swept
}

/// Patches one region's stale readers. Inside a closed sync window a reader is patched at its
/// opening; the next sweep finds it again if this process is gone by then, so a restart loses
/// nothing. A reader whose patch failed is found again by the next sweep.
async fn apply_stale(
    resync: &Resync,
    stale: HashMap<Target, Stale>,
    forced: &mut HashMap<Target, OffsetDateTime>,
) {
    let modified: HashMap<Target, OffsetDateTime> =
        stale.iter().map(|(t, s)| (t.clone(), s.modified)).collect();
    let plan = crate::resync::plan_stale(stale.into_values().collect(), OffsetDateTime::now_utc());
    let applied = resync.apply(plan).await;
    for (t, outcome) in &applied.outcomes {
        if outcome.is_ok() {
            forced.insert(t.clone(), modified[t]);
        }
    }
}

/// The readers of one region behind their parameters.
#[derive(Debug, Default)]
struct Found {
    /// Each stale target once, behind the newest change among the parameters it reads.
    stale: HashMap<Target, Stale>,
    /// Behind although the watch saw a refresh after the change (item, modified, refreshed):
    /// ESO's status and the confirmation disagree, a bug to say loudly.
    disagreeing: Vec<(SweepItem, OffsetDateTime, OffsetDateTime)>,
}

/// Which readers are behind the parameters' `modified` dates and not yet forced for them.
fn stale_readers(
    items: Vec<SweepItem>,
    modified: &HashMap<String, OffsetDateTime>,
    forced: &HashMap<Target, OffsetDateTime>,
    last_refreshed: impl Fn(&Target) -> Option<OffsetDateTime>,
) -> Found {
    let mut found = Found::default();
    for item in items {
        let Some(m) = modified.get(&item.name) else {
            continue;
        };
        let behind = item.synced_at.is_none_or(|s| s < *m);
        let already = forced.get(&item.target).is_some_and(|f| f >= m);
        // ESO's refreshTime has whole seconds: a refresh the watch saw more than a second
        // after the change cannot leave the reader behind it.
        if behind
            && let Some(seen) = last_refreshed(&item.target)
            && seen > *m + time::Duration::SECOND
        {
            found.disagreeing.push((item.clone(), *m, seen));
        }
        if behind && !already {
            let s = Stale {
                target: item.target.clone(),
                parameter: item.name.as_str().into(),
                modified: *m,
                sync_windows: item.sync_windows,
            };
            merge_stale(&mut found.stale, item.target, s);
        }
    }
    found
}

/// One entry a target: the newest change wins, and windows once known stay.
fn merge_stale(stale: &mut HashMap<Target, Stale>, target: Target, s: Stale) {
    match stale.entry(target) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(s);
        }
        std::collections::hash_map::Entry::Occupied(mut o) => {
            let e = o.get_mut();
            if s.modified > e.modified {
                e.modified = s.modified;
                e.parameter = s.parameter;
            }
            if s.sync_windows.is_some() {
                e.sync_windows = s.sync_windows;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::index::TargetKind;

    fn target(name: &str) -> Target {
        Target {
            kind: TargetKind::ExternalSecret,
            namespace: "app".into(),
            name: name.into(),
        }
    }

    fn item(reader: &str, name: &str, synced_at: Option<OffsetDateTime>) -> SweepItem {
        SweepItem {
            region: Some("us-east-1".into()),
            name: name.into(),
            target: target(reader),
            synced_at,
            sync_windows: None,
        }
    }

    const T: OffsetDateTime = datetime!(2026-12-06 12:00 UTC);

    #[test]
    fn a_reader_behind_its_newest_parameter_is_stale_once() {
        let modified = HashMap::from([
            ("/a".to_owned(), T),
            ("/b".to_owned(), T + time::Duration::MINUTE),
            ("/c".to_owned(), T),
        ]);
        let items = vec![
            item("two", "/a", Some(T - time::Duration::HOUR)),
            item("two", "/b", Some(T - time::Duration::HOUR)),
            item("fresh", "/c", Some(T + time::Duration::SECOND)),
            item("never-synced", "/c", None),
            item("gone", "/deleted", None),
        ];
        let found = stale_readers(items, &modified, &HashMap::new(), |_| None);
        let mut names: Vec<&str> = found.stale.keys().map(|t| t.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["never-synced", "two"]);
        let two = &found.stale[&target("two")];
        assert_eq!(
            (&*two.parameter, two.modified),
            ("/b", T + time::Duration::MINUTE)
        );
        assert!(found.disagreeing.is_empty());
    }

    #[test]
    fn a_reader_already_forced_for_the_change_is_not_forced_again() {
        let modified = HashMap::from([("/a".to_owned(), T)]);
        let items = vec![item("r", "/a", Some(T - time::Duration::HOUR))];
        let forced = HashMap::from([(target("r"), T)]);
        assert!(
            stale_readers(items.clone(), &modified, &forced, |_| None)
                .stale
                .is_empty()
        );
        let older = HashMap::from([(target("r"), T - time::Duration::MINUTE)]);
        assert_eq!(
            stale_readers(items, &modified, &older, |_| None)
                .stale
                .len(),
            1
        );
    }

    #[test]
    fn a_confirmed_refresh_after_the_change_that_left_the_reader_behind_is_reported() {
        let modified = HashMap::from([("/a".to_owned(), T)]);
        let items = vec![item("r", "/a", Some(T - time::Duration::HOUR))];
        let seen = T + time::Duration::seconds(5);
        let found = stale_readers(items, &modified, &HashMap::new(), |_| Some(seen));
        assert_eq!(found.disagreeing.len(), 1);
        assert_eq!(found.stale.len(), 1, "still forced");
    }

    #[test]
    fn a_sweep_with_some_regions_failed_is_partial() {
        let swept = |regions, failed: usize| Swept {
            stale: 0,
            regions,
            failed: (0..failed)
                .map(|i| (i.to_string(), "boom".into()))
                .collect(),
        };
        assert_eq!(swept(3, 0).result(), "ok");
        assert_eq!(swept(3, 1).result(), "partial");
        assert_eq!(swept(3, 3).result(), "error");
        assert_eq!(swept(0, 0).result(), "ok");
    }
}

//! Watches of the kinds the index is built from. Each watch lists, then follows changes; on
//! every (re)list the index is made exactly equal to the list, so a missed delete while
//! disconnected cannot leave a stale entry. Readiness is "every watch has listed once".

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{EsoVersion, eso_resource, kes_resource};
use crate::index::{Index, Reader, ReaderKind, Store};
use crate::metrics::{Kind, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    ExternalSecret,
    SecretStore,
    ClusterSecretStore,
    /// kubernetes-client.io/v1 ExternalSecret (kubernetes-external-secrets), with `--kes`.
    KesExternalSecret,
}

impl WatchKind {
    pub const ESO: [WatchKind; 3] = [
        Self::ExternalSecret,
        Self::SecretStore,
        Self::ClusterSecretStore,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExternalSecret => "ExternalSecret",
            Self::SecretStore => "SecretStore",
            Self::ClusterSecretStore => "ClusterSecretStore",
            Self::KesExternalSecret => "KesExternalSecret",
        }
    }

    fn resource(self, version: EsoVersion) -> kube::discovery::ApiResource {
        match self {
            Self::ExternalSecret => eso_resource(version, "ExternalSecret", "externalsecrets"),
            Self::SecretStore => eso_resource(version, "SecretStore", "secretstores"),
            Self::ClusterSecretStore => {
                eso_resource(version, "ClusterSecretStore", "clustersecretstores")
            }
            Self::KesExternalSecret => kes_resource(),
        }
    }
}

/// Liveness and sync state of one watch.
#[derive(Debug)]
pub struct WatchState {
    pub kind: WatchKind,
    synced: AtomicBool,
    last_event: Mutex<Instant>,
}

impl WatchState {
    fn new(kind: WatchKind) -> Self {
        Self {
            kind,
            synced: AtomicBool::new(false),
            last_event: Mutex::new(Instant::now()),
        }
    }
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
    pub fn last_event(&self) -> Instant {
        *self.last_event.lock()
    }
}

/// The state every watch shares with the request path.
#[derive(Debug)]
pub struct Watches {
    pub states: Vec<Arc<WatchState>>,
}

impl Watches {
    /// The ESO kinds, plus kubernetes-external-secrets when `kes`.
    pub fn new(kes: bool) -> Self {
        let mut kinds = WatchKind::ESO.to_vec();
        if kes {
            kinds.push(WatchKind::KesExternalSecret);
        }
        Self {
            states: kinds
                .into_iter()
                .map(|k| Arc::new(WatchState::new(k)))
                .collect(),
        }
    }

    /// Names of the kinds not yet in sync; empty when ready.
    pub fn unsynced(&self) -> Vec<&'static str> {
        self.states
            .iter()
            .filter(|s| !s.synced())
            .map(|s| s.kind.as_str())
            .collect()
    }

    pub fn ready(&self) -> bool {
        self.states.iter().all(|s| s.synced())
    }

    /// Updates the per-kind age gauges (called at scrape time).
    pub fn export(&self, metrics: &Metrics) {
        for s in &self.states {
            let kind = Kind {
                kind: s.kind.as_str(),
            };
            metrics
                .watch_last_event_age
                .get_or_create(&kind)
                .set(s.last_event().elapsed().as_secs_f64());
            metrics
                .watch_synced
                .get_or_create(&kind)
                .set(i64::from(s.synced()));
        }
    }
}

/// Starts one watch task per kind. They run until the runtime stops.
pub fn spawn_all(
    client: kube::Client,
    version: EsoVersion,
    index: Arc<RwLock<Index>>,
    watches: &Watches,
    metrics: Arc<Metrics>,
) {
    for state in &watches.states {
        let ar = state.kind.resource(version);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        tokio::spawn(run(api, state.clone(), index.clone(), metrics.clone()));
    }
}

async fn run(
    api: Api<DynamicObject>,
    state: Arc<WatchState>,
    index: Arc<RwLock<Index>>,
    metrics: Arc<Metrics>,
) {
    let kind = state.kind;
    let label = Kind {
        kind: kind.as_str(),
    };
    let mut listed: Vec<Value> = Vec::new();
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        *state.last_event.lock() = Instant::now();
        match event {
            Ok(Event::Init) => {
                listed.clear();
                metrics.watch_restarts.get_or_create(&label).inc();
                tracing::info!(kind = kind.as_str(), "watch listing");
            }
            Ok(Event::InitApply(obj)) => {
                metrics.watch_events.get_or_create(&label).inc();
                listed.push(to_value(obj));
            }
            Ok(Event::InitDone) => {
                let n = listed.len();
                replace(kind, std::mem::take(&mut listed), &mut index.write());
                state.synced.store(true, Ordering::Release);
                export_index(&index.read(), &metrics);
                tracing::info!(kind = kind.as_str(), objects = n, "watch in sync");
            }
            Ok(Event::Apply(obj)) => {
                metrics.watch_events.get_or_create(&label).inc();
                apply(kind, &to_value(obj), &mut index.write());
                export_index(&index.read(), &metrics);
            }
            Ok(Event::Delete(obj)) => {
                metrics.watch_events.get_or_create(&label).inc();
                delete(kind, &to_value(obj), &mut index.write());
                export_index(&index.read(), &metrics);
            }
            Err(e) => {
                metrics.watch_restarts.get_or_create(&label).inc();
                tracing::warn!(kind = kind.as_str(), error = %e, "watch error; retrying with backoff");
            }
        }
    }
}

fn to_value(obj: DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

fn replace(kind: WatchKind, objects: Vec<Value>, index: &mut Index) {
    match kind {
        WatchKind::ExternalSecret | WatchKind::KesExternalSecret => {
            let readers = objects
                .iter()
                .filter_map(|o| parse_reader(kind, o))
                .collect();
            index.replace_readers(reader_kind(kind), readers)
        }
        WatchKind::SecretStore | WatchKind::ClusterSecretStore => {
            let cluster = kind == WatchKind::ClusterSecretStore;
            index.replace_stores(
                cluster,
                objects
                    .iter()
                    .filter_map(|o| parse_store(o, cluster))
                    .collect(),
            )
        }
    }
}

fn apply(kind: WatchKind, obj: &Value, index: &mut Index) {
    match kind {
        WatchKind::ExternalSecret | WatchKind::KesExternalSecret => {
            if let Some(r) = parse_reader(kind, obj) {
                index.apply_reader(r)
            }
        }
        WatchKind::SecretStore | WatchKind::ClusterSecretStore => {
            if let Some(s) = parse_store(obj, kind == WatchKind::ClusterSecretStore) {
                index.apply_store(s)
            }
        }
    }
}

fn delete(kind: WatchKind, obj: &Value, index: &mut Index) {
    let Ok((namespace, name)) = crate::index::model::meta(obj) else {
        return;
    };
    let ns = namespace.as_deref().unwrap_or_default();
    match kind {
        WatchKind::ExternalSecret | WatchKind::KesExternalSecret => {
            index.delete_reader(reader_kind(kind), ns, &name)
        }
        WatchKind::SecretStore => index.delete_store(&crate::index::StoreId::namespaced(ns, &name)),
        WatchKind::ClusterSecretStore => index.delete_store(&crate::index::StoreId::cluster(&name)),
    }
}

fn reader_kind(kind: WatchKind) -> ReaderKind {
    match kind {
        WatchKind::KesExternalSecret => ReaderKind::KesExternalSecret,
        _ => ReaderKind::ExternalSecret,
    }
}

fn parse_reader(kind: WatchKind, obj: &Value) -> Option<Reader> {
    let parsed = match kind {
        WatchKind::KesExternalSecret => Reader::from_kes(obj),
        _ => Reader::from_external_secret(obj),
    };
    parsed
        .map_err(|e| tracing::warn!(error = %e, "skipping unreadable ExternalSecret"))
        .ok()
}

fn parse_store(obj: &Value, cluster: bool) -> Option<Store> {
    Store::from_object(obj, cluster)
        .map_err(|e| tracing::warn!(error = %e, "skipping unreadable store"))
        .ok()
}

fn export_index(index: &Index, metrics: &Metrics) {
    let s = index.stats();
    metrics
        .index_objects
        .get_or_create(&Kind {
            kind: "ExternalSecret",
        })
        .set(s.external_secrets as i64);
    metrics
        .index_objects
        .get_or_create(&Kind { kind: "Store" })
        .set(s.stores as i64);
    metrics.index_references.set(s.references as i64);
}

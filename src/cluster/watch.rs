//! Watches of the kinds the index is built from. Each watch lists, then follows changes; on
//! every (re)list the index is made exactly equal to the list, so a missed delete while
//! disconnected cannot leave a stale entry. Readiness is "every watch has listed once".

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{EsoVersion, eso_resource, kes_resource};
use crate::index::{ClusterExternalSecret, Index, Reader, ReaderKind, Store};
use crate::metrics::{Kind, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    ExternalSecret,
    SecretStore,
    ClusterSecretStore,
    /// Read to tell a ClusterExternalSecret's children from ExternalSecrets that only claim it
    /// as owner (`index::owners`).
    ClusterExternalSecret,
    /// kubernetes-client.io/v1 ExternalSecret (kubernetes-external-secrets), with `--kes`.
    KesExternalSecret,
}

impl WatchKind {
    pub const ESO: [WatchKind; 4] = [
        Self::ExternalSecret,
        Self::SecretStore,
        Self::ClusterSecretStore,
        Self::ClusterExternalSecret,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExternalSecret => "ExternalSecret",
            Self::SecretStore => "SecretStore",
            Self::ClusterSecretStore => "ClusterSecretStore",
            Self::ClusterExternalSecret => "ClusterExternalSecret",
            Self::KesExternalSecret => "KesExternalSecret",
        }
    }

    pub fn resource(self, version: EsoVersion) -> kube::discovery::ApiResource {
        match self {
            Self::ExternalSecret => eso_resource(version, "ExternalSecret", "externalsecrets"),
            Self::SecretStore => eso_resource(version, "SecretStore", "secretstores"),
            Self::ClusterSecretStore => {
                eso_resource(version, "ClusterSecretStore", "clustersecretstores")
            }
            Self::ClusterExternalSecret => {
                eso_resource(version, "ClusterExternalSecret", "clusterexternalsecrets")
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
    fn touch(&self) {
        *self.last_event.lock() = Instant::now();
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
/// How long a watch may stay silent before it is declared stalled and restarted with a fresh
/// list. The server is asked to end each watch after half of it, so a live connection always
/// shows a sign of life (an event, a bookmark or a clean end) well within the limit.
#[derive(Clone)]
pub struct WatchConfig {
    pub stall_timeout: Duration,
    /// Told of every ExternalSecret the watch sees: the operator's status after a patch is
    /// the patch's outcome (`cluster::confirm`).
    pub confirmations: Option<super::confirm::Confirmations>,
    /// Where a reference the index cannot evaluate as written is reported (a Warning Event
    /// `ReferenceRejected` on its resource).
    pub events: Option<super::events::Events>,
    /// How each kind's first list at start-up is read.
    pub initial_list: InitialList,
}

/// How each kind is read at start-up (`--initial-list`). After a stall or an expired version
/// the service always re-lists page by page from etcd ([`Freshness::Consistent`]): the cache
/// itself may be what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InitialList {
    /// One LIST with `resourceVersion=0`, answered from the API server's watch cache and
    /// parsed item by item as it arrives ([`Freshness::Cached`]).
    #[default]
    List,
    /// A watch with `sendInitialEvents=true` (KEP-3157 "watch-list"; the `WatchList` gate of
    /// the API server is on by default in 1.32 and from 1.34, off in 1.33): the API server
    /// streams every object from its watch cache as an ADDED event, then a bookmark
    /// annotated `k8s.io/initial-events-end`. What client-go informers use where the server
    /// offers it. A server that refuses it (the gate off: 422) or does not end the initial
    /// events with that bookmark (older than 1.27) is read with `list`.
    WatchList,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(120),
            confirmations: None,
            events: None,
            initial_list: InitialList::List,
        }
    }
}

/// Starts one watch task per kind. They run until the runtime stops.
pub fn spawn_all(
    client: kube::Client,
    version: EsoVersion,
    config: WatchConfig,
    index: Arc<RwLock<Index>>,
    watches: &Watches,
    metrics: Arc<Metrics>,
) {
    for state in &watches.states {
        let ar = state.kind.resource(version);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        tokio::spawn(run(
            api,
            config.clone(),
            state.clone(),
            index.clone(),
            metrics.clone(),
        ));
    }
}

/// Why a watch session ended.
enum End {
    /// The server closed it cleanly (its timeout): watch again from the last version.
    Closed,
    /// The version is too old (410) or unknown: list again.
    Relist,
    /// No sign of life within the stall timeout: list again on a fresh connection.
    Stalled,
    /// A transport or server error: back off, then watch again from the last version.
    Error(String),
}

/// List, then watch from the list's version, forever. Every sign of life (event, bookmark,
/// clean end of a watch) is recorded; silence beyond the stall timeout restarts the kind
/// with a fresh list and takes readiness away until that list is in the index.
async fn run(
    api: Api<DynamicObject>,
    config: WatchConfig,
    state: Arc<WatchState>,
    index: Arc<RwLock<Index>>,
    metrics: Arc<Metrics>,
) {
    let kind = state.kind;
    let label = Kind {
        kind: kind.as_str(),
    };
    let mut delays = backoff();
    let mut freshness = Freshness::Cached;
    let server_timeout = (config.stall_timeout.as_secs() / 2).clamp(1, 290) as u32;
    let mut initial = config.initial_list;
    'list: loop {
        metrics.watch_restarts.get_or_create(&label).inc();
        // A watch-list that fails (a server that refuses it) is followed by the list.
        let streamed = match initial {
            InitialList::WatchList => {
                match watch_list(&api, kind, &index, &metrics, config.stall_timeout).await {
                    Ok(version) => Some(version),
                    Err(e) => {
                        tracing::warn!(kind = kind.as_str(), error = %e, "watch-list failed; reading with a list instead");
                        None
                    }
                }
            }
            InitialList::List => None,
        };
        let listed = match streamed {
            Some(version) => Ok(version),
            None => {
                list(
                    &api,
                    kind,
                    &index,
                    &metrics,
                    freshness,
                    config.stall_timeout,
                )
                .await
            }
        };
        initial = InitialList::List;
        freshness = Freshness::Consistent;
        let mut version = match listed {
            Ok(v) => {
                delays = backoff();
                state.touch();
                state.synced.store(true, Ordering::Release);
                if let Some(events) = &config.events
                    && matches!(
                        kind,
                        WatchKind::ExternalSecret | WatchKind::KesExternalSecret
                    )
                {
                    let index = index.read();
                    let kind = reader_kind(kind);
                    let mut by_reader: std::collections::HashMap<
                        &crate::index::ResourceKey,
                        Vec<_>,
                    > = Default::default();
                    for r in index.rejected().filter(|r| r.reader.kind == kind) {
                        by_reader.entry(&r.reader).or_default().push(r.clone());
                    }
                    for (key, rejected) in by_reader {
                        events.reference_rejected(key, None, &rejected);
                    }
                }
                v
            }
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), error = %e, "list failed; retrying with backoff");
                tokio::time::sleep(delays.next().unwrap_or(MAX_BACKOFF)).await;
                continue 'list;
            }
        };
        loop {
            let end = watch_once(
                &api,
                kind,
                &mut version,
                server_timeout,
                &config,
                &state,
                &index,
                &metrics,
            )
            .await;
            match end {
                End::Closed => delays = backoff(),
                End::Relist => {
                    tracing::info!(
                        kind = kind.as_str(),
                        "resource version expired; listing again"
                    );
                    continue 'list;
                }
                End::Stalled => {
                    state.synced.store(false, Ordering::Release);
                    metrics.watch_stalls.get_or_create(&label).inc();
                    tracing::error!(kind = kind.as_str(), stall_timeout = ?config.stall_timeout, "watch stalled: no event, bookmark or close; restarting with a fresh list");
                    continue 'list;
                }
                End::Error(e) => {
                    metrics.watch_errors.get_or_create(&label).inc();
                    tracing::warn!(kind = kind.as_str(), error = %e, "watch error; watching again with backoff");
                    tokio::time::sleep(delays.next().unwrap_or(MAX_BACKOFF)).await;
                }
            }
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Delays between retries: 200 ms doubling up to 30 s, with jitter, never giving up.
fn backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Which copy of the objects a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// `resourceVersion=0`, no limit: the API server answers from its watch cache in one
    /// response, several times faster than paging through etcd (20,000 ExternalSecrets,
    /// 21 MB: about 1 s instead of about 4 s on the local stack). The state may be older than
    /// the newest write (HA API servers, a lagging cache); the watch that follows starts at
    /// the list's version, so every later change still arrives, in order. What client-go
    /// informers do for their first list. Used for the first list of each kind at start-up.
    Cached,
    /// No resourceVersion: a consistent read from etcd, page by page. Used after a stall or an
    /// expired version (the cache itself may be what went wrong) and by `explain`.
    Consistent,
}

/// Lists every object of a kind, makes the index equal to the list, and returns the list's
/// resource version. Also what `explain` builds its index with.
///
/// The response is parsed as it arrives (on a blocking thread fed by the connection), one
/// item at a time, each reduced to what the index keeps and dropped before the next: the
/// list never exists whole, as text or as a JSON tree, so memory does not peak with the
/// size of the cluster (the allocator would keep that peak as resident memory). A response
/// that goes silent for `silence` fails the list (which is then retried), as a silent
/// watch does: a frozen connection must not hold the kind out of sync forever.
pub async fn list(
    api: &Api<DynamicObject>,
    kind: WatchKind,
    index: &RwLock<Index>,
    metrics: &Metrics,
    freshness: Freshness,
    silence: Duration,
) -> Result<String, kube::Error> {
    let client = api.clone().into_client();
    let request = kube::core::Request::new(api.resource_url());
    let mut parsed = Listed::default();
    let mut params = match freshness {
        // kube-rs drops resourceVersion=0 when a limit is set (the cache would ignore it).
        Freshness::Cached => ListParams::default().at("0"),
        Freshness::Consistent => ListParams::default().limit(500),
    };
    let started = std::time::Instant::now();
    let version = loop {
        let mut req = request.list(&params).map_err(kube::Error::BuildRequest)?;
        req.extensions_mut().insert("list");
        let body = tokio::time::timeout(silence, client.request_stream(req))
            .await
            .map_err(|_| {
                kube::Error::Service(format!("list: no response within {silence:?}").into())
            })??;
        let body = Silence::new(body, silence);
        let (back, meta) = tokio::task::spawn_blocking(move || {
            use tokio_util::compat::FuturesAsyncReadCompatExt as _;
            let body = tokio_util::io::SyncIoBridge::new(body.compat());
            let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
                64 * 1024,
                body,
            ));
            let meta = serde::de::DeserializeSeed::deserialize(
                ListBody {
                    kind,
                    parsed: &mut parsed,
                },
                &mut de,
            )
            .and_then(|meta| de.end().map(|()| meta));
            (parsed, meta)
        })
        .await
        .map_err(|e| kube::Error::Service(e.into()))?;
        parsed = back;
        let meta = meta.map_err(kube::Error::SerdeError)?;
        match meta.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break meta.resource_version.unwrap_or_default(),
        }
    };
    let n = parsed.commit(kind, index, metrics);
    tracing::info!(
        kind = kind.as_str(),
        objects = n,
        version = %version,
        ?freshness,
        took = ?started.elapsed(),
        "listed; in sync"
    );
    Ok(version)
}

/// Reads every object of a kind through a watch-list (`sendInitialEvents=true`, see
/// [`InitialList::WatchList`]), makes the index equal to what it streamed, and returns the
/// resource version of the bookmark that ends the initial events. Each event is decoded and
/// reduced to what the index keeps on its own, as [`list`] does with the items of a list.
/// Silence for `silence` between events, an error event, or the stream ending before the
/// `k8s.io/initial-events-end` bookmark fails it (the caller then lists).
pub async fn watch_list(
    api: &Api<DynamicObject>,
    kind: WatchKind,
    index: &RwLock<Index>,
    metrics: &Metrics,
    silence: Duration,
) -> Result<String, kube::Error> {
    let client = api.clone().into_client();
    // An empty resourceVersion with sendInitialEvents: the initial state is at least as new as
    // a consistent read (the server waits for its cache to catch up), as client-go asks it.
    let params =
        WatchParams::streaming_lists().timeout((silence.as_secs() / 2).clamp(1, 290) as u32);
    let mut req = kube::core::Request::new(api.resource_url())
        .watch(&params, "")
        .map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("watch-list");
    let started = std::time::Instant::now();
    let stream = tokio::time::timeout(silence, client.request_events::<Value>(req))
        .await
        .map_err(|_| {
            kube::Error::Service(format!("watch-list: no response within {silence:?}").into())
        })??;
    let mut stream = std::pin::pin!(stream);
    let mut parsed = Listed::default();
    let version = loop {
        let event = tokio::time::timeout(silence, stream.next())
            .await
            .map_err(|_| {
                kube::Error::Service(
                    format!("watch-list: silent for {silence:?} before its initial events ended")
                        .into(),
                )
            })?
            .ok_or_else(|| {
                kube::Error::Service(
                    "watch-list: the stream ended before the initial-events-end bookmark \
                     (a server without watch-list)"
                        .into(),
                )
            })??;
        match event {
            WatchEvent::Added(obj) | WatchEvent::Modified(obj) => parsed.push(kind, &obj),
            WatchEvent::Deleted(_) => {
                return Err(kube::Error::Service(
                    "watch-list: a DELETED event among the initial events".into(),
                ));
            }
            WatchEvent::Bookmark(b)
                if b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .is_some_and(|v| v == "true") =>
            {
                break b.metadata.resource_version;
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(status) => return Err(kube::Error::Api(status)),
        }
    };
    let n = parsed.commit(kind, index, metrics);
    tracing::info!(
        kind = kind.as_str(),
        objects = n,
        version = %version,
        took = ?started.elapsed(),
        "streamed by watch-list; in sync"
    );
    Ok(version)
}

/// A reader that fails with `TimedOut` when no byte arrives for `limit`. (tokio-io-timeout's
/// `TimeoutReader` was tried in its place: behind `SyncIoBridge` it failed the frozen list of
/// `a_list_response_that_goes_silent_fails_and_the_next_list_succeeds` after 14 s instead of
/// 2 s, three runs out of three, so this stays.)
struct Silence<R> {
    inner: R,
    limit: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<R> Silence<R> {
    fn new(inner: R, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<R: futures::AsyncRead + Unpin> futures::AsyncRead for Silence<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let next = tokio::time::Instant::now() + this.limit;
                this.timer.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("list response silent for {:?}", this.limit),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// What a list keeps: readers or stores, parsed item by item.
#[derive(Default)]
struct Listed {
    readers: Vec<Reader>,
    stores: Vec<Store>,
    clusters: Vec<ClusterExternalSecret>,
    /// Items seen, kept or not.
    seen: usize,
}

/// A list response body (`{"metadata": {...}, "items": [...], ...}`), decoded into `parsed`
/// item by item; yields the list's metadata.
struct ListBody<'a> {
    kind: WatchKind,
    parsed: &'a mut Listed,
}

impl<'de> serde::de::DeserializeSeed<'de> for ListBody<'_> {
    type Value = ListMeta;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<ListMeta, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ListBody<'_> {
    type Value = ListMeta;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes list object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ListMeta, A::Error> {
        let mut meta = ListMeta::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "metadata" => meta = map.next_value()?,
                "items" => map.next_value_seed(Items {
                    kind: self.kind,
                    parsed: &mut *self.parsed,
                })?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(meta)
    }
}

/// The `items` array (or `null`) of a list body.
struct Items<'a> {
    kind: WatchKind,
    parsed: &'a mut Listed,
}

impl<'de> serde::de::DeserializeSeed<'de> for Items<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Items<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of objects")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(obj) = seq.next_element::<Value>()? {
            self.parsed.push(self.kind, &obj);
        }
        Ok(())
    }
}

impl Listed {
    fn push(&mut self, kind: WatchKind, obj: &Value) {
        self.seen += 1;
        match kind {
            WatchKind::ExternalSecret | WatchKind::KesExternalSecret => {
                self.readers.extend(parse_reader(kind, obj))
            }
            WatchKind::SecretStore | WatchKind::ClusterSecretStore => self
                .stores
                .extend(parse_store(obj, kind == WatchKind::ClusterSecretStore)),
            WatchKind::ClusterExternalSecret => self.clusters.extend(parse_cluster(obj)),
        }
    }

    /// Counts what was read, makes the index's `kind` exactly it (a list or a watch-list's
    /// initial events), hands the heap it freed back to the OS, and says how many objects
    /// there were.
    fn commit(self, kind: WatchKind, index: &RwLock<Index>, metrics: &Metrics) -> usize {
        let n = self.seen;
        metrics
            .watch_events
            .get_or_create(&Kind {
                kind: kind.as_str(),
            })
            .inc_by(n as u64);
        self.replace_into(kind, &mut index.write());
        crate::alloc::release_free_memory();
        export_index(&index.read(), metrics);
        n
    }

    fn replace_into(self, kind: WatchKind, index: &mut Index) {
        match kind {
            WatchKind::ExternalSecret | WatchKind::KesExternalSecret => {
                index.replace_readers(reader_kind(kind), self.readers)
            }
            WatchKind::SecretStore => index.replace_stores(false, self.stores),
            WatchKind::ClusterSecretStore => index.replace_stores(true, self.stores),
            WatchKind::ClusterExternalSecret => {
                index.replace_cluster_external_secrets(self.clusters)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn watch_once(
    api: &Api<DynamicObject>,
    kind: WatchKind,
    version: &mut String,
    server_timeout: u32,
    config: &WatchConfig,
    state: &WatchState,
    index: &RwLock<Index>,
    metrics: &Metrics,
) -> End {
    let (stall_timeout, confirmations) = (config.stall_timeout, config.confirmations.as_ref());
    let label = Kind {
        kind: kind.as_str(),
    };
    let params = WatchParams::default().timeout(server_timeout);
    // Opening the watch counts against the stall timeout too: a frozen connection can hang
    // before the first byte as well as after.
    let stream = match tokio::time::timeout(stall_timeout, api.watch(&params, version)).await {
        Err(_) => return End::Stalled,
        Ok(Err(e)) => return End::Error(e.to_string()),
        Ok(Ok(s)) => s,
    };
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = match tokio::time::timeout(stall_timeout, stream.next()).await {
            Err(_) => return End::Stalled,
            Ok(None) => {
                state.touch();
                return End::Closed;
            }
            Ok(Some(n)) => n,
        };
        state.touch();
        let event = match next {
            Ok(e) => e,
            Err(e) => return End::Error(e.to_string()),
        };
        let (obj, deleted) = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
            WatchEvent::Deleted(o) => (o, true),
            WatchEvent::Bookmark(b) => {
                *version = b.metadata.resource_version;
                continue;
            }
            WatchEvent::Error(status) if status.code == 410 => return End::Relist,
            WatchEvent::Error(status) => {
                return End::Error(format!("{} {}", status.code, status.message));
            }
        };
        if let Some(v) = &obj.metadata.resource_version {
            version.clone_from(v);
        }
        metrics.watch_events.get_or_create(&label).inc();
        let value = to_value(obj);
        if let Some(c) = confirmations
            && matches!(
                kind,
                WatchKind::ExternalSecret | WatchKind::KesExternalSecret
            )
            && !deleted
            && let Ok((Some(namespace), name)) = crate::index::model::meta(&value)
        {
            let key = crate::index::ResourceKey {
                kind: reader_kind(kind),
                namespace,
                name,
            };
            c.observe_object(&key, &value);
        }
        if deleted {
            delete(kind, &value, &mut index.write());
        } else {
            apply(kind, &value, &mut index.write());
            if let Some(events) = &config.events {
                report_rejected(kind, &value, &index.read(), events);
            }
        }
        export_index(&index.read(), metrics);
    }
}

/// A Warning Event on a resource whose references the index could not evaluate as written.
fn report_rejected(kind: WatchKind, obj: &Value, index: &Index, events: &super::events::Events) {
    if !matches!(
        kind,
        WatchKind::ExternalSecret | WatchKind::KesExternalSecret
    ) {
        return;
    }
    let Ok((Some(namespace), name)) = crate::index::model::meta(obj) else {
        return;
    };
    let key = crate::index::ResourceKey {
        kind: reader_kind(kind),
        namespace,
        name,
    };
    let rejected = index.rejected_of(&key);
    if rejected.is_empty() {
        return;
    }
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(String::from);
    events.reference_rejected(&key, uid, &rejected);
}

fn to_value(obj: DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
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
        WatchKind::ClusterExternalSecret => {
            if let Some(c) = parse_cluster(obj) {
                index.apply_cluster_external_secret(c)
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
        WatchKind::ClusterExternalSecret => index.delete_cluster_external_secret(&name),
    }
}

fn reader_kind(kind: WatchKind) -> ReaderKind {
    match kind {
        WatchKind::KesExternalSecret => ReaderKind::KesExternalSecret,
        _ => ReaderKind::ExternalSecret,
    }
}

fn parse_cluster(obj: &Value) -> Option<ClusterExternalSecret> {
    ClusterExternalSecret::from_object(obj)
        .map_err(|e| tracing::warn!(error = %e, "skipping unreadable ClusterExternalSecret"))
        .ok()
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
    metrics.index_rejected_references.set(s.rejected as i64);
    metrics
        .index_untrusted_owners
        .set(s.untrusted_owners as i64);
    metrics
        .index_left_out_references
        .set(s.left_out_references as i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt as _;
    use serde::de::DeserializeSeed as _;

    fn decode(kind: WatchKind, body: &str) -> Result<(Listed, ListMeta), serde_json::Error> {
        let mut parsed = Listed::default();
        // Through a reader, as the service reads a response.
        let mut de = serde_json::Deserializer::from_reader(body.as_bytes());
        let meta = ListBody {
            kind,
            parsed: &mut parsed,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok((parsed, meta))
    }

    fn es(name: &str, key: &str) -> Value {
        serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7"},
            "spec": {"secretStoreRef": {"name": "aws", "kind": "SecretStore"},
                     "data": [{"secretKey": "k", "remoteRef": {"key": key}}]}
        })
    }

    #[test]
    fn list_bodies_decode_item_by_item() {
        let body = serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecretList",
            "metadata": {"resourceVersion": "42", "continue": "abc", "remainingItemCount": 3},
            "items": [es("a", "/a"), {"kind": "ExternalSecret", "spec": {}}, es("b", "/b")],
            "somethingNew": {"nested": [1, 2]}
        })
        .to_string();
        let (parsed, meta) = decode(WatchKind::ExternalSecret, &body).unwrap();
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.continue_.as_deref(), Some("abc"));
        // Every item is counted; the unreadable one is skipped (and logged), not fatal.
        assert_eq!(parsed.seen, 3);
        let names: Vec<&str> = parsed.readers.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    /// A reader that never yields a byte, like a frozen connection.
    struct Frozen;

    impl futures::AsyncRead for Frozen {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_silent_list_response_times_out_and_a_live_one_does_not() {
        use futures::AsyncReadExt as _;
        let limit = Duration::from_millis(300);
        let started = tokio::time::Instant::now();
        let err = Silence::new(Frozen, limit)
            .read(&mut [0u8; 16])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= limit && waited < limit * 3, "{waited:?}");
        // Data arriving keeps it alive, however long the whole read takes.
        let mut body = Vec::new();
        let slow = futures::stream::iter(0..10)
            .then(|i| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, std::io::Error>(vec![i as u8; 4])
            })
            .boxed()
            .into_async_read();
        Silence::new(slow, limit)
            .read_to_end(&mut body)
            .await
            .unwrap();
        assert_eq!(body.len(), 40);
        // Ten chunks 100 ms apart: the whole read takes longer than the limit, no gap does.
        assert!(started.elapsed() >= limit + Duration::from_secs(1));
    }

    #[test]
    fn empty_and_null_item_lists_decode() {
        for items in ["[]", "null"] {
            let body = format!(r#"{{"metadata":{{"resourceVersion":"9"}},"items":{items}}}"#);
            let (parsed, meta) = decode(WatchKind::SecretStore, &body).unwrap();
            assert_eq!(
                (parsed.seen, meta.resource_version.as_deref()),
                (0, Some("9"))
            );
        }
    }

    #[test]
    fn broken_list_bodies_are_errors() {
        for body in [
            r#"{"metadata":{},"items":[{"a":1},"#,
            r#"{"metadata":{},"items":{"a":1}}"#,
            r#"{"metadata":{},"items":[]} trailing"#,
            r#"[]"#,
            "",
        ] {
            assert!(decode(WatchKind::ExternalSecret, body).is_err(), "{body:?}");
        }
    }
}

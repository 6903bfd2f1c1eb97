//! The reverse index: which resources read which AWS key. Pure and synchronous: fed by
//! `apply_*` / `delete_*` / `replace_*` (from watches, or literal values in tests) and asked
//! `lookup(&Change)`.
//!
//! Filing follows how ESO (and KES) read AWS, per the store's service (docs/eso-versions.md
//! and the README's "What it matches" have the table, with ESO source references):
//! - a key is filed under its *effective* name: store prefix + key, any `:version` removed,
//!   a Parameter Store name with or without its leading `/`; a Secrets Manager name exactly
//!   (and, for an ARN whose name may or may not end in AWS's random `-XXXXXX`, under both);
//!   `/aws/reference/secretsmanager/<name>` through a Parameter Store store reads the Secrets
//!   Manager secret `<name>`;
//! - a Parameter Store `find` with a path is filed under the path (a hierarchy); one without,
//!   and every Secrets Manager `find` (its path is a case-sensitive string prefix), go to a
//!   short list scanned on every lookup;
//! - each reference knows what of its item it reads (the latest value, a pinned version, a
//!   label or stage, the tags), which decides the operations that reach it: an `Update` does
//!   not change version 3, a label move does not change the latest value.
//!
//! A lookup is one hash probe for the name, one per ancestor path, and the scan list; each
//! candidate is then checked against its store's region, account and namespace conditions,
//! read at lookup time (a store edit applies at once). A store's prefix and service decide the
//! filing: a change of either re-files exactly the readers of that store.

mod bounds;
mod filing;
mod lookup;
pub mod model;
mod owners;
mod patterns;
pub mod windows;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use regex::Regex;

use crate::event::Effect;
use filing::{filing_of, resolve_key};
pub use model::{
    AwsProvider, AwsService, Binding, ClusterExternalSecret, Condition, Find, KeyRef, Owner,
    Reader, ReaderKind, RefPath, Reference, Selector, Store, StoreId, SyncWindows,
};
use patterns::ScanSet;

/// A resource the index holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: ReaderKind,
    pub namespace: String,
    pub name: String,
}

/// What gets patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetKind {
    ExternalSecret,
    /// Patched instead of its children, which it rewrites.
    ClusterExternalSecret,
    /// kubernetes-external-secrets.
    KesExternalSecret,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExternalSecret | Self::KesExternalSecret => "ExternalSecret",
            Self::ClusterExternalSecret => "ClusterExternalSecret",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Self::ExternalSecret | Self::ClusterExternalSecret => "external-secrets.io",
            Self::KesExternalSecret => "kubernetes-client.io/v1",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub kind: TargetKind,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            TargetKind::ClusterExternalSecret => write!(f, "ClusterExternalSecret {}", self.name),
            TargetKind::KesExternalSecret => {
                write!(
                    f,
                    "ExternalSecret.kubernetes-client.io {}/{}",
                    self.namespace, self.name
                )
            }
            TargetKind::ExternalSecret => {
                write!(f, "ExternalSecret {}/{}", self.namespace, self.name)
            }
        }
    }
}

/// One matched resource and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub target: Target,
    /// The resource holding the reference (a ClusterExternalSecret's child for CES targets).
    pub reader: ResourceKey,
    /// Where in the reader, e.g. `spec.data[0].remoteRef.key`.
    pub reference: String,
    pub reason: String,
    /// The target's uid, when known (for Kubernetes Events).
    pub uid: Option<String>,
    /// The reader's `spec.syncWindows`, when it has any (the trigger decides whether a closed
    /// window defers the patch).
    pub sync_windows: Option<SyncWindows>,
}

/// A reference to the same name that did not match, and what differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearMiss {
    pub reader: ResourceKey,
    pub reference: String,
    pub reason: String,
}

/// The answer to a lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// To patch, each target once.
    pub targets: Vec<Match>,
    /// Would match, but a force-sync cannot work on them, or must not (reported, not patched).
    pub unforceable: Vec<Match>,
    /// Same name, other store/region/service/account/namespace, or an operation that does not
    /// change what the reference reads (only with `explain`).
    pub near_misses: Vec<NearMiss>,
    /// References anywhere in the index that could not be evaluated as written (only with
    /// `explain`): they may or may not read this change.
    pub rejected: Vec<RejectedReference>,
}

/// What the index needs to know about the cluster's ESO and the user's wishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    /// The account ESO's own credentials read (stores without `role`). `None`: unknown, any
    /// account matches (a spurious re-sync costs less than a missed one).
    pub eso_account: Option<String>,
    /// The controller classes the cluster's ESO serves (its `--controller-class`); empty:
    /// every class. A store of another class is ignored by ESO, and so here.
    pub controller_classes: Vec<String>,
    /// Force-sync resources that take values from generators (each sync regenerates them).
    pub force_generators: bool,
    /// References indexed per resource; those past it are left out and reported.
    pub max_references_per_object: usize,
    /// References indexed per namespace; a resource that would pass it is left out whole and
    /// reported (until its next update finds room).
    pub max_references_per_namespace: usize,
}

/// `--max-references-per-object`'s default: far above what a resource reads (ESO's own
/// examples read a handful), far below what a tenant could write into one object.
pub const MAX_REFERENCES_PER_OBJECT: usize = 1_000;
/// `--max-references-per-namespace`'s default: about 20 MiB of index at its worst.
pub const MAX_REFERENCES_PER_NAMESPACE: usize = 20_000;

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            eso_account: None,
            controller_classes: Vec::new(),
            force_generators: false,
            max_references_per_object: MAX_REFERENCES_PER_OBJECT,
            max_references_per_namespace: MAX_REFERENCES_PER_NAMESPACE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ArnScope {
    region: String,
    account: String,
}

/// What of its item a reference reads: decides which operations reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// The newest value (no version, Secrets Manager AWSCURRENT).
    Latest,
    /// One version for ever (Parameter Store version number, Secrets Manager `uuid/<id>`).
    Pinned,
    /// A Parameter Store label: moved by LabelParameterVersion and UnlabelParameterVersion.
    Label,
    /// A Secrets Manager stage other than AWSCURRENT (AWSPREVIOUS moves with every new value).
    Stage,
    /// `metadataPolicy: Fetch`: the tags.
    Tags,
    /// A `find` by name or path: the newest values of what it lists.
    FindValues,
    /// A `find` by tags: values and tags (tags are not in the event).
    FindTags,
}

impl Reads {
    fn cares(self, effect: Effect) -> bool {
        matches!(
            (self, effect),
            (_, Effect::Existence)
                | (
                    Self::Latest | Self::Stage | Self::FindValues | Self::FindTags,
                    Effect::Value
                )
                | (Self::Label, Effect::Label)
                | (Self::Tags | Self::FindTags, Effect::Tags)
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Latest => "the newest value",
            Self::Pinned => "a pinned version",
            Self::Label => "a labelled version",
            Self::Stage => "a staged version",
            Self::Tags => "the tags (metadataPolicy: Fetch)",
            Self::FindValues => "the values it finds",
            Self::FindTags => "what its tags select",
        }
    }
}

/// How a candidate's name is checked beyond the probe that found it.
#[derive(Debug, Clone)]
enum Test {
    /// Filed under its name: Parameter Store names compare with or without the leading `/`.
    Normalized,
    /// Secrets Manager names compare exactly (filed under the normalised name like the rest).
    Exact(Box<str>),
    /// A Parameter Store `find` below a path: direct children only unless recursive, and the
    /// `find.name.regexp` if any.
    Path {
        recursive: bool,
        regex: Option<Arc<Regex>>,
    },
    /// A Parameter Store `find.name.regexp` without a path (ESO lists from `/`).
    Regex(Arc<Regex>),
    /// A Parameter Store `find.tags` without a path: anything in scope.
    Always,
    /// A Secrets Manager `find`: the path is a ListSecrets / BatchGetSecretValue `name` filter
    /// (case-sensitive string prefix, `!` negates); without a path ESO lists every name and
    /// reads `prefix + name`, so a change to `prefix + name` counts too, and a listed name's
    /// own value does not (only its coming or going changes the list).
    SmFind {
        filter: Option<Box<str>>,
        regex: Option<Arc<Regex>>,
        prefix: Box<str>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    key: Arc<ResourceKey>,
    reference: u32,
    /// The service of the changes this entry is about (a Parameter Store reader of
    /// `/aws/reference/secretsmanager/<name>` is about Secrets Manager changes).
    service: AwsService,
    reads: Reads,
    /// An ARN key's own region and account: they replace the store's.
    arn: Option<Box<ArnScope>>,
    test: Test,
}

#[derive(Debug, Clone)]
enum Filed {
    Name(Box<str>),
    Path(Box<str>),
    Scan,
}

#[derive(Debug, Default)]
pub struct Index {
    config: IndexConfig,
    stores: HashMap<StoreId, Store>,
    /// Boxed: a map's empty slots are the size of its values, and a `Reader` is 248 bytes
    /// (at 100,000 readers the slack of a Reader-sized table was ≈ 66 B per reference).
    readers: HashMap<Arc<ResourceKey>, Box<Reader>>,
    by_store: HashMap<StoreId, HashSet<Arc<ResourceKey>>>,
    /// The ExternalSecrets that name each ClusterExternalSecret as owner, by its name.
    by_parent: HashMap<Box<str>, HashSet<Arc<ResourceKey>>>,
    /// The watched ClusterExternalSecrets, by name (`owners`).
    clusters: HashMap<Box<str>, ClusterExternalSecret>,
    /// Readers whose ClusterExternalSecret owner reference is not trusted, and why: they are
    /// patched themselves, not the parent they claim.
    untrusted: HashMap<Arc<ResourceKey>, String>,
    by_name: HashMap<Box<str>, Vec<Entry>>,
    by_path: HashMap<Box<str>, Vec<Entry>>,
    scans: Vec<Entry>,
    /// The scan list's regexps as one `RegexSet` (one pass per lookup instead of one match
    /// per entry), built on first use after the list changed.
    scan_set: parking_lot::Mutex<Option<Arc<ScanSet>>>,
    filed: HashMap<Arc<ResourceKey>, Vec<Filed>>,
    /// References this index could not evaluate as written, per resource (reported as Events,
    /// a metric and by `explain`).
    rejected: HashMap<Arc<ResourceKey>, Vec<RejectedReference>>,
    /// Resources past a reference bound: what was left out, and how many references.
    left_out: HashMap<Arc<ResourceKey>, (RejectedReference, usize)>,
    left_out_references: usize,
    /// The references the readers of each namespace hold (against
    /// `max_references_per_namespace`).
    references_by_namespace: HashMap<Box<str>, usize>,
    /// What each resource's patterns are charged against [`REGEX_BUDGET`], the total, and the
    /// total per namespace (against [`REGEX_NAMESPACE_BUDGET`]).
    pattern_cost: HashMap<Arc<ResourceKey>, usize>,
    pattern_bytes: usize,
    pattern_bytes_by_namespace: HashMap<Box<str>, usize>,
    references: usize,
    /// Counted as they come and go, so `stats()` (exported on every watch event) walks nothing.
    kes_readers: usize,
    rejected_count: usize,
}

/// A reference the index could not evaluate as written, and what it does instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedReference {
    pub reader: ResourceKey,
    /// Where in the reader, e.g. `spec.dataFrom[0].find`.
    pub reference: String,
    pub reason: String,
}

/// The compiled size one `find.name.regexp` may take (regex's `size_limit`). A name pattern
/// compiles to a few KiB (a Unicode class like `\w` to about 30 KiB); ESO (Go's regexp) has
/// no such cap, so a larger one is not refused: it is treated as matching every name
/// (spurious re-syncs rather than a stale Secret) and reported.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Patterns are charged this much when they compile within it, else [`REGEX_SIZE_LIMIT`].
const REGEX_SMALL: usize = 8 * 1024;
/// The lazy DFA cache each pattern may grow per thread (regex's `dfa_size_limit`); past it the
/// engine falls back to slower search, never to a wrong answer.
pub const REGEX_DFA_LIMIT: usize = 32 * 1024;
/// What every tenant's patterns together may cost (compiled size plus two threads' DFA
/// caches each): a pattern past it is treated as too large. Bounds the amplification of a
/// few bytes of pattern into KiBs of automaton, whoever creates how many.
pub const REGEX_BUDGET: usize = 16 << 20;
/// What one namespace's patterns may cost of [`REGEX_BUDGET`] (4 MiB: 56 patterns of ASCII
/// classes, 32 of Unicode ones): one tenant cannot use up everyone's budget (past it, only
/// that namespace's further patterns match every name).
pub const REGEX_NAMESPACE_BUDGET: usize = REGEX_BUDGET / 4;
/// The combined `RegexSet` of every scan pattern; past it, patterns are matched one by one.
pub const REGEX_SET_SIZE_LIMIT: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub external_secrets: usize,
    pub kes_external_secrets: usize,
    pub stores: usize,
    pub references: usize,
    pub names: usize,
    /// References not evaluated as written (`rejected()`).
    pub rejected: usize,
    /// ExternalSecrets whose ClusterExternalSecret owner reference is not trusted.
    pub untrusted_owners: usize,
    /// References left out by the per-object and per-namespace bounds.
    pub left_out_references: usize,
}

/// Compares names with and without their leading `/`.
pub fn normalize(name: &str) -> &str {
    name.strip_prefix('/').unwrap_or(name)
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_config(config: IndexConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            external_secrets: self.readers.len() - self.kes_readers,
            kes_external_secrets: self.kes_readers,
            stores: self.stores.len(),
            references: self.references,
            names: self.by_name.len(),
            rejected: self.rejected_count,
            untrusted_owners: self.untrusted.len(),
            left_out_references: self.left_out_references,
        }
    }

    pub fn apply_store(&mut self, store: Store) {
        let id = store.id.clone();
        let before = self.stores.get(&id).map(filing_of);
        let after = filing_of(&store);
        self.stores.insert(id.clone(), store);
        if before.as_ref() != Some(&after) {
            self.refile_store(&id);
        }
    }

    pub fn delete_store(&mut self, id: &StoreId) {
        if self.stores.remove(id).is_some() {
            self.refile_store(id);
        }
    }

    /// Makes the stores of one kind exactly `stores` (after a watch re-list).
    pub fn replace_stores(&mut self, cluster: bool, stores: Vec<Store>) {
        let keep: HashSet<StoreId> = stores.iter().map(|s| s.id.clone()).collect();
        let gone: Vec<StoreId> = self
            .stores
            .keys()
            .filter(|id| id.cluster == cluster && !keep.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.delete_store(&id);
        }
        for s in stores {
            self.apply_store(s);
        }
    }

    pub fn apply_reader(&mut self, mut reader: Reader) {
        // The parser's Vec keeps spare capacity (4 × 168 B for one reference): at 100k
        // resources that was a third of the index's memory (make bench, massif).
        // Past the per-object bound before anything else: the rest is never held (`bounds`).
        let written = reader.references.len();
        reader
            .references
            .truncate(self.config.max_references_per_object);
        reader.references.shrink_to_fit();
        let key = Arc::new(ResourceKey {
            kind: reader.kind,
            namespace: reader.namespace.clone(),
            name: reader.name.clone(),
        });
        // Most updates leave the references as they were (the operator's status write after
        // every sync, a label): filing depends only on them and the stores, so the filing
        // stays and only the reader is replaced. Re-filing would compile its patterns again
        // and make the next lookup rebuild the scan set. A resource with rejected references
        // is re-filed all the same: a pattern over the shared budget may fit now.
        if !self.rejected.contains_key(&*key)
            && let Some(old) = self.readers.get_mut(&*key)
            && old.references == reader.references
            && old.parent == reader.parent
        {
            **old = reader;
            return;
        }
        self.remove_reader(&key);
        self.bound(&key, &mut reader, written);
        if key.kind == ReaderKind::KesExternalSecret {
            self.kes_readers += 1;
        }
        if let Some(p) = &reader.parent {
            self.by_parent
                .entry(p.name.as_str().into())
                .or_default()
                .insert(key.clone());
        }
        for r in &reader.references {
            if let Binding::Store(s) = &r.binding {
                self.by_store
                    .entry(s.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.readers.insert(key.clone(), Box::new(reader));
        self.judge_parent(&key);
        self.file(&key);
    }

    pub fn delete_reader(&mut self, kind: ReaderKind, namespace: &str, name: &str) {
        self.remove_reader(&ResourceKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        });
    }

    /// Makes the readers of one kind exactly `list` (after a watch re-list).
    pub fn replace_readers(&mut self, kind: ReaderKind, list: Vec<Reader>) {
        let keep: HashSet<(String, String)> = list
            .iter()
            .map(|r| (r.namespace.clone(), r.name.clone()))
            .collect();
        let gone: Vec<ResourceKey> = self
            .readers
            .keys()
            .filter(|k| k.kind == kind && !keep.contains(&(k.namespace.clone(), k.name.clone())))
            .map(|k| (**k).clone())
            .collect();
        for k in gone {
            self.remove_reader(&k);
        }
        for r in list {
            self.apply_reader(r);
        }
    }

    /// The references of one resource this index could not evaluate as written, or left out.
    pub fn rejected_of(&self, key: &ResourceKey) -> Vec<RejectedReference> {
        let mut all = self.rejected.get(key).cloned().unwrap_or_default();
        all.extend(self.left_out.get(key).map(|(r, _)| r.clone()));
        all
    }

    /// Every reference this index could not evaluate as written, or left out.
    pub fn rejected(&self) -> impl Iterator<Item = &RejectedReference> {
        self.rejected
            .values()
            .flatten()
            .chain(self.left_out.values().map(|(r, _)| r))
    }
}

impl Index {
    /// What a force-sync of this reader patches: its ClusterExternalSecret parent if it is
    /// trusted (the parent rewrites it), else the reader itself.
    fn target_of(&self, key: &ResourceKey, reader: &Reader) -> Target {
        reader.target(self.parent_trusted(key, reader))
    }

    /// The uid of what a force-sync of the reader patches, when known.
    fn target_uid(&self, key: &ResourceKey, reader: &Reader) -> Option<String> {
        match &reader.parent {
            Some(p) if self.parent_trusted(key, reader) => p.uid,
            _ => reader.uid,
        }
        .map(|u| u.to_string())
    }
}

impl Reader {
    fn target(&self, parent_trusted: bool) -> Target {
        match (&self.parent, self.kind) {
            (Some(parent), _) if parent_trusted => Target {
                kind: TargetKind::ClusterExternalSecret,
                namespace: String::new(),
                name: parent.name.clone(),
            },
            (_, kind) => Target {
                kind: match kind {
                    ReaderKind::ExternalSecret => TargetKind::ExternalSecret,
                    ReaderKind::KesExternalSecret => TargetKind::KesExternalSecret,
                },
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            },
        }
    }
}

impl Index {
    /// The ExternalSecrets a ClusterExternalSecret owns (trusted ones only), with their sync
    /// fingerprints.
    pub fn children_of(&self, ces: &str) -> Vec<(ResourceKey, u64)> {
        let Some(children) = self.by_parent.get(ces) else {
            return Vec::new();
        };
        children
            .iter()
            .filter(|k| !self.untrusted.contains_key(*k))
            .filter_map(|k| Some(((**k).clone(), self.readers.get(k)?.synced)))
            .collect()
    }
}

/// A parameter a resource reads by name, for the catch-up sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepItem {
    /// `None` when the store leaves the region to the environment.
    pub region: Option<String>,
    /// The SSM name as the resource reads it (store prefix applied, version removed).
    pub name: String,
    pub target: Target,
    pub synced_at: Option<time::OffsetDateTime>,
    /// The reader's ESO sync windows: a stale reader inside a closed one is deferred.
    pub sync_windows: Option<SyncWindows>,
}

impl Index {
    /// Every (parameter, resource) pair read by name from Parameter Store, for resources that
    /// a force-sync can refresh. Each CES child yields its parent.
    pub fn sweep_items(&self) -> Vec<SweepItem> {
        let mut out = Vec::new();
        for (key, reader) in &self.readers {
            if self.unforceable(reader).is_some() || reader.writes_nothing {
                continue;
            }
            let target = self.target_of(key, reader);
            for r in &reader.references {
                let Selector::Key(k) = &r.selector else {
                    continue;
                };
                let Ok((aws, _)) = self.provider(&r.binding) else {
                    continue;
                };
                if aws.service != AwsService::ParameterStore {
                    continue;
                }
                for res in resolve_key(aws.service, &aws.prefix, k) {
                    if res.service != AwsService::ParameterStore || res.reads == Reads::Pinned {
                        continue;
                    }
                    // SSM names with a hierarchy are fully qualified: they start with `/`.
                    let name = if res.name.contains('/')
                        || k.key.starts_with('/')
                        || aws.prefix.starts_with('/')
                        || k.key.contains("parameter/")
                    {
                        format!("/{}", res.name)
                    } else {
                        res.name
                    };
                    let region = res.arn.map(|a| a.region).or_else(|| aws.region.clone());
                    out.push(SweepItem {
                        region,
                        name,
                        target: target.clone(),
                        synced_at: reader.synced_at,
                        sync_windows: reader.sync_windows.as_deref().cloned(),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;

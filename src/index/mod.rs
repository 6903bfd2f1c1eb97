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

pub mod model;
pub mod windows;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use regex::Regex;

use crate::event::{Change, Effect, Service};
pub use model::{
    AwsProvider, AwsService, Binding, Condition, Find, KeyRef, Owner, Reader, ReaderKind, RefPath,
    Reference, Selector, Store, StoreId, SyncWindows,
};

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexConfig {
    /// The account ESO's own credentials read (stores without `role`). `None`: unknown, any
    /// account matches (a spurious re-sync costs less than a missed one).
    pub eso_account: Option<String>,
    /// The controller classes the cluster's ESO serves (its `--controller-class`); empty:
    /// every class. A store of another class is ignored by ESO, and so here.
    pub controller_classes: Vec<String>,
    /// Force-sync resources that take values from generators (each sync regenerates them).
    pub force_generators: bool,
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
    /// reads `prefix + name`, so a change to `prefix + name` counts too.
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
    /// The ExternalSecrets each ClusterExternalSecret owns, by its name (`children_of`).
    by_parent: HashMap<Box<str>, HashSet<Arc<ResourceKey>>>,
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
    /// What each resource's patterns are charged against [`REGEX_BUDGET`], and the total.
    pattern_cost: HashMap<Arc<ResourceKey>, usize>,
    pattern_bytes: usize,
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
/// The combined `RegexSet` of every scan pattern; past it, patterns are matched one by one.
pub const REGEX_SET_SIZE_LIMIT: usize = 4 << 20;

/// Why a tenant's pattern is not used as written.
#[derive(Debug)]
enum PatternProblem {
    /// ESO's Go regexp would reject it too: the reference reads nothing.
    Invalid(String),
    /// Valid, but past [`REGEX_SIZE_LIMIT`].
    TooLarge,
}

/// Compiles a tenant's pattern with bounded size, never panicking; with what it is charged
/// against [`REGEX_BUDGET`].
fn compile_pattern(re: &str) -> Result<(Regex, usize), PatternProblem> {
    let build = |limit| {
        regex::RegexBuilder::new(re)
            .size_limit(limit)
            .dfa_size_limit(REGEX_DFA_LIMIT)
            .build()
    };
    let charge = |compiled| compiled + 2 * REGEX_DFA_LIMIT;
    match build(REGEX_SMALL) {
        Ok(r) => Ok((r, charge(REGEX_SMALL))),
        Err(regex::Error::CompiledTooBig(_)) => match build(REGEX_SIZE_LIMIT) {
            Ok(r) => Ok((r, charge(REGEX_SIZE_LIMIT))),
            Err(regex::Error::CompiledTooBig(_)) => Err(PatternProblem::TooLarge),
            Err(e) => Err(PatternProblem::Invalid(e.to_string())),
        },
        Err(e) => Err(PatternProblem::Invalid(e.to_string())),
    }
}

#[derive(Debug)]
struct ScanSet {
    /// `None` when the patterns together exceed [`REGEX_SET_SIZE_LIMIT`]: they are then
    /// among `others`, each tested on its own.
    set: Option<regex::RegexSet>,
    /// `scans` index of each pattern in `set`.
    entries: Vec<usize>,
    /// `scans` entries tested one by one.
    others: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub external_secrets: usize,
    pub kes_external_secrets: usize,
    pub stores: usize,
    pub references: usize,
    pub names: usize,
    /// References not evaluated as written (`rejected()`).
    pub rejected: usize,
}

/// Compares names with and without their leading `/`.
pub fn normalize(name: &str) -> &str {
    name.strip_prefix('/').unwrap_or(name)
}

/// One name a key reference is filed under, with what it reads there.
struct Resolved {
    name: String,
    service: AwsService,
    reads: Reads,
    arn: Option<ArnScope>,
}

/// What `version` selects for a service.
fn reads_of(service: AwsService, version: Option<&str>, metadata: bool) -> Reads {
    match (service, version) {
        _ if metadata => Reads::Tags,
        (AwsService::ParameterStore, None) => Reads::Latest,
        (AwsService::ParameterStore, Some(v)) if v.bytes().all(|b| b.is_ascii_digit()) => {
            Reads::Pinned
        }
        (AwsService::ParameterStore, Some(_)) => Reads::Label,
        (AwsService::SecretsManager, None | Some("AWSCURRENT")) => Reads::Latest,
        (AwsService::SecretsManager, Some(v)) if v.starts_with("uuid/") => Reads::Pinned,
        (AwsService::SecretsManager, Some(_)) => Reads::Stage,
    }
}

/// The names a key reference reads through a store of `service` with `prefix`, the way ESO
/// builds its call (`prefix + key`, `:version` appended for Parameter Store). Empty when ESO's
/// call can never succeed (an ARN behind a prefix, an ARN of the other service).
fn resolve_key(service: AwsService, prefix: &str, k: &KeyRef) -> Vec<Resolved> {
    let version = k.version.as_deref();
    if let Some(rest) = k.key.strip_prefix("arn:") {
        if !prefix.is_empty() {
            return Vec::new();
        }
        let mut parts = rest.splitn(5, ':');
        let (Some(_partition), Some(arn_service), Some(region), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Vec::new();
        };
        let arn = ArnScope {
            region: region.to_owned(),
            account: account.to_owned(),
        };
        return match (arn_service, service) {
            // parameter/<name>[:<version or label>]
            ("ssm", AwsService::ParameterStore) => {
                let Some(p) = resource.strip_prefix("parameter") else {
                    return Vec::new();
                };
                let (name, embedded) = split_version(p);
                vec![Resolved {
                    name: normalize(name).to_owned(),
                    service,
                    reads: reads_of(service, version.or(embedded), k.metadata),
                    arn: Some(arn),
                }]
            }
            // secret:<name>[-XXXXXX]
            ("secretsmanager", AwsService::SecretsManager) => {
                let Some(name) = resource.strip_prefix("secret:") else {
                    return Vec::new();
                };
                let (whole, stripped) = crate::event::arn::secret_arn_names(name);
                std::iter::once(whole)
                    .chain(stripped)
                    .map(|n| Resolved {
                        name: n.to_owned(),
                        service,
                        reads: reads_of(service, version, k.metadata),
                        arn: Some(arn.clone()),
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
    }
    let full = format!("{prefix}{}", k.key);
    match service {
        AwsService::ParameterStore => {
            let (name, embedded) = split_version(&full);
            let version = version.or(embedded);
            let name = normalize(name);
            if name.is_empty() {
                return Vec::new();
            }
            // SSM resolves this path to the Secrets Manager secret (and a version to its stage or
            // version id).
            if let Some(secret) = name.strip_prefix("aws/reference/secretsmanager/") {
                let reads = match (k.metadata, version) {
                    (true, _) => Reads::Tags,
                    (false, None) => Reads::Latest,
                    (false, Some(_)) => Reads::Stage,
                };
                return vec![Resolved {
                    name: secret.to_owned(),
                    service: AwsService::SecretsManager,
                    reads,
                    arn: None,
                }];
            }
            vec![Resolved {
                name: name.to_owned(),
                service,
                reads: reads_of(service, version, k.metadata),
                arn: None,
            }]
        }
        AwsService::SecretsManager => {
            if full.is_empty() {
                return Vec::new();
            }
            vec![Resolved {
                name: full,
                service,
                reads: reads_of(service, version, k.metadata),
                arn: None,
            }]
        }
    }
}

/// `name:3` → (`name`, `3`): SSM's selector syntax.
fn split_version(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((n, v)) => (n, Some(v).filter(|v| !v.is_empty())),
        None => (s, None),
    }
}

fn normalize_path(path: &str) -> String {
    normalize(path).trim_end_matches('/').to_owned()
}

/// Secrets Manager's `name` filter: a case-sensitive prefix; a leading `!` negates.
fn sm_name_filter(filter: &str, name: &str) -> bool {
    match filter.strip_prefix('!') {
        Some(f) => !name.starts_with(f),
        None => name.starts_with(filter),
    }
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

    /// The resources to force-sync for a change, and those that match but cannot be forced.
    pub fn lookup(&self, change: &Change) -> Lookup {
        self.evaluate(change, false)
    }

    /// `lookup` plus the near misses: references to the same name whose store, region,
    /// service, account or namespace did not fit, or that the operation does not reach.
    pub fn explain(&self, change: &Change) -> Lookup {
        let mut l = self.evaluate(change, true);
        l.rejected = self.rejected().cloned().collect();
        l.rejected.sort_by(|a, b| {
            (&a.reader.namespace, &a.reader.name, &a.reference).cmp(&(
                &b.reader.namespace,
                &b.reader.name,
                &b.reference,
            ))
        });
        l
    }

    fn evaluate(&self, change: &Change, misses: bool) -> Lookup {
        let name = normalize(&change.name);
        let effect = change.operation.effect();
        let change_service = match change.service {
            Service::ParameterStore => AwsService::ParameterStore,
            Service::SecretsManager => AwsService::SecretsManager,
        };
        let mut out = Lookup::default();
        let mut seen: HashSet<Target> = HashSet::new();
        let mut consider = |entry: &Entry, how: &str| {
            let Some(reader) = self.readers.get(&entry.key) else {
                return;
            };
            // A name the entry's own test refuses is not the same name: not even a near miss.
            if !name_test(&entry.test, change) {
                return;
            }
            let reference = &reader.references[entry.reference as usize];
            let verdict = self
                .provider(&reference.binding)
                .and_then(|(aws, label)| {
                    if entry.service != change_service {
                        return Err(format!(
                            "{label} reads {} here, the change is in {}",
                            entry.service.as_str(),
                            change_service.as_str()
                        ));
                    }
                    if !entry.reads.cares(effect) {
                        return Err(format!(
                            "reads {}: {} does not change it",
                            entry.reads.describe(),
                            change.operation.as_str()
                        ));
                    }
                    self.scope(aws, &label, entry.arn.as_deref(), &reader.namespace, change)
                })
                .and_then(|scope| match reader.writes_nothing {
                    true => Err("target.creationPolicy: None: ESO writes no Secret".to_owned()),
                    false => Ok(scope),
                });
            match verdict {
                Ok(scope) => {
                    let target = reader.target();
                    if !seen.insert(target.clone()) {
                        return;
                    }
                    let tags = if entry.reads == Reads::FindTags && effect != Effect::Tags {
                        "; find.tags cannot be decided from an event, so any change in scope matches"
                    } else {
                        ""
                    };
                    let uid = match &reader.parent {
                        Some(p) => p.uid,
                        None => reader.uid,
                    }
                    .map(|u| u.to_string());
                    let m = Match {
                        uid,
                        target,
                        reader: (*entry.key).clone(),
                        reference: reference.path.to_string(),
                        reason: format!("{how} via {scope}{tags}"),
                        sync_windows: reader.sync_windows.as_deref().cloned(),
                    };
                    match self.unforceable(reader) {
                        Some(why) => out.unforceable.push(Match { reason: why, ..m }),
                        None => out.targets.push(m),
                    }
                }
                Err(why) if misses => out.near_misses.push(NearMiss {
                    reader: (*entry.key).clone(),
                    reference: reference.path.to_string(),
                    reason: why,
                }),
                Err(_) => {}
            }
        };
        if let Some(entries) = self.by_name.get(name) {
            for e in entries {
                consider(e, how_key(e.reads));
            }
        }
        // Every ancestor path of the name: "", "a", "a/b" for "a/b/c".
        let mut ancestors = vec![""];
        ancestors.extend(name.match_indices('/').map(|(i, _)| &name[..i]));
        let parent = ancestors.last().copied();
        for a in ancestors {
            if let Some(entries) = self.by_path.get(a) {
                for e in entries {
                    let direct = Some(a) == parent;
                    if matches!(e.test, Test::Path { recursive, .. } if recursive || direct) {
                        consider(e, "path");
                    }
                }
            }
        }
        let scans = self.scan_set();
        for &i in &scans.others {
            let e = &self.scans[i];
            consider(
                e,
                if e.reads == Reads::FindTags {
                    "tags"
                } else {
                    "find"
                },
            );
        }
        if let Some(set) = &scans.set {
            for i in set.matches(&change.name).iter() {
                consider(&self.scans[scans.entries[i]], "name regexp");
            }
        }
        out
    }

    /// Why a matched reader must not be patched, if so.
    fn unforceable(&self, reader: &Reader) -> Option<String> {
        if let Some(why) = &reader.unforceable {
            return Some(why.clone());
        }
        (!reader.generators.is_empty() && !self.config.force_generators).then(|| {
            format!(
                "takes values from generators ({}): a force-sync would regenerate them; --force-generators allows it",
                reader.generators.join(", ")
            )
        })
    }

    fn scan_set(&self) -> Arc<ScanSet> {
        let mut cached = self.scan_set.lock();
        if let Some(s) = cached.as_ref() {
            return s.clone();
        }
        let (mut patterns, mut entries, mut others) = (Vec::new(), Vec::new(), Vec::new());
        for (i, e) in self.scans.iter().enumerate() {
            match &e.test {
                Test::Regex(re) => {
                    patterns.push(re.as_str().to_owned());
                    entries.push(i);
                }
                _ => others.push(i),
            }
        }
        // Each pattern compiled on its own within its limit; together they may not.
        let set = match regex::RegexSetBuilder::new(&patterns)
            .size_limit(REGEX_SET_SIZE_LIMIT)
            .dfa_size_limit(1 << 20)
            .build()
        {
            Ok(set) => Some(set),
            Err(e) => {
                tracing::warn!(patterns = patterns.len(), error = %e, "find.name.regexp patterns too large to combine; matching them one by one");
                others.append(&mut entries);
                None
            }
        };
        let s = Arc::new(ScanSet {
            set,
            entries,
            others,
        });
        *cached = Some(s.clone());
        s
    }

    /// The AWS provider a binding reads through, and how to name it; `Err` says why none.
    fn provider<'a>(&'a self, binding: &'a Binding) -> Result<(&'a AwsProvider, String), String> {
        match binding {
            Binding::Inline(aws) => Ok((aws.as_ref(), "backend".to_owned())),
            Binding::Store(id) => match self.stores.get(id) {
                None => Err(format!("{id} does not exist")),
                Some(Store { aws: None, .. }) => Err(format!("{id} is not an AWS store")),
                Some(Store {
                    controller: Some(c),
                    ..
                }) if !self.config.controller_classes.is_empty()
                    && !self.config.controller_classes.contains(c) =>
                {
                    Err(format!(
                        "{id} names controller class {c:?}, which the cluster's ESO does not serve (--eso-controller-class)"
                    ))
                }
                Some(Store { aws: Some(aws), .. }) => Ok((aws, id.to_string())),
            },
        }
    }

    /// Whether the provider reads from where the change happened; `Err` says what differed.
    fn scope(
        &self,
        aws: &AwsProvider,
        label: &str,
        arn: Option<&ArnScope>,
        namespace: &str,
        change: &Change,
    ) -> Result<String, String> {
        // An ARN names its own region and account (another account's item, shared by a
        // resource policy or RAM, is read through the store's role).
        let region = arn.map(|a| &a.region).or(aws.region.as_ref());
        if let Some(r) = region
            && *r != change.region
        {
            let whose = if arn.is_some() {
                "the key's ARN"
            } else {
                label
            };
            return Err(format!(
                "{whose} reads region {r}, the change is in {}",
                change.region
            ));
        }
        let account = arn
            .map(|a| &a.account)
            .or(aws.account.as_ref())
            .or(self.config.eso_account.as_ref());
        if let (Some(a), Some(b)) = (account, &change.account)
            && a != b
        {
            let whose = match (arn, &aws.account) {
                (Some(_), _) => "the key's ARN names".to_owned(),
                (None, Some(_)) => format!("{label} assumes a role in"),
                (None, None) => format!("{label} reads with ESO's credentials, in"),
            };
            return Err(format!("{whose} account {a}, the change is in {b}"));
        }
        if !aws.conditions.is_empty()
            && !aws
                .conditions
                .iter()
                .any(|c| condition_allows(c, namespace))
        {
            return Err(format!(
                "{label} conditions do not allow namespace {namespace}"
            ));
        }
        Ok(format!("{label} ({})", aws.describe()))
    }

    fn refile_store(&mut self, id: &StoreId) {
        let keys: Vec<Arc<ResourceKey>> = self
            .by_store
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.unfile(&key);
            self.file(&key);
        }
    }

    fn file(&mut self, key: &Arc<ResourceKey>) {
        let Some(reader) = self.readers.get(key) else {
            return;
        };
        let mut filings: Vec<(Filed, Entry)> = Vec::with_capacity(reader.references.len());
        let mut rejected = Vec::new();
        let mut charged = 0;
        for (i, r) in reader.references.iter().enumerate() {
            let provider = match &r.binding {
                Binding::Store(s) => self.stores.get(s).and_then(|s| s.aws.as_ref()),
                Binding::Inline(aws) => Some(aws.as_ref()),
            };
            let entry = |service, reads, arn: Option<ArnScope>, test| Entry {
                key: key.clone(),
                reference: i as u32,
                service,
                reads,
                arn: arn.map(Box::new),
                test,
            };
            match (&r.selector, provider) {
                // No store yet (or not an AWS one): filed by its bare name, so `explain` can say
                // why it does not match; a store arriving re-files it.
                (Selector::Key(k), None) => {
                    let name: Box<str> = normalize(split_version(&k.key).0).into();
                    filings.push((
                        Filed::Name(name),
                        entry(
                            AwsService::ParameterStore,
                            Reads::Latest,
                            None,
                            Test::Normalized,
                        ),
                    ));
                }
                (Selector::Find(_), None) => {}
                (Selector::Key(k), Some(aws)) => {
                    for res in resolve_key(aws.service, &aws.prefix, k) {
                        let test = match res.service {
                            AwsService::ParameterStore => Test::Normalized,
                            AwsService::SecretsManager => Test::Exact(res.name.as_str().into()),
                        };
                        filings.push((
                            Filed::Name(normalize(&res.name).into()),
                            entry(res.service, res.reads, res.arn, test),
                        ));
                    }
                }
                (Selector::Find(f), Some(aws)) => {
                    let regex = match f.name_regexp.as_deref().filter(|r| !r.is_empty()) {
                        None => None,
                        Some(re) => match compile_pattern(re) {
                            Ok((re, cost))
                                if self.pattern_bytes + charged + cost <= REGEX_BUDGET =>
                            {
                                charged += cost;
                                Some(Arc::new(re))
                            }
                            Ok(_) => {
                                rejected.push(RejectedReference {
                                    reader: (**key).clone(),
                                    reference: r.path.to_string(),
                                    reason: format!(
                                        "find.name.regexp: the patterns of all ExternalSecrets together passed their {} MiB budget: treated as matching every name",
                                        REGEX_BUDGET >> 20
                                    ),
                                });
                                None
                            }
                            Err(PatternProblem::TooLarge) => {
                                rejected.push(RejectedReference {
                                    reader: (**key).clone(),
                                    reference: r.path.to_string(),
                                    reason: format!(
                                        "find.name.regexp ({} bytes) compiles past {} KiB: treated as matching every name",
                                        re.len(),
                                        REGEX_SIZE_LIMIT / 1024
                                    ),
                                });
                                None
                            }
                            Err(PatternProblem::Invalid(e)) => {
                                rejected.push(RejectedReference {
                                    reader: (**key).clone(),
                                    reference: r.path.to_string(),
                                    reason: format!(
                                        "find.name.regexp does not compile (ESO cannot use it either): {}",
                                        e.lines().last().unwrap_or_default()
                                    ),
                                });
                                continue;
                            }
                        },
                    };
                    let service = aws.service;
                    match service {
                        AwsService::ParameterStore => {
                            // ESO: `name` wins (GetParametersByPath from `path`, default `/`),
                            // else `tags` (DescribeParameters, `{}` lists everything), else an
                            // error ("unexpected find operator"): such a find reads nothing.
                            let reads = match (&f.name_regexp, f.tags) {
                                (Some(_), _) => Reads::FindValues,
                                (None, Some(_)) => Reads::FindTags,
                                (None, None) => continue,
                            };
                            match f.path.as_deref().map(normalize_path) {
                                Some(p) if !p.is_empty() => filings.push((
                                    Filed::Path(p.into()),
                                    entry(
                                        service,
                                        reads,
                                        None,
                                        Test::Path {
                                            recursive: f.recursive,
                                            regex,
                                        },
                                    ),
                                )),
                                _ => {
                                    let test = match regex {
                                        Some(re) => Test::Regex(re),
                                        None => Test::Always,
                                    };
                                    filings.push((Filed::Scan, entry(service, reads, None, test)));
                                }
                            }
                        }
                        AwsService::SecretsManager => {
                            // ESO v0.16: `name` wins (ListSecrets without a path, which reads
                            // `prefix + name`; BatchGetSecretValue with one); else non-empty
                            // `tags`; else an error. v2.x combines name and tags: tags then
                            // count as undecidable too.
                            let (reads, prefix) = match (&f.name_regexp, f.tags) {
                                (Some(_), Some(n)) if n > 0 => (Reads::FindTags, ""),
                                (Some(_), _) if f.path.is_none() => {
                                    (Reads::FindValues, aws.prefix.as_str())
                                }
                                (Some(_), _) => (Reads::FindValues, ""),
                                (None, Some(n)) if n > 0 => (Reads::FindTags, ""),
                                (None, _) => continue,
                            };
                            let test = Test::SmFind {
                                filter: f.path.as_deref().map(Into::into),
                                regex,
                                prefix: prefix.into(),
                            };
                            filings.push((Filed::Scan, entry(service, reads, None, test)));
                        }
                    }
                }
            }
        }
        let mut filed = Vec::with_capacity(filings.len());
        for (where_, entry) in filings {
            match &where_ {
                Filed::Name(n) => self.by_name.entry(n.clone()).or_default().push(entry),
                Filed::Path(p) => self.by_path.entry(p.clone()).or_default().push(entry),
                Filed::Scan => {
                    self.scans.push(entry);
                    *self.scan_set.get_mut() = None;
                }
            }
            filed.push(where_);
        }
        self.references += filed.len();
        self.filed.insert(key.clone(), filed);
        if !rejected.is_empty() {
            self.rejected_count += rejected.len();
            self.rejected.insert(key.clone(), rejected);
        }
        if charged > 0 {
            self.pattern_bytes += charged;
            self.pattern_cost.insert(key.clone(), charged);
        }
    }

    /// The references of one resource this index could not evaluate as written.
    pub fn rejected_of(&self, key: &ResourceKey) -> &[RejectedReference] {
        self.rejected.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every reference this index could not evaluate as written.
    pub fn rejected(&self) -> impl Iterator<Item = &RejectedReference> {
        self.rejected.values().flatten()
    }

    fn unfile(&mut self, key: &ResourceKey) {
        if let Some(gone) = self.rejected.remove(key) {
            self.rejected_count -= gone.len();
        }
        if let Some(cost) = self.pattern_cost.remove(key) {
            self.pattern_bytes -= cost;
        }
        let Some(filed) = self.filed.remove(key) else {
            return;
        };
        self.references -= filed.len();
        let mut scans = false;
        for f in filed {
            let (map, k) = match f {
                Filed::Name(k) => (&mut self.by_name, k),
                Filed::Path(k) => (&mut self.by_path, k),
                Filed::Scan => {
                    scans = true;
                    continue;
                }
            };
            if let Some(entries) = map.get_mut(&k) {
                entries.retain(|e| *e.key != *key);
                if entries.is_empty() {
                    map.remove(&k);
                }
            }
        }
        if scans {
            self.scans.retain(|e| *e.key != *key);
            *self.scan_set.get_mut() = None;
        }
    }

    fn remove_reader(&mut self, key: &ResourceKey) {
        self.unfile(key);
        if let Some((key, old)) = self.readers.remove_entry(key) {
            if key.kind == ReaderKind::KesExternalSecret {
                self.kes_readers -= 1;
            }
            if let Some(p) = &old.parent
                && let Some(set) = self.by_parent.get_mut(p.name.as_str())
            {
                set.remove(&key);
                if set.is_empty() {
                    self.by_parent.remove(p.name.as_str());
                }
            }
            for r in &old.references {
                if let Binding::Store(s) = &r.binding
                    && let Some(set) = self.by_store.get_mut(s)
                {
                    set.remove(&key);
                    if set.is_empty() {
                        self.by_store.remove(s);
                    }
                }
            }
        }
    }
}

/// What of a store decides how its readers are filed.
fn filing_of(store: &Store) -> Option<(AwsService, String)> {
    store.aws.as_ref().map(|a| (a.service, a.prefix.clone()))
}

/// The match reason's first word for a key reference.
fn how_key(reads: Reads) -> &'static str {
    match reads {
        Reads::Latest | Reads::FindValues | Reads::FindTags => "key",
        Reads::Pinned => "key (pinned version)",
        Reads::Label => "key (label)",
        Reads::Stage => "key (stage)",
        Reads::Tags => "key (tags)",
    }
}

/// The entry's own name check (the probe found it under the normalised name or a path).
fn name_test(test: &Test, change: &Change) -> bool {
    match test {
        Test::Normalized | Test::Always => true,
        Test::Exact(n) => **n == *change.name,
        Test::Path { regex, .. } => regex.as_ref().is_none_or(|r| r.is_match(&change.name)),
        // Checked by the RegexSet when there is one; cheap again for the few it matched.
        Test::Regex(r) => r.is_match(&change.name),
        Test::SmFind {
            filter,
            regex,
            prefix,
        } => {
            let name = change.name.as_str();
            let listed = |n: &str| regex.as_ref().is_none_or(|r| r.is_match(n));
            let direct = filter.as_deref().is_none_or(|f| sm_name_filter(f, name)) && listed(name);
            let doubled = !prefix.is_empty()
                && name
                    .strip_prefix(&**prefix)
                    .is_some_and(|rest| !rest.is_empty() && listed(rest));
            direct || doubled
        }
    }
}

impl Reader {
    /// What a force-sync of this reader patches: its ClusterExternalSecret parent if it has
    /// one (the parent rewrites it), else the reader itself.
    pub fn target(&self) -> Target {
        match (&self.parent, self.kind) {
            (Some(parent), _) => Target {
                kind: TargetKind::ClusterExternalSecret,
                namespace: String::new(),
                name: parent.name.clone(),
            },
            (None, kind) => Target {
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
    /// The ExternalSecrets a ClusterExternalSecret owns, with their sync fingerprints.
    pub fn children_of(&self, ces: &str) -> Vec<(ResourceKey, u64)> {
        let Some(children) = self.by_parent.get(ces) else {
            return Vec::new();
        };
        children
            .iter()
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
        for reader in self.readers.values() {
            if self.unforceable(reader).is_some() || reader.writes_nothing {
                continue;
            }
            let target = reader.target();
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

fn condition_allows(c: &Condition, namespace: &str) -> bool {
    c.has_selector
        || c.namespaces.iter().any(|n| n == namespace)
        || c.namespace_regexes
            .iter()
            .any(|r| compile_pattern(r).is_ok_and(|(re, _)| re.is_match(namespace)))
}

#[cfg(test)]
mod tests;

//! The reverse index: which resources read which AWS key. Pure and synchronous: fed by
//! `apply_*` / `delete_*` / `replace_*` (from watches, or literal values in tests) and asked
//! `lookup(&Change)`.
//!
//! Filing: a key reference is filed under its *effective* name (store prefix + key, any
//! `:version` removed, leading `/` dropped), a `find.path` under its normalised path, and a
//! regexp-only or tags-only `find` in a short list scanned on every lookup. A lookup is one
//! hash probe for the name, one per ancestor path, and the scan list; each candidate is then
//! checked against its store's service, region, account and namespace conditions, which are
//! read at lookup time (so a store edit applies at once). Only a store's prefix is baked into
//! the filing; a store change re-files exactly the resources that reference that store.

pub mod model;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use regex::Regex;

use crate::event::{Change, Service};
pub use model::{
    AwsProvider, AwsService, Binding, Condition, Find, Owner, Reader, ReaderKind, RefPath,
    Reference, Selector, Store, StoreId,
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
    /// Would match, but a force-sync cannot work on them (reported, not patched).
    pub unforceable: Vec<Match>,
    /// Same name, other store/region/service/account/namespace (only with `explain`).
    pub near_misses: Vec<NearMiss>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ArnScope {
    region: String,
    account: String,
}

#[derive(Debug, Clone)]
struct Entry {
    key: Arc<ResourceKey>,
    reference: u32,
    arn: Option<Box<ArnScope>>,
    /// `find.name.regexp`, when the find has one.
    regex: Option<Arc<Regex>>,
    /// For path entries: whether grandchildren count.
    recursive: bool,
    /// `find.tags` (undecidable from an event).
    tags: bool,
}

#[derive(Debug, Clone)]
enum Filed {
    Name(Box<str>),
    Path(Box<str>),
    Scan,
}

#[derive(Debug, Default)]
pub struct Index {
    stores: HashMap<StoreId, Store>,
    readers: HashMap<Arc<ResourceKey>, Reader>,
    by_store: HashMap<StoreId, HashSet<Arc<ResourceKey>>>,
    by_name: HashMap<Box<str>, Vec<Entry>>,
    by_path: HashMap<Box<str>, Vec<Entry>>,
    scans: Vec<Entry>,
    /// The scan list's regexps as one `RegexSet` (one pass per lookup instead of one match
    /// per entry), built on first use after the list changed.
    scan_set: parking_lot::Mutex<Option<Arc<ScanSet>>>,
    filed: HashMap<Arc<ResourceKey>, Vec<Filed>>,
    references: usize,
}

#[derive(Debug)]
struct ScanSet {
    set: regex::RegexSet,
    /// `scans` index of each pattern in `set`.
    entries: Vec<usize>,
    /// `scans` entries without a regexp (tags only): always candidates.
    always: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub external_secrets: usize,
    pub kes_external_secrets: usize,
    pub stores: usize,
    pub references: usize,
    pub names: usize,
}

/// Compares names with and without their leading `/`.
pub fn normalize(name: &str) -> &str {
    name.strip_prefix('/').unwrap_or(name)
}

/// The name a key resolves to under a store prefix: `prefix + key`, any `:version` or
/// `:label` selector removed, leading `/` normalised; ARN keys carry their own scope (and a
/// Secrets Manager ARN's random `-XXXXXX` suffix is dropped).
fn effective_name(prefix: &str, key: &str) -> Option<(String, Option<ArnScope>)> {
    if let Some(rest) = key.strip_prefix("arn:") {
        let mut parts = rest.splitn(5, ':');
        let (_partition, service, region, account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        let name = match service {
            // parameter/<name>[:<version>]
            "ssm" => resource
                .strip_prefix("parameter")?
                .split(':')
                .next()?
                .to_owned(),
            // secret:<name>-XXXXXX[:...]
            "secretsmanager" => {
                strip_secret_suffix(resource.strip_prefix("secret:")?.split(':').next()?).to_owned()
            }
            _ => return None,
        };
        let scope = ArnScope {
            region: region.to_owned(),
            account: account.to_owned(),
        };
        return Some((normalize(&name).to_owned(), Some(scope)));
    }
    let full = format!("{prefix}{key}");
    let name = normalize(full.split(':').next().unwrap_or(&full));
    (!name.is_empty()).then(|| (name.to_owned(), None))
}

/// `name-AbCdEf` → `name`: Secrets Manager appends six random characters to secret ARNs.
pub fn strip_secret_suffix(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, suffix))
            if suffix.len() == 6
                && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
                && !base.is_empty() =>
        {
            base
        }
        _ => name,
    }
}

fn normalize_path(path: &str) -> String {
    normalize(path).trim_end_matches('/').to_owned()
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> Stats {
        let kes = self
            .readers
            .keys()
            .filter(|k| k.kind == ReaderKind::KesExternalSecret)
            .count();
        Stats {
            external_secrets: self.readers.len() - kes,
            kes_external_secrets: kes,
            stores: self.stores.len(),
            references: self.references,
            names: self.by_name.len(),
        }
    }

    pub fn apply_store(&mut self, store: Store) {
        let id = store.id.clone();
        let old_prefix = self.stores.get(&id).map(|s| prefix_of(Some(s)).to_owned());
        let new_prefix = prefix_of(Some(&store)).to_owned();
        self.stores.insert(id.clone(), store);
        if old_prefix.as_deref() != Some(new_prefix.as_str()) {
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
        self.remove_reader(&key);
        for r in &reader.references {
            if let Binding::Store(s) = &r.binding {
                self.by_store
                    .entry(s.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.readers.insert(key.clone(), reader);
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
    /// service, account or namespace did not fit.
    pub fn explain(&self, change: &Change) -> Lookup {
        self.evaluate(change, true)
    }

    fn evaluate(&self, change: &Change, misses: bool) -> Lookup {
        let name = normalize(&change.name);
        let mut out = Lookup::default();
        let mut seen: HashSet<Target> = HashSet::new();
        let mut consider = |entry: &Entry, how: &str| {
            let Some(reader) = self.readers.get(&entry.key) else {
                return;
            };
            let reference = &reader.references[entry.reference as usize];
            if let Some(re) = &entry.regex
                && !re.is_match(&change.name)
            {
                return;
            }
            let verdict = self
                .scope(&reference.binding, &reader.namespace, change)
                .and_then(|scope| match &entry.arn {
                    Some(arn) if arn.region != change.region => Err(format!(
                        "the key's ARN names region {}, the event {}",
                        arn.region, change.region
                    )),
                    Some(arn) if change.account.as_ref().is_some_and(|a| *a != arn.account) => {
                        Err(format!(
                            "the key's ARN names account {}, the event {}",
                            arn.account,
                            change.account.as_deref().unwrap_or_default()
                        ))
                    }
                    _ => Ok(scope),
                });
            match verdict {
                Ok(scope) => {
                    let target = reader.target();
                    if !seen.insert(target.clone()) {
                        return;
                    }
                    let tags = if entry.tags {
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
                    };
                    match &reader.unforceable {
                        Some(why) => out.unforceable.push(Match {
                            reason: why.clone(),
                            ..m
                        }),
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
                consider(e, "key");
            }
        }
        // Every ancestor path of the name: "", "a", "a/b" for "a/b/c".
        let mut ancestors = vec![""];
        ancestors.extend(name.match_indices('/').map(|(i, _)| &name[..i]));
        let parent = ancestors.last().copied();
        for a in ancestors {
            if let Some(entries) = self.by_path.get(a) {
                for e in entries.iter().filter(|e| e.recursive || Some(a) == parent) {
                    consider(e, "path");
                }
            }
        }
        let scans = self.scan_set();
        for &i in &scans.always {
            consider(&self.scans[i], "tags");
        }
        for i in scans.set.matches(&change.name).iter() {
            consider(&self.scans[scans.entries[i]], "name regexp");
        }
        out
    }

    fn scan_set(&self) -> Arc<ScanSet> {
        let mut cached = self.scan_set.lock();
        if let Some(s) = cached.as_ref() {
            return s.clone();
        }
        let (mut patterns, mut entries, mut always) = (Vec::new(), Vec::new(), Vec::new());
        for (i, e) in self.scans.iter().enumerate() {
            match &e.regex {
                Some(re) => {
                    patterns.push(re.as_str().to_owned());
                    entries.push(i);
                }
                None => always.push(i),
            }
        }
        // Each pattern already compiled on its own, so the set compiles too.
        let set = regex::RegexSet::new(&patterns).expect("regexps that compiled alone");
        let s = Arc::new(ScanSet {
            set,
            entries,
            always,
        });
        *cached = Some(s.clone());
        s
    }

    /// Whether the binding reads from where the change happened; `Err` says what differed.
    fn scope(&self, binding: &Binding, namespace: &str, change: &Change) -> Result<String, String> {
        let (aws, label) = match binding {
            Binding::Inline(aws) => (aws, "backend".to_owned()),
            Binding::Store(id) => match self.stores.get(id) {
                None => return Err(format!("{id} does not exist")),
                Some(Store { aws: None, .. }) => return Err(format!("{id} is not an AWS store")),
                Some(Store { aws: Some(aws), .. }) => (aws, id.to_string()),
            },
        };
        let service = match change.service {
            Service::ParameterStore => AwsService::ParameterStore,
            Service::SecretsManager => AwsService::SecretsManager,
        };
        if aws.service != service {
            return Err(format!(
                "{label} reads {}, the change is in {}",
                aws.service.as_str(),
                service.as_str()
            ));
        }
        if let Some(r) = &aws.region
            && *r != change.region
        {
            return Err(format!(
                "{label} reads region {r}, the change is in {}",
                change.region
            ));
        }
        if let (Some(a), Some(b)) = (&aws.account, &change.account)
            && a != b
        {
            return Err(format!(
                "{label} assumes a role in account {a}, the change is in {b}"
            ));
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
        let mut filed = Vec::with_capacity(reader.references.len());
        for (i, r) in reader.references.iter().enumerate() {
            let entry = |arn, regex, recursive, tags| Entry {
                key: key.clone(),
                reference: i as u32,
                arn,
                regex,
                recursive,
                tags,
            };
            match &r.selector {
                Selector::Key(k) => {
                    let prefix = match &r.binding {
                        Binding::Store(s) => prefix_of(self.stores.get(s)),
                        Binding::Inline(aws) => aws.prefix.as_str(),
                    };
                    let Some((name, arn)) = effective_name(prefix, k) else {
                        continue;
                    };
                    let name: Box<str> = name.into();
                    self.by_name.entry(name.clone()).or_default().push(entry(
                        arn.map(Box::new),
                        None,
                        false,
                        false,
                    ));
                    filed.push(Filed::Name(name));
                }
                Selector::Find(f) => {
                    let regex = match f.name_regexp.as_deref().map(Regex::new) {
                        Some(Ok(re)) => Some(Arc::new(re)),
                        Some(Err(e)) => {
                            tracing::warn!(resource = ?key, reference = %r.path, error = %e, "invalid find.name.regexp; reference ignored");
                            continue;
                        }
                        None => None,
                    };
                    match &f.path {
                        Some(p) => {
                            let p: Box<str> = normalize_path(p).into();
                            self.by_path.entry(p.clone()).or_default().push(entry(
                                None,
                                regex,
                                f.recursive,
                                f.tags,
                            ));
                            filed.push(Filed::Path(p));
                        }
                        None => {
                            self.scans.push(entry(None, regex, true, f.tags));
                            *self.scan_set.get_mut() = None;
                            filed.push(Filed::Scan);
                        }
                    }
                }
            }
        }
        self.references += filed.len();
        self.filed.insert(key.clone(), filed);
    }

    fn unfile(&mut self, key: &ResourceKey) {
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

/// A parameter a resource reads by name, for the catch-up sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepItem {
    /// `None` when the store leaves the region to the environment.
    pub region: Option<String>,
    /// The SSM name as the resource reads it (store prefix applied, version removed).
    pub name: String,
    pub target: Target,
    pub synced_at: Option<time::OffsetDateTime>,
}

impl Index {
    /// Every (parameter, resource) pair read by name from Parameter Store, for resources that
    /// a force-sync can refresh. Each CES child yields its parent.
    pub fn sweep_items(&self) -> Vec<SweepItem> {
        let mut out = Vec::new();
        for reader in self.readers.values() {
            if reader.unforceable.is_some() {
                continue;
            }
            let target = reader.target();
            for r in &reader.references {
                let Selector::Key(k) = &r.selector else {
                    continue;
                };
                let aws = match &r.binding {
                    Binding::Inline(aws) => Some(aws),
                    Binding::Store(id) => self.stores.get(id).and_then(|s| s.aws.as_ref()),
                };
                let Some(aws) = aws.filter(|a| a.service == AwsService::ParameterStore) else {
                    continue;
                };
                let Some((name, arn)) = effective_name(&aws.prefix, k) else {
                    continue;
                };
                // SSM names with a hierarchy are fully qualified: they start with `/`.
                let name =
                    if name.contains('/') || k.starts_with('/') || aws.prefix.starts_with('/') {
                        format!("/{name}")
                    } else {
                        name
                    };
                let region = arn.map(|a| a.region).or_else(|| aws.region.clone());
                out.push(SweepItem {
                    region,
                    name,
                    target: target.clone(),
                    synced_at: reader.synced_at,
                });
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
            .any(|r| Regex::new(r).is_ok_and(|re| re.is_match(namespace)))
}

fn prefix_of(store: Option<&Store>) -> &str {
    store
        .and_then(|s| s.aws.as_ref())
        .map(|a| a.prefix.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;

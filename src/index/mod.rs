//! The reverse index: which resources read which AWS key. Pure and synchronous: fed by
//! `apply_*` / `delete_*` (from watches, or from literal values in tests) and asked
//! `lookup(&Change)`. The store a reference resolves through is looked up at query time, so
//! region and service changes of a store take effect at once; only a store's `prefix` is
//! baked into the name a reference is filed under, and a store change re-files exactly the
//! ExternalSecrets that reference that store.

pub mod model;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::event::{Change, Service};
pub use model::{AwsProvider, AwsService, ExternalSecret, Reference, Store, StoreId, StoreKind};

/// A resource that can be patched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetKind {
    ExternalSecret,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExternalSecret => "ExternalSecret",
        }
    }
}

/// What to patch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub kind: TargetKind,
    pub key: ObjectKey,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.key)
    }
}

/// One matched resource and the reference that made it match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub target: Target,
    /// Where in the resource, e.g. `spec.data[0].remoteRef.key`.
    pub reference: String,
    pub store: StoreId,
}

/// Key scope written into an ARN-form key (`arn:aws:ssm:<region>:<account>:parameter/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArnScope {
    region: String,
    account: String,
}

#[derive(Debug, Clone)]
struct Entry {
    es: Arc<ObjectKey>,
    reference: u32,
    arn: Option<Box<ArnScope>>,
}

#[derive(Debug, Default)]
pub struct Index {
    stores: HashMap<StoreId, Store>,
    secrets: HashMap<Arc<ObjectKey>, ExternalSecret>,
    /// Which ExternalSecrets reference a store (present or not).
    by_store: HashMap<StoreId, HashSet<Arc<ObjectKey>>>,
    /// Normalised effective name → the references filed under it.
    by_name: HashMap<Box<str>, Vec<Entry>>,
    /// The names each ExternalSecret is filed under, for removal.
    filed: HashMap<Arc<ObjectKey>, Vec<Box<str>>>,
    /// Total filed references, kept so `stats` is O(1).
    references: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub external_secrets: usize,
    pub stores: usize,
    pub references: usize,
    pub names: usize,
}

/// Compares names with and without their leading `/`.
pub fn normalize(name: &str) -> &str {
    name.strip_prefix('/').unwrap_or(name)
}

/// The SSM name a key resolves to under a store prefix: `prefix + key`, any `:version` or
/// `:label` selector removed, leading `/` normalised; ARN keys carry their own scope.
fn effective_name(prefix: &str, key: &str) -> Option<(String, Option<ArnScope>)> {
    if let Some(rest) = key.strip_prefix("arn:") {
        // arn:<partition>:ssm:<region>:<account>:parameter/<name>[:<version>]
        let mut parts = rest.splitn(5, ':');
        let (_partition, service, region, account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if service != "ssm" {
            return None;
        }
        let name = resource.strip_prefix("parameter")?;
        let name = name.split(':').next().unwrap_or(name);
        return Some((
            normalize(name).to_owned(),
            Some(ArnScope {
                region: region.to_owned(),
                account: account.to_owned(),
            }),
        ));
    }
    let full = format!("{prefix}{key}");
    let name = full.split(':').next().unwrap_or(&full);
    let name = normalize(name);
    (!name.is_empty()).then(|| (name.to_owned(), None))
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            external_secrets: self.secrets.len(),
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

    pub fn apply_external_secret(&mut self, es: ExternalSecret) {
        let key = Arc::new(ObjectKey {
            namespace: es.namespace.clone(),
            name: es.name.clone(),
        });
        self.unfile(&key);
        if let Some(old) = self.secrets.remove(&key) {
            for r in &old.references {
                self.unlink_store(&r.store, &key);
            }
        }
        for r in &es.references {
            self.by_store
                .entry(r.store.clone())
                .or_default()
                .insert(key.clone());
        }
        self.secrets.insert(key.clone(), es);
        self.file(&key);
    }

    pub fn delete_external_secret(&mut self, namespace: &str, name: &str) {
        let key = ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.unfile(&key);
        if let Some((key, old)) = self.secrets.remove_entry(&key) {
            for r in &old.references {
                self.unlink_store(&r.store, &key);
            }
        }
    }

    /// Makes the ExternalSecrets exactly `list` (after a watch re-list).
    pub fn replace_external_secrets(&mut self, list: Vec<ExternalSecret>) {
        let keep: HashSet<ObjectKey> = list
            .iter()
            .map(|e| ObjectKey {
                namespace: e.namespace.clone(),
                name: e.name.clone(),
            })
            .collect();
        let gone: Vec<ObjectKey> = self
            .secrets
            .keys()
            .filter(|k| !keep.contains(k.as_ref()))
            .map(|k| (**k).clone())
            .collect();
        for k in gone {
            self.delete_external_secret(&k.namespace, &k.name);
        }
        for es in list {
            self.apply_external_secret(es);
        }
    }

    /// Every resource that reads the changed key, each once, with the first reference that
    /// matched.
    pub fn lookup(&self, change: &Change) -> Vec<Match> {
        let Some(entries) = self.by_name.get(normalize(&change.name)) else {
            return Vec::new();
        };
        let mut out: Vec<Match> = Vec::new();
        for entry in entries {
            let Some(es) = self.secrets.get(&entry.es) else {
                continue;
            };
            let reference = &es.references[entry.reference as usize];
            if !self.store_serves(&reference.store, change) {
                continue;
            }
            if let Some(arn) = &entry.arn
                && (arn.region != change.region
                    || change.account.as_ref().is_some_and(|a| *a != arn.account))
            {
                continue;
            }
            let target = Target {
                kind: TargetKind::ExternalSecret,
                key: (*entry.es).clone(),
            };
            if out.iter().any(|m| m.target == target) {
                continue;
            }
            out.push(Match {
                target,
                reference: reference.path.clone(),
                store: reference.store.clone(),
            });
        }
        out
    }

    fn store_serves(&self, id: &StoreId, change: &Change) -> bool {
        let Some(aws) = self.stores.get(id).and_then(|s| s.aws.as_ref()) else {
            return false;
        };
        let service = match change.service {
            Service::ParameterStore => AwsService::ParameterStore,
            Service::SecretsManager => AwsService::SecretsManager,
        };
        aws.service == service && aws.region.as_ref().is_none_or(|r| *r == change.region)
    }

    fn refile_store(&mut self, id: &StoreId) {
        let keys: Vec<Arc<ObjectKey>> = self
            .by_store
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.unfile(&key);
            self.file(&key);
        }
    }

    fn file(&mut self, key: &Arc<ObjectKey>) {
        let Some(es) = self.secrets.get(key) else {
            return;
        };
        let mut names = Vec::with_capacity(es.references.len());
        for (i, r) in es.references.iter().enumerate() {
            let prefix = prefix_of(self.stores.get(&r.store));
            let Some((name, arn)) = effective_name(prefix, &r.key) else {
                continue;
            };
            let name: Box<str> = name.into();
            self.by_name.entry(name.clone()).or_default().push(Entry {
                es: key.clone(),
                reference: i as u32,
                arn: arn.map(Box::new),
            });
            names.push(name);
        }
        self.references += names.len();
        self.filed.insert(key.clone(), names);
    }

    fn unfile(&mut self, key: &ObjectKey) {
        let Some(names) = self.filed.remove(key) else {
            return;
        };
        self.references -= names.len();
        for name in names {
            if let Some(entries) = self.by_name.get_mut(&name) {
                entries.retain(|e| *e.es != *key);
                if entries.is_empty() {
                    self.by_name.remove(&name);
                }
            }
        }
    }

    fn unlink_store(&mut self, store: &StoreId, key: &ObjectKey) {
        if let Some(set) = self.by_store.get_mut(store) {
            set.remove(key);
            if set.is_empty() {
                self.by_store.remove(store);
            }
        }
    }
}

fn prefix_of(store: Option<&Store>) -> &str {
    store
        .and_then(|s| s.aws.as_ref())
        .map(|a| a.prefix.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;

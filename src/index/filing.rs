//! How a reader's references are filed: under the names they resolve to through their store,
//! under a path, or on the scan list; and how a store's edit or a reader's departure takes
//! them out again.

use std::sync::Arc;

use regex::Regex;

use super::patterns::{NamePattern, name_pattern};
use super::{
    ArnScope, AwsProvider, AwsService, Binding, Entry, Filed, Find, Index, KeyRef, ReaderKind,
    Reads, RejectedReference, ResourceKey, Selector, Store, StoreId, Test, normalize,
};

/// One name a key reference is filed under, with what it reads there.
pub(super) struct Resolved {
    pub(super) name: String,
    pub(super) service: AwsService,
    pub(super) reads: Reads,
    pub(super) arn: Option<ArnScope>,
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
pub(super) fn resolve_key(service: AwsService, prefix: &str, k: &KeyRef) -> Vec<Resolved> {
    match k.key.strip_prefix("arn:") {
        Some(_) if !prefix.is_empty() => Vec::new(),
        Some(rest) => arn_names(service, rest, k),
        None => {
            let full = format!("{prefix}{}", k.key);
            match service {
                AwsService::ParameterStore => parameter_names(&full, k),
                AwsService::SecretsManager => secret_names(full, k),
            }
        }
    }
}

/// The names an ARN key (`rest` follows `arn:`) reads, with the ARN's own region and account.
fn arn_names(service: AwsService, rest: &str, k: &KeyRef) -> Vec<Resolved> {
    let version = k.version.as_deref();
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
    match (arn_service, service) {
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
    }
}

/// The name a Parameter Store key reads as `full` (prefix applied), or the Secrets Manager
/// secret an `/aws/reference/secretsmanager/` path reads.
fn parameter_names(full: &str, k: &KeyRef) -> Vec<Resolved> {
    let service = AwsService::ParameterStore;
    let (name, embedded) = split_version(full);
    let version = k.version.as_deref().or(embedded);
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

/// The name a Secrets Manager key reads as `full` (prefix applied): exactly that.
fn secret_names(full: String, k: &KeyRef) -> Vec<Resolved> {
    if full.is_empty() {
        return Vec::new();
    }
    let service = AwsService::SecretsManager;
    vec![Resolved {
        name: full,
        service,
        reads: reads_of(service, k.version.as_deref(), k.metadata),
        arn: None,
    }]
}

/// The version number, label or stage a key reference reads through `aws`, as its filing
/// read it (`uuid/` removed from a Secrets Manager version id). `None` for tags, unpinned keys
/// and `/aws/reference/secretsmanager/` paths (SSM resolves their selector itself, to a stage
/// or a version id): the lookup then treats the reference as reached by every change of its
/// effect.
pub(super) fn pin_of(aws: &AwsProvider, k: &KeyRef) -> Option<String> {
    if k.metadata {
        return None;
    }
    let version = k.version.as_deref();
    let pin = match (k.key.strip_prefix("arn:"), aws.service) {
        (Some(rest), AwsService::ParameterStore) => {
            let resource = rest.splitn(5, ':').nth(4)?;
            version.or(split_version(resource.strip_prefix("parameter")?).1)
        }
        (Some(_), AwsService::SecretsManager) => version,
        (None, AwsService::ParameterStore) => {
            let full = format!("{}{}", aws.prefix, k.key);
            let (name, embedded) = split_version(&full);
            if normalize(name).starts_with("aws/reference/secretsmanager/") {
                return None;
            }
            return version.or(embedded).map(str::to_owned);
        }
        (None, AwsService::SecretsManager) => version,
    }?;
    Some(pin.strip_prefix("uuid/").unwrap_or(pin).to_owned())
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

impl Index {
    pub(super) fn refile_store(&mut self, id: &StoreId) {
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

    pub(super) fn file(&mut self, key: &Arc<ResourceKey>) {
        if let Some(filing) = self.filing(key) {
            self.enter(key, filing);
        }
    }

    /// Where a reader's references go through the stores as they are now; `None` for a reader
    /// the index does not hold.
    fn filing(&self, key: &Arc<ResourceKey>) -> Option<Filing> {
        let reader = self.readers.get(key)?;
        let mut filing = Filing {
            entries: Vec::with_capacity(reader.references.len()),
            rejected: Vec::new(),
            charged: 0,
        };
        for (i, r) in reader.references.iter().enumerate() {
            let at = At {
                key,
                reference: i as u32,
            };
            match (&r.selector, self.aws_of(&r.binding)) {
                (Selector::Key(k), None) => filing.entries.push(unbound_key(at, k)),
                (Selector::Find(_), None) => {}
                (Selector::Key(k), Some(aws)) => filing.entries.extend(key_filings(at, aws, k)),
                (Selector::Find(f), Some(aws)) => {
                    let mut reject = |reason| {
                        filing.rejected.push(RejectedReference {
                            reader: (**key).clone(),
                            reference: r.path.to_string(),
                            reason,
                        })
                    };
                    let spent = self.pattern_bytes + filing.charged;
                    let spent_here = self
                        .pattern_bytes_by_namespace
                        .get(key.namespace.as_str())
                        .copied()
                        .unwrap_or(0)
                        + filing.charged;
                    let regex = match name_pattern(f.name_regexp.as_deref(), spent, spent_here) {
                        NamePattern::Every => None,
                        NamePattern::Compiled(re, cost) => {
                            filing.charged += cost;
                            Some(re)
                        }
                        NamePattern::TreatedAsEvery(why) => {
                            reject(why);
                            None
                        }
                        NamePattern::Invalid(why) => {
                            reject(why);
                            continue;
                        }
                    };
                    filing.entries.extend(find_filing(at, aws, f, regex));
                }
            }
        }
        Some(filing)
    }

    /// The provider a binding files through: none while its store is missing or not an AWS
    /// one (the controller class is left to the lookup, which can say why).
    fn aws_of<'a>(&'a self, binding: &'a Binding) -> Option<&'a AwsProvider> {
        match binding {
            Binding::Store(s) => self.stores.get(s).and_then(|s| s.aws.as_ref()),
            Binding::Inline(aws) => Some(aws.as_ref()),
        }
    }

    /// Puts a reader's filing into the maps and the counts.
    fn enter(&mut self, key: &Arc<ResourceKey>, filing: Filing) {
        let mut filed = Vec::with_capacity(filing.entries.len());
        for (where_, entry) in filing.entries {
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
        if !filing.rejected.is_empty() {
            self.rejected_count += filing.rejected.len();
            self.rejected.insert(key.clone(), filing.rejected);
        }
        if filing.charged > 0 {
            self.pattern_bytes += filing.charged;
            *self
                .pattern_bytes_by_namespace
                .entry(key.namespace.as_str().into())
                .or_default() += filing.charged;
            self.pattern_cost.insert(key.clone(), filing.charged);
        }
    }

    fn unfile(&mut self, key: &ResourceKey) {
        if let Some(gone) = self.rejected.remove(key) {
            self.rejected_count -= gone.len();
        }
        if let Some(cost) = self.pattern_cost.remove(key) {
            self.pattern_bytes -= cost;
            if let Some(here) = self
                .pattern_bytes_by_namespace
                .get_mut(key.namespace.as_str())
            {
                *here -= cost;
                if *here == 0 {
                    self.pattern_bytes_by_namespace
                        .remove(key.namespace.as_str());
                }
            }
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

    pub(super) fn remove_reader(&mut self, key: &ResourceKey) {
        self.unfile(key);
        self.untrusted.remove(key);
        self.unbound(key);
        if let Some((key, old)) = self.readers.remove_entry(key) {
            if key.kind == ReaderKind::KesExternalSecret {
                self.kes_readers -= 1;
            }
            self.uncount_references(&key.namespace, old.references.len());
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

/// One reader's filing before it enters the maps.
struct Filing {
    entries: Vec<(Filed, Entry)>,
    /// References not evaluated as written.
    rejected: Vec<RejectedReference>,
    /// What its patterns are charged against [`REGEX_BUDGET`](super::REGEX_BUDGET).
    charged: usize,
}

/// One reference of one reader, which each of its entries names.
#[derive(Clone, Copy)]
struct At<'a> {
    key: &'a Arc<ResourceKey>,
    reference: u32,
}

impl At<'_> {
    fn entry(self, service: AwsService, reads: Reads, arn: Option<ArnScope>, test: Test) -> Entry {
        Entry {
            key: self.key.clone(),
            reference: self.reference,
            service,
            reads,
            arn: arn.map(Box::new),
            test,
        }
    }
}

/// A key with no store yet (or not an AWS one): filed by its bare name, so `explain` can say
/// why it does not match; a store arriving re-files it.
fn unbound_key(at: At, k: &KeyRef) -> (Filed, Entry) {
    let name: Box<str> = normalize(split_version(&k.key).0).into();
    (
        Filed::Name(name),
        at.entry(
            AwsService::ParameterStore,
            Reads::Latest,
            None,
            Test::Normalized,
        ),
    )
}

/// A key's entries: one under each name it resolves to through its provider.
fn key_filings(at: At, aws: &AwsProvider, k: &KeyRef) -> impl Iterator<Item = (Filed, Entry)> {
    resolve_key(aws.service, &aws.prefix, k)
        .into_iter()
        .map(move |res| {
            let test = match res.service {
                AwsService::ParameterStore => Test::Normalized,
                AwsService::SecretsManager => Test::Exact(res.name.as_str().into()),
            };
            (
                Filed::Name(normalize(&res.name).into()),
                at.entry(res.service, res.reads, res.arn, test),
            )
        })
}

/// A `find`'s entry, per its provider's service; `None` when ESO fails the find (it reads
/// nothing).
fn find_filing(
    at: At,
    aws: &AwsProvider,
    f: &Find,
    regex: Option<Arc<Regex>>,
) -> Option<(Filed, Entry)> {
    match aws.service {
        AwsService::ParameterStore => parameter_find(at, f, regex),
        AwsService::SecretsManager => secrets_find(at, &aws.prefix, f, regex),
    }
}

/// A Parameter Store `find` with a path is filed under it; one without goes to the scan list.
fn parameter_find(at: At, f: &Find, regex: Option<Arc<Regex>>) -> Option<(Filed, Entry)> {
    // ESO: `name` wins (GetParametersByPath from `path`, default `/`), else `tags`
    // (DescribeParameters, `{}` lists everything), else an error ("unexpected find
    // operator"): such a find reads nothing.
    let reads = match (&f.name_regexp, f.tags) {
        (Some(_), _) => Reads::FindValues,
        (None, Some(_)) => Reads::FindTags,
        (None, None) => return None,
    };
    let service = AwsService::ParameterStore;
    Some(match f.path.as_deref().map(normalize_path) {
        Some(p) if !p.is_empty() => (
            Filed::Path(p.into()),
            at.entry(
                service,
                reads,
                None,
                Test::Path {
                    recursive: f.recursive,
                    regex,
                },
            ),
        ),
        _ => {
            let test = match regex {
                Some(re) => Test::Regex(re),
                None => Test::Always,
            };
            (Filed::Scan, at.entry(service, reads, None, test))
        }
    })
}

/// A Secrets Manager `find` goes to the scan list: its path is a string prefix, not a
/// hierarchy.
fn secrets_find(
    at: At,
    prefix: &str,
    f: &Find,
    regex: Option<Arc<Regex>>,
) -> Option<(Filed, Entry)> {
    // ESO v0.16: `name` wins (ListSecrets without a path, which reads `prefix + name`;
    // BatchGetSecretValue with one); else non-empty `tags`; else an error. v2.x combines name
    // and tags: tags then count as undecidable too.
    let (reads, prefix) = match (&f.name_regexp, f.tags) {
        (Some(_), Some(n)) if n > 0 => (Reads::FindTags, ""),
        (Some(_), _) if f.path.is_none() => (Reads::FindValues, prefix),
        (Some(_), _) => (Reads::FindValues, ""),
        (None, Some(n)) if n > 0 => (Reads::FindTags, ""),
        (None, _) => return None,
    };
    let test = Test::SmFind {
        filter: f.path.as_deref().map(Into::into),
        regex,
        prefix: prefix.into(),
    };
    Some((
        Filed::Scan,
        at.entry(AwsService::SecretsManager, reads, None, test),
    ))
}

/// What of a store decides how its readers are filed.
pub(super) fn filing_of(store: &Store) -> Option<(AwsService, String)> {
    store.aws.as_ref().map(|a| (a.service, a.prefix.clone()))
}

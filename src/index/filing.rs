//! How a reader's references are filed: under the names they resolve to through their store,
//! under a path, or on the scan list; and how a store's edit or a reader's departure takes
//! them out again.

use std::sync::Arc;

use super::patterns::{PatternProblem, compile_pattern};
use super::{
    ArnScope, AwsService, Binding, Entry, Filed, Index, KeyRef, REGEX_BUDGET, REGEX_SIZE_LIMIT,
    ReaderKind, Reads, RejectedReference, ResourceKey, Selector, Store, StoreId, Test, normalize,
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

    pub(super) fn remove_reader(&mut self, key: &ResourceKey) {
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
pub(super) fn filing_of(store: &Store) -> Option<(AwsService, String)> {
    store.aws.as_ref().map(|a| (a.service, a.prefix.clone()))
}

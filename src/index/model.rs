//! The parts of cluster objects the index needs, read from their JSON. Reading from plain
//! `serde_json::Value` keeps the index free of any Kubernetes client type, so it is tested
//! with literal objects.

use std::collections::HashSet;

use serde_json::Value;

/// A store, identified the way ESO resolves it: a SecretStore by namespace and name, a
/// ClusterSecretStore by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId {
    pub cluster: bool,
    pub namespace: String,
    pub name: String,
}

impl StoreId {
    pub fn namespaced(namespace: &str, name: &str) -> Self {
        Self {
            cluster: false,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
    pub fn cluster(name: &str) -> Self {
        Self {
            cluster: true,
            namespace: String::new(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.cluster {
            write!(f, "ClusterSecretStore/{}", self.name)
        } else {
            write!(f, "SecretStore/{}/{}", self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AwsService {
    ParameterStore,
    SecretsManager,
}

impl AwsService {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParameterStore => "ParameterStore",
            Self::SecretsManager => "SecretsManager",
        }
    }
}

/// One entry of a ClusterSecretStore's `spec.conditions`: the namespaces allowed to use it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Condition {
    pub namespaces: Vec<String>,
    pub namespace_regexes: Vec<String>,
    /// A label selector: namespace labels are not watched, so such a condition is assumed to
    /// allow every namespace (a spurious re-sync costs less than a missed one).
    pub has_selector: bool,
}

/// Where and as whom a reader reads AWS: a store's `spec.provider.aws`, or a KES object's
/// own `backendType`/`region`/`roleArn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsProvider {
    pub service: AwsService,
    /// `None` when left to the SDK's environment: then any region matches.
    pub region: Option<String>,
    /// Prepended verbatim to every key (ESO semantics); not applied to `find`.
    pub prefix: String,
    /// The account of `role` / `roleArn` when one is set: events from other accounts do not
    /// match.
    pub account: Option<String>,
    /// ClusterSecretStore `spec.conditions`; empty means every namespace.
    pub conditions: Vec<Condition>,
}

impl AwsProvider {
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}, {}",
            self.service.as_str(),
            self.region.as_deref().unwrap_or("any region")
        );
        if let Some(a) = &self.account {
            s.push_str(&format!(", account {a}"));
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub id: StoreId,
    pub aws: Option<AwsProvider>,
    /// `spec.controller`: the ESO controller class that serves it (empty: every class).
    pub controller: Option<String>,
}

impl Store {
    /// Reads a SecretStore (`cluster = false`) or ClusterSecretStore object.
    pub fn from_object(obj: &Value, cluster: bool) -> Result<Self, String> {
        let (namespace, name) = meta(obj)?;
        let id = if cluster {
            StoreId::cluster(&name)
        } else {
            StoreId::namespaced(
                namespace
                    .as_deref()
                    .ok_or("SecretStore without namespace")?,
                &name,
            )
        };
        let aws = obj.pointer("/spec/provider/aws").and_then(|aws| {
            let service = match aws.get("service")?.as_str()? {
                "ParameterStore" => AwsService::ParameterStore,
                "SecretsManager" => AwsService::SecretsManager,
                _ => return None,
            };
            let conditions = if cluster {
                array(obj.get("spec").unwrap_or(&Value::Null), "conditions")
                    .iter()
                    .map(|c| Condition {
                        namespaces: strings(c.get("namespaces")),
                        namespace_regexes: strings(c.get("namespaceRegexes")),
                        has_selector: c.get("namespaceSelector").is_some_and(|s| !s.is_null()),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Some(AwsProvider {
                service,
                region: non_empty(aws.get("region")),
                prefix: aws
                    .get("prefix")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                account: non_empty(aws.get("role"))
                    .as_deref()
                    .and_then(account_of_arn),
                conditions,
            })
        });
        Ok(Self {
            id,
            aws,
            controller: non_empty(obj.pointer("/spec/controller")),
        })
    }
}

/// How a reference selects keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One key (`remoteRef.key`, `extract.key`, KES `data[].key`, `dataFrom[]`).
    Key(KeyRef),
    /// `dataFrom[].find` (ESO) or `data[].path` (KES). Boxed: rare, and larger than a key.
    Find(Box<Find>),
}

/// One item read by key, as the object says it (the index decides what it means for the
/// store's service).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRef {
    pub key: String,
    /// `remoteRef.version` (ESO: a Parameter Store version number or label, a Secrets Manager
    /// stage or `uuid/<version id>`); KES `versionStage`, or `versionId` as `uuid/<id>`.
    pub version: Option<Box<str>>,
    /// `remoteRef.metadataPolicy: Fetch`: the item's tags are read, not its value.
    pub metadata: bool,
}

impl KeyRef {
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Find {
    /// `find.path`, KES `path`: a Parameter Store hierarchy, a Secrets Manager name prefix.
    pub path: Option<String>,
    /// KES `recursive: false` reads only the direct children of `path`.
    pub recursive: bool,
    /// `find.name.regexp`, whenever `find.name` is set (ESO: an empty regexp matches every
    /// name), matched unanchored against the full name.
    pub name_regexp: Option<String>,
    /// `find.tags`, when set: how many tags it names (`{}` is 0: Parameter Store then lists
    /// every parameter, Secrets Manager refuses the find).
    pub tags: Option<usize>,
}

/// Which store a reference reads through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    Store(StoreId),
    /// KES: the object names its backend itself (shared by its references; inline it would
    /// make every `Reference` twice as large).
    Inline(std::sync::Arc<AwsProvider>),
}

/// Where in its object a reference is; printed as the field path, e.g.
/// `spec.data[0].remoteRef.key`. Kept as an index, not a string: 100k resources' worth of
/// field paths would be the index's largest single cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefPath {
    RemoteRef(u32),
    Extract(u32),
    Find(u32),
    KesKey(u32),
    KesPath(u32),
    KesDataFrom(u32),
    KesDataFromWithOptions(u32),
    /// KES's old spelling of `data`.
    KesProperties(u32),
}

impl std::fmt::Display for RefPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RemoteRef(i) => write!(f, "spec.data[{i}].remoteRef.key"),
            Self::Extract(i) => write!(f, "spec.dataFrom[{i}].extract.key"),
            Self::Find(i) => write!(f, "spec.dataFrom[{i}].find"),
            Self::KesKey(i) => write!(f, "spec.data[{i}].key"),
            Self::KesPath(i) => write!(f, "spec.data[{i}].path"),
            Self::KesDataFrom(i) => write!(f, "spec.dataFrom[{i}]"),
            Self::KesDataFromWithOptions(i) => write!(f, "spec.dataFromWithOptions[{i}].key"),
            Self::KesProperties(i) => write!(f, "spec.properties[{i}].key"),
        }
    }
}

/// One way a resource reads AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where in the object.
    pub path: RefPath,
    pub selector: Selector,
    pub binding: Binding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReaderKind {
    /// external-secrets.io ExternalSecret.
    ExternalSecret,
    /// kubernetes-client.io ExternalSecret (kubernetes-external-secrets).
    KesExternalSecret,
}

/// An owning object, from `metadata.ownerReferences`. Written by whoever wrote the
/// ExternalSecret: trusted only as far as the index's ClusterExternalSecrets confirm it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub uid: Option<uuid::Uuid>,
    /// `controller: true`, as ESO sets on the children it creates.
    pub controller: bool,
}

/// What the index keeps of a ClusterExternalSecret: enough to tell its children from an
/// ExternalSecret that only claims it as owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterExternalSecret {
    pub name: String,
    pub uid: Option<uuid::Uuid>,
    /// The name of every child (`spec.externalSecretName`, else its own name).
    pub child_name: String,
    /// Where ESO says it made its children (`status.provisionedNamespaces`, written by ESO's
    /// controller through the status subresource).
    pub namespaces: HashSet<String>,
}

impl ClusterExternalSecret {
    pub fn from_object(obj: &Value) -> Result<Self, String> {
        let (_, name) = meta(obj)?;
        let child_name = obj
            .pointer("/spec/externalSecretName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(&name)
            .to_owned();
        let namespaces = obj
            .pointer("/status/provisionedNamespaces")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            uid: uid(obj.pointer("/metadata/uid")),
            name,
            child_name,
            namespaces,
        })
    }

    /// Whether `reader`, claiming `owner`, is one of this ClusterExternalSecret's children;
    /// `Err` says why not.
    pub fn owns(&self, reader: &Reader, owner: &Owner) -> Result<(), String> {
        if !owner.controller {
            return Err("the owner reference is not the controller reference".into());
        }
        match (owner.uid, self.uid) {
            (Some(a), Some(b)) if a == b => {}
            _ => {
                return Err("the owner reference's uid is not this ClusterExternalSecret's".into());
            }
        }
        if !self.namespaces.contains(&reader.namespace) {
            return Err("the ClusterExternalSecret has no child in this namespace".into());
        }
        if reader.name != self.child_name {
            return Err(format!(
                "the ClusterExternalSecret's children are named {}",
                crate::text::truncate(&self.child_name, 253)
            ));
        }
        Ok(())
    }
}

/// A resource that reads AWS keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    pub kind: ReaderKind,
    pub namespace: String,
    pub name: String,
    pub uid: Option<uuid::Uuid>,
    /// The ClusterExternalSecret that owns this ExternalSecret: it is patched instead. (Boxed,
    /// as the other rare fields: a Reader stays small for the many that have none.)
    pub parent: Option<Box<Owner>>,
    pub references: Vec<Reference>,
    /// Why a force-sync cannot work on this resource, if it cannot.
    pub unforceable: Option<String>,
    /// Entries whose values a generator makes (`sourceRef.generatorRef`): every sync
    /// regenerates them, so a force-sync rotates them. As `Kind/name`.
    pub generators: Vec<String>,
    /// `target.creationPolicy: None`: ESO reads AWS but writes no Secret.
    pub writes_nothing: bool,
    /// `spec.syncWindows` (ESO v2.7+): periodic refreshes only inside (allow) or outside
    /// (deny) these windows; an annotation change bypasses them.
    pub sync_windows: Option<Box<SyncWindows>>,
    /// When the operator last synced it (`status.refreshTime` for ESO, `status.lastSync` for
    /// KES): the catch-up sweep compares it with the parameters' LastModifiedDate.
    pub synced_at: Option<time::OffsetDateTime>,
    /// `sync_fingerprint` of `status.syncedResourceVersion`: what a ClusterExternalSecret's
    /// outcome compares its children with after a patch.
    pub synced: u64,
}

/// A fingerprint of what an operator's status says about its last sync
/// (`status.syncedResourceVersion`, KES `status.lastSync`): 0 when absent. Fixed-key SipHash, so
/// the same string has the same fingerprint everywhere in the process.
pub fn sync_fingerprint(v: Option<&str>) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    v.filter(|s| !s.is_empty())
        .map(|s| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            s.hash(&mut h);
            h.finish().max(1)
        })
        .unwrap_or(0)
}

fn timestamp(v: Option<&Value>) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(v?.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

impl Reader {
    /// Reads an external-secrets.io ExternalSecret. Entries that read from a generator, or
    /// name no store at all, reference no AWS key and are skipped.
    pub fn from_external_secret(obj: &Value) -> Result<Self, String> {
        let (namespace, name) = meta(obj)?;
        let namespace = namespace.ok_or("ExternalSecret without namespace")?;
        let null = Value::Null;
        let spec = obj.get("spec").unwrap_or(&null);
        let default_store = store_ref(spec.get("secretStoreRef"), &namespace);
        let mut generators = Vec::new();
        let mut entry_store = |entry: &Value| {
            if let Some(g) = entry.pointer("/sourceRef/generatorRef") {
                generators.push(format!(
                    "{}/{}",
                    g.get("kind").and_then(Value::as_str).unwrap_or("Generator"),
                    g.get("name").and_then(Value::as_str).unwrap_or_default()
                ));
                return None;
            }
            match entry.pointer("/sourceRef/storeRef") {
                Some(r) => store_ref(Some(r), &namespace),
                None => default_store.clone(),
            }
        };
        let mut references = Vec::new();
        for (i, entry) in array(spec, "data").iter().enumerate() {
            let store = entry_store(entry);
            if let (Some(key), Some(store)) = (
                entry.pointer("/remoteRef/key").and_then(Value::as_str),
                store,
            ) {
                let remote = entry.get("remoteRef").unwrap_or(&null);
                references.push(Reference {
                    path: RefPath::RemoteRef(i as u32),
                    selector: Selector::Key(KeyRef {
                        key: key.to_owned(),
                        version: non_empty(remote.get("version")).map(Into::into),
                        metadata: remote.get("metadataPolicy").and_then(Value::as_str)
                            == Some("Fetch"),
                    }),
                    binding: Binding::Store(store),
                });
            }
        }
        for (i, entry) in array(spec, "dataFrom").iter().enumerate() {
            let Some(store) = entry_store(entry) else {
                continue;
            };
            if let Some(extract) = entry.get("extract")
                && let Some(key) = extract.get("key").and_then(Value::as_str)
            {
                references.push(Reference {
                    path: RefPath::Extract(i as u32),
                    selector: Selector::Key(KeyRef {
                        key: key.to_owned(),
                        version: non_empty(extract.get("version")).map(Into::into),
                        metadata: extract.get("metadataPolicy").and_then(Value::as_str)
                            == Some("Fetch"),
                    }),
                    binding: Binding::Store(store.clone()),
                });
            }
            if let Some(find) = entry.get("find").filter(|f| f.is_object()) {
                // ESO tells "set" from "absent" (a pointer, a map): `name: {}` and
                // `regexp: ""` match every name; `tags: {}` is set but names no tag.
                let f = Find {
                    path: non_empty(find.get("path")),
                    recursive: true,
                    name_regexp: find.get("name").filter(|n| n.is_object()).map(|n| {
                        n.get("regexp")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    }),
                    tags: find.get("tags").and_then(Value::as_object).map(|t| t.len()),
                };
                references.push(Reference {
                    path: RefPath::Find(i as u32),
                    selector: Selector::Find(Box::new(f)),
                    binding: Binding::Store(store),
                });
            }
        }
        let status = obj.get("status").unwrap_or(&null);
        // The ClusterExternalSecret owner reference, the controller one first (ESO's).
        let parent = array(obj.get("metadata").unwrap_or(&null), "ownerReferences")
            .iter()
            .filter(|o| {
                o.get("kind").and_then(Value::as_str) == Some("ClusterExternalSecret")
                    && o.get("apiVersion")
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.starts_with("external-secrets.io/"))
            })
            .filter_map(|o| {
                Some(Owner {
                    name: o.get("name")?.as_str()?.to_owned(),
                    uid: uid(o.get("uid")),
                    controller: o.get("controller").and_then(Value::as_bool) == Some(true),
                })
            })
            .min_by_key(|o| !o.controller)
            .map(Box::new);
        Ok(Self {
            kind: ReaderKind::ExternalSecret,
            namespace,
            name,
            uid: uid(obj.pointer("/metadata/uid")),
            parent,
            references,
            unforceable: unforceable(spec, status),
            generators,
            writes_nothing: spec
                .pointer("/target/creationPolicy")
                .and_then(Value::as_str)
                == Some("None"),
            sync_windows: SyncWindows::from_spec(spec).map(Box::new),
            synced_at: timestamp(status.get("refreshTime")),
            synced: sync_fingerprint(status.get("syncedResourceVersion").and_then(Value::as_str)),
        })
    }

    /// Reads a kubernetes-client.io/v1 ExternalSecret (KES).
    pub fn from_kes(obj: &Value) -> Result<Self, String> {
        let (namespace, name) = meta(obj)?;
        let namespace = namespace.ok_or("ExternalSecret without namespace")?;
        let null = Value::Null;
        let spec = obj.get("spec").unwrap_or(&null);
        // `secretManager` is the old spelling KES still accepts (lib/backends/kv-backend.js).
        let service = match spec.get("backendType").and_then(Value::as_str) {
            Some("systemManager") => Some(AwsService::ParameterStore),
            Some("secretsManager" | "secretManager") => Some(AwsService::SecretsManager),
            _ => None,
        };
        let mut references = Vec::new();
        if let Some(service) = service {
            let provider = std::sync::Arc::new(AwsProvider {
                service,
                region: non_empty(spec.get("region")),
                prefix: String::new(),
                account: non_empty(spec.get("roleArn"))
                    .as_deref()
                    .and_then(account_of_arn),
                conditions: Vec::new(),
            });
            // `properties` is KES's old spelling of `data`, read only when `data` is absent.
            let (data, data_path): (&[Value], fn(u32) -> RefPath) = match spec.get("data") {
                Some(_) => (array(spec, "data"), RefPath::KesKey),
                None => (array(spec, "properties"), RefPath::KesProperties),
            };
            for (i, entry) in data.iter().enumerate() {
                if let Some(key) = entry.get("key").and_then(Value::as_str) {
                    references.push(Reference {
                        path: data_path(i as u32),
                        selector: Selector::Key(kes_key(key, entry)),
                        binding: Binding::Inline(provider.clone()),
                    });
                } else if let Some(path) = non_empty(entry.get("path"))
                    // KES reads `path` from Parameter Store only ("_getByPath not implemented"
                    // for Secrets Manager): such an entry reads nothing.
                    && service == AwsService::ParameterStore
                {
                    references.push(Reference {
                        path: RefPath::KesPath(i as u32),
                        // GetParametersByPath: every name below the path.
                        selector: Selector::Find(Box::new(Find {
                            path: Some(path),
                            recursive: entry
                                .get("recursive")
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                            name_regexp: Some(String::new()),
                            tags: None,
                        })),
                        binding: Binding::Inline(provider.clone()),
                    });
                }
            }
            for (i, key) in array(spec, "dataFrom").iter().enumerate() {
                if let Some(key) = key.as_str() {
                    references.push(Reference {
                        path: RefPath::KesDataFrom(i as u32),
                        selector: Selector::Key(KeyRef::new(key)),
                        binding: Binding::Inline(provider.clone()),
                    });
                }
            }
            for (i, entry) in array(spec, "dataFromWithOptions").iter().enumerate() {
                if let Some(key) = entry.get("key").and_then(Value::as_str) {
                    references.push(Reference {
                        path: RefPath::KesDataFromWithOptions(i as u32),
                        selector: Selector::Key(kes_key(key, entry)),
                        binding: Binding::Inline(provider.clone()),
                    });
                }
            }
        }
        Ok(Self {
            kind: ReaderKind::KesExternalSecret,
            namespace,
            name,
            uid: uid(obj.pointer("/metadata/uid")),
            parent: None,
            references,
            unforceable: None,
            generators: Vec::new(),
            writes_nothing: false,
            sync_windows: None,
            synced_at: timestamp(obj.pointer("/status/lastSync")),
            synced: sync_fingerprint(obj.pointer("/status/lastSync").and_then(Value::as_str)),
        })
    }
}

/// A KES key with its version options: `versionStage`, or `versionId` (Secrets Manager).
fn kes_key(key: &str, entry: &Value) -> KeyRef {
    let version = match (
        non_empty(entry.get("versionId")),
        non_empty(entry.get("versionStage")),
    ) {
        (Some(id), _) => Some(format!("uuid/{id}").into()),
        (None, Some(stage)) => Some(stage.into()),
        (None, None) => None,
    };
    KeyRef {
        key: key.to_owned(),
        version,
        metadata: false,
    }
}

/// Why ESO would ignore a force-sync annotation on this resource (None: it will re-sync).
/// ESO's `shouldRefresh` syncs every resource once before any policy applies: one that has
/// never synced (no `status.syncedResourceVersion`) is forceable whatever its policy.
fn unforceable(spec: &Value, status: &Value) -> Option<String> {
    let synced = status
        .get("syncedResourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty());
    if !synced {
        return None;
    }
    if spec.pointer("/target/immutable").and_then(Value::as_bool) == Some(true) {
        return Some("target.immutable: true, the Secret cannot be updated".into());
    }
    match spec.get("refreshPolicy").and_then(Value::as_str) {
        Some("CreatedOnce") => Some("refreshPolicy: CreatedOnce never re-syncs".into()),
        Some("OnChange") => None,
        _ => {
            let interval = spec.get("refreshInterval").and_then(Value::as_str);
            interval.filter(|i| is_zero_duration(i)).map(|i| {
                format!("refreshPolicy Periodic with refreshInterval {i:?} ignores annotation changes (ESO >= 0.11); use refreshPolicy: OnChange")
            })
        }
    }
}

/// `spec.syncWindows` (ESO v2.7+), kept when it can hold a refresh back: only the Periodic
/// policy (or none) consults it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncWindows {
    /// `allow`: refreshes only inside a window; `deny`: never inside one.
    pub allow: bool,
    /// `(schedule, duration)`: a 5-field cron (or `@daily`, `@every 1h` ...) and a Go duration.
    pub windows: Vec<(String, String)>,
}

impl SyncWindows {
    fn from_spec(spec: &Value) -> Option<Self> {
        if matches!(
            spec.get("refreshPolicy").and_then(Value::as_str),
            Some("OnChange" | "CreatedOnce")
        ) {
            return None;
        }
        let sw = spec.get("syncWindows")?;
        let windows: Vec<(String, String)> = array(sw, "windows")
            .iter()
            .filter_map(|w| {
                Some((
                    w.get("schedule")?.as_str()?.to_owned(),
                    w.get("duration")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        // ESO allows a refresh when the kind is neither (`isPeriodicRefreshAllowedByWindows`).
        let allow = match sw.get("kind").and_then(Value::as_str) {
            Some("allow") => true,
            Some("deny") => false,
            _ => return None,
        };
        (!windows.is_empty()).then_some(Self { allow, windows })
    }
}

/// Go duration strings that mean zero: "0", "0s", "0h0m0s".
fn is_zero_duration(s: &str) -> bool {
    let digits: Vec<char> = s.chars().filter(char::is_ascii_digit).collect();
    !digits.is_empty()
        && digits.iter().all(|c| *c == '0')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

/// The account of an IAM ARN (`arn:aws:iam::123456789012:role/x`).
pub fn account_of_arn(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then(|| account.to_owned())
}

fn store_ref(v: Option<&Value>, namespace: &str) -> Option<StoreId> {
    let v = v?;
    let name = v.get("name")?.as_str()?;
    match v.get("kind").and_then(Value::as_str) {
        None | Some("SecretStore") => Some(StoreId::namespaced(namespace, name)),
        Some("ClusterSecretStore") => Some(StoreId::cluster(name)),
        Some(_) => None,
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn uid(v: Option<&Value>) -> Option<uuid::Uuid> {
    v.and_then(Value::as_str)
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
}

fn non_empty(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// `(namespace, name)` from `metadata`.
pub fn meta(obj: &Value) -> Result<(Option<String>, String), String> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or("object without metadata.name")?;
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(String::from);
    Ok((namespace, name.to_owned()))
}

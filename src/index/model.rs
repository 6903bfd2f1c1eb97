//! The parts of cluster objects the index needs, read from their JSON. Reading from plain
//! `serde_json::Value` keeps the index free of any Kubernetes client type, so it is tested
//! with literal objects.

use serde_json::Value;

/// A store reference as written in an ExternalSecret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    SecretStore,
    ClusterSecretStore,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretStore => "SecretStore",
            Self::ClusterSecretStore => "ClusterSecretStore",
        }
    }
}

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
    pub fn resolve(kind: StoreKind, es_namespace: &str, name: &str) -> Self {
        match kind {
            StoreKind::SecretStore => Self::namespaced(es_namespace, name),
            StoreKind::ClusterSecretStore => Self::cluster(name),
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

/// `spec.provider.aws` of a store; `None` for stores of other providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsProvider {
    pub service: AwsService,
    /// `None` when the store leaves it to the SDK's environment: then any region matches,
    /// since a missed re-sync is worse than a spurious one.
    pub region: Option<String>,
    /// Prepended verbatim to every key (ESO semantics).
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub id: StoreId,
    pub aws: Option<AwsProvider>,
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
            Some(AwsProvider {
                service,
                region: aws
                    .get("region")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                    .map(String::from),
                prefix: aws
                    .get("prefix")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        });
        Ok(Self { id, aws })
    }
}

/// One way an ExternalSecret reads a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where in the object, e.g. `spec.data[0].remoteRef.key`.
    pub path: String,
    /// The key as written (store prefix not applied).
    pub key: String,
    pub store: StoreId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalSecret {
    pub namespace: String,
    pub name: String,
    pub references: Vec<Reference>,
}

impl ExternalSecret {
    /// Reads an external-secrets.io ExternalSecret. Entries that read from a generator, or
    /// name no store at all, reference no AWS key and are skipped.
    pub fn from_object(obj: &Value) -> Result<Self, String> {
        let (namespace, name) = meta(obj)?;
        let namespace = namespace.ok_or("ExternalSecret without namespace")?;
        let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        let default_store = store_ref(spec.get("secretStoreRef"), &namespace);
        let mut references = Vec::new();
        let entry_store = |entry: &Value| match entry.pointer("/sourceRef/storeRef") {
            Some(r) => store_ref(Some(r), &namespace),
            None if entry.pointer("/sourceRef/generatorRef").is_some() => None,
            None => default_store.clone(),
        };
        for (i, entry) in array(&spec, "data").iter().enumerate() {
            if let (Some(key), Some(store)) = (
                entry.pointer("/remoteRef/key").and_then(Value::as_str),
                entry_store(entry),
            ) {
                references.push(Reference {
                    path: format!("spec.data[{i}].remoteRef.key"),
                    key: key.to_owned(),
                    store,
                });
            }
        }
        for (i, entry) in array(&spec, "dataFrom").iter().enumerate() {
            if let (Some(key), Some(store)) = (
                entry.pointer("/extract/key").and_then(Value::as_str),
                entry_store(entry),
            ) {
                references.push(Reference {
                    path: format!("spec.dataFrom[{i}].extract.key"),
                    key: key.to_owned(),
                    store,
                });
            }
        }
        Ok(Self {
            namespace,
            name,
            references,
        })
    }
}

fn store_ref(v: Option<&Value>, namespace: &str) -> Option<StoreId> {
    let v = v?;
    let name = v.get("name")?.as_str()?;
    let kind = match v.get("kind").and_then(Value::as_str) {
        None | Some("SecretStore") => StoreKind::SecretStore,
        Some("ClusterSecretStore") => StoreKind::ClusterSecretStore,
        Some(_) => return None,
    };
    Some(StoreId::resolve(kind, namespace, name))
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
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

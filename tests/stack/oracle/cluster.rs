//! The cluster side of the oracle test: a seeded random cluster state (namespaces, SecretStores,
//! ClusterSecretStores, ExternalSecrets, ClusterExternalSecrets) using every way ESO reads AWS.
//! Each ExternalSecret reads through one reference form (two for the per-entry store override),
//! so a miss names its form.

use rand::seq::IndexedRandom as _;
use serde_json::{Value, json};

use super::world::{LABEL, Scope, Service, World, sm_double_prefix};

/// A store the generator made.
#[derive(Debug, Clone)]
pub struct Store {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub service: Service,
    pub scope: Scope,
    pub prefix: String,
    pub object: Value,
    /// ClusterSecretStore conditions: which of the run's namespaces may use it.
    pub allows: Vec<String>,
}

/// A resource whose Secret the test watches.
#[derive(Debug, Clone)]
pub struct Resource {
    pub namespace: String,
    pub name: String,
    /// The reference form (the report's rows).
    pub form: String,
    /// refreshPolicy and target variations: Periodic, OnChange, CreatedOnce, Zero, Immutable,
    /// CreationNone.
    pub policy: &'static str,
    /// The ClusterExternalSecret that owns it.
    pub ces: Option<String>,
    pub object: Value,
    /// World items (indexes) it reads, as far as the generator knows: the change steps favour
    /// these (ESO is the judge of what it really reads).
    pub reads: Vec<usize>,
}

impl Resource {
    /// Whether ESO would re-sync it on an annotation change (after its first sync).
    pub fn forceable(&self) -> bool {
        !matches!(self.policy, "CreatedOnce" | "Zero" | "Immutable")
    }

    /// Whether ESO writes a Secret for it.
    pub fn writes_secret(&self) -> bool {
        self.policy != "CreationNone"
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Every reference form the generator makes, cycled through so each appears.
pub const FORMS: [&str; 28] = [
    "ps.key",
    "ps.key.flat",
    "ps.key.version",
    "ps.key.label",
    "ps.key.arn",
    "ps.key.fetch",
    "ps.extract",
    "ps.find.path+name",
    "ps.find.regexp",
    "ps.find.regexp-empty",
    "ps.find.tags",
    "ps.find.tags-empty",
    "ps.find.path-only",
    "ps.ref.secretsmanager",
    "ps.key.prefix",
    "sm.key",
    "sm.key.stage",
    "sm.key.uuid",
    "sm.key.arn",
    "sm.key.arn-partial",
    "sm.key.fetch",
    "sm.extract",
    "sm.find.name",
    "sm.find.path",
    "sm.find.tags",
    "sm.key.prefix",
    "sm.find.name-double-prefix",
    "storeRef override",
];

/// Forms that read through a store with a prefix.
fn prefixed(form: &str) -> bool {
    form.ends_with(".prefix") || form.contains("double-prefix")
}

fn fits(store: &Store, form: &str) -> bool {
    form.starts_with(if store.service == Service::Ps {
        "ps."
    } else {
        "sm."
    }) && prefixed(form) != store.prefix.is_empty()
}

pub struct Cluster {
    pub run: String,
    pub namespaces: Vec<(String, &'static str)>,
    pub stores: Vec<Store>,
    pub resources: Vec<Resource>,
    pub ces: Vec<(String, Value)>,
}

pub struct Size {
    pub namespaces: usize,
    pub external_secrets: usize,
    pub ces: usize,
}

fn store_object(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    service: Service,
    scope: Scope,
    prefix: &str,
    conditions: Option<Value>,
) -> Value {
    let mut aws = json!({
        "service": if service == Service::Ps { "ParameterStore" } else { "SecretsManager" },
        "region": scope.region,
    });
    if let Some(role) = scope.role() {
        aws["role"] = json!(role);
    }
    if !prefix.is_empty() {
        aws["prefix"] = json!(prefix);
    }
    let mut meta = json!({"name": name});
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    let mut spec = json!({"provider": {"aws": aws}});
    if let Some(c) = conditions {
        spec["conditions"] = c;
    }
    json!({"apiVersion": "external-secrets.io/v1", "kind": kind, "metadata": meta, "spec": spec})
}

impl Cluster {
    pub fn generate(rng: &mut impl rand::Rng, world: &World, size: &Size) -> Cluster {
        let run = world.run.clone();
        let scopes = Scope::all();
        let namespaces: Vec<(String, &'static str)> = (0..size.namespaces)
            .map(|i| (format!("{run}-ns{i}"), if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        let all_ns: Vec<String> = namespaces.iter().map(|n| n.0.clone()).collect();
        let (_, sm_prefix) = sm_double_prefix(&run);
        let prefixes = |service: Service| match service {
            Service::Ps => vec![String::new(), format!("/{run}/pfx/")],
            Service::Sm => vec![String::new(), sm_prefix.clone()],
        };
        let mut stores = Vec::new();
        // ClusterSecretStores for every service, scope and prefix, each with one of four
        // condition variants.
        let mut n = 0;
        for service in [Service::Ps, Service::Sm] {
            for &scope in &scopes {
                for prefix in prefixes(service) {
                    n += 1;
                    let name = format!("{run}-css{n}");
                    let (conditions, allows): (Option<Value>, Vec<String>) = match n % 4 {
                        0 => (None, all_ns.clone()),
                        1 => (
                            Some(json!([{"namespaces": [all_ns[0]]}])),
                            vec![all_ns[0].clone()],
                        ),
                        2 => (
                            Some(
                                json!([{"namespaceRegexes": [format!("^{run}-ns[0-9]*[02468]$")]}]),
                            ),
                            all_ns.iter().step_by(2).cloned().collect(),
                        ),
                        _ => (
                            Some(
                                json!([{"namespaceSelector": {"matchLabels": {format!("{run}-tier"): "b"}}}]),
                            ),
                            namespaces
                                .iter()
                                .filter(|n| n.1 == "b")
                                .map(|n| n.0.clone())
                                .collect(),
                        ),
                    };
                    let object = store_object(
                        "ClusterSecretStore",
                        None,
                        &name,
                        service,
                        scope,
                        &prefix,
                        conditions,
                    );
                    stores.push(Store {
                        kind: "ClusterSecretStore",
                        namespace: None,
                        name,
                        service,
                        scope,
                        prefix,
                        object,
                        allows,
                    });
                }
            }
        }
        // SecretStores: one per service and prefix in each namespace, in a random scope.
        for ns in &all_ns {
            let mut j = 0;
            for service in [Service::Ps, Service::Sm] {
                for prefix in prefixes(service) {
                    let scope = *scopes.choose(rng).unwrap();
                    let name = format!("ss{j}");
                    j += 1;
                    let object = store_object(
                        "SecretStore",
                        Some(ns),
                        &name,
                        service,
                        scope,
                        &prefix,
                        None,
                    );
                    stores.push(Store {
                        kind: "SecretStore",
                        namespace: Some(ns.clone()),
                        name,
                        service,
                        scope,
                        prefix,
                        object,
                        allows: vec![ns.clone()],
                    });
                }
            }
        }

        let mut resources = Vec::new();
        for k in 0..size.external_secrets {
            let ns = all_ns.choose(rng).unwrap().clone();
            let usable: Vec<&Store> = stores.iter().filter(|s| s.allows.contains(&ns)).collect();
            let wanted = FORMS[k % FORMS.len()];
            let main_form = if wanted == "storeRef override" {
                *FORMS[..FORMS.len() - 1].choose(rng).unwrap()
            } else {
                wanted
            };
            let fitting: Vec<&Store> = usable
                .iter()
                .copied()
                .filter(|s| fits(s, main_form))
                .collect();
            let Some(store) = fitting.choose(rng).copied() else {
                continue;
            };
            let Some(mut e) = entry(rng, world, store, &run, main_form) else {
                continue;
            };
            let mut data: Vec<Value> = e.data.take().into_iter().collect();
            let data_from: Vec<Value> = e.data_from.take().into_iter().collect();
            let mut form = e.form.to_owned();
            if wanted == "storeRef override" {
                // A second entry, bound to another store by sourceRef.storeRef.
                let other = *usable.choose(rng).unwrap();
                let f2 = *["ps.key", "sm.key", "ps.key.prefix", "sm.key.prefix"]
                    .iter()
                    .filter(|f| fits(other, f))
                    .collect::<Vec<_>>()
                    .choose(rng)
                    .unwrap();
                if let Some(Entry {
                    data: Some(mut d2),
                    reads,
                    ..
                }) = entry(rng, world, other, &run, f2)
                {
                    d2["secretKey"] = json!("k1");
                    d2["sourceRef"] = json!({"storeRef": {"name": other.name, "kind": other.kind}});
                    data.push(d2);
                    e.reads.extend(reads);
                    form = format!("storeRef override ({form} + {f2})");
                }
            }
            let name = format!("es{k}");
            let policy = *[
                "Periodic",
                "Periodic",
                "Periodic",
                "Periodic",
                "Periodic",
                "Periodic",
                "Periodic",
                "OnChange",
                "OnChange",
                "CreatedOnce",
                "Zero",
                "Immutable",
                "CreationNone",
            ]
            .choose(rng)
            .unwrap();
            let mut spec = json!({
                "refreshInterval": "1h",
                "secretStoreRef": {"name": store.name, "kind": store.kind},
                "target": {"name": name},
            });
            match policy {
                "OnChange" => spec["refreshPolicy"] = json!("OnChange"),
                "CreatedOnce" => spec["refreshPolicy"] = json!("CreatedOnce"),
                "Zero" => spec["refreshInterval"] = json!("0s"),
                "Immutable" => spec["target"]["immutable"] = json!(true),
                "CreationNone" => spec["target"]["creationPolicy"] = json!("None"),
                _ => {}
            }
            if !data.is_empty() {
                spec["data"] = json!(data);
            }
            if !data_from.is_empty() {
                spec["dataFrom"] = json!(data_from);
            }
            resources.push(Resource {
                namespace: ns.clone(),
                name: name.clone(),
                form,
                policy,
                ces: None,
                object: json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                    "metadata": {"name": name, "namespace": ns}, "spec": spec}),
                reads: e.reads,
            });
        }

        // ClusterExternalSecrets over the tier-b namespaces, through ClusterSecretStores that
        // allow them all.
        let mut ces = Vec::new();
        let tier_b: Vec<String> = namespaces
            .iter()
            .filter(|n| n.1 == "b")
            .map(|n| n.0.clone())
            .collect();
        for c in 0..size.ces {
            let usable: Vec<&Store> = stores
                .iter()
                .filter(|s| s.kind == "ClusterSecretStore" && s.prefix.is_empty())
                .filter(|s| tier_b.iter().all(|n| s.allows.contains(n)))
                .collect();
            let Some(store) = usable.choose(rng).copied() else {
                break;
            };
            let f = if store.service == Service::Ps {
                ["ps.key", "ps.key.label"]
            } else {
                ["sm.key", "sm.key.arn"]
            };
            let f = *f.choose(rng).unwrap();
            let Some(Entry {
                form,
                data: Some(d),
                reads,
                ..
            }) = entry(rng, world, store, &run, f)
            else {
                continue;
            };
            let name = format!("{run}-ces{c}");
            let es_name = format!("ces{c}");
            let spec = json!({"refreshInterval": "1h",
                "secretStoreRef": {"name": store.name, "kind": store.kind},
                "target": {"name": es_name}, "data": [d]});
            let object = json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
                "metadata": {"name": name},
                "spec": {"externalSecretName": es_name,
                         "namespaceSelectors": [{"matchLabels": {format!("{run}-tier"): "b"}}],
                         "externalSecretSpec": spec}});
            for ns in &tier_b {
                resources.push(Resource {
                    namespace: ns.clone(),
                    name: es_name.clone(),
                    form: format!("ClusterExternalSecret child ({form})"),
                    policy: "Periodic",
                    ces: Some(name.clone()),
                    object: Value::Null,
                    reads: reads.clone(),
                });
            }
            ces.push((name, object));
        }
        Cluster {
            run,
            namespaces,
            stores,
            resources,
            ces,
        }
    }
}

/// One reference to something a store can read.
struct Entry {
    form: &'static str,
    /// A `spec.data[]` entry (secretKey `k`).
    data: Option<Value>,
    /// A `spec.dataFrom[]` entry.
    data_from: Option<Value>,
    /// The world items it reads, as far as the generator knows.
    reads: Vec<usize>,
}

/// An entry of `form` through `store`, reading something that exists in the store's scope.
fn entry(
    rng: &mut impl rand::Rng,
    world: &World,
    store: &Store,
    run: &str,
    form: &'static str,
) -> Option<Entry> {
    let scoped: Vec<usize> = world.existing(store.service, store.scope);
    let name_of = |i: usize| world.items[i].name.as_str();
    let pick = |rng: &mut dyn rand::Rng, pred: &dyn Fn(&str) -> bool| -> Option<usize> {
        let c: Vec<usize> = scoped
            .iter()
            .copied()
            .filter(|&i| pred(name_of(i)))
            .collect();
        c.choose(rng).copied()
    };
    let matching = |pred: &dyn Fn(&str) -> bool| -> Vec<usize> {
        scoped
            .iter()
            .copied()
            .filter(|&i| pred(name_of(i)))
            .collect()
    };
    let key = |k: &str| json!({"secretKey": "k", "remoteRef": {"key": k}});
    let hierarchical = |n: &str| n.starts_with('/') && !n.contains("/pfx/");
    let plain_sm = |n: &str| !n.contains("/p/");
    let one = |data: Value, i: usize| Some((Some(data), None, vec![i]));
    let with = |mut d: Value, field: &str, v: Value, i: usize| {
        d["remoteRef"][field] = v;
        Some((Some(d), None, vec![i]))
    };
    let find = |f: Value, reads: Vec<usize>| Some((None, Some(json!({"find": f})), reads));
    let (data, data_from, reads) = match form {
        "ps.key" => {
            let i = pick(rng, &hierarchical)?;
            one(key(name_of(i)), i)
        }
        "ps.key.flat" => {
            let i = pick(rng, &|n| !n.starts_with('/'))?;
            one(key(name_of(i)), i)
        }
        "ps.key.version" => {
            let i = pick(rng, &hierarchical)?;
            with(key(name_of(i)), "version", json!("1"), i)
        }
        "ps.key.label" => {
            let i = pick(rng, &hierarchical)?;
            with(key(name_of(i)), "version", json!(LABEL), i)
        }
        "ps.key.arn" => {
            let i = pick(rng, &hierarchical)?;
            one(key(&world.items[i].arn), i)
        }
        "ps.key.fetch" => {
            let i = pick(rng, &hierarchical)?;
            with(key(name_of(i)), "metadataPolicy", json!("Fetch"), i)
        }
        "ps.key.prefix" => {
            let i = pick(rng, &|n| n.starts_with(&store.prefix))?;
            one(key(&name_of(i)[store.prefix.len()..]), i)
        }
        "ps.extract" => {
            let i = pick(rng, &hierarchical)?;
            Some((None, Some(json!({"extract": {"key": name_of(i)}})), vec![i]))
        }
        "ps.find.path+name" => {
            let path = if store.prefix.is_empty() {
                format!("/{run}/app")
            } else {
                format!("/{run}/pfx")
            };
            let re = regex::Regex::new("db|cache").unwrap();
            let reads = matching(&|n| n.starts_with(&format!("{path}/")) && re.is_match(n));
            find(json!({"path": path, "name": {"regexp": "db|cache"}}), reads)
        }
        "ps.find.regexp" => {
            let re = format!("^/{run}/app/api");
            let reads = matching(&|n| n.starts_with(&format!("/{run}/app/api")));
            find(json!({"name": {"regexp": re}}), reads)
        }
        "ps.find.regexp-empty" => {
            let path = format!("/{run}/svc");
            find(
                json!({"path": path, "name": {"regexp": ""}}),
                matching(&|n| n.starts_with(&format!("{path}/"))),
            )
        }
        "ps.find.tags" => {
            let path = format!("/{run}/app");
            find(
                json!({"path": path, "tags": {format!("{run}-team"): "red"}}),
                matching(&|n| n.starts_with(&format!("{path}/"))),
            )
        }
        "ps.find.tags-empty" => {
            let path = format!("/{run}/svc");
            find(
                json!({"path": path, "tags": {}}),
                matching(&|n| n.starts_with(&format!("{path}/"))),
            )
        }
        // ESO refuses `find` with only a path: the resource never syncs (a reader of nothing).
        "ps.find.path-only" => find(json!({"path": format!("/{run}/app")}), Vec::new()),
        "ps.ref.secretsmanager" => {
            let sm = world.existing(Service::Sm, store.scope);
            let i = *sm
                .iter()
                .filter(|&&i| plain_sm(name_of(i)))
                .collect::<Vec<_>>()
                .choose(rng)
                .copied()?;
            one(
                key(&format!("/aws/reference/secretsmanager/{}", name_of(i))),
                i,
            )
        }
        "sm.key" => {
            let i = pick(rng, &plain_sm)?;
            one(key(name_of(i)), i)
        }
        "sm.key.prefix" => {
            let i = pick(rng, &|n| n.starts_with(&store.prefix))?;
            one(key(&name_of(i)[store.prefix.len()..]), i)
        }
        "sm.key.stage" => {
            let i = pick(rng, &plain_sm)?;
            with(key(name_of(i)), "version", json!("AWSPREVIOUS"), i)
        }
        "sm.key.uuid" => {
            let i = pick(rng, &plain_sm)?;
            with(
                key(name_of(i)),
                "version",
                json!(format!("uuid/{}", world.items[i].versions[0])),
                i,
            )
        }
        "sm.key.arn" => {
            let i = pick(rng, &plain_sm)?;
            one(key(&world.items[i].arn), i)
        }
        "sm.key.arn-partial" => {
            // A name ending in `-` and six characters, by a partial ARN: the suffix is the
            // name's own, not AWS's random one.
            let i = pick(rng, &|n| n.ends_with("db-backup"))?;
            let partial = world.items[i]
                .arn
                .rsplit_once('-')
                .map(|(a, _)| a.to_owned())?;
            one(key(&partial), i)
        }
        "sm.key.fetch" => {
            let i = pick(rng, &plain_sm)?;
            with(key(name_of(i)), "metadataPolicy", json!("Fetch"), i)
        }
        "sm.extract" => {
            let i = pick(rng, &plain_sm)?;
            Some((None, Some(json!({"extract": {"key": name_of(i)}})), vec![i]))
        }
        "sm.find.name" => find(
            json!({"name": {"regexp": format!("^{run}/app/")}}),
            matching(&|n| n.starts_with(&format!("{run}/app/"))),
        ),
        "sm.find.name-double-prefix" => {
            // ESO lists names, matches the regexp, and reads `prefix + name`.
            let (listed, _) = sm_double_prefix(run);
            let doubled = format!("{}{listed}", store.prefix);
            find(
                json!({"name": {"regexp": format!("^{}$", regex::escape(&listed))}}),
                matching(&|n| n == listed || n == doubled),
            )
        }
        "sm.find.path" => {
            let path = format!("{run}/app");
            find(
                json!({"path": path, "name": {"regexp": ""}}),
                matching(&|n| n.starts_with(&path)),
            )
        }
        "sm.find.tags" => find(
            json!({"tags": {format!("{run}-team"): "blue"}}),
            matching(&plain_sm),
        ),
        other => unreachable!("{other}"),
    }?;
    Some(Entry {
        form,
        data,
        data_from,
        reads,
    })
}

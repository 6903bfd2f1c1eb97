//! ESO as the oracle: a differential test that finds every Secret the service leaves stale.
//!
//! A seeded generator builds a cluster state that reads AWS in every way ESO does (see
//! `oracle/cluster.rs` for the forms) and an AWS world in moto across two accounts and two
//! regions (`oracle/world.rs`). The real ESO syncs it all. Then each step makes one random AWS
//! change through moto, publishes the events AWS would emit to the SNS topic the running
//! service is subscribed to, waits for quiet, and forces every resource once (an annotation
//! the service does not use): a Secret that changes then was missed. Patches whose Secret did
//! not change are spurious re-syncs. Both are reported per reference form; the test fails on a
//! miss, and on a spurious re-sync outside the classes an event cannot decide (`undecidable`).
//!
//! ESO is the oracle of its own release: the test runs on every release the stack runs
//! (`on_each_eso!`), each on a private stack of that release. `make test` runs one seed per
//! release at a small size, a different seed on each (seed 1 on v0.20.4, seed 2 on v0.16.2: the
//! same cost, twice the generated cases). `ORACLE_SEEDS=1,2,3 ORACLE_SIZE=large cargo test
//! --test stack -- oracle::eso_is_the_oracle::eso_v0_20_4 --nocapture` runs more seeds on one
//! release; `ORACLE_SERVICE_BIN=path` measures another build of the service (how the run
//! against the index before the fidelity fixes was made, with `ORACLE_SERVICE_ARGS=""`: that
//! build has no `--eso-account`).

mod cluster;
mod world;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::common::*;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use rand::SeedableRng as _;
use serde_json::{Value, json};

use cluster::{Cluster, Resource, Size};
use world::{Scope, World};

/// What the test sees of one resource.
#[derive(Debug, Clone, PartialEq, Default)]
struct Seen {
    data: Option<BTreeMap<String, String>>,
    ready: Option<(String, String)>,
    force_sync: Option<String>,
    refresh_time: Option<String>,
}

/// What the user would notice: the Secret's data and whether ESO reports it synced.
type Content<'a> = (
    &'a Option<BTreeMap<String, String>>,
    &'a Option<(String, String)>,
);

impl Seen {
    fn content(&self) -> Content<'_> {
        (&self.data, &self.ready)
    }
}

#[derive(Debug, Default, Clone)]
struct FormStats {
    resources: usize,
    hits: usize,
    misses: usize,
    spurious: usize,
    /// Spurious re-syncs in a class the event cannot decide (`undecidable`).
    undecidable: usize,
    refresh_moved_unchanged: usize,
}

/// The changes that make an item appear or go away (the oracle's names for them).
const EXISTENCE: [&str; 5] = [
    "Create",
    "Delete",
    "DeleteParameters",
    "ForceDelete",
    "Restore",
];

/// Why a spurious re-sync could not have been avoided from the event alone, if it could not
/// (docs/oracle.md, "What an event cannot decide"). Any other spurious re-sync fails the test:
/// the event said enough to leave that reader alone.
fn undecidable(form: &str, op: &str, before: &Seen, after: &Seen) -> Option<&'static str> {
    let failing = |s: &Seen| s.ready.as_ref().is_some_and(|(status, _)| status != "True");
    // What the event itself decides about a new item: a label, another version or another
    // stage of it has nothing to read. (A two-entry form may be reached through its other
    // entry: only the one-entry forms, or a ClusterExternalSecret child of one, count.)
    let one_entry = form
        .strip_prefix("ClusterExternalSecret child (")
        .and_then(|f| f.strip_suffix(')'))
        .unwrap_or(form);
    let decided_by_create =
        op == "Create" && ["ps.key.label", "sm.key.stage", "sm.key.uuid"].contains(&one_entry);
    if form.contains("find.tags") {
        Some("find.tags: tags are not in a value event")
    } else if decided_by_create {
        None
    } else if EXISTENCE.contains(&op) && failing(before) && before.ready == after.ready {
        Some("already failing: the event does not say what else the reader lacks")
    } else if EXISTENCE.contains(&op) && form.contains(".find.") {
        Some(
            "a find the change emptied or refilled: ESO retains the Secret of a find that lists nothing",
        )
    } else {
        None
    }
}

#[derive(Debug)]
struct Miss {
    seed: u64,
    step: usize,
    change: world::Change,
    resource: Resource,
    /// The ExternalSecret as the API server had it (status, owner references).
    live: Value,
    /// The stores it reads through.
    stores: Vec<(bool, Value)>,
    before: Seen,
    after: Seen,
}

struct Run {
    forms: BTreeMap<String, FormStats>,
    misses: Vec<Miss>,
    steps: usize,
    resources: usize,
    unsyncable: Vec<(String, String)>,
    unforceable_patched: Vec<String>,
    /// Each spurious re-sync, and why the event could not decide it (`None`: it could).
    spurious: Vec<(String, Option<&'static str>)>,
    changes: BTreeMap<&'static str, usize>,
}

fn size() -> (Size, usize) {
    match std::env::var("ORACLE_SIZE").as_deref() {
        Ok("large") => (
            Size {
                namespaces: 8,
                external_secrets: 320,
                ces: 4,
            },
            60,
        ),
        _ => (
            Size {
                namespaces: 4,
                external_secrets: 90,
                ces: 2,
            },
            24,
        ),
    }
}

on_each_eso!(eso_is_the_oracle, oracle);

/// The seed `make test` runs on each release.
fn default_seed(eso: Eso) -> u64 {
    match eso {
        Eso::V0_20_4 => 1,
        Eso::V0_16_2 => 2,
    }
}

async fn oracle(eso: Eso) {
    let seeds: Vec<u64> = std::env::var("ORACLE_SEEDS")
        .unwrap_or_else(|_| default_seed(eso).to_string())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("ORACLE_SEEDS: comma-separated numbers")
        })
        .collect();
    let (size, steps) = size();
    let mut total: BTreeMap<String, FormStats> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut decidable = Vec::new();
    let mut lines = Vec::new();
    for &seed in &seeds {
        let run = run_seed(eso, seed, &size, steps).await;
        for (f, s) in &run.forms {
            let t = total.entry(f.clone()).or_default();
            t.resources += s.resources;
            t.hits += s.hits;
            t.misses += s.misses;
            t.spurious += s.spurious;
            t.undecidable += s.undecidable;
            t.refresh_moved_unchanged += s.refresh_moved_unchanged;
        }
        lines.push(format!(
            "seed {seed}: {} resources, {} steps ({:?}), {} misses; not syncable on ESO/moto: {:?}; patched although unforceable, writing no Secret or never synced: {:?}",
            run.resources,
            run.steps,
            run.changes,
            run.misses.len(),
            run.unsyncable,
            run.unforceable_patched
        ));
        for (s, why) in &run.spurious {
            match why {
                Some(why) => lines.push(format!("  spurious: {s} [{why}]")),
                None => lines.push(format!(
                    "  spurious: {s} [DECIDABLE: the event said enough]"
                )),
            }
        }
        decidable.extend(
            run.spurious
                .iter()
                .filter(|(_, why)| why.is_none())
                .map(|(s, _)| format!("seed {seed} {s}")),
        );
        misses.extend(run.misses);
    }
    let mut table = String::from(
        "| reference form | resources | changes that reached them | misses | spurious re-syncs | of which undecidable | refreshTime moved, Secret unchanged |\n|---|---|---|---|---|---|---|\n",
    );
    for (f, s) in &total {
        table.push_str(&format!(
            "| {f} | {} | {} | {} | {} | {} | {} |\n",
            s.resources, s.hits, s.misses, s.spurious, s.undecidable, s.refresh_moved_unchanged
        ));
    }
    eprintln!(
        "\n{eso} as the oracle (seeds {seeds:?}):\n{}\n\n{table}",
        lines.join("\n")
    );
    for m in &misses {
        eprintln!("{}", reproducer(m));
    }
    assert!(
        misses.is_empty(),
        "{} Secret(s) left stale on {eso} (reproducers above)",
        misses.len()
    );
    assert!(
        decidable.is_empty(),
        "{} spurious re-sync(s) on {eso} that the event could have avoided:\n{}",
        decidable.len(),
        decidable.join("\n")
    );
}

async fn run_seed(eso: Eso, seed: u64, size: &Size, steps: usize) -> Run {
    let stack = Stack::private_eso(eso);
    stack.assert_eso();
    let kube = stack.kube().await;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let run = format!("o{seed}");
    let mut world = World::new(&stack, &run).await;
    let cluster = Cluster::generate(&mut rng, &world, size);
    create_cluster(&kube, &cluster).await;
    let unsyncable = wait_synced(&kube, &cluster).await;

    let topic = stack.topic(&format!("oracle-{seed}")).await;
    // Stores without a role read with ESO's own credentials: moto's default account here.
    let extra = std::env::var("ORACLE_SERVICE_ARGS")
        .unwrap_or_else(|_| format!("--eso-account={}", world::ACCOUNTS[0]));
    let mut args: Vec<&str> = extra.split_whitespace().collect();
    args.push("--sweep-interval=0s");
    let svc = match std::env::var("ORACLE_SERVICE_BIN") {
        Ok(b) => Service::start(&b, &stack, &[&topic], &args).await,
        Err(_) => Service::start(BIN, &stack, &[&topic], &args).await,
    };
    let sns = stack.sns().await;
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("http")
        .endpoint(format!("{}/sns", svc.url))
        .send()
        .await
        .unwrap();

    let mut forms: BTreeMap<String, FormStats> = BTreeMap::new();
    for r in &cluster.resources {
        if r.forceable() && r.writes_secret() && !unsyncable.iter().any(|u| u.0 == r.key()) {
            forms.entry(r.form.clone()).or_default().resources += 1;
        }
    }
    let mut misses = Vec::new();
    let mut unforceable_patched = Vec::new();
    let mut spurious = Vec::new();
    let mut changes: BTreeMap<&'static str, usize> = BTreeMap::new();
    for step in 0..steps {
        // Changes favour what the resources read (three times each reader), and keep every
        // other item in play: the same names in other regions and accounts are traps for them.
        let mut candidates: Vec<usize> = (0..world.items.len()).collect();
        for r in &cluster.resources {
            for &i in &r.reads {
                candidates.extend([i, i, i]);
            }
        }
        let s0 = snapshot(&kube, &cluster).await;
        let change = world.change(&mut rng, &candidates).await;
        *changes.entry(change.op).or_default() += 1;
        for event in &change.events {
            publish(&sns, &topic, event).await;
        }
        wait_quiet(&kube, &cluster).await;
        let s1 = snapshot(&kube, &cluster).await;
        force_all(&kube, &cluster, step).await;
        wait_quiet(&kube, &cluster).await;
        let s2 = snapshot(&kube, &cluster).await;
        for r in &cluster.resources {
            let key = r.key();
            let (a, b, c) = (&s0[&key], &s1[&key], &s2[&key]);
            let patched = a.force_sync != b.force_sync;
            if unsyncable.iter().any(|u| u.0 == key) {
                if patched {
                    unforceable_patched.push(format!("{key} (never synced: {})", r.form));
                }
                continue;
            }
            if !r.forceable() || !r.writes_secret() {
                if patched {
                    unforceable_patched.push(format!("{key} ({}, {})", r.policy, r.form));
                }
                continue;
            }
            let stats = forms.get_mut(&r.form).unwrap();
            let changed = a.content() != b.content();
            if patched && changed {
                stats.hits += 1;
            } else if patched {
                stats.spurious += 1;
                let why = undecidable(&r.form, change.op, a, b);
                stats.undecidable += usize::from(why.is_some());
                spurious.push((
                    format!(
                        "step {step}: {} {} ({}/{}) -> {key} ({}; Ready before {:?}, after {:?})",
                        change.op,
                        change.item,
                        change.scope.account,
                        change.scope.region,
                        r.form,
                        a.ready,
                        b.ready
                    ),
                    why,
                ));
            }
            if !changed && a.refresh_time != b.refresh_time {
                stats.refresh_moved_unchanged += 1;
            }
            if b.content() != c.content() {
                stats.misses += 1;
                let live = Api::<DynamicObject>::namespaced_with(
                    kube.clone(),
                    &r.namespace,
                    &es_resource(),
                )
                .get(&r.name)
                .await
                .map(|o| serde_json::to_value(o).unwrap())
                .unwrap_or(Value::Null);
                misses.push(Miss {
                    seed,
                    step,
                    change: change.clone(),
                    resource: r.clone(),
                    stores: stores_of(&cluster, &live),
                    live,
                    before: b.clone(),
                    after: c.clone(),
                });
            }
        }
    }
    drop(svc);
    Run {
        forms,
        misses,
        steps,
        resources: cluster.resources.len(),
        unsyncable,
        unforceable_patched,
        spurious,
        changes,
    }
}

async fn create_cluster(kube: &kube::Client, cluster: &Cluster) {
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(kube.clone());
    for (ns, tier) in &cluster.namespaces {
        ns_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns,
                    "labels": {format!("{}-tier", cluster.run): tier}}}))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    for s in &cluster.stores {
        let ar = ssm_resync::cluster::eso_resource(
            ssm_resync::cluster::EsoVersion::V1,
            s.kind,
            &format!("{}s", s.kind.to_lowercase()),
        );
        let api: Api<DynamicObject> = match &s.namespace {
            Some(ns) => Api::namespaced_with(kube.clone(), ns, &ar),
            None => Api::all_with(kube.clone(), &ar),
        };
        api.create(
            &PostParams::default(),
            &serde_json::from_value(s.object.clone()).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("creating {} {}: {e}", s.kind, s.name));
    }
    for r in cluster.resources.iter().filter(|r| r.ces.is_none()) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube.clone(), &r.namespace, &es_resource());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(r.object.clone()).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}\n{:#}", r.key(), r.object));
    }
    let ces_ar =
        ssm_resync::cluster::cluster_external_secret_resource(ssm_resync::cluster::EsoVersion::V1);
    for (name, obj) in &cluster.ces {
        Api::<DynamicObject>::all_with(kube.clone(), &ces_ar)
            .create(
                &PostParams::default(),
                &serde_json::from_value(obj.clone()).unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    }
}

/// Waits until every resource ESO can sync has (Ready=True, or a Secret for CES children);
/// returns the ones that never did, with ESO's reason (they are left out of the score).
async fn wait_synced(kube: &kube::Client, cluster: &Cluster) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = snapshot(kube, cluster).await;
        let pending: Vec<(String, String)> = cluster
            .resources
            .iter()
            .filter(|r| {
                seen[&r.key()]
                    .ready
                    .as_ref()
                    .is_none_or(|(status, _)| status != "True")
            })
            .map(|r| (r.key(), format!("{} {:?}", r.form, seen[&r.key()].ready)))
            .collect();
        if pending.is_empty() || Instant::now() > deadline {
            wait_quiet(kube, cluster).await;
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Publishes one event to the topic; moto POSTs it to the service and fails the publish when
/// the service does not answer 2xx, and SNS would redeliver: so does this, for a minute.
async fn publish(sns: &aws_sdk_sns::Client, topic: &str, event: &Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match sns
            .publish()
            .topic_arn(topic)
            .message(event.to_string())
            .send()
            .await
        {
            Ok(_) => return,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "publish never delivered: {}",
                    aws_sdk_sns::error::DisplayErrorContext(e)
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Every resource, as the user and ESO see it now.
async fn snapshot(kube: &kube::Client, cluster: &Cluster) -> HashMap<String, Seen> {
    let mut out = HashMap::new();
    for (ns, _) in &cluster.namespaces {
        let es: Api<DynamicObject> = Api::namespaced_with(kube.clone(), ns, &es_resource());
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(kube.clone(), ns);
        let es = es.list(&ListParams::default()).await.unwrap();
        let secrets = secrets.list(&ListParams::default()).await.unwrap();
        let data: HashMap<String, BTreeMap<String, String>> = secrets
            .items
            .into_iter()
            .map(|s| {
                (
                    s.metadata.name.unwrap_or_default(),
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect(),
                )
            })
            .collect();
        for o in es.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            let ready = o.data["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| {
                    (
                        c["status"].as_str().unwrap_or_default().to_owned(),
                        c["reason"].as_str().unwrap_or_default().to_owned(),
                    )
                });
            out.insert(
                format!("{ns}/{name}"),
                Seen {
                    data: data.get(&name).cloned(),
                    ready,
                    force_sync: o
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("force-sync").cloned()),
                    refresh_time: o.data["status"]["refreshTime"].as_str().map(String::from),
                },
            );
        }
    }
    for r in &cluster.resources {
        out.entry(r.key()).or_default();
    }
    out
}

/// No ExternalSecret or Secret in the run changed for a second.
async fn wait_quiet(kube: &kube::Client, cluster: &Cluster) {
    crate::common::wait_quiet(
        kube,
        cluster.namespaces.iter().map(|(ns, _)| ns.as_str()),
        Duration::from_secs(1),
        Duration::from_secs(90),
    )
    .await;
}

/// Forces every resource once, with an annotation the service never sets: ESO re-reads
/// everything, so a Secret that changes now was stale.
async fn force_all(kube: &kube::Client, cluster: &Cluster, step: usize) {
    let value = format!("{step}-{}", uuid::Uuid::new_v4().simple());
    let pp = PatchParams::default();
    for r in cluster.resources.iter().filter(|r| r.ces.is_none()) {
        Api::<DynamicObject>::namespaced_with(kube.clone(), &r.namespace, &es_resource())
            .patch_metadata(
                &r.name,
                &pp,
                &Patch::Merge(json!({"metadata": {"annotations": {"oracle-force": value}}})),
            )
            .await
            .unwrap();
    }
    let ces_ar =
        ssm_resync::cluster::cluster_external_secret_resource(ssm_resync::cluster::EsoVersion::V1);
    for (name, _) in &cluster.ces {
        // The trigger every ESO release honours (docs/eso-versions.md).
        Api::<DynamicObject>::all_with(kube.clone(), &ces_ar)
            .patch(
                name,
                &pp,
                &Patch::Merge(json!({"spec": {"externalSecretMetadata": {"annotations": {"oracle-force": value}}}})),
            )
            .await
            .unwrap();
    }
}

/// The stores an ExternalSecret names (default and per entry), as (cluster-scoped, object).
fn stores_of(cluster: &Cluster, es: &Value) -> Vec<(bool, Value)> {
    let ns = es["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut refs = vec![es["spec"]["secretStoreRef"].clone()];
    for list in ["data", "dataFrom"] {
        for e in es["spec"][list].as_array().into_iter().flatten() {
            refs.push(e["sourceRef"]["storeRef"].clone());
        }
    }
    let mut out: Vec<(bool, Value)> = Vec::new();
    for r in refs.iter().filter(|r| r.is_object()) {
        let cluster_scoped = r["kind"] == "ClusterSecretStore";
        if let Some(s) = cluster.stores.iter().find(|s| {
            s.name == r["name"].as_str().unwrap_or_default()
                && (s.kind == "ClusterSecretStore") == cluster_scoped
                && (cluster_scoped || s.namespace.as_deref() == Some(ns))
        }) && !out.iter().any(|(_, o)| *o == s.object)
        {
            out.push((cluster_scoped, s.object.clone()));
        }
    }
    out
}

/// A miss, reduced to what a unit test of the index needs: the resource (only the entries
/// whose Secret keys changed when forced), the change's event, and a test to paste into
/// `src/index/tests.rs`.
fn reproducer(m: &Miss) -> String {
    let changed: Vec<&String> = match (&m.before.data, &m.after.data) {
        (Some(b), Some(a)) => a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .collect(),
        _ => Vec::new(),
    };
    let mut obj = m.live.clone();
    for f in [
        "managedFields",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
    ] {
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove(f);
        }
    }
    if let Some(data) = obj["spec"]["data"].as_array().cloned()
        && !changed.is_empty()
        && data.len() > 1
    {
        let kept: Vec<Value> = data
            .into_iter()
            .filter(|d| changed.iter().any(|k| d["secretKey"] == **k))
            .collect();
        if !kept.is_empty() {
            obj["spec"]["data"] = json!(kept);
        }
    }
    let scope: Scope = m.change.scope;
    let stores: String = m
        .stores
        .iter()
        .map(|(cluster, s)| {
            format!("    index.apply_store(Store::from_object(&json!({s}), {cluster}).unwrap());\n")
        })
        .collect();
    let events: String = m
        .change
        .events
        .iter()
        .map(|e| {
            format!(
                "    for c in changes(r#\"{e}\"#) {{\n        hit |= index.lookup(&c).targets.iter().any(|t| t.reader.name == {:?});\n    }}\n",
                m.resource.name
            )
        })
        .collect();
    format!(
        "--- miss: seed {} step {}: {} of {} in {}/{} left {} ({}, {}) stale\n\
         before force: {:?}\nafter force:  {:?}\n\
         as a unit test of the index (src/index/tests.rs; `changes` decodes an SNS Message):\n\
         #[test]\nfn oracle_seed_{}_step_{}() {{\n    let mut index = Index::new();\n{stores}\
             index.apply_reader(Reader::from_external_secret(&json!({obj})).unwrap());\n\
             let mut hit = false;\n{events}    assert!(hit, \"the change must reach {}\");\n}}\n",
        m.seed,
        m.step,
        m.change.op,
        m.change.item,
        scope.account,
        scope.region,
        m.resource.key(),
        m.resource.form,
        m.resource.policy,
        m.before.content(),
        m.after.content(),
        m.seed,
        m.step,
        m.resource.key(),
    )
}

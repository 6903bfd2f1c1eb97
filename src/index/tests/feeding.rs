//! The index stays exact as it is fed: updates, deletes, re-lists, status writes, the
//! counts `stats()` keeps and the children of a ClusterExternalSecret.

use super::*;

#[test]
fn updates_and_deletes_keep_the_index_exact() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_reader(es("app", "a", data("s", "SecretStore", &["/old"])));
    idx.apply_reader(es("app", "a", data("s", "SecretStore", &["/new"])));
    assert!(idx.lookup(&change("/old", "us-east-1")).targets.is_empty());
    assert_eq!(names(&idx.lookup(&change("/new", "us-east-1"))), ["app/a"]);
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "a");
    assert!(idx.lookup(&change("/new", "us-east-1")).targets.is_empty());
    assert_eq!(
        idx.stats(),
        Stats {
            external_secrets: 0,
            kes_external_secrets: 0,
            stores: 1,
            references: 0,
            names: 0,
            rejected: 0,
            untrusted_owners: 0,
            left_out_references: 0
        }
    );
}

#[test]
fn replace_after_relist_drops_what_vanished() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_reader(es("app", "a", data("s", "SecretStore", &["/a"])));
    idx.apply_reader(es("app", "b", data("s", "SecretStore", &["/b"])));
    idx.replace_readers(
        ReaderKind::ExternalSecret,
        vec![es("app", "b", data("s", "SecretStore", &["/b"]))],
    );
    assert!(idx.lookup(&change("/a", "us-east-1")).targets.is_empty());
    assert_eq!(names(&idx.lookup(&change("/b", "us-east-1"))), ["app/b"]);
    idx.replace_stores(false, vec![]);
    assert!(idx.lookup(&change("/b", "us-east-1")).targets.is_empty());
    assert_eq!(idx.stats().stores, 0);
}

/// What `stats()` keeps as counters, recomputed by walking the index.
fn walked_stats(idx: &Index) -> (usize, usize, usize) {
    let kes = idx
        .readers
        .keys()
        .filter(|k| k.kind == ReaderKind::KesExternalSecret)
        .count();
    let rejected = idx.rejected.values().map(Vec::len).sum();
    (idx.readers.len() - kes, kes, rejected)
}

fn kes_reader(ns: &str, name: &str, key: &str) -> Reader {
    Reader::from_kes(&json!({
        "apiVersion": "kubernetes-client.io/v1", "kind": "ExternalSecret",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"backendType": "systemManager", "region": "us-east-1",
                 "data": [{"key": key, "name": "v"}]}
    }))
    .unwrap()
}

/// `stats()` is exported on every watch event, so it counts instead of walking: the counts
/// stay what a walk finds through applies, updates, deletes, re-lists and store changes.
#[test]
fn stats_counts_stay_what_a_walk_finds() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    let check = |idx: &Index, step: &str| {
        let s = idx.stats();
        assert_eq!(
            (s.external_secrets, s.kes_external_secrets, s.rejected),
            walked_stats(idx),
            "after {step}"
        );
    };
    for i in 0..5 {
        idx.apply_reader(es(
            "app",
            &format!("e{i}"),
            data("s", "SecretStore", &["/a"]),
        ));
        idx.apply_reader(kes_reader("app", &format!("k{i}"), "/a"));
        // An invalid pattern is rejected (and reported), twice for the odd ones.
        let bad = if i % 2 == 0 {
            vec!["("]
        } else {
            vec!["(", "["]
        };
        idx.apply_reader(es(
            "app",
            &format!("r{i}"),
            json!({"secretStoreRef": {"name": "s", "kind": "SecretStore"},
                   "dataFrom": bad.iter().map(|re| json!({"find": {"name": {"regexp": re}}})).collect::<Vec<_>>()}),
        ));
        check(&idx, "applies");
    }
    assert_eq!(idx.stats().kes_external_secrets, 5);
    assert_eq!(idx.stats().rejected, 7);
    // Same references again (a status write), then changed ones.
    idx.apply_reader(kes_reader("app", "k0", "/a"));
    idx.apply_reader(es("app", "r0", find("s", json!({"name": {"regexp": "["}}))));
    idx.apply_reader(es("app", "r1", data("s", "SecretStore", &["/b"])));
    check(&idx, "updates");
    assert_eq!(idx.stats().rejected, 5);
    idx.delete_reader(ReaderKind::KesExternalSecret, "app", "k1");
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "r2");
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "nobody");
    check(&idx, "deletes");
    idx.apply_store(ss("app", "s", "us-east-1", "/prefix"));
    idx.delete_store(&StoreId::namespaced("app", "s"));
    check(&idx, "store changes");
    idx.replace_readers(
        ReaderKind::KesExternalSecret,
        vec![kes_reader("app", "k0", "/a"), kes_reader("app", "k9", "/z")],
    );
    idx.replace_readers(ReaderKind::ExternalSecret, vec![]);
    check(&idx, "re-lists");
    assert_eq!(idx.stats().external_secrets, 0);
    assert_eq!(idx.stats().kes_external_secrets, 2);
}

/// The operator writes status after every sync; the watch hands back the whole object. With
/// the references unchanged the filing stays (no pattern compiled, the scan set kept) and
/// the reader's status is the new one.
#[test]
fn a_status_write_keeps_the_filing_and_takes_the_status() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    let spec = find("s", json!({"name": {"regexp": "^/app/[a-z]+$"}}));
    let with_status = |refresh: &str| {
        Reader::from_external_secret(&json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"namespace": "app", "name": "f"}, "spec": spec,
            "status": {"refreshTime": refresh, "syncedResourceVersion": refresh}
        }))
        .unwrap()
    };
    idx.apply_reader(with_status("2026-12-05T10:00:00Z"));
    assert_eq!(
        names(&idx.lookup(&change("/app/db", "us-east-1"))),
        ["app/f"]
    );
    let set = idx
        .scan_set
        .lock()
        .clone()
        .expect("the lookup built the scan set");
    let cost = idx.pattern_bytes;
    idx.apply_reader(with_status("2026-12-05T11:00:00Z"));
    let kept = idx.scan_set.lock().clone().expect("the scan set was kept");
    assert!(Arc::ptr_eq(&set, &kept), "the scan set was rebuilt");
    assert_eq!(idx.pattern_bytes, cost);
    let key = ResourceKey {
        kind: ReaderKind::ExternalSecret,
        namespace: "app".into(),
        name: "f".into(),
    };
    assert_eq!(
        idx.readers[&key].synced_at,
        Some(time::macros::datetime!(2026-12-05 11:00:00 UTC))
    );
    assert_eq!(
        names(&idx.lookup(&change("/app/db", "us-east-1"))),
        ["app/f"]
    );
    // A spec change re-files it.
    idx.apply_reader(es(
        "app",
        "f",
        find("s", json!({"name": {"regexp": "^/other/.+$"}})),
    ));
    assert!(
        idx.lookup(&change("/app/db", "us-east-1"))
            .targets
            .is_empty()
    );
    assert_eq!(
        names(&idx.lookup(&change("/other/x", "us-east-1"))),
        ["app/f"]
    );
}

/// A ClusterExternalSecret's outcome waits on its children: `children_of` finds exactly the
/// ExternalSecrets it owns now, with their latest sync fingerprints, through adoption, a
/// status write, a release to another owner and deletion.
#[test]
fn children_of_follows_ownership() {
    let mut idx = Index::new();
    idx.apply_store(css("global", "ParameterStore", "us-east-1"));
    let uid = |o: &str| match o {
        "db-everywhere" => "00000000-0000-4000-8000-000000000001",
        _ => "00000000-0000-4000-8000-000000000002",
    };
    for o in ["db-everywhere", "db-elsewhere"] {
        idx.apply_cluster_external_secret(ces(o, uid(o), "db", &["a", "b", "c"]));
    }
    let child = |ns: &str, owner: Option<&str>, synced: Option<&str>| {
        let mut obj = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"namespace": ns, "name": "db"},
            "spec": data("global", "ClusterSecretStore", &["/shared/db"])
        });
        if let Some(o) = owner {
            obj["metadata"]["ownerReferences"] = json!([{"apiVersion": "external-secrets.io/v1",
                "kind": "ClusterExternalSecret", "name": o, "uid": uid(o), "controller": true}]);
        }
        if let Some(v) = synced {
            obj["status"] = json!({"syncedResourceVersion": v});
        }
        Reader::from_external_secret(&obj).unwrap()
    };
    let children = |idx: &Index, ces: &str| {
        let mut c: Vec<(String, u64)> = idx
            .children_of(ces)
            .into_iter()
            .map(|(k, s)| (k.namespace, s))
            .collect();
        c.sort();
        c
    };
    let fp = |v: &str| crate::index::model::sync_fingerprint(Some(v));
    idx.apply_reader(child("a", Some("db-everywhere"), None));
    idx.apply_reader(child("b", Some("db-everywhere"), None));
    idx.apply_reader(child("c", None, None));
    assert_eq!(
        children(&idx, "db-everywhere"),
        [("a".into(), 0), ("b".into(), 0)]
    );
    // ESO's status write after a sync: same references, new fingerprint.
    idx.apply_reader(child("a", Some("db-everywhere"), Some("1-x")));
    assert_eq!(
        children(&idx, "db-everywhere"),
        [("a".into(), fp("1-x")), ("b".into(), 0)]
    );
    // Adopted by another owner, with the same references; and one adopted from nobody.
    idx.apply_reader(child("b", Some("db-elsewhere"), None));
    idx.apply_reader(child("c", Some("db-everywhere"), None));
    assert_eq!(
        children(&idx, "db-everywhere"),
        [("a".into(), fp("1-x")), ("c".into(), 0)]
    );
    assert_eq!(children(&idx, "db-elsewhere"), [("b".into(), 0)]);
    idx.delete_reader(ReaderKind::ExternalSecret, "a", "db");
    idx.delete_reader(ReaderKind::ExternalSecret, "c", "db");
    assert!(idx.children_of("db-everywhere").is_empty());
    assert!(
        !idx.by_parent.contains_key("db-everywhere"),
        "emptied sets go"
    );
    assert!(idx.children_of("nobody").is_empty());
}

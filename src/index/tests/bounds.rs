//! What one resource and one namespace may hold: past the bounds, references are left out,
//! reported and counted, and room made later is used.

use super::*;

fn bounded(per_object: usize, per_namespace: usize) -> Index {
    let mut idx = Index::with_config(IndexConfig {
        max_references_per_object: per_object,
        max_references_per_namespace: per_namespace,
        ..IndexConfig::default()
    });
    for ns in ["greedy", "other"] {
        idx.apply_store(ss(ns, "s", "us-east-1", ""));
    }
    idx
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/{prefix}/{i}")).collect()
}

fn reader(ns: &str, name: &str, keys: &[String]) -> Reader {
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    es(ns, name, data("s", "SecretStore", &keys))
}

fn key(ns: &str, name: &str) -> ResourceKey {
    ResourceKey {
        kind: ReaderKind::ExternalSecret,
        namespace: ns.into(),
        name: name.into(),
    }
}

/// The review's object: thousands of entries in one ExternalSecret. The first ones are
/// indexed, the rest left out and said so.
#[test]
fn references_past_the_per_object_bound_are_left_out_and_reported() {
    let mut idx = bounded(100, 1_000);
    let all = keys("big", 9_000);
    idx.apply_reader(reader("greedy", "big", &all));
    let s = idx.stats();
    assert_eq!((s.references, s.left_out_references), (100, 8_900));
    assert_eq!(
        names(&idx.lookup(&change("/big/99", "us-east-1"))),
        ["greedy/big"]
    );
    assert!(
        idx.lookup(&change("/big/100", "us-east-1"))
            .targets
            .is_empty()
    );
    let why = idx.rejected_of(&key("greedy", "big"));
    assert_eq!(why.len(), 1);
    assert!(
        why[0].reason.contains("--max-references-per-object 100"),
        "{}",
        why[0].reason
    );
    assert_eq!(why[0].reference, "spec: references 101 to 9000");
    // `explain` lists it with every rejected reference.
    assert_eq!(
        idx.explain(&change("/big/5000", "us-east-1"))
            .rejected
            .len(),
        1
    );
    // ESO's status write (same spec) keeps the filing and the report.
    idx.apply_reader(reader("greedy", "big", &all));
    assert_eq!(idx.stats().left_out_references, 8_900);
    idx.delete_reader(ReaderKind::ExternalSecret, "greedy", "big");
    let s = idx.stats();
    assert_eq!((s.references, s.left_out_references), (0, 0));
    assert!(idx.rejected_of(&key("greedy", "big")).is_empty());
}

/// Past the namespace's bound a resource is left out whole; another namespace is not
/// affected; deleting makes room that the next update of the left-out resource takes.
#[test]
fn a_namespace_past_its_bound_leaves_out_whole_resources_not_other_namespaces() {
    let mut idx = bounded(100, 250);
    for i in 0..4 {
        idx.apply_reader(reader(
            "greedy",
            &format!("r{i}"),
            &keys(&format!("g{i}"), 100),
        ));
    }
    idx.apply_reader(reader("other", "mine", &keys("o", 100)));
    let s = idx.stats();
    assert_eq!(
        (s.references, s.left_out_references),
        (300, 200),
        "two of greedy's four fit, and other's one"
    );
    assert_eq!(
        names(&idx.lookup(&change("/o/7", "us-east-1"))),
        ["other/mine"]
    );
    assert!(idx.lookup(&change("/g3/7", "us-east-1")).targets.is_empty());
    let why = &idx.rejected_of(&key("greedy", "r3"))[0];
    assert!(
        why.reason.contains("--max-references-per-namespace 250"),
        "{}",
        why.reason
    );
    idx.delete_reader(ReaderKind::ExternalSecret, "greedy", "r0");
    // ESO's next status write of r3 re-files it into the room r0 left.
    idx.apply_reader(reader("greedy", "r3", &keys("g3", 100)));
    assert_eq!(
        names(&idx.lookup(&change("/g3/7", "us-east-1"))),
        ["greedy/r3"]
    );
    assert!(idx.rejected_of(&key("greedy", "r3")).is_empty());
    let s = idx.stats();
    assert_eq!((s.references, s.left_out_references), (300, 100));
}

/// The shipped defaults leave a realistic namespace alone.
#[test]
fn the_defaults_bound_far_above_real_resources() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    for i in 0..200 {
        idx.apply_reader(reader("app", &format!("r{i}"), &keys(&format!("k{i}"), 50)));
    }
    let s = idx.stats();
    assert_eq!((s.references, s.left_out_references), (10_000, 0));
}

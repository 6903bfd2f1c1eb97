//! An owner reference is the writer's word: a ClusterExternalSecret is patched in place of an
//! ExternalSecret only when the watched ClusterExternalSecret confirms the child.

use super::*;

const UID: &str = "0b7e3c2e-6c1a-4a57-9d43-6a0c7f3e2b11";

/// An ExternalSecret in `ns` named `name`, reading `/shared/db`, that names `admin` as its
/// ClusterExternalSecret owner with `uid` (and `controller`).
fn claimant(ns: &str, name: &str, uid: Option<&str>, controller: bool) -> Reader {
    let mut owner = json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
        "name": "admin", "controller": controller});
    if let Some(u) = uid {
        owner["uid"] = json!(u);
    }
    Reader::from_external_secret(&json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"namespace": ns, "name": name, "ownerReferences": [owner]},
        "spec": data("global", "ClusterSecretStore", &["/shared/db"])
    }))
    .unwrap()
}

fn targets(idx: &Index) -> Vec<String> {
    let mut v: Vec<String> = idx
        .lookup(&change("/shared/db", "us-east-1"))
        .targets
        .iter()
        .map(|m| m.target.to_string())
        .collect();
    v.sort();
    v
}

/// The attack of the review: a tenant copies a child's owner reference (the real uid) onto
/// an ExternalSecret of their own, or makes one up; neither patches the admin's parent.
#[test]
fn a_copied_or_made_up_owner_reference_patches_only_the_tenants_own_resource() {
    let mut idx = Index::new();
    idx.apply_store(css("global", "ParameterStore", "us-east-1"));
    idx.apply_cluster_external_secret(ces("admin", UID, "db", &["team-a", "tenant"]));
    idx.apply_reader(claimant("team-a", "db", Some(UID), true));
    idx.apply_reader(claimant("tenant", "evil", Some(UID), true));
    idx.apply_reader(claimant(
        "tenant",
        "evil2",
        Some("11111111-2222-4333-8444-555555555555"),
        true,
    ));
    assert_eq!(
        targets(&idx),
        [
            "ClusterExternalSecret admin",
            "ExternalSecret tenant/evil",
            "ExternalSecret tenant/evil2"
        ]
    );
    assert_eq!(idx.stats().untrusted_owners, 2);
    let evil = ResourceKey {
        kind: ReaderKind::ExternalSecret,
        namespace: "tenant".into(),
        name: "evil".into(),
    };
    assert!(
        idx.untrusted_owner(&evil)
            .unwrap()
            .contains("children are named db"),
        "{:?}",
        idx.untrusted_owner(&evil)
    );
    let m = idx.lookup(&change("/shared/db", "us-east-1"));
    let seen = m.targets.iter().find(|t| t.target.name == "evil2").unwrap();
    assert!(seen.reason.contains("uid is not this"), "{}", seen.reason);
    assert_eq!(
        idx.children_of("admin")
            .into_iter()
            .map(|(k, _)| k.namespace)
            .collect::<Vec<_>>(),
        ["team-a"],
        "only the child waits for the parent's outcome"
    );
}

/// Each check on its own: no uid, not the controller, a namespace without a child, a name
/// the parent does not give, a parent nobody watches.
#[test]
fn every_check_refuses_on_its_own() {
    let cases: [(&str, &str, Option<&str>, bool, &str); 5] = [
        ("team-a", "db", None, true, "uid"),
        ("team-a", "db", Some(UID), false, "controller"),
        (
            "team-b",
            "db",
            Some(UID),
            true,
            "no child in this namespace",
        ),
        ("team-a", "other", Some(UID), true, "children are named db"),
        (
            "team-a",
            "db",
            Some(UID),
            true,
            "no such ClusterExternalSecret",
        ),
    ];
    for (i, (ns, name, uid, controller, why)) in cases.into_iter().enumerate() {
        let mut idx = Index::new();
        idx.apply_store(css("global", "ParameterStore", "us-east-1"));
        if i != 4 {
            idx.apply_cluster_external_secret(ces("admin", UID, "db", &["team-a"]));
        }
        idx.apply_reader(claimant(ns, name, uid, controller));
        assert_eq!(
            targets(&idx),
            [format!("ExternalSecret {ns}/{name}")],
            "case {i}"
        );
        let key = ResourceKey {
            kind: ReaderKind::ExternalSecret,
            namespace: ns.into(),
            name: name.into(),
        };
        let reason = idx.untrusted_owner(&key).unwrap();
        assert!(reason.contains(why), "case {i}: {reason}");
    }
}

/// Trust follows the parent: ESO's status naming the namespace after it made the child, the
/// parent's deletion and return, a re-list, and the child's own deletion.
#[test]
fn trust_follows_the_parent_as_it_changes() {
    let mut idx = Index::new();
    idx.apply_store(css("global", "ParameterStore", "us-east-1"));
    // The child first, as ESO creates it before it writes the parent's status.
    idx.apply_reader(claimant("team-a", "db", Some(UID), true));
    idx.apply_cluster_external_secret(ces("admin", UID, "db", &[]));
    assert_eq!(targets(&idx), ["ExternalSecret team-a/db"]);
    idx.apply_cluster_external_secret(ces("admin", UID, "db", &["team-a"]));
    assert_eq!(targets(&idx), ["ClusterExternalSecret admin"]);
    assert_eq!(idx.stats().untrusted_owners, 0);
    idx.delete_cluster_external_secret("admin");
    assert_eq!(targets(&idx), ["ExternalSecret team-a/db"]);
    assert_eq!(idx.stats().untrusted_owners, 1);
    idx.replace_cluster_external_secrets(vec![ces("admin", UID, "db", &["team-a"])]);
    assert_eq!(targets(&idx), ["ClusterExternalSecret admin"]);
    // Recreated under the same name: a new uid, the old child's reference no longer holds.
    idx.replace_cluster_external_secrets(vec![ces(
        "admin",
        "99999999-2222-4333-8444-555555555555",
        "db",
        &["team-a"],
    )]);
    assert_eq!(targets(&idx), ["ExternalSecret team-a/db"]);
    idx.delete_reader(ReaderKind::ExternalSecret, "team-a", "db");
    assert_eq!(
        idx.stats().untrusted_owners,
        0,
        "deleted readers are forgotten"
    );
    // The sweep patches what a lookup patches.
    idx.apply_reader(claimant("team-a", "db", Some(UID), true));
    let swept: Vec<String> = idx
        .sweep_items()
        .iter()
        .map(|i| i.target.to_string())
        .collect();
    assert_eq!(swept, ["ExternalSecret team-a/db"]);
}

/// Without an externalSecretName the children carry the parent's own name.
#[test]
fn children_default_to_the_parents_name() {
    let c = ClusterExternalSecret::from_object(&json!({
        "metadata": {"name": "admin", "uid": UID}, "spec": {},
        "status": {"provisionedNamespaces": ["team-a"]}
    }))
    .unwrap();
    assert_eq!(c.child_name, "admin");
    let mut idx = Index::new();
    idx.apply_store(css("global", "ParameterStore", "us-east-1"));
    idx.apply_cluster_external_secret(c);
    idx.apply_reader(claimant("team-a", "admin", Some(UID), true));
    assert_eq!(targets(&idx), ["ClusterExternalSecret admin"]);
}

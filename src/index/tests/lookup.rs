//! What a lookup answers: one target per resource, the parent of CES children, what is
//! reported and not patched, near misses, which operations reach which readers.

use super::*;

#[test]
fn one_target_per_resource_even_with_several_references() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    idx.apply_reader(es(
        "app",
        "a",
        data("s", "SecretStore", &["/k", "k", "/k:2"]),
    ));
    let m = idx.lookup(&change("/k", "us-east-1"));
    assert_eq!(m.targets.len(), 1);
    assert_eq!(m.targets[0].reference, "spec.data[0].remoteRef.key");
}

#[test]
fn cluster_external_secret_children_patch_the_parent_once() {
    let mut idx = Index::new();
    idx.apply_store(css("global", "ParameterStore", "us-east-1"));
    idx.apply_cluster_external_secret(ces(
        "db-everywhere",
        "0b7e3c2e-6c1a-4a57-9d43-6a0c7f3e2b11",
        "db",
        &["a", "b", "c"],
    ));
    for ns in ["a", "b", "c"] {
        let mut obj = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"namespace": ns, "name": "db", "ownerReferences": [
                {"apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret", "name": "db-everywhere", "uid": "0b7e3c2e-6c1a-4a57-9d43-6a0c7f3e2b11", "controller": true}
            ]},
            "spec": data("global", "ClusterSecretStore", &["/shared/db"])
        });
        if ns == "c" {
            obj["metadata"]["ownerReferences"][0]["kind"] = json!("Deployment");
        }
        idx.apply_reader(Reader::from_external_secret(&obj).unwrap());
    }
    let m = idx.lookup(&change("/shared/db", "us-east-1"));
    let mut targets: Vec<String> = m.targets.iter().map(|t| t.target.to_string()).collect();
    targets.sort();
    assert_eq!(
        targets,
        ["ClusterExternalSecret db-everywhere", "ExternalSecret c/db"],
        "the parent once, plus the ExternalSecret it does not own"
    );
    let parent = m
        .targets
        .iter()
        .find(|t| t.target.kind == TargetKind::ClusterExternalSecret)
        .unwrap();
    assert_eq!(
        (parent.target.namespace.as_str(), parent.uid.as_deref()),
        ("", Some("0b7e3c2e-6c1a-4a57-9d43-6a0c7f3e2b11"))
    );
}

#[test]
fn unforceable_resources_are_reported_not_targeted() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    // As ESO leaves them after their first sync.
    let with = |name: &str, extra: Value| {
        let mut spec = data("s", "SecretStore", &["/k"]);
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        Reader::from_external_secret(&json!({
            "metadata": {"namespace": "app", "name": name}, "spec": spec,
            "status": {"refreshTime": "2026-01-01T00:00:00Z", "syncedResourceVersion": "1-abc"}
        }))
        .unwrap()
    };
    idx.apply_reader(with("once", json!({"refreshPolicy": "CreatedOnce"})));
    idx.apply_reader(with("zero", json!({"refreshInterval": "0s"})));
    idx.apply_reader(with(
        "zero-periodic",
        json!({"refreshInterval": "0", "refreshPolicy": "Periodic"}),
    ));
    idx.apply_reader(with("immutable", json!({"target": {"immutable": true}})));
    idx.apply_reader(with(
        "onchange",
        json!({"refreshInterval": "0", "refreshPolicy": "OnChange"}),
    ));
    idx.apply_reader(with("hourly", json!({"refreshInterval": "1h0m0s"})));
    let m = idx.lookup(&change("/k", "us-east-1"));
    assert_eq!(names(&m), ["app/hourly", "app/onchange"]);
    let mut reported: Vec<(String, String)> = m
        .unforceable
        .iter()
        .map(|u| (u.target.name.clone(), u.reason.clone()))
        .collect();
    reported.sort();
    assert_eq!(reported.len(), 4, "{reported:?}");
    assert!(reported[0].0 == "immutable" && reported[0].1.contains("immutable"));
    assert!(reported[1].0 == "once" && reported[1].1.contains("CreatedOnce"));
    assert!(reported[2].0 == "zero" && reported[2].1.contains("OnChange"));
    // ESO's shouldRefresh syncs every resource once before its policy counts: before the
    // first sync (no status.syncedResourceVersion) each of them is forced like any other.
    for name in ["once", "zero", "zero-periodic", "immutable"] {
        let spec = match name {
            "once" => json!({"refreshPolicy": "CreatedOnce"}),
            "immutable" => json!({"target": {"immutable": true}}),
            _ => json!({"refreshInterval": "0s"}),
        };
        let mut full = data("s", "SecretStore", &["/k"]);
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        let fresh = Reader::from_external_secret(
            &json!({"metadata": {"namespace": "app", "name": name}, "spec": full}),
        )
        .unwrap();
        assert!(fresh.unforceable.is_none(), "{name}");
        idx.apply_reader(fresh);
    }
    assert_eq!(
        names(&idx.lookup(&change("/k", "us-east-1"))),
        [
            "app/hourly",
            "app/immutable",
            "app/once",
            "app/onchange",
            "app/zero",
            "app/zero-periodic"
        ]
    );
}

#[test]
fn explain_names_missing_stores_and_other_regions() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "west", "us-west-2", ""));
    idx.apply_reader(es("app", "w", data("west", "SecretStore", &["/k"])));
    idx.apply_reader(es("app", "ghost", data("nope", "SecretStore", &["/k"])));
    let e = idx.explain(&change("/k", "us-east-1"));
    assert!(e.targets.is_empty());
    let mut reasons: Vec<&str> = e.near_misses.iter().map(|n| n.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("SecretStore/app/nope does not exist")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("region us-west-2")),
        "{reasons:?}"
    );
    assert!(
        idx.lookup(&change("/k", "us-east-1"))
            .near_misses
            .is_empty(),
        "lookup skips near misses"
    );
}

/// Audit case 4: Every API call that changes what a reader gets is a change, CreateSecret (a new secret
/// a `find` lists) and the Parameter Store calls the native event does not report included.
#[test]
fn fidelity_4_calls_beyond_the_native_events_reach_their_readers() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    idx.apply_store(sm_store("app", "sm", json!({})));
    idx.apply_reader(es(
        "app",
        "smfind",
        find("sm", json!({"name": {"regexp": "^prod/"}})),
    ));
    idx.apply_reader(es("app", "label", json!({"secretStoreRef": {"name": "ps"}, "data": [{"secretKey": "k", "remoteRef": {"key": "/a", "version": "stable"}}]})));
    idx.apply_reader(es("app", "plain", data("ps", "SecretStore", &["/b"])));
    let trail = |source: &str, call: &str, request: Value, response: Value| {
        json!({"source": source, "detail-type": "AWS API Call via CloudTrail", "region": "us-east-1", "account": "123456789012",
            "detail": {"eventSource": format!("{}.amazonaws.com", source.trim_start_matches("aws.")), "eventName": call,
                       "awsRegion": "us-east-1", "requestParameters": request, "responseElements": response}}).to_string()
    };
    let hit = |message: String| -> Vec<String> {
        let mut out: Vec<String> = changes(&message)
            .iter()
            .flat_map(|c| names(&idx.lookup(c)))
            .collect();
        out.sort();
        out.dedup();
        out
    };
    assert_eq!(
        hit(trail(
            "aws.secretsmanager",
            "CreateSecret",
            json!({"name": "prod/new"}),
            json!({"arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/new-AbCdEf"})
        )),
        ["app/smfind"]
    );
    assert_eq!(
        hit(trail(
            "aws.secretsmanager",
            "RestoreSecret",
            json!({"secretId": "prod/x"}),
            Value::Null
        )),
        ["app/smfind"]
    );
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "UnlabelParameterVersion",
            json!({"name": "/a", "parameterVersion": 2, "labels": ["stable"]}),
            Value::Null
        )),
        ["app/label"]
    );
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "LabelParameterVersion",
            json!({"name": "/a", "parameterVersion": 3, "labels": ["stable"]}),
            Value::Null
        )),
        ["app/label"]
    );
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "DeleteParameters",
            json!({"names": ["/a", "/b"]}),
            Value::Null
        )),
        ["app/label", "app/plain"]
    );
    // A new version: only the reader of the newest value.
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "PutParameter",
            json!({"name": "/a"}),
            json!({"version": 4})
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "PutParameter",
            json!({"name": "/b"}),
            json!({"version": 4})
        )),
        ["app/plain"]
    );
    // A new parameter (version 1) has no label: its label reader gets nothing new.
    assert_eq!(
        hit(trail(
            "aws.ssm",
            "PutParameter",
            json!({"name": "/a"}),
            json!({"version": 1})
        )),
        Vec::<String>::new()
    );
}

/// Audit case 5: Tags: `find.tags` readers and `metadataPolicy: Fetch` readers change on tag changes; a
/// Fetch reader does not change on a new value, a value reader not on a tag change.
#[test]
fn fidelity_5_tag_changes_reach_tag_readers_only() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    idx.apply_store(sm_store("app", "sm", json!({})));
    idx.apply_reader(es("app", "meta", json!({"secretStoreRef": {"name": "ps"}, "data": [{"secretKey": "t", "remoteRef": {"key": "/a", "metadataPolicy": "Fetch"}}]})));
    idx.apply_reader(es("app", "value", data("ps", "SecretStore", &["/a"])));
    idx.apply_reader(es(
        "app",
        "tagfind",
        find("ps", json!({"path": "/", "tags": {"team": "x"}})),
    ));
    idx.apply_reader(es("app", "smmeta", json!({"secretStoreRef": {"name": "sm"}, "data": [{"secretKey": "t", "remoteRef": {"key": "s", "metadataPolicy": "Fetch"}}]})));
    idx.apply_reader(es(
        "app",
        "smtags",
        find("sm", json!({"tags": {"team": "x"}})),
    ));
    let tagged = op(Operation::TagsChanged, change("/a", "us-east-1"));
    assert_eq!(names(&idx.lookup(&tagged)), ["app/meta", "app/tagfind"]);
    assert_eq!(
        names(&idx.lookup(&change("/a", "us-east-1"))),
        ["app/tagfind", "app/value"]
    );
    assert_eq!(
        names(&idx.lookup(&op(Operation::TagsChanged, sm_change("s")))),
        ["app/smmeta", "app/smtags"]
    );
    assert_eq!(
        names(&idx.lookup(&op(Operation::PutSecretValue, sm_change("s")))),
        ["app/smtags"]
    );
    // Deleting the item changes what every reader gets, tags included.
    assert_eq!(
        names(&idx.lookup(&op(Operation::Delete, change("/a", "us-east-1")))),
        ["app/meta", "app/tagfind", "app/value"]
    );
    let e = idx.explain(&change("/a", "us-east-1"));
    assert!(
        e.near_misses
            .iter()
            .any(|n| n.reader.name == "meta" && n.reason.contains("tags")),
        "{e:?}"
    );
}

/// Audit case 12: Spurious matches: references ESO cannot read (a find with only a path, KES `path` on
/// Secrets Manager, a store prefix before an ARN), what a new value does not change (a pinned
/// version or version id), resources that write no Secret, stores of another controller class.
#[test]
fn fidelity_12_no_patch_where_nothing_changes() {
    let mut idx = Index::with_config(IndexConfig {
        controller_classes: vec!["default".into()],
        ..Default::default()
    });
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    idx.apply_store(ss("app", "pre", "us-east-1", "/team/"));
    idx.apply_store(sm_store("app", "sm", json!({})));
    let mut other = ss("app", "other-class", "us-east-1", "");
    other.controller = Some("internal".into());
    idx.apply_store(other);
    idx.apply_reader(es("app", "pathonly", find("ps", json!({"path": "/a"}))));
    idx.apply_reader(es(
        "app",
        "prefixarn",
        data(
            "pre",
            "SecretStore",
            &["arn:aws:ssm:us-east-1:123456789012:parameter/a/x"],
        ),
    ));
    idx.apply_reader(es("app", "pinned", json!({"secretStoreRef": {"name": "ps"}, "data": [{"secretKey": "k", "remoteRef": {"key": "/a/x", "version": "3"}}]})));
    idx.apply_reader(es("app", "uuid", json!({"secretStoreRef": {"name": "sm"}, "data": [{"secretKey": "k", "remoteRef": {"key": "s", "version": "uuid/abc"}}]})));
    idx.apply_reader(es("app", "none", json!({"secretStoreRef": {"name": "ps"}, "target": {"creationPolicy": "None"}, "data": [{"secretKey": "k", "remoteRef": {"key": "/a/x"}}]})));
    idx.apply_reader(es(
        "app",
        "class",
        data("other-class", "SecretStore", &["/a/x"]),
    ));
    let kes = Reader::from_kes(&json!({"metadata": {"namespace": "app", "name": "kespath"}, "spec": {"backendType": "secretsManager", "region": "us-east-1", "data": [{"path": "a", "name": "k"}]}})).unwrap();
    assert!(kes.references.is_empty());
    idx.apply_reader(kes);
    assert!(idx.lookup(&change("/a/x", "us-east-1")).targets.is_empty());
    assert!(
        idx.lookup(&op(Operation::PutSecretValue, sm_change("s")))
            .targets
            .is_empty()
    );
    let e = idx.explain(&change("/a/x", "us-east-1"));
    let why = |name: &str| {
        e.near_misses
            .iter()
            .find(|n| n.reader.name == name)
            .map(|n| n.reason.clone())
            .unwrap_or_default()
    };
    assert!(why("pinned").contains("pinned"), "{e:?}");
    assert!(why("none").contains("creationPolicy: None"), "{e:?}");
    assert!(why("class").contains("controller class"), "{e:?}");
    // What they do care about still reaches them.
    assert_eq!(
        names(&idx.lookup(&op(Operation::Delete, change("/a/x", "us-east-1")))),
        ["app/pinned"]
    );
}

/// Audit case 14: ESO v2.7+ sync windows hold back periodic refreshes only; the match
/// carries them so the service can defer the patch (OnChange and CreatedOnce ignore them).
#[test]
fn fidelity_14_sync_windows_travel_with_the_match() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "ps", "us-east-1", ""));
    let windows =
        json!({"kind": "deny", "windows": [{"schedule": "0 22 * * 1-5", "duration": "8h"}]});
    let mut spec = data("ps", "SecretStore", &["/k"]);
    spec["syncWindows"] = windows.clone();
    idx.apply_reader(es("app", "windowed", spec.clone()));
    spec["refreshPolicy"] = json!("OnChange");
    idx.apply_reader(es("app", "onchange", spec));
    let m = idx.lookup(&change("/k", "us-east-1"));
    let w = |name: &str| {
        m.targets
            .iter()
            .find(|t| t.target.name == name)
            .unwrap()
            .sync_windows
            .clone()
    };
    let got = w("windowed").expect("windows kept");
    assert!(!got.allow && got.windows == [("0 22 * * 1-5".to_owned(), "8h".to_owned())]);
    assert!(!got.open_at(time::macros::datetime!(2026-12-01 23:00 UTC)));
    assert_eq!(w("onchange"), None);
    // A kind ESO does not know allows every refresh: nothing to hold back.
    let mut odd = data("ps", "SecretStore", &["/k"]);
    odd["syncWindows"] =
        json!({"kind": "sometimes", "windows": [{"schedule": "@daily", "duration": "1h"}]});
    assert_eq!(es("app", "odd", odd).sync_windows, None);
}

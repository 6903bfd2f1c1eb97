//! Correctness at the scales the service meets.

use super::*;

/// Correctness at a scale the service meets: every ExternalSecret is found by its own key
/// and by no other.
#[test]
fn ten_thousand_secrets_each_found_exactly() {
    let mut idx = Index::new();
    for ns in 0..10 {
        idx.apply_store(ss(&format!("ns{ns}"), "s", "us-east-1", ""));
    }
    for i in 0..10_000 {
        let ns = format!("ns{}", i % 10);
        idx.apply_reader(es(
            &ns,
            &format!("es{i}"),
            data("s", "SecretStore", &[&format!("/app/{i}/key")]),
        ));
    }
    assert_eq!(idx.stats().references, 10_000);
    for i in (0..10_000).step_by(7) {
        let m = idx.lookup(&change(&format!("/app/{i}/key"), "us-east-1"));
        assert_eq!(names(&m), [format!("ns{}/es{i}", i % 10)]);
    }
}

/// Correctness at 100,000 ExternalSecrets with the mix the benchmarks use: mostly
/// remoteRef keys, some extract, 1% find.path (with an empty name regexp, as ESO needs),
/// 0.1% name.regexp (spread over the namespaces, each within its share of the pattern
/// budget); every lookup exact.
#[test]
fn hundred_thousand_mixed_references_each_found_exactly() {
    let namespace = |i: usize| format!("ns{}", (i + i / 1000) % 100);
    let mut idx = Index::new();
    for ns in 0..100 {
        idx.apply_store(ss(&format!("ns{ns}"), "s", "us-east-1", ""));
    }
    let n = 100_000;
    for i in 0..n {
        let ns = namespace(i);
        let spec = match i % 1000 {
            0 => find(
                "s",
                json!({"name": {"regexp": format!("^/rx/{i}/[a-z]+$")}}),
            ),
            1..=10 => find(
                "s",
                json!({"path": format!("/tree/{i}"), "name": {"regexp": ""}}),
            ),
            11..=200 => {
                json!({"secretStoreRef": {"name": "s"}, "dataFrom": [{"extract": {"key": format!("/ex/{i}")}}]})
            }
            _ => data("s", "SecretStore", &[&format!("/app/{i}/key")]),
        };
        idx.apply_reader(es(&ns, &format!("es{i}"), spec));
    }
    assert_eq!(idx.stats().external_secrets, n);
    assert_eq!(idx.stats().references, n);
    for i in 0..n {
        let name = match i % 1000 {
            0 => format!("/rx/{i}/abc"),
            1..=10 => format!("/tree/{i}/leaf"),
            11..=200 => format!("/ex/{i}"),
            _ => format!("/app/{i}/key"),
        };
        let m = idx.lookup(&change(&name, "us-east-1"));
        assert_eq!(names(&m), [format!("{}/es{i}", namespace(i))], "{name}");
    }
}

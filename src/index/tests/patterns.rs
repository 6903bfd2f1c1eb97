//! Tenants' `find.name.regexp` patterns: bounded, sharing one budget, combined when they
//! can be.

use super::*;
use crate::index::patterns::compile_pattern;

/// The largest `k` for which `pattern(k)` (a run of `\w{k}`: Unicode word characters make
/// each repetition expensive) compiles within the per-pattern limit.
fn largest_word_run(pattern: impl Fn(usize) -> String) -> usize {
    let (mut lo, mut hi) = (0, 1);
    while compile_pattern(&pattern(hi)).is_ok() {
        (lo, hi) = (hi, hi * 2);
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if compile_pattern(&pattern(mid)).is_ok() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Tenants' patterns that each compile alone but not together (the combined set would pass
/// its size limit; the index used to `expect` it): the index matches them one by one instead
/// of panicking, and still right.
#[test]
fn patterns_too_large_to_combine_are_matched_one_by_one() {
    let k = largest_word_run(|k| format!(r"^/big/99/\w{{{k}}}$"));
    assert!(k > 0);
    let mut idx = Index::new();
    // Past the set's limit, within the budget and each namespace's share.
    let n = 120;
    let ns = |i: usize| format!("t{}", i % 10);
    for i in 0..10 {
        idx.apply_store(ss(&ns(i), "s", "us-east-1", ""));
    }
    for i in 0..n {
        idx.apply_reader(es(
            &ns(i),
            &format!("big{i}"),
            find(
                "s",
                json!({"name": {"regexp": format!(r"^/big/{i}/\w{{{k}}}$")}}),
            ),
        ));
    }
    assert_eq!(idx.stats().rejected, 0, "each pattern compiles on its own");
    let word = "a".repeat(k);
    assert_eq!(
        names(&idx.lookup(&change(&format!("/big/3/{word}"), "us-east-1"))),
        ["t3/big3"]
    );
    assert!(
        idx.scan_set().set.is_none(),
        "the set was expected to be too large"
    );
    assert!(
        idx.lookup(&change(&format!("/big/3/{word}x"), "us-east-1"))
            .targets
            .is_empty()
    );
}

/// A pattern too large on its own matches every name (ESO's Go regexp would accept it, so a
/// missed change would leave a stale Secret) and is reported; one that does not compile reads
/// nothing (ESO fails it too) and is reported; both leave with their resource.
#[test]
fn rejected_patterns_are_reported_and_fail_safe() {
    let mut idx = Index::new();
    idx.apply_store(ss("app", "s", "us-east-1", ""));
    let huge = format!(
        r"^/huge/\w{{{}}}$",
        largest_word_run(|k| format!(r"\w{{{k}}}")) * 2
    );
    idx.apply_reader(es(
        "app",
        "huge",
        find("s", json!({"name": {"regexp": huge}})),
    ));
    idx.apply_reader(es(
        "app",
        "broken",
        find("s", json!({"name": {"regexp": "^/x/(unclosed$"}})),
    ));
    assert_eq!(idx.stats().rejected, 2);
    // The huge one matches any name in its store's scope; the broken one none.
    assert_eq!(
        names(&idx.lookup(&change("/anything", "us-east-1"))),
        ["app/huge"]
    );
    let explained = idx.explain(&change("/anything", "us-east-1"));
    let reasons: Vec<(&str, &str)> = explained
        .rejected
        .iter()
        .map(|r| (r.reader.name.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].0 == "broken" && reasons[0].1.contains("does not compile"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == "huge" && reasons[1].1.contains("as matching every name"),
        "{reasons:?}"
    );
    let key = ResourceKey {
        kind: ReaderKind::ExternalSecret,
        namespace: "app".into(),
        name: "huge".into(),
    };
    assert_eq!(idx.rejected_of(&key).len(), 1);
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "huge");
    idx.delete_reader(ReaderKind::ExternalSecret, "app", "broken");
    assert_eq!(idx.stats().rejected, 0);
    assert!(idx.rejected_of(&key).is_empty());
}

/// However many patterns tenants create, together they cost at most the budget: past it a
/// pattern is treated as too large (matching every name) and reported; deleting resources
/// gives their share back. Here 16 namespaces stay within their shares and pass the budget
/// together.
#[test]
fn patterns_share_one_budget() {
    let mut idx = Index::new();
    // Each `\w` pattern compiles past 8 KiB: charged 64 KiB + two 32 KiB DFA caches.
    let each = REGEX_SIZE_LIMIT + 2 * REGEX_DFA_LIMIT;
    let fit = REGEX_BUDGET / each;
    let namespaces = 16;
    assert!(fit / namespaces * each <= REGEX_NAMESPACE_BUDGET);
    let ns = |i: usize| format!("t{}", i % namespaces);
    for i in 0..namespaces {
        idx.apply_store(ss(&ns(i), "s", "us-east-1", ""));
    }
    for i in 0..fit + 12 {
        idx.apply_reader(es(
            &ns(i),
            &format!("p{i}"),
            find("s", json!({"name": {"regexp": format!(r"^/p/{i}/\w$")}})),
        ));
    }
    assert_eq!(idx.stats().rejected, 12);
    assert!(idx.pattern_bytes <= REGEX_BUDGET);
    let over = idx.explain(&change("/p/0/x", "us-east-1")).rejected;
    assert!(over[0].reason.contains("budget"), "{over:?}");
    // Past the budget they match every name; within it, their own.
    let l = idx.lookup(&change("/p/0/x", "us-east-1"));
    assert_eq!(l.targets.len(), 1 + 12, "{:?}", names(&l));
    for i in 0..20 {
        idx.delete_reader(ReaderKind::ExternalSecret, &ns(i), &format!("p{i}"));
    }
    idx.apply_reader(es(
        "t0",
        "late",
        find("s", json!({"name": {"regexp": r"^/late/\w$"}})),
    ));
    assert!(
        idx.rejected_of(&ResourceKey {
            kind: ReaderKind::ExternalSecret,
            namespace: "t0".into(),
            name: "late".into(),
        })
        .is_empty()
    );
}

/// One tenant creating patterns without end spends only its namespace's share: its further
/// patterns match every name (its own spurious re-syncs, reported), and another namespace's
/// pattern still compiles. Before the shares, the first tenant in list order took the whole
/// budget and everyone after matched every name.
#[test]
fn one_tenant_cannot_use_up_everyones_regexp_budget() {
    let mut idx = Index::new();
    idx.apply_store(ss("greedy", "s", "us-east-1", ""));
    idx.apply_store(ss("other", "s", "us-east-1", ""));
    let each = REGEX_SIZE_LIMIT + 2 * REGEX_DFA_LIMIT;
    let n = REGEX_BUDGET / each + 10;
    for i in 0..n {
        idx.apply_reader(es(
            "greedy",
            &format!("p{i}"),
            find("s", json!({"name": {"regexp": format!(r"^/g/{i}/\w$")}})),
        ));
    }
    let share = REGEX_NAMESPACE_BUDGET / each;
    assert_eq!(idx.stats().rejected, n - share);
    let greedy = idx.explain(&change("/g/0/x", "us-east-1")).rejected;
    assert!(greedy[0].reason.contains("this namespace"), "{greedy:?}");
    idx.apply_reader(es(
        "other",
        "own",
        find("s", json!({"name": {"regexp": r"^/other/\w$"}})),
    ));
    let other = ResourceKey {
        kind: ReaderKind::ExternalSecret,
        namespace: "other".into(),
        name: "own".into(),
    };
    assert!(idx.rejected_of(&other).is_empty());
    let l = idx.lookup(&change("/other/x", "us-east-1"));
    assert!(
        names(&l).contains(&"other/own".to_owned()),
        "{:?}",
        names(&l)
    );
    assert!(
        !names(&l)
            .iter()
            .any(|n| n.starts_with("other/") && n != "other/own"),
        "{:?}",
        names(&l)
    );
}

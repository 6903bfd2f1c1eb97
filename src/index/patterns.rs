//! Tenants' regexps: compiled within bounds, never panicking, and the scan list's patterns
//! combined into one `RegexSet`.

use std::sync::Arc;

use regex::Regex;

use super::{
    Index, REGEX_BUDGET, REGEX_DFA_LIMIT, REGEX_NAMESPACE_BUDGET, REGEX_SET_SIZE_LIMIT,
    REGEX_SIZE_LIMIT, REGEX_SMALL, Test,
};

/// Why a tenant's pattern is not used as written.
#[derive(Debug)]
pub(super) enum PatternProblem {
    /// ESO's Go regexp would reject it too: the reference reads nothing.
    Invalid(String),
    /// Valid, but past [`REGEX_SIZE_LIMIT`].
    TooLarge,
}

/// Compiles a tenant's pattern with bounded size, never panicking; with what it is charged
/// against [`REGEX_BUDGET`].
pub(super) fn compile_pattern(re: &str) -> Result<(Regex, usize), PatternProblem> {
    let build = |limit| {
        regex::RegexBuilder::new(re)
            .size_limit(limit)
            .dfa_size_limit(REGEX_DFA_LIMIT)
            .build()
    };
    let charge = |compiled| compiled + 2 * REGEX_DFA_LIMIT;
    match build(REGEX_SMALL) {
        Ok(r) => Ok((r, charge(REGEX_SMALL))),
        Err(regex::Error::CompiledTooBig(_)) => match build(REGEX_SIZE_LIMIT) {
            Ok(r) => Ok((r, charge(REGEX_SIZE_LIMIT))),
            Err(regex::Error::CompiledTooBig(_)) => Err(PatternProblem::TooLarge),
            Err(e) => Err(PatternProblem::Invalid(e.to_string())),
        },
        Err(e) => Err(PatternProblem::Invalid(e.to_string())),
    }
}

/// A find's `name.regexp` as the index uses it.
pub(super) enum NamePattern {
    /// Absent or `""`: every name.
    Every,
    /// With what it is charged against [`REGEX_BUDGET`].
    Compiled(Arc<Regex>, usize),
    /// Not used as written: treated as matching every name (spurious re-syncs rather than a
    /// stale Secret), and why.
    TreatedAsEvery(String),
    /// Does not compile: the find reads nothing (ESO fails it too), and why.
    Invalid(String),
}

/// What a find's `name.regexp` becomes when `spent` of [`REGEX_BUDGET`] is already charged,
/// `spent_here` of it by the reader's own namespace.
pub(super) fn name_pattern(re: Option<&str>, spent: usize, spent_here: usize) -> NamePattern {
    let Some(re) = re.filter(|r| !r.is_empty()) else {
        return NamePattern::Every;
    };
    match compile_pattern(re) {
        Ok((_, cost)) if spent_here + cost > REGEX_NAMESPACE_BUDGET => {
            NamePattern::TreatedAsEvery(format!(
                "find.name.regexp: the patterns of this namespace's ExternalSecrets together passed their {} MiB share of the budget: treated as matching every name",
                REGEX_NAMESPACE_BUDGET >> 20
            ))
        }
        Ok((compiled, cost)) if spent + cost <= REGEX_BUDGET => {
            NamePattern::Compiled(Arc::new(compiled), cost)
        }
        Ok(_) => NamePattern::TreatedAsEvery(format!(
            "find.name.regexp: the patterns of all ExternalSecrets together passed their {} MiB budget: treated as matching every name",
            REGEX_BUDGET >> 20
        )),
        Err(PatternProblem::TooLarge) => NamePattern::TreatedAsEvery(format!(
            "find.name.regexp ({} bytes) compiles past {} KiB: treated as matching every name",
            re.len(),
            REGEX_SIZE_LIMIT / 1024
        )),
        Err(PatternProblem::Invalid(e)) => NamePattern::Invalid(format!(
            "find.name.regexp does not compile (ESO cannot use it either): {}",
            e.lines().last().unwrap_or_default()
        )),
    }
}

#[derive(Debug)]
pub(super) struct ScanSet {
    /// `None` when the patterns together exceed [`REGEX_SET_SIZE_LIMIT`]: they are then
    /// among `others`, each tested on its own.
    pub(super) set: Option<regex::RegexSet>,
    /// `scans` index of each pattern in `set`.
    pub(super) entries: Vec<usize>,
    /// `scans` entries tested one by one.
    pub(super) others: Vec<usize>,
}

impl Index {
    pub(super) fn scan_set(&self) -> Arc<ScanSet> {
        let mut cached = self.scan_set.lock();
        if let Some(s) = cached.as_ref() {
            return s.clone();
        }
        let (mut patterns, mut entries, mut others) = (Vec::new(), Vec::new(), Vec::new());
        for (i, e) in self.scans.iter().enumerate() {
            match &e.test {
                Test::Regex(re) => {
                    patterns.push(re.as_str().to_owned());
                    entries.push(i);
                }
                _ => others.push(i),
            }
        }
        // Each pattern compiled on its own within its limit; together they may not.
        let set = match regex::RegexSetBuilder::new(&patterns)
            .size_limit(REGEX_SET_SIZE_LIMIT)
            .dfa_size_limit(1 << 20)
            .build()
        {
            Ok(set) => Some(set),
            Err(e) => {
                tracing::warn!(patterns = patterns.len(), error = %e, "find.name.regexp patterns too large to combine; matching them one by one");
                others.append(&mut entries);
                None
            }
        };
        let s = Arc::new(ScanSet {
            set,
            entries,
            others,
        });
        *cached = Some(s.clone());
        s
    }
}

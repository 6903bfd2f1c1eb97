//! Evaluating a change: the candidates the filing finds for its name, each checked against its
//! store's service, region, account and namespace conditions, and what of its item it reads.

use std::collections::HashSet;

use super::filing::pin_of;
use super::patterns::compile_pattern;
use super::{
    ArnScope, AwsProvider, AwsService, Binding, Condition, Entry, Index, Lookup, Match, NearMiss,
    Reader, Reads, Reference, Selector, Store, Target, Test, normalize,
};
use crate::event::{Change, Effect, Operation, Service};

impl Index {
    /// The resources to force-sync for a change, and those that match but cannot be forced.
    pub fn lookup(&self, change: &Change) -> Lookup {
        self.evaluate(change, false)
    }

    /// `lookup` plus the near misses: references to the same name whose store, region,
    /// service, account or namespace did not fit, or that the operation does not reach.
    pub fn explain(&self, change: &Change) -> Lookup {
        let mut l = self.evaluate(change, true);
        l.rejected = self.rejected().cloned().collect();
        l.rejected.sort_by(|a, b| {
            (&a.reader.namespace, &a.reader.name, &a.reference).cmp(&(
                &b.reader.namespace,
                &b.reader.name,
                &b.reference,
            ))
        });
        l
    }

    fn evaluate(&self, change: &Change, misses: bool) -> Lookup {
        let mut evaluation = Evaluation {
            index: self,
            change,
            effect: change.operation.effect(),
            service: match change.service {
                Service::ParameterStore => AwsService::ParameterStore,
                Service::SecretsManager => AwsService::SecretsManager,
            },
            misses,
            seen: HashSet::new(),
            out: Lookup::default(),
        };
        let name = normalize(&change.name);
        evaluation.names(name);
        evaluation.paths(name);
        evaluation.scans();
        evaluation.out
    }

    /// Why a matched reader must not be patched, if so.
    pub(super) fn unforceable(&self, reader: &Reader) -> Option<String> {
        if let Some(why) = &reader.unforceable {
            return Some(why.clone());
        }
        (!reader.generators.is_empty() && !self.config.force_generators).then(|| {
            format!(
                "takes values from generators ({}): a force-sync would regenerate them; --force-generators allows it",
                reader.generators.join(", ")
            )
        })
    }

    /// The AWS provider a binding reads through, and how to name it; `Err` says why none.
    pub(super) fn provider<'a>(
        &'a self,
        binding: &'a Binding,
    ) -> Result<(&'a AwsProvider, String), String> {
        match binding {
            Binding::Inline(aws) => Ok((aws.as_ref(), "backend".to_owned())),
            Binding::Store(id) => match self.stores.get(id) {
                None => Err(format!("{id} does not exist")),
                Some(Store { aws: None, .. }) => Err(format!("{id} is not an AWS store")),
                Some(Store {
                    controller: Some(c),
                    ..
                }) if !self.config.controller_classes.is_empty()
                    && !self.config.controller_classes.contains(c) =>
                {
                    Err(format!(
                        "{id} names controller class {c:?}, which the cluster's ESO does not serve (--eso-controller-class)"
                    ))
                }
                Some(Store { aws: Some(aws), .. }) => Ok((aws, id.to_string())),
            },
        }
    }

    /// Whether the provider reads from where the change happened; `Err` says what differed.
    fn scope(
        &self,
        aws: &AwsProvider,
        label: &str,
        arn: Option<&ArnScope>,
        namespace: &str,
        change: &Change,
    ) -> Result<String, String> {
        // An ARN names its own region and account (another account's item, shared by a
        // resource policy or RAM, is read through the store's role).
        let region = arn.map(|a| &a.region).or(aws.region.as_ref());
        if let Some(r) = region
            && *r != change.region
        {
            let whose = if arn.is_some() {
                "the key's ARN"
            } else {
                label
            };
            return Err(format!(
                "{whose} reads region {r}, the change is in {}",
                change.region
            ));
        }
        let account = arn
            .map(|a| &a.account)
            .or(aws.account.as_ref())
            .or(self.config.eso_account.as_ref());
        if let (Some(a), Some(b)) = (account, &change.account)
            && a != b
        {
            let whose = match (arn, &aws.account) {
                (Some(_), _) => "the key's ARN names".to_owned(),
                (None, Some(_)) => format!("{label} assumes a role in"),
                (None, None) => format!("{label} reads with ESO's credentials, in"),
            };
            return Err(format!("{whose} account {a}, the change is in {b}"));
        }
        if !aws.conditions.is_empty()
            && !aws
                .conditions
                .iter()
                .any(|c| condition_allows(c, namespace))
        {
            return Err(format!(
                "{label} conditions do not allow namespace {namespace}"
            ));
        }
        Ok(format!("{label} ({})", aws.describe()))
    }
}

/// One change being evaluated, and what it found so far.
struct Evaluation<'a> {
    index: &'a Index,
    change: &'a Change,
    effect: Effect,
    /// The change's service, as stores name it.
    service: AwsService,
    /// Whether near misses are kept (`explain`).
    misses: bool,
    /// Each target is reported once, for the first reference that reaches it.
    seen: HashSet<Target>,
    out: Lookup,
}

impl Evaluation<'_> {
    /// The references filed under the change's (normalised) name.
    fn names(&mut self, name: &str) {
        let index = self.index;
        if let Some(entries) = index.by_name.get(name) {
            for e in entries {
                self.consider(e, how_key(e.reads));
            }
        }
    }

    /// The finds filed under an ancestor path of the name that reach it.
    fn paths(&mut self, name: &str) {
        let index = self.index;
        // Every ancestor path of the name: "", "a", "a/b" for "a/b/c".
        let mut ancestors = vec![""];
        ancestors.extend(name.match_indices('/').map(|(i, _)| &name[..i]));
        let parent = ancestors.last().copied();
        for a in ancestors {
            if let Some(entries) = index.by_path.get(a) {
                for e in entries {
                    let direct = Some(a) == parent;
                    if matches!(e.test, Test::Path { recursive, .. } if recursive || direct) {
                        self.consider(e, "path");
                    }
                }
            }
        }
    }

    /// The scan list: each entry the combined set leaves out, then those its regexps match.
    fn scans(&mut self) {
        let index = self.index;
        let scans = index.scan_set();
        for &i in &scans.others {
            let e = &index.scans[i];
            self.consider(
                e,
                if e.reads == Reads::FindTags {
                    "tags"
                } else {
                    "find"
                },
            );
        }
        if let Some(set) = &scans.set {
            for i in set.matches(&self.change.name).iter() {
                self.consider(&index.scans[scans.entries[i]], "name regexp");
            }
        }
    }

    /// One candidate, found as `how`: a target, an unforceable match, a near miss, or nothing.
    fn consider(&mut self, entry: &Entry, how: &str) {
        let Some(reader) = self.index.readers.get(&entry.key) else {
            return;
        };
        // A name the entry's own test refuses is not the same name: not even a near miss.
        if !name_test(&entry.test, self.change, self.effect) {
            return;
        }
        let reference = &reader.references[entry.reference as usize];
        match self.verdict(entry, reader, reference) {
            Ok(scope) => {
                let target = self.index.target_of(&entry.key, reader);
                if !self.seen.insert(target.clone()) {
                    return;
                }
                let owner_note = self
                    .index
                    .untrusted_owner(&entry.key)
                    .map(|why| format!("; {why}"))
                    .unwrap_or_default();
                let m = Match {
                    uid: self.index.target_uid(&entry.key, reader),
                    target,
                    reader: (*entry.key).clone(),
                    reference: reference.path.to_string(),
                    reason: format!("{how} via {scope}{}{owner_note}", self.tags_note(entry)),
                    sync_windows: reader.sync_windows.as_deref().cloned(),
                };
                match self.index.unforceable(reader) {
                    Some(why) => self.out.unforceable.push(Match { reason: why, ..m }),
                    None => self.out.targets.push(m),
                }
            }
            Err(why) if self.misses => self.out.near_misses.push(NearMiss {
                reader: (*entry.key).clone(),
                reference: reference.path.to_string(),
                reason: why,
            }),
            Err(_) => {}
        }
    }

    /// The scope through which the entry reads the change; `Err` says what differed.
    fn verdict(
        &self,
        entry: &Entry,
        reader: &Reader,
        reference: &Reference,
    ) -> Result<String, String> {
        self.index
            .provider(&reference.binding)
            .and_then(|(aws, label)| {
                if entry.service != self.service {
                    return Err(format!(
                        "{label} reads {} here, the change is in {}",
                        entry.service.as_str(),
                        self.service.as_str()
                    ));
                }
                self.reaches(entry.reads, aws, reference)?;
                self.index.scope(
                    aws,
                    &label,
                    entry.arn.as_deref(),
                    &reader.namespace,
                    self.change,
                )
            })
            .and_then(|scope| match reader.writes_nothing {
                true => Err("target.creationPolicy: None: ESO writes no Secret".to_owned()),
                false => Ok(scope),
            })
    }

    /// Whether the change alters what the reference reads of its item: the operation's
    /// effect first, then what the event says of the versions, labels and stages it touched.
    /// `Err` says why not (a reader that would re-sync to the same value).
    fn reaches(
        &self,
        reads: Reads,
        aws: &AwsProvider,
        reference: &Reference,
    ) -> Result<(), String> {
        let change = self.change;
        let op = change.operation;
        let touched = &change.touched;
        let pin = match (&reference.selector, reads) {
            (Selector::Key(k), Reads::Pinned | Reads::Label | Reads::Stage) => pin_of(aws, k),
            _ => None,
        };
        // A reader of a version that did not exist until this change wrote it.
        if reads == Reads::Pinned
            && let Some(p) = &pin
        {
            let written = match change.service {
                Service::ParameterStore => p
                    .parse::<u64>()
                    .ok()
                    .zip(touched.number)
                    .is_some_and(|(p, n)| p == n),
                Service::SecretsManager => touched.id.as_deref() == Some(p.as_str()),
            };
            if written {
                return Ok(());
            }
        }
        let op_name = op.as_str();
        if !reads.cares(self.effect) {
            return Err(format!(
                "reads {}: {op_name} does not change it",
                reads.describe()
            ));
        }
        let pinned = pin.as_deref().unwrap_or("?");
        match (op, reads) {
            (Operation::Create, Reads::Label) => Err(format!(
                "reads label {pinned}: a new parameter has no label"
            )),
            (Operation::Create, Reads::Pinned)
                if pin
                    .as_ref()
                    .is_some_and(|p| p.parse::<u64>().ok() != Some(1)) =>
            {
                Err(format!(
                    "reads version {pinned}: a new parameter has version 1 only"
                ))
            }
            (Operation::CreateSecret, Reads::Stage) if pin.is_some() => Err(format!(
                "reads stage {pinned}: a new secret's one version is AWSCURRENT"
            )),
            (Operation::CreateSecret, Reads::Pinned) if pin.is_some() => match &touched.id {
                Some(id) => Err(format!(
                    "reads version id {pinned}: the new secret's is {id}"
                )),
                None => Ok(()),
            },
            (
                Operation::LabelParameterVersion | Operation::UnlabelParameterVersion,
                Reads::Label,
            ) => match (&touched.labels, &pin) {
                (Some(moved), Some(p)) if !moved.contains(p) => Err(format!(
                    "reads label {p}: {op_name} moved {} only",
                    list(moved)
                )),
                _ => Ok(()),
            },
            // DescribeSecret answers for a secret scheduled for deletion, tags included.
            (Operation::DeleteSecret, Reads::Tags) if touched.scheduled == Some(true) => {
                Err("reads the tags: a scheduled deletion leaves them readable".to_owned())
            }
            (Operation::RestoreSecret, Reads::Tags) => Err(
                "reads the tags: they stayed readable while the deletion was scheduled".to_owned(),
            ),
            (_, Reads::Stage) if change.service == Service::SecretsManager => {
                match (&touched.labels, &pin) {
                    (Some(moved), Some(p)) if touched.stage_moved(p) == Some(false) => Err(
                        format!("reads stage {p}: {op_name} moved {} only", list(moved)),
                    ),
                    _ => Ok(()),
                }
            }
            (_, Reads::Latest | Reads::FindValues | Reads::FindTags)
                if change.service == Service::SecretsManager
                    && touched.stage_moved("AWSCURRENT") == Some(false) =>
            {
                Err(format!(
                    "reads AWSCURRENT: {op_name} moved {} only",
                    list(touched.labels.as_deref().unwrap_or_default())
                ))
            }
            _ => Ok(()),
        }
    }

    /// What a `find.tags` match adds to its reason when the change is not a tag change.
    fn tags_note(&self, entry: &Entry) -> &'static str {
        if entry.reads == Reads::FindTags && self.effect != Effect::Tags {
            "; find.tags cannot be decided from an event, so any change in scope matches"
        } else {
            ""
        }
    }
}

/// The match reason's first word for a key reference.
fn how_key(reads: Reads) -> &'static str {
    match reads {
        Reads::Latest | Reads::FindValues | Reads::FindTags => "key",
        Reads::Pinned => "key (pinned version)",
        Reads::Label => "key (label)",
        Reads::Stage => "key (stage)",
        Reads::Tags => "key (tags)",
    }
}

/// The entry's own name check (the probe found it under the normalised name or a path).
fn name_test(test: &Test, change: &Change, effect: Effect) -> bool {
    match test {
        Test::Normalized | Test::Always => true,
        Test::Exact(n) => **n == *change.name,
        Test::Path { regex, .. } => regex.as_ref().is_none_or(|r| r.is_match(&change.name)),
        // Checked by the RegexSet when there is one; cheap again for the few it matched.
        Test::Regex(r) => r.is_match(&change.name),
        Test::SmFind {
            filter,
            regex,
            prefix,
        } => {
            let name = change.name.as_str();
            let listed = |n: &str| regex.as_ref().is_none_or(|r| r.is_match(n));
            // Behind a prefix, a listed name is read as `prefix + name`: only its coming or
            // going changes what the find reads, not its value.
            let direct = (prefix.is_empty() || effect == Effect::Existence)
                && filter.as_deref().is_none_or(|f| sm_name_filter(f, name))
                && listed(name);
            let doubled = !prefix.is_empty()
                && name
                    .strip_prefix(&**prefix)
                    .is_some_and(|rest| !rest.is_empty() && listed(rest));
            direct || doubled
        }
    }
}

/// Labels or stages for a reason: `a, b`.
fn list(items: &[String]) -> String {
    items.join(", ")
}

/// Secrets Manager's `name` filter: a case-sensitive prefix; a leading `!` negates.
fn sm_name_filter(filter: &str, name: &str) -> bool {
    match filter.strip_prefix('!') {
        Some(f) => !name.starts_with(f),
        None => name.starts_with(filter),
    }
}

fn condition_allows(c: &Condition, namespace: &str) -> bool {
    c.has_selector
        || c.namespaces.iter().any(|n| n == namespace)
        || c.namespace_regexes
            .iter()
            .any(|r| compile_pattern(r).is_ok_and(|(re, _)| re.is_match(namespace)))
}

//! The use case every door calls: changes in, force-syncs applied, a report out.
//!
//! A door (the webhook, the catch-up sweep) turns its input into changes, this module does
//! the rest, and the door turns the [`Report`] into its own answer (an HTTP status, counters):
//!
//! ```text
//! changes ─► plan (pure: lookup, unforceable readers, closed sync windows)
//!         ─► apply (patches through the trigger, deferrals, confirmations, Events)
//!         ─► Report
//! ```
//!
//! Nothing here knows HTTP, SNS headers or SQS: a verified SNS notification arrives as its
//! MessageId, its Timestamp and its Message.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use time::OffsetDateTime;

use crate::cluster::confirm::{Confirmations, Waiter};
use crate::cluster::events::Events;
use crate::cluster::patch::{Outcome, Trigger};
use crate::cluster::watch::Watches;
use crate::dedupe::Dedupe;
use crate::event::{self, Change, Decoded, EventError};
use crate::index::{Index, Match, SyncWindows, Target};
use crate::metrics::{ChangeLabels, Kind, Metrics};

/// Why patches are sent: the SNS MessageId of a notification, or this for the sweep.
pub const SWEEP_CAUSE: &str = "sweep";

/// One target to force-sync, and the change that reached it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub target: Target,
    /// The changed name that reached the target (the first one, when several did).
    pub parameter: Arc<str>,
    /// The change happened before this (the SNS Timestamp, or the parameter's
    /// LastModifiedDate for the sweep): the refresh latency users feel starts here.
    pub since: OffsetDateTime,
    /// The reference that matched; `None` for the sweep, which finds stale readers by name.
    pub matched: Option<Match>,
}

/// Why a matched reader is reported instead of patched.
#[derive(Debug, Clone)]
pub enum Unforceable {
    /// A force-sync cannot refresh it, or must not (`refreshPolicy: CreatedOnce`, generators
    /// without `--force-generators`, ...): the match's reason says which.
    Ignores { matched: Match, parameter: Arc<str> },
    /// Its sync windows never open within a year.
    WindowNeverOpens(Planned),
}

/// What to do about some changes, decided from the index and the clock alone (no I/O).
#[derive(Debug, Clone)]
pub struct Plan {
    /// An SNS MessageId, or [`SWEEP_CAUSE`].
    pub cause: Arc<str>,
    /// How many changes the plan covers.
    pub changes: usize,
    /// Every change happened before this: a patch sent after it covers them all.
    pub changed_before: Option<OffsetDateTime>,
    /// To patch now, each target once.
    pub targets: Vec<Planned>,
    /// Inside a closed ESO sync window: patched when it opens (the annotation would bypass a
    /// window the user set to keep the Secret still).
    pub deferred: Vec<(Planned, OffsetDateTime)>,
    pub unforceable: Vec<Unforceable>,
    /// Whether a failure anywhere brings the whole plan back (a notification is delivered
    /// again) rather than only the failed targets (the sweep keeps what it has forced).
    pub retried_whole: bool,
}

/// A reader the sweep found behind its parameter.
#[derive(Debug, Clone)]
pub struct Stale {
    pub target: Target,
    pub parameter: Arc<str>,
    /// The parameter's LastModifiedDate.
    pub modified: OffsetDateTime,
    pub sync_windows: Option<SyncWindows>,
}

/// Plans the force-syncs for `changes`, which all happened before `changed_before`.
pub fn plan(
    index: &Index,
    cause: Arc<str>,
    changes: &[Change],
    changed_before: OffsetDateTime,
    now: OffsetDateTime,
) -> Plan {
    let mut matched: Vec<(Planned, Option<SyncWindows>)> = Vec::new();
    let mut unforceable = Vec::new();
    for c in changes {
        let parameter: Arc<str> = c.name.as_str().into();
        let found = index.lookup(c);
        unforceable.extend(found.unforceable.into_iter().map(|m| Unforceable::Ignores {
            matched: m,
            parameter: parameter.clone(),
        }));
        for m in found.targets {
            if matched.iter().any(|(p, _)| p.target == m.target) {
                continue;
            }
            let windows = m.sync_windows.clone();
            let planned = Planned {
                target: m.target.clone(),
                parameter: parameter.clone(),
                since: changed_before,
                matched: Some(m),
            };
            matched.push((planned, windows));
        }
    }
    let mut plan = Plan {
        cause,
        changes: changes.len(),
        changed_before: Some(changed_before),
        targets: Vec::new(),
        deferred: Vec::new(),
        unforceable,
        retried_whole: true,
    };
    plan.hold_closed_windows(matched, now);
    plan
}

/// Plans the force-syncs of the readers the sweep found stale.
pub fn plan_stale(stale: Vec<Stale>, now: OffsetDateTime) -> Plan {
    let newest = stale.iter().map(|s| s.modified).max();
    let mut plan = Plan {
        cause: SWEEP_CAUSE.into(),
        changes: stale.len(),
        changed_before: newest,
        targets: Vec::new(),
        deferred: Vec::new(),
        unforceable: Vec::new(),
        retried_whole: false,
    };
    let planned = stale
        .into_iter()
        .map(|s| {
            let p = Planned {
                target: s.target,
                parameter: s.parameter,
                since: s.modified,
                matched: None,
            };
            (p, s.sync_windows)
        })
        .collect();
    plan.hold_closed_windows(planned, now);
    plan
}

impl Plan {
    /// Targets matched, whatever becomes of them: patched, deferred, or held by a window that
    /// never opens (readers that ignore force-sync are not targets).
    pub fn matched(&self) -> usize {
        let never_opens = self
            .unforceable
            .iter()
            .filter(|u| matches!(u, Unforceable::WindowNeverOpens(_)))
            .count();
        self.targets.len() + self.deferred.len() + never_opens
    }

    /// Targets inside a closed sync window wait for its opening; the rest are patched now.
    fn hold_closed_windows(
        &mut self,
        planned: Vec<(Planned, Option<SyncWindows>)>,
        now: OffsetDateTime,
    ) {
        for (p, windows) in planned {
            match windows.filter(|w| !w.open_at(now)) {
                None => self.targets.push(p),
                Some(w) => match w.next_open(now) {
                    Some(at) => self.deferred.push((p, at)),
                    None => self.unforceable.push(Unforceable::WindowNeverOpens(p)),
                },
            }
        }
    }
}

/// What became of a plan.
#[derive(Debug, Clone)]
pub struct Applied {
    pub changes: usize,
    /// Each target patched now, with how its patch ended.
    pub outcomes: Vec<(Target, Outcome)>,
    pub deferred: usize,
    pub unforceable: usize,
}

impl Applied {
    /// `target: why` for each patch that failed.
    pub fn failures(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter_map(|(t, o)| match o {
                Outcome::Failed(why) => Some(format!("{t}: {why}")),
                _ => None,
            })
            .collect()
    }

    /// The result as the metrics and the webhook's answer name it.
    pub fn result(&self) -> &'static str {
        if self.outcomes.iter().any(|(_, o)| !o.is_ok()) {
            "failed"
        } else if self.outcomes.is_empty() && self.deferred > 0 {
            "deferred"
        } else if self.outcomes.is_empty() {
            "no_match"
        } else if self.outcomes.iter().all(|(_, o)| *o == Outcome::DryRun) {
            "dry_run"
        } else {
            "applied"
        }
    }

    /// The targets whose patch was applied now.
    pub fn patched(&self) -> impl Iterator<Item = &Target> {
        self.outcomes
            .iter()
            .filter(|(_, o)| *o == Outcome::Applied)
            .map(|(t, _)| t)
    }
}

/// What became of one verified SNS notification.
#[derive(Debug)]
pub enum Report {
    /// Its MessageId was applied before (an SNS or SQS redelivery): nothing patched.
    Duplicate,
    /// An event type this service does not act on.
    Ignored { kind: &'static str },
    /// The Message is not an event this service can read.
    Malformed(EventError),
    /// The watches are not in sync: an incomplete index could miss a resource, so the message
    /// must come again.
    NotReady(String),
    /// Planned and applied; [`Applied::failures`] says whether it must come again.
    Applied(Applied),
}

/// What the use case is built from.
pub struct Parts {
    pub index: Arc<RwLock<Index>>,
    pub watches: Arc<Watches>,
    pub trigger: Trigger,
    pub events: Events,
    /// Follows applied patches to the operator's outcome (none in a dry run).
    pub confirmations: Option<Confirmations>,
    /// MessageIds already applied, so redeliveries patch nothing twice.
    pub applied: Dedupe,
    /// `--accept-plain-format`.
    pub accept_plain: bool,
    pub metrics: Arc<Metrics>,
}

pub struct Resync {
    parts: Parts,
    /// Unhandled event types already logged (the log line appears once per type).
    ignored_logged: Mutex<HashSet<String>>,
}

impl Resync {
    pub fn new(parts: Parts) -> Self {
        Self {
            parts,
            ignored_logged: Mutex::new(HashSet::new()),
        }
    }

    /// Whether every watch has its initial list: an index short of one could miss a reader.
    pub fn ready(&self) -> bool {
        self.parts.watches.ready()
    }

    /// The kinds whose watch is not in sync.
    pub fn unsynced(&self) -> Vec<&'static str> {
        self.parts.watches.unsynced()
    }

    /// Updates the gauges read at scrape time.
    pub fn export(&self, metrics: &Metrics) {
        self.parts.watches.export(metrics);
        metrics.dedupe_ids.set(self.parts.applied.len() as i64);
    }

    /// A verified SNS Notification: `message_id` and `sent` (its Timestamp) as signed, and
    /// `message`, the AWS event it carries.
    pub async fn notification(
        &self,
        message_id: &str,
        sent: OffsetDateTime,
        message: &str,
    ) -> Report {
        let p = &self.parts;
        if p.applied.contains(message_id) {
            return Report::Duplicate;
        }
        let changes = match event::decode_delivered(message, p.accept_plain) {
            Ok(Decoded::Changes(c)) => c,
            Ok(Decoded::Ignored { kind, detail }) => {
                self.ignored(kind, &detail);
                return Report::Ignored { kind };
            }
            Err(e) => return Report::Malformed(e),
        };
        if !p.watches.ready() {
            return Report::NotReady(format!(
                "watches not in sync: {}",
                p.watches.unsynced().join(", ")
            ));
        }
        for c in &changes {
            p.metrics
                .changes
                .get_or_create(&ChangeLabels {
                    service: c.service.as_str(),
                    operation: c.operation.as_str(),
                })
                .inc();
        }
        let plan = plan(
            &p.index.read(),
            message_id.into(),
            &changes,
            sent,
            OffsetDateTime::now_utc(),
        );
        p.metrics.targets_matched.inc_by(plan.matched() as u64);
        let applied = self.apply(plan).await;
        if applied.failures().is_empty() {
            p.applied.insert(message_id);
            if !applied.outcomes.is_empty() {
                let lag = (OffsetDateTime::now_utc() - sent).as_seconds_f64();
                p.metrics.end_to_end.observe(lag.max(0.0));
            } else if applied.deferred == 0 {
                tracing::debug!(message_id, parameters = ?changes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), unforceable = applied.unforceable, "no resource to force-sync for the changed parameter");
            }
        }
        Report::Applied(applied)
    }

    /// Carries out a plan: reports what cannot be patched, defers what waits for a window,
    /// patches the rest and, for each applied patch, posts an Event and follows it to the
    /// operator's outcome. Resolves when every patch has ended.
    pub async fn apply(&self, plan: Plan) -> Applied {
        let p = &self.parts;
        let cause = &*plan.cause;
        for u in &plan.unforceable {
            p.metrics.unforceable.inc();
            match u {
                Unforceable::Ignores {
                    matched: m,
                    parameter,
                } => {
                    tracing::warn!(message_id = cause, parameter = &**parameter, target = %m.target, reference = %m.reference, reason = %m.reason, "matched, but this resource ignores force-sync: not patched");
                    p.events.not_forceable(m, parameter, cause);
                }
                Unforceable::WindowNeverOpens(t) => {
                    tracing::warn!(message_id = cause, parameter = &*t.parameter, target = %t.target, "sync window closed and never opens within a year: not patched");
                }
            }
        }
        for (t, opens) in &plan.deferred {
            tracing::info!(message_id = cause, parameter = &*t.parameter, target = %t.target, opens = %opens, "sync window closed: force-sync deferred to its opening");
            p.metrics.deferred.inc();
            p.trigger.defer(t.target.clone(), *opens, Some(t.since));
        }
        for t in &plan.targets {
            match &t.matched {
                Some(m) => {
                    tracing::info!(message_id = cause, parameter = &*t.parameter, target = %m.target, reference = %m.reference, reason = %m.reason, "matched")
                }
                None => {
                    tracing::info!(target = %t.target, last_modified = %t.since, "stale: parameter changed after the last sync; force-syncing")
                }
            }
        }
        let deferred = plan.deferred.len();
        let targets: Vec<Target> = plan.targets.iter().map(|t| t.target.clone()).collect();
        let outcomes = if targets.is_empty() {
            Vec::new()
        } else {
            p.trigger.force_sync(&targets, plan.changed_before).await
        };
        // One Event and one followed outcome per target and cause: a plan retried whole
        // reports its applied patches on the retry that succeeds (they cover it, so it sends
        // no second patch), not on each attempt.
        if !plan.retried_whole || outcomes.iter().all(Outcome::is_ok) {
            for (t, outcome) in plan.targets.iter().zip(&outcomes) {
                if *outcome != Outcome::Applied {
                    continue;
                }
                if let Some(m) = &t.matched {
                    p.events.force_sync(m, &t.parameter, cause);
                }
                // The answer does not wait for the outcome: applied means the patch is in.
                if let Some(c) = &p.confirmations {
                    c.attach(
                        &t.target,
                        Waiter {
                            message_id: plan.cause.clone(),
                            parameter: t.parameter.clone(),
                            since: t.since,
                        },
                    );
                }
            }
        }
        Applied {
            changes: plan.changes,
            outcomes: targets.into_iter().zip(outcomes).collect(),
            deferred,
            unforceable: plan.unforceable.len(),
        }
    }

    fn ignored(&self, kind: &'static str, detail: &str) {
        self.parts
            .metrics
            .events_ignored
            .get_or_create(&Kind { kind })
            .inc();
        // Clipped: the detail quotes the event (a `source` may be 500 KiB long).
        let detail = crate::text::truncate(detail, 160).to_owned();
        let mut logged = self.ignored_logged.lock();
        if logged.len() < 1000 && logged.insert(detail.clone()) {
            tracing::info!(kind, detail = %detail, "ignoring messages of this type (logged once per type)");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use time::macros::datetime;

    use super::*;
    use crate::event::{Operation, Service};
    use crate::index::{Reader, Store, TargetKind};

    const T0: OffsetDateTime = datetime!(2026-12-01 23:00 UTC);

    fn index() -> Index {
        let mut idx = Index::new();
        idx.apply_store(
            Store::from_object(
                &json!({"apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
                    "metadata": {"namespace": "app", "name": "ps"},
                    "spec": {"provider": {"aws": {"service": "ParameterStore", "region": "us-east-1"}}}}),
                false,
            )
            .unwrap(),
        );
        idx
    }

    /// An ExternalSecret in `app` reading `keys` through the store `ps`, with `extra` merged
    /// into its spec, synced once (ESO syncs any resource once, whatever its policy).
    fn reader(name: &str, keys: &[&str], extra: Value) -> Reader {
        let mut spec = json!({
            "secretStoreRef": {"name": "ps", "kind": "SecretStore"},
            "data": keys.iter().enumerate().map(|(i, k)| json!({"secretKey": format!("k{i}"), "remoteRef": {"key": k}})).collect::<Vec<_>>()
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        Reader::from_external_secret(&json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"namespace": "app", "name": name}, "spec": spec,
            "status": {"syncedResourceVersion": "1-abc"}
        }))
        .unwrap()
    }

    fn change(name: &str) -> Change {
        Change {
            service: Service::ParameterStore,
            region: "us-east-1".into(),
            account: None,
            name: name.into(),
            operation: Operation::Update,
            touched: Default::default(),
        }
    }

    fn names(planned: &[Planned]) -> Vec<&str> {
        planned.iter().map(|p| p.target.name.as_str()).collect()
    }

    #[test]
    fn a_reader_of_two_changed_names_is_planned_once_with_the_first() {
        let mut idx = index();
        idx.apply_reader(reader("both", &["/a", "/b"], json!({})));
        idx.apply_reader(reader("only-b", &["/b"], json!({})));
        let plan = plan(&idx, "m-1".into(), &[change("/a"), change("/b")], T0, T0);
        assert_eq!(names(&plan.targets), ["both", "only-b"]);
        assert_eq!(&*plan.targets[0].parameter, "/a");
        assert_eq!(&*plan.targets[1].parameter, "/b");
        assert!(
            plan.targets
                .iter()
                .all(|t| t.since == T0 && t.matched.is_some())
        );
        assert_eq!(
            (plan.changes, plan.matched(), plan.changed_before),
            (2, 2, Some(T0))
        );
        assert!(plan.deferred.is_empty() && plan.unforceable.is_empty() && plan.retried_whole);
    }

    #[test]
    fn a_closed_window_defers_to_its_opening_and_one_that_never_opens_is_unforceable() {
        let mut idx = index();
        // Closed from 22:00 for 8 hours on weekdays: 2026-12-01 (a Tuesday) 23:00 is inside.
        let deny = json!({"syncWindows": {"kind": "deny", "windows": [{"schedule": "0 22 * * 1-5", "duration": "8h"}]}});
        idx.apply_reader(reader("held", &["/k"], deny));
        // Allowed only on 30 February: never.
        let never = json!({"syncWindows": {"kind": "allow", "windows": [{"schedule": "0 0 30 2 *", "duration": "1h"}]}});
        idx.apply_reader(reader("never", &["/k"], never));
        idx.apply_reader(reader("free", &["/k"], json!({})));
        let plan = plan(&idx, "m-2".into(), &[change("/k")], T0, T0);
        assert_eq!(names(&plan.targets), ["free"]);
        assert_eq!(plan.deferred.len(), 1);
        let (held, opens) = &plan.deferred[0];
        assert_eq!(held.target.name, "held");
        // The first second after the window's end.
        assert_eq!(*opens, datetime!(2026-12-02 06:00:01 UTC));
        assert!(
            matches!(&plan.unforceable[..], [Unforceable::WindowNeverOpens(p)] if p.target.name == "never")
        );
        assert_eq!(plan.matched(), 3);
    }

    #[test]
    fn a_reader_that_ignores_force_sync_is_reported_not_planned() {
        let mut idx = index();
        idx.apply_reader(reader(
            "once",
            &["/k"],
            json!({"refreshPolicy": "CreatedOnce"}),
        ));
        let plan = plan(&idx, "m-3".into(), &[change("/k")], T0, T0);
        assert!(plan.targets.is_empty() && plan.deferred.is_empty());
        assert!(matches!(&plan.unforceable[..],
            [Unforceable::Ignores { matched, parameter }] if matched.target.name == "once" && &**parameter == "/k"));
        assert_eq!(plan.matched(), 0);
    }

    #[test]
    fn the_sweep_plans_each_stale_reader_behind_the_newest_change() {
        let target = |name: &str| Target {
            kind: TargetKind::ExternalSecret,
            namespace: "app".into(),
            name: name.into(),
        };
        let stale = |name: &str, at: OffsetDateTime| Stale {
            target: target(name),
            parameter: "/k".into(),
            modified: at,
            sync_windows: None,
        };
        let earlier = T0 - time::Duration::HOUR;
        let plan = plan_stale(vec![stale("a", earlier), stale("b", T0)], T0);
        assert_eq!(names(&plan.targets), ["a", "b"]);
        assert_eq!(plan.targets[0].since, earlier);
        assert_eq!(plan.changed_before, Some(T0));
        assert_eq!(&*plan.cause, SWEEP_CAUSE);
        assert!(!plan.retried_whole && plan.targets.iter().all(|t| t.matched.is_none()));
    }

    #[test]
    fn results_name_what_became_of_the_plan() {
        let t = Target {
            kind: TargetKind::ExternalSecret,
            namespace: "app".into(),
            name: "a".into(),
        };
        let applied = |outcomes: Vec<Outcome>, deferred| Applied {
            changes: 1,
            outcomes: outcomes.into_iter().map(|o| (t.clone(), o)).collect(),
            deferred,
            unforceable: 0,
        };
        assert_eq!(applied(vec![], 0).result(), "no_match");
        assert_eq!(applied(vec![], 1).result(), "deferred");
        assert_eq!(
            applied(vec![Outcome::Applied, Outcome::Gone], 0).result(),
            "applied"
        );
        assert_eq!(applied(vec![Outcome::DryRun], 0).result(), "dry_run");
        let failed = applied(vec![Outcome::Applied, Outcome::Failed("409".into())], 0);
        assert_eq!(failed.result(), "failed");
        assert_eq!(failed.failures(), ["ExternalSecret app/a: 409"]);
        assert_eq!(failed.patched().count(), 1);
    }
}

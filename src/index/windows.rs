//! ESO's sync windows (`spec.syncWindows`, ESO v2.7+), evaluated as ESO does. A closed window
//! holds back ESO's periodic refreshes only: an annotation change bypasses it (ESO v2.9.0
//! `shouldRefreshPeriodic` compares the metadata hash before it consults the windows). So a
//! force-sync during a closed window would refresh a Secret the user asked to keep still; the
//! service defers it to the window's opening instead.
//!
//! ESO v2.9.0 `pkg/controllers/externalsecret/externalsecret_controller.go`:
//! `isWithinSyncWindow(sched, d, at)`: `prev := sched.Next(at - d - 1s)`; active when
//! `prev <= at <= prev + d`. `allow`: a refresh needs an active window; `deny`: no active
//! window. Schedules are robfig/cron (5 fields or a descriptor, `@every D` included), in the
//! controller's time zone (UTC in its image); an unparseable one is ignored.

use std::time::Duration;

use time::OffsetDateTime;

use super::model::SyncWindows;

enum Schedule {
    Cron(Box<croner::Cron>),
    /// robfig's `@every D`: `Next(t) = t + D` (to the second).
    Every(Duration),
}

impl Schedule {
    fn parse(spec: &str) -> Option<Self> {
        let spec = spec.trim();
        if let Some(d) = spec.strip_prefix("@every ") {
            let d = humantime::parse_duration(d.trim()).ok()?;
            return Some(Self::Every(d.max(Duration::from_secs(1))));
        }
        // robfig's parser takes five fields or a descriptor; croner also takes seconds and
        // years, which ESO would refuse (and so ignore the window).
        if !spec.starts_with('@') && spec.split_whitespace().count() != 5 {
            return None;
        }
        croner::parser::CronParser::builder()
            .build()
            .parse(spec)
            .ok()
            .map(|c| Self::Cron(Box::new(c)))
    }

    /// The first activation strictly after `t`, in whole seconds.
    fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let t = t.replace_nanosecond(0).ok()?;
        match self {
            Self::Every(d) => Some(t + *d),
            Self::Cron(c) => {
                let z = jiff::Timestamp::from_second(t.unix_timestamp())
                    .ok()?
                    .to_zoned(jiff::tz::TimeZone::UTC);
                let next = c.find_next_occurrence(&z, false).ok()?;
                OffsetDateTime::from_unix_timestamp(next.timestamp().as_second()).ok()
            }
        }
    }
}

/// One parsed window.
struct Window {
    schedule: Schedule,
    duration: Duration,
}

impl Window {
    /// The window's activation that covers `at`, if one does (its start).
    fn active_since(&self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        let prev = self
            .schedule
            .next_after(at - self.duration - Duration::from_secs(1))?;
        (prev <= at && at <= prev + self.duration).then_some(prev)
    }
}

impl SyncWindows {
    fn parsed(&self) -> Vec<Window> {
        self.windows
            .iter()
            .filter_map(|(schedule, duration)| {
                Some(Window {
                    schedule: Schedule::parse(schedule)?,
                    duration: humantime::parse_duration(duration).ok()?,
                })
            })
            .collect()
    }

    /// Whether ESO would refresh the resource periodically at `at`.
    pub fn open_at(&self, at: OffsetDateTime) -> bool {
        let windows = self.parsed();
        if windows.is_empty() {
            return true;
        }
        let active = windows.iter().any(|w| w.active_since(at).is_some());
        if self.allow { active } else { !active }
    }

    /// The first moment from `from` on when the windows let a refresh through, looking at
    /// most a year ahead (`None`: never, e.g. an allow window whose schedule never fires).
    pub fn next_open(&self, from: OffsetDateTime) -> Option<OffsetDateTime> {
        let windows = self.parsed();
        let horizon = from + Duration::from_secs(366 * 24 * 3600);
        let mut t = from;
        // Each step jumps to a boundary: the next start (allow) or the latest end (deny).
        for _ in 0..10_000 {
            if t > horizon {
                return None;
            }
            if self.open_at(t) {
                return Some(t);
            }
            t = if self.allow {
                windows
                    .iter()
                    .filter_map(|w| w.schedule.next_after(t))
                    .min()?
            } else {
                windows
                    .iter()
                    .filter_map(|w| w.active_since(t).map(|s| s + w.duration))
                    .max()?
                    + Duration::from_secs(1)
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn windows(allow: bool, w: &[(&str, &str)]) -> SyncWindows {
        SyncWindows {
            allow,
            windows: w
                .iter()
                .map(|(s, d)| (s.to_string(), d.to_string()))
                .collect(),
        }
    }

    #[test]
    fn deny_holds_refreshes_inside_and_opens_at_the_end() {
        // Weekdays 22:00 for 8 hours (ESO's docs example).
        let w = windows(false, &[("0 22 * * 1-5", "8h")]);
        let tue = datetime!(2026-12-01 23:30 UTC);
        assert!(!w.open_at(tue));
        assert!(w.open_at(datetime!(2026-12-01 12:00 UTC)));
        // Both ends are inside (ESO: prev <= at <= prev + d).
        assert!(!w.open_at(datetime!(2026-12-01 22:00 UTC)));
        assert!(!w.open_at(datetime!(2026-12-02 06:00 UTC)));
        assert_eq!(w.next_open(tue), Some(datetime!(2026-12-02 06:00:01 UTC)));
    }

    #[test]
    fn allow_lets_refreshes_through_only_inside() {
        let w = windows(true, &[("@daily", "1h"), ("30 12 * * *", "30m")]);
        assert!(w.open_at(datetime!(2026-12-01 00:30 UTC)));
        assert!(w.open_at(datetime!(2026-12-01 12:45 UTC)));
        assert!(!w.open_at(datetime!(2026-12-01 10:00 UTC)));
        assert_eq!(
            w.next_open(datetime!(2026-12-01 10:00 UTC)),
            Some(datetime!(2026-12-01 12:30 UTC))
        );
        assert_eq!(
            w.next_open(datetime!(2026-12-01 13:10 UTC)),
            Some(datetime!(2026-12-02 00:00 UTC))
        );
    }

    #[test]
    fn schedules_esos_parser_refuses_are_ignored() {
        // Six fields (seconds), garbage: ESO skips them; no window left means open.
        for bad in ["0 0 22 * * 1-5", "not a cron", ""] {
            assert!(
                windows(false, &[(bad, "8h")]).open_at(datetime!(2026-12-01 23:00 UTC)),
                "{bad}"
            );
        }
        // A bad duration too.
        assert!(
            windows(false, &[("0 22 * * *", "eight hours")])
                .open_at(datetime!(2026-12-01 23:00 UTC))
        );
    }

    #[test]
    fn every_is_robfigs_constant_delay() {
        // Next(at - d - 1s) = at - 1s + D: active exactly when D <= d + 1s.
        let t = datetime!(2026-12-01 10:00 UTC);
        assert!(!windows(false, &[("@every 30m", "1h")]).open_at(t));
        assert!(windows(false, &[("@every 2h", "1h")]).open_at(t));
    }

    #[test]
    fn overlapping_deny_windows_open_after_the_last() {
        let w = windows(false, &[("0 22 * * *", "2h"), ("0 23 * * *", "3h")]);
        assert_eq!(
            w.next_open(datetime!(2026-12-01 22:30 UTC)),
            Some(datetime!(2026-12-02 02:00:01 UTC))
        );
    }
}

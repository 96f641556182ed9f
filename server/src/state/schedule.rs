//! Schedule math: when a job fires. Pure functions of the trigger, its time
//! zone, the job's anchor and an instant — no clock.
//!
//! Cron fields are read as wall-clock time in the job's zone. rota walks the
//! matching *local* times in order and turns each into an instant with
//! chrono-tz's `LocalResult`, by the rules of BRIEF §4:
//! - a local time that exists once fires at that instant;
//! - a local time that occurs twice (the hour repeated when clocks go back)
//!   fires once, at its **first** occurrence;
//! - a local time inside a spring-forward gap fires once, at the **first
//!   instant after the gap**.
//!
//! The mapping from local time to instant is therefore monotonic, and two
//! local times that land on the same instant (two gap times, or a gap time
//! and the time the gap ends on) are one slot: slots are identified by their
//! instant.
//!
//! `every` schedules count elapsed time from the job's anchor (its creation,
//! or its last schedule change); `at` fires once.

use chrono::{DateTime, Duration as ChronoDuration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::job::{Trigger, parse_cron};

/// Upper bound on local times examined per call, so no expression or zone
/// can make a call run long. A repeated hour examined second by second is
/// 3,600 candidates.
const MAX_CANDIDATES: usize = 100_000;

/// Turns a local wall-clock time into the instant it fires at (see the
/// module docs). `None` only for times beyond chrono's range.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// The first instant after the spring-forward gap that contains `local`:
/// the smallest instant whose local time is at or past `local`.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Find the first local minute after the gap (gaps are at most hours).
    let mut probe = local;
    let after_gap = loop {
        probe = probe.checked_add_signed(ChronoDuration::minutes(1))?;
        if probe - local > ChronoDuration::hours(26) {
            return None;
        }
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => break at.with_timezone(&Utc),
            LocalResult::None => {}
        }
    };
    // The transition lies within the minute before that instant; search it
    // to the second (offsets need not be whole minutes).
    let mut low = after_gap - ChronoDuration::minutes(1);
    let mut high = after_gap;
    while high - low > ChronoDuration::seconds(1) {
        let mid = low + (high - low) / 2;
        if mid.with_timezone(&tz).naive_local() >= local {
            high = mid;
        } else {
            low = mid;
        }
    }
    Some(if low.with_timezone(&tz).naive_local() >= local {
        low
    } else {
        high
    })
}

/// The first fire instant strictly after `after`, or `None` if the schedule
/// never fires again (an `at` in the past, a cron with no further date).
pub fn next_fire_after(
    trigger: &Trigger,
    tz: Tz,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match trigger {
        Trigger::At(at) => (*at > after).then_some(*at),
        Trigger::Every(every) => {
            let every = ChronoDuration::from_std(*every)
                .ok()
                .filter(|d| *d > ChronoDuration::zero())?;
            if after < anchor {
                return anchor.checked_add_signed(every);
            }
            let elapsed = (after - anchor).num_nanoseconds()?;
            let step = every.num_nanoseconds()?;
            let periods = elapsed / step + 1;
            anchor.checked_add_signed(ChronoDuration::nanoseconds(periods.checked_mul(step)?))
        }
        Trigger::Cron(expr) => next_cron_fire(expr, tz, after).map(|(_, at)| at),
    }
}

/// The first fire of cron `expr` strictly after `after`: the matching local
/// time that produced it, and the instant.
fn next_cron_fire(expr: &str, tz: Tz, after: DateTime<Utc>) -> Option<(NaiveDateTime, DateTime<Utc>)> {
    let cron = parse_cron(expr).ok()?;
    // Local times after `after`'s own local time resolve, by monotonicity,
    // to instants at or after it; only those inside a repeated hour can
    // resolve to `after` or earlier, and are passed.
    let mut local = after.with_timezone(&tz).naive_local();
    for _ in 0..MAX_CANDIDATES {
        local = cron.find_next_occurrence(&local, false).ok()?;
        let at = resolve_local(tz, local)?;
        if at > after {
            return Some((local, at));
        }
    }
    None
}

/// How daylight saving time moved a cron slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstShift {
    /// The matching wall-clock time does not exist that day (clocks went
    /// forward); the slot fires at the first instant after the gap.
    Gap(NaiveDateTime),
    /// The matching wall-clock time occurs twice (clocks went back); the
    /// slot fires once, at the first occurrence.
    Fold(NaiveDateTime),
}

/// The next `count` fire instants strictly after `after`, each with how
/// daylight saving time moved it (cron schedules only).
pub fn upcoming(
    trigger: &Trigger,
    tz: Tz,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
    count: usize,
) -> Vec<(DateTime<Utc>, Option<DstShift>)> {
    let mut fires = Vec::new();
    let mut cursor = after;
    while fires.len() < count {
        let fire = match trigger {
            Trigger::Cron(expr) => next_cron_fire(expr, tz, cursor).map(|(local, at)| {
                let shift = match tz.from_local_datetime(&local) {
                    LocalResult::None => Some(DstShift::Gap(local)),
                    LocalResult::Ambiguous(..) => Some(DstShift::Fold(local)),
                    LocalResult::Single(_) => None,
                };
                (at, shift)
            }),
            _ => next_fire_after(trigger, tz, anchor, cursor).map(|at| (at, None)),
        };
        let Some((at, shift)) = fire else { break };
        fires.push((at, shift));
        cursor = at;
    }
    fires
}

/// Fire instants in `(after, until]`, in order, at most `limit` of them.
/// The flag says whether more remained.
pub fn fires_between(
    trigger: &Trigger,
    tz: Tz,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> (Vec<DateTime<Utc>>, bool) {
    let mut fires = Vec::new();
    let mut cursor = after;
    while let Some(at) = next_fire_after(trigger, tz, anchor, cursor) {
        if at > until {
            break;
        }
        if fires.len() == limit {
            return (fires, true);
        }
        fires.push(at);
        cursor = at;
    }
    (fires, false)
}

#[cfg(test)]
mod tests;

//! Schedule math: DST tables in four kinds of zone, 5/6-field crons and
//! macros, `every` and `at`, and properties over every IANA zone.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("valid instant")
        .with_timezone(&Utc)
}

fn cron(expr: &str) -> Trigger {
    Trigger::Cron(expr.to_owned())
}

/// The fire instants in `(after, until]`, as RFC 3339 strings.
fn fires(trigger: &Trigger, tz: Tz, after: &str, until: &str) -> Vec<String> {
    let (fires, more) = fires_between(trigger, tz, utc("2000-01-01T00:00:00Z"), utc(after), utc(until), 1000);
    assert!(!more);
    fires
        .iter()
        .map(|f| f.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect()
}

#[test]
fn berlin_spring_forward_gap_fires_once_at_the_end_of_the_gap() {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00 UTC.
    let tz = chrono_tz::Europe::Berlin;
    assert_eq!(
        fires(&cron("30 2 * * *"), tz, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
        ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
    // Hourly: the 02:00 slot (in the gap) and the 03:00 slot are one instant.
    assert_eq!(
        fires(&cron("0 * * * *"), tz, "2026-03-28T23:30:00Z", "2026-03-29T02:30:00Z"),
        ["2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]
    );
}

#[test]
fn berlin_fall_back_repeated_hour_fires_once_at_its_first_occurrence() {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:xx happens twice.
    let tz = chrono_tz::Europe::Berlin;
    assert_eq!(
        fires(&cron("30 2 * * *"), tz, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    assert_eq!(
        fires(&cron("0 * * * *"), tz, "2026-10-24T22:30:00Z", "2026-10-25T03:30:00Z"),
        [
            "2026-10-24T23:00:00Z",
            "2026-10-25T00:00:00Z",
            "2026-10-25T02:00:00Z",
            "2026-10-25T03:00:00Z"
        ]
    );
    // Every 15 minutes: nothing fires during the second pass of 02:xx.
    assert_eq!(
        fires(
            &cron("*/15 * * * *"),
            tz,
            "2026-10-24T23:50:00Z",
            "2026-10-25T02:00:00Z"
        ),
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:15:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T00:45:00Z",
            "2026-10-25T02:00:00Z"
        ]
    );
    // Asked from inside the second pass, the next slot is after the fold.
    let next = next_fire_after(
        &cron("30 2 * * *"),
        tz,
        utc("2000-01-01T00:00:00Z"),
        utc("2026-10-25T01:10:00Z"),
    );
    assert_eq!(next, Some(utc("2026-10-26T01:30:00Z")));
}

#[test]
fn new_york_gap_and_fold() {
    let tz = chrono_tz::America::New_York;
    // 2026-03-08 02:00 EST -> 03:00 EDT at 07:00 UTC.
    assert_eq!(
        fires(&cron("30 2 * * *"), tz, "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z"),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
    );
    // 2026-11-01 02:00 EDT -> 01:00 EST at 06:00 UTC; 01:30 happens twice.
    assert_eq!(
        fires(&cron("30 1 * * *"), tz, "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z"),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
}

#[test]
fn lord_howe_half_hour_shifts() {
    let tz = chrono_tz::Australia::Lord_Howe;
    // 2026-10-04 02:00 (+10:30) -> 02:30 (+11) at 15:30 UTC on the 3rd: 02:15 is in the gap.
    assert_eq!(
        fires(&cron("15 2 * * *"), tz, "2026-10-02T12:00:00Z", "2026-10-05T12:00:00Z"),
        ["2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]
    );
    // 2026-04-05 02:00 (+11) -> 01:30 (+10:30) at 15:00 UTC on the 4th: 01:45 happens twice.
    assert_eq!(
        fires(&cron("45 1 * * *"), tz, "2026-04-03T12:00:00Z", "2026-04-05T18:00:00Z"),
        ["2026-04-03T14:45:00Z", "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
    );
}

#[test]
fn a_zone_without_dst_is_plain_arithmetic() {
    let tz = chrono_tz::Asia::Tokyo;
    assert_eq!(
        fires(&cron("0 9 * * *"), tz, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
        ["2026-03-28T00:00:00Z", "2026-03-29T00:00:00Z", "2026-03-30T00:00:00Z"]
    );
}

#[test]
fn six_fields_and_macros() {
    let tz = chrono_tz::UTC;
    assert_eq!(
        fires(
            &cron("*/20 * * * * *"),
            tz,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:01:00Z"
        ),
        ["2026-01-01T00:00:20Z", "2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z"]
    );
    assert_eq!(
        fires(&cron("@hourly"), tz, "2026-01-01T00:00:00Z", "2026-01-01T02:00:00Z"),
        ["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]
    );
    assert_eq!(
        fires(
            &cron("@daily"),
            chrono_tz::Europe::Berlin,
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z"
        ),
        ["2026-01-01T23:00:00Z"]
    );
    assert_eq!(
        fires(
            &cron("0 30 2 * * *"),
            chrono_tz::Europe::Berlin,
            "2026-03-29T00:00:00Z",
            "2026-03-29T02:00:00Z"
        ),
        ["2026-03-29T01:00:00Z"],
        "6-field form follows the same DST rules"
    );
    assert_eq!(
        fires(
            &cron("0 9 * * MON-FRI"),
            tz,
            "2026-11-27T12:00:00Z",
            "2026-12-01T12:00:00Z"
        ),
        ["2026-11-30T09:00:00Z", "2026-12-01T09:00:00Z"]
    );
}

#[test]
fn every_counts_from_the_anchor_and_at_fires_once() {
    let anchor = utc("2026-01-01T00:00:07Z");
    let every = Trigger::Every(Duration::from_secs(30));
    let (fires, more) = fires_between(&every, chrono_tz::UTC, anchor, anchor, utc("2026-01-01T00:01:40Z"), 10);
    assert!(!more);
    assert_eq!(
        fires,
        [
            utc("2026-01-01T00:00:37Z"),
            utc("2026-01-01T00:01:07Z"),
            utc("2026-01-01T00:01:37Z")
        ]
    );
    assert_eq!(
        next_fire_after(&every, chrono_tz::UTC, anchor, utc("2026-01-01T00:01:07Z")),
        Some(utc("2026-01-01T00:01:37Z")),
        "strictly after"
    );
    let at = Trigger::At(utc("2026-12-01T02:00:00Z"));
    assert_eq!(
        next_fire_after(&at, chrono_tz::UTC, anchor, utc("2026-11-01T00:00:00Z")),
        Some(utc("2026-12-01T02:00:00Z"))
    );
    assert_eq!(
        next_fire_after(&at, chrono_tz::UTC, anchor, utc("2026-12-01T02:00:00Z")),
        None
    );
}

#[test]
fn limits_are_reported() {
    let (fires, more) = fires_between(
        &cron("* * * * * *"),
        chrono_tz::UTC,
        utc("2026-01-01T00:00:00Z"),
        utc("2026-01-01T00:00:00Z"),
        utc("2026-01-02T00:00:00Z"),
        5,
    );
    assert_eq!(fires.len(), 5);
    assert!(more);
}

#[test]
fn a_cron_without_further_dates_and_instants_at_the_edge_of_time_do_not_panic() {
    assert_eq!(
        next_fire_after(
            &cron("0 0 29 2 *"),
            chrono_tz::UTC,
            utc("2026-01-01T00:00:00Z"),
            DateTime::<Utc>::MAX_UTC
        ),
        None
    );
    let near_end = DateTime::<Utc>::MAX_UTC - chrono::Duration::days(2);
    let _ = next_fire_after(&cron("* * * * *"), chrono_tz::Pacific::Kiritimati, near_end, near_end);
    let _ = next_fire_after(
        &Trigger::Every(Duration::from_secs(1)),
        chrono_tz::UTC,
        near_end,
        DateTime::<Utc>::MAX_UTC,
    );
}

/// Cron fields assembled from realistic pieces.
fn field(range: std::ops::RangeInclusive<u32>) -> impl Strategy<Value = String> {
    let (lo, hi) = (*range.start(), *range.end());
    prop_oneof![
        Just("*".to_owned()),
        (lo..=hi).prop_map(|v| v.to_string()),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (1..=hi.max(1)).prop_map(|step| format!("*/{step}")),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    let five = (field(0..=59), field(0..=23), field(1..=31), field(1..=12), field(0..=6))
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"));
    let six = (
        field(0..=59),
        field(0..=59),
        field(0..=23),
        field(1..=28),
        field(1..=12),
        field(0..=6),
    )
        .prop_map(|(s, m, h, dom, mon, dow)| format!("{s} {m} {h} {dom} {mon} {dow}"));
    let macros = prop_oneof![
        Just("@hourly".to_owned()),
        Just("@daily".to_owned()),
        Just("@weekly".to_owned()),
        Just("@monthly".to_owned()),
        Just("@yearly".to_owned()),
    ];
    prop_oneof![5 => five, 2 => six, 1 => macros]
}

fn zone() -> impl Strategy<Value = Tz> {
    (0..chrono_tz::TZ_VARIANTS.len()).prop_map(|i| chrono_tz::TZ_VARIANTS[i])
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 1990 to 2060: zones with rules, past and projected.
    (631_152_000i64..2_871_763_200i64).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
}

/// The local time `local` or, for a fire at the end of a gap, some earlier
/// matching local time, resolves to `at`.
fn explained(cron: &croner::Cron, tz: Tz, at: DateTime<Utc>) -> bool {
    let local: NaiveDateTime = at.with_timezone(&tz).naive_local();
    if cron.is_time_matching(&local).unwrap_or(false) && resolve_local(tz, local) == Some(at) {
        return true;
    }
    cron.find_previous_occurrence(&local, false)
        .ok()
        .and_then(|earlier| resolve_local(tz, earlier))
        == Some(at)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn cron_fires_are_strictly_increasing_and_each_is_a_matching_local_time(
        expr in expression(), tz in zone(), start in instant()
    ) {
        let trigger = Trigger::Cron(expr.clone());
        let Ok(parsed) = parse_cron(&expr) else { return Ok(()) };
        let (fires, _) = fires_between(&trigger, tz, start, start, start + chrono::Duration::days(400), 20);
        let mut previous = start;
        for at in fires {
            prop_assert!(at > previous, "{expr} in {tz}: {at} not after {previous}");
            prop_assert!(explained(&parsed, tz, at), "{expr} in {tz}: {at} matches no local time");
            // No slot between two consecutive fires: asking again from just
            // before `at` finds `at` itself.
            prop_assert_eq!(next_fire_after(&trigger, tz, start, previous), Some(at));
            previous = at;
        }
    }

    #[test]
    fn no_slot_is_skipped_between_two_fires(
        expr in (field(0..=59), field(0..=23), field(1..=31), field(1..=12), field(0..=6))
            .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}")),
        tz in zone(),
        start in instant(),
    ) {
        // Independent of next_fire_after: walk every minute between two
        // consecutive fires; none may be a matching local time that fires
        // (i.e. resolves to that very minute: not a repeated hour's second pass).
        let trigger = Trigger::Cron(expr.clone());
        let Ok(parsed) = parse_cron(&expr) else { return Ok(()) };
        let (fires, _) = fires_between(&trigger, tz, start, start, start + chrono::Duration::days(60), 4);
        let mut budget = 20_000;
        let mut previous = start;
        for at in fires {
            let mut t = previous - chrono::Duration::seconds(previous.timestamp().rem_euclid(60)) + chrono::Duration::minutes(1);
            while t < at && budget > 0 {
                budget -= 1;
                let local = t.with_timezone(&tz).naive_local();
                if parsed.is_time_matching(&local).unwrap_or(false) && resolve_local(tz, local) == Some(t) {
                    prop_assert!(false, "{expr} in {tz}: {t} ({local} local) fires but was skipped between {previous} and {at}");
                }
                t += chrono::Duration::minutes(1);
            }
            previous = at;
        }
    }

    #[test]
    fn every_fires_on_the_anchor_grid(secs in 1u64..100_000, anchor in instant(), offset in 0i64..10_000_000) {
        let trigger = Trigger::Every(Duration::from_secs(secs));
        let after = anchor + chrono::Duration::seconds(offset);
        let next = next_fire_after(&trigger, chrono_tz::UTC, anchor, after).expect("fires");
        prop_assert!(next > after);
        prop_assert!(next - after <= chrono::Duration::seconds(secs as i64));
        prop_assert_eq!((next - anchor).num_seconds() % secs as i64, 0);
    }

    #[test]
    fn resolving_never_panics_and_is_monotonic(tz in zone(), start in instant(), step in 1i64..7200) {
        let a = start.naive_utc();
        let b = a + chrono::Duration::seconds(step);
        let (ra, rb) = (resolve_local(tz, a), resolve_local(tz, b));
        prop_assert!(ra.is_some() && rb.is_some());
        prop_assert!(ra <= rb, "{tz}: {a} -> {ra:?} but {b} -> {rb:?}");
    }
}

#[test]
fn upcoming_notes_the_slots_daylight_saving_time_moves() {
    let tz = chrono_tz::Europe::Berlin;
    let anchor = utc("2000-01-01T00:00:00Z");
    let local = |text: &str| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("local time");
    let spring = upcoming(&cron("30 2 * * *"), tz, anchor, utc("2026-03-27T12:00:00Z"), 3);
    assert_eq!(
        spring,
        [
            (utc("2026-03-28T01:30:00Z"), None),
            (
                utc("2026-03-29T01:00:00Z"),
                Some(DstShift::Gap(local("2026-03-29 02:30")))
            ),
            (utc("2026-03-30T00:30:00Z"), None),
        ]
    );
    let autumn = upcoming(&cron("30 2 * * *"), tz, anchor, utc("2026-10-24T12:00:00Z"), 2);
    assert_eq!(
        autumn,
        [
            (
                utc("2026-10-25T00:30:00Z"),
                Some(DstShift::Fold(local("2026-10-25 02:30")))
            ),
            (utc("2026-10-26T01:30:00Z"), None),
        ]
    );
    // Hourly across the gap: 02:00 does not exist and is one slot with 03:00.
    let hourly = upcoming(&cron("0 * * * *"), tz, anchor, utc("2026-03-29T00:30:00Z"), 2);
    assert_eq!(
        hourly,
        [
            (
                utc("2026-03-29T01:00:00Z"),
                Some(DstShift::Gap(local("2026-03-29 02:00")))
            ),
            (utc("2026-03-29T02:00:00Z"), None),
        ]
    );
    // Intervals and one-shots have no wall-clock time to move.
    let every = Trigger::Every(Duration::from_secs(3600));
    assert_eq!(
        upcoming(&every, tz, utc("2026-03-29T00:10:00Z"), utc("2026-03-29T00:30:00Z"), 2),
        [(utc("2026-03-29T01:10:00Z"), None), (utc("2026-03-29T02:10:00Z"), None)]
    );
    let at = Trigger::At(utc("2026-03-29T01:30:00Z"));
    assert_eq!(
        upcoming(&at, tz, anchor, utc("2026-03-29T00:30:00Z"), 5),
        [(utc("2026-03-29T01:30:00Z"), None)]
    );
}

#[test]
fn a_list_with_an_empty_item_is_refused_at_once() {
    // Found by the `schedule` fuzz target: croner took over ten seconds to
    // refuse it (a field that matches nothing, searched for years).
    for expr in [
        ",,,\t\t\t\t\t\t,,,,,,,,17 * * * MON,FRI",
        "0 1,,2 * * *",
        "0 ,1 * * *",
        "0 1, * * *",
    ] {
        let started = std::time::Instant::now();
        let error = crate::state::job::parse_cron(expr).expect_err(expr);
        assert!(error.to_string().contains("empty list item"), "{expr}: {error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{expr}");
    }
    assert!(crate::state::job::parse_cron("0 1,2 * * MON,FRI").is_ok());
}

//! Schedules: a cron expression, an interval or a one-shot time in a time
//! zone, validated as the server does, then their next fires computed as
//! the scheduler and `rotactl job explain` do.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rota_proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // The time zone after the first newline, if any.
    let (expr, timezone) = text.split_once('\n').unwrap_or((&text, "Europe/Berlin"));
    let schedule_kind = match kind % 3 {
        0 => pb::schedule::Kind::Cron(expr.to_owned()),
        1 => pb::schedule::Kind::Every(expr.to_owned()),
        _ => pb::schedule::Kind::At(expr.to_owned()),
    };
    let spec = pb::JobSpec {
        name: "fuzz".into(),
        schedule: Some(pb::Schedule {
            kind: Some(schedule_kind),
            timezone: timezone.to_owned(),
            ..Default::default()
        }),
        task: Some(pb::Task {
            image: "debian:12".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let Ok(valid) = rota_server::spec::validate(&spec) else {
        return;
    };
    let Some(trigger) = &valid.schedule.trigger else {
        return;
    };
    let now = chrono::Utc::now();
    let _ = rota_server::state::schedule::upcoming(trigger, valid.schedule.timezone, now, now, 16);
});

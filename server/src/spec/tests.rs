//! Each bad field is reported with its path; good specs round-trip.

use std::collections::HashMap;
use std::time::Duration;

use rota_proto::v1 as pb;

use super::*;
use crate::state::tests::sample_spec;

/// The canonical spec of BRIEF §4, as a client would send it.
fn brief_spec() -> pb::JobSpec {
    pb::JobSpec {
        name: "nightly-build".into(),
        schedule: Some(pb::Schedule {
            kind: Some(pb::schedule::Kind::Cron("0 30 2 * * *".into())),
            timezone: "Europe/Berlin".into(),
            catch_up: pb::CatchUp::Latest as i32,
            max_catch_up: Some(10),
            starting_deadline: "10m".into(),
        }),
        concurrency: pb::Concurrency::Forbid as i32,
        max_queued: None,
        task: Some(pb::Task {
            driver: pb::Driver::Docker as i32,
            image: "registry.example.com/ci/builder:1.4".into(),
            pull: pb::PullPolicy::IfNotPresent as i32,
            command: vec!["sh".into(), "-c".into(), "make test".into()],
            env: HashMap::from([("GIT_REF".into(), "main".into())]),
            resources: Some(pb::Resources {
                cpu: 1.0,
                memory: "512Mi".into(),
            }),
            ..Default::default()
        }),
        timeout: "30m".into(),
        kill_grace: "10s".into(),
        retry: Some(pb::RetryPolicy {
            max_attempts: 3,
            backoff: "10s".into(),
            max_backoff: "5m".into(),
            on: vec![pb::RetryOn::Failed as i32, pb::RetryOn::Lost as i32],
        }),
        constraints: Some(pb::Constraints {
            labels: HashMap::from([("arch".into(), "amd64".into())]),
        }),
        history: Some(pb::HistoryPolicy {
            keep_succeeded: Some(20),
            keep_failed: Some(50),
            max_age: "30d".into(),
        }),
    }
}

/// Validates `spec` and returns the fields named by the violations.
fn bad_fields(spec: &pb::JobSpec) -> Vec<String> {
    match validate(spec) {
        Ok(_) => vec![],
        Err(e) => e.violations.into_iter().map(|v| v.field).collect(),
    }
}

/// Asserts that `spec` is rejected for `field` alone, with a description
/// containing `hint`.
#[track_caller]
fn assert_rejected(spec: &pb::JobSpec, field: &str, hint: &str) {
    let err = validate(spec).expect_err("spec should be invalid");
    assert_eq!(
        err.violations.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
        [field],
        "{err}"
    );
    assert!(err.violations[0].description.contains(hint), "{err}");
    assert!(err.to_string().starts_with("invalid job spec: "), "{err}");
}

fn with(edit: impl FnOnce(&mut pb::JobSpec)) -> pb::JobSpec {
    let mut spec = brief_spec();
    edit(&mut spec);
    spec
}

fn schedule(spec: &mut pb::JobSpec) -> &mut pb::Schedule {
    spec.schedule.get_or_insert_with(Default::default)
}

fn task(spec: &mut pb::JobSpec) -> &mut pb::Task {
    spec.task.get_or_insert_with(Default::default)
}

fn resources(spec: &mut pb::JobSpec) -> &mut pb::Resources {
    task(spec).resources.get_or_insert_with(Default::default)
}

#[test]
fn the_brief_spec_is_valid_and_matches_the_domain_sample() {
    let spec = validate(&brief_spec()).expect("valid");
    assert_eq!(spec, sample_spec("nightly-build"));
}

#[test]
fn defaults_are_filled_in() {
    let minimal = pb::JobSpec {
        name: "a".into(),
        task: Some(pb::Task {
            image: "debian:12".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = validate(&minimal).expect("valid");
    assert_eq!(spec.schedule.trigger, None);
    assert_eq!(spec.schedule.timezone, chrono_tz::UTC);
    assert_eq!(spec.schedule.catch_up, CatchUp::Latest);
    assert_eq!(spec.concurrency, Concurrency::Allow);
    assert_eq!(spec.task.driver, Driver::Docker);
    assert_eq!(spec.task.pull, PullPolicy::IfNotPresent);
    assert_eq!(spec.kill_grace, DEFAULT_KILL_GRACE);
    assert_eq!(spec.retry.max_attempts, 1);
    assert_eq!(spec.retry.on, BTreeSet::from([RetryOn::Failed, RetryOn::Lost]));
    assert_eq!(spec.history.keep_succeeded, DEFAULT_KEEP_SUCCEEDED);
    assert_eq!(spec.timeout, None);
}

#[test]
fn render_then_validate_is_the_identity() {
    let mut specs = vec![sample_spec("a")];
    let mut exec = sample_spec("b");
    exec.task.driver = Driver::Exec;
    exec.task.image = None;
    exec.schedule.trigger = Some(Trigger::Every(Duration::from_millis(90_500)));
    exec.concurrency = Concurrency::Queue;
    exec.max_queued = 3;
    exec.task.resources.memory_bytes = Some(1_000_000_000);
    exec.task.resources.cpu_millis = Some(250);
    specs.push(exec);
    let mut once = sample_spec("c");
    once.schedule.trigger = Some(Trigger::At(
        DateTime::parse_from_rfc3339("2026-12-01T02:00:00.5+01:00")
            .expect("valid")
            .with_timezone(&Utc),
    ));
    once.schedule.starting_deadline = None;
    once.timeout = None;
    specs.push(once);
    let mut on_demand = sample_spec("d");
    on_demand.schedule.trigger = None;
    specs.push(on_demand);

    for spec in specs {
        let rendered = to_proto(&spec);
        assert_eq!(validate(&rendered).expect("rendered spec is valid"), spec);
    }
}

#[test]
fn durations_render_in_short_exact_form() {
    for (secs_ms, text) in [
        (0, "0s"),
        (1_000, "1s"),
        (90_000, "1m30s"),
        (5_400_000, "1h30m"),
        (2_592_000_000, "30d"),
        (1_500, "1500ms"),
    ] {
        let d = Duration::from_millis(secs_ms);
        assert_eq!(format_duration(d), text);
        assert_eq!(humantime::parse_duration(text).expect("parses"), d);
    }
}

#[test]
fn bad_name_is_rejected() {
    for name in ["", "Nightly", "-x", "a_b", "a.b", &"a".repeat(64)] {
        assert_rejected(&with(|s| s.name = name.into()), "name", "accepted: 1 to 63 characters");
    }
    assert!(bad_fields(&with(|s| s.name = "a".repeat(63))).is_empty());
    assert!(bad_fields(&with(|s| s.name = "0-build".into())).is_empty());
}

#[test]
fn bad_cron_is_rejected() {
    for expr in [
        "",
        "* * *",
        "61 * * * *",
        "0 0 * * * * 2026",
        "@fortnightly",
        "0 0 30 2 *",
    ] {
        assert_rejected(
            &with(|s| schedule(s).kind = Some(pb::schedule::Kind::Cron(expr.into()))),
            "schedule.cron",
            expr,
        );
    }
    for expr in ["*/5 * * * *", "0 30 2 * * *", "@hourly", "@daily", "0 9 * * MON-FRI"] {
        let spec = with(|s| schedule(s).kind = Some(pb::schedule::Kind::Cron(expr.into())));
        assert!(bad_fields(&spec).is_empty(), "{expr}");
    }
}

#[test]
fn unknown_timezone_is_rejected() {
    assert_rejected(
        &with(|s| schedule(s).timezone = "Mars/Olympus".into()),
        "schedule.timezone",
        "IANA",
    );
}

#[test]
fn bad_every_and_at_are_rejected() {
    assert_rejected(
        &with(|s| schedule(s).kind = Some(pb::schedule::Kind::Every("soon".into()))),
        "schedule.every",
        "not a duration",
    );
    assert_rejected(
        &with(|s| schedule(s).kind = Some(pb::schedule::Kind::Every("500ms".into()))),
        "schedule.every",
        "out of range",
    );
    assert_rejected(
        &with(|s| schedule(s).kind = Some(pb::schedule::Kind::Every(String::new()))),
        "schedule.every",
        "is empty",
    );
    assert_rejected(
        &with(|s| schedule(s).kind = Some(pb::schedule::Kind::At("tomorrow".into()))),
        "schedule.at",
        "RFC 3339",
    );
}

#[test]
fn bad_durations_name_their_field() {
    assert_rejected(
        &with(|s| s.timeout = "30 minutes please".into()),
        "timeout",
        "not a duration",
    );
    assert_rejected(&with(|s| s.timeout = "0s".into()), "timeout", "out of range");
    assert_rejected(&with(|s| s.kill_grace = "2h".into()), "kill_grace", "out of range");
    assert_rejected(
        &with(|s| schedule(s).starting_deadline = "-5m".into()),
        "schedule.starting_deadline",
        "not a duration",
    );
    assert_rejected(
        &with(|s| s.history.as_mut().expect("set").max_age = "1s".into()),
        "history.max_age",
        "out of range",
    );
    assert_rejected(
        &with(|s| s.retry.as_mut().expect("set").backoff = "fast".into()),
        "retry.backoff",
        "not a duration",
    );
    assert_rejected(
        &with(|s| s.retry.as_mut().expect("set").max_backoff = "1s".into()),
        "retry.max_backoff",
        "shorter than retry.backoff",
    );
}

#[test]
fn bad_image_reference_is_rejected() {
    for image in [
        "Debian:12",
        "ci/Builder",
        "registry.example.com/a:b:c",
        "foo@sha256:zz",
        "a b",
    ] {
        assert_rejected(&with(|s| task(s).image = image.into()), "task.image", "image reference");
    }
    assert_rejected(&with(|s| task(s).image = String::new()), "task.image", "is required");
    for image in [
        "debian",
        "debian:12",
        "localhost:5000/ci/builder:1.4",
        "ghcr.io/a/b@sha256:0123456789012345678901234567890123456789012345678901234567890123",
    ] {
        assert!(
            bad_fields(&with(|s| task(s).image = image.into())).is_empty(),
            "{image}"
        );
    }
}

#[test]
fn exec_driver_rules() {
    let exec = |s: &mut pb::JobSpec| {
        let t = task(s);
        t.driver = pb::Driver::Exec as i32;
        t.image = String::new();
        t.pull = 0;
    };
    assert!(bad_fields(&with(exec)).is_empty());
    assert_rejected(
        &with(|s| {
            exec(s);
            task(s).command.clear();
        }),
        "task.command",
        "is required with driver: exec",
    );
    assert_rejected(
        &with(|s| {
            exec(s);
            task(s).image = "debian".into();
        }),
        "task.image",
        "only applies to driver: docker",
    );
    assert_rejected(
        &with(|s| {
            exec(s);
            task(s).pull = pb::PullPolicy::Always as i32;
        }),
        "task.pull",
        "only applies to driver: docker",
    );
}

#[test]
fn bad_enum_values_are_rejected() {
    assert_rejected(
        &with(|s| s.concurrency = 42),
        "concurrency",
        "allow, forbid, replace, queue",
    );
    assert_rejected(
        &with(|s| schedule(s).catch_up = 9),
        "schedule.catch_up",
        "none, latest, all",
    );
    assert_rejected(&with(|s| task(s).driver = 7), "task.driver", "docker, exec");
    assert_rejected(&with(|s| task(s).pull = 7), "task.pull", "if-not-present");
    assert_rejected(
        &with(|s| s.retry.as_mut().expect("set").on = vec![1, 77]),
        "retry.on[1]",
        "unknown value 77",
    );
}

#[test]
fn bad_counts_are_rejected() {
    assert_rejected(
        &with(|s| schedule(s).max_catch_up = Some(0)),
        "schedule.max_catch_up",
        "1 to 1000",
    );
    assert_rejected(
        &with(|s| s.retry.as_mut().expect("set").max_attempts = 101),
        "retry.max_attempts",
        "1 to 100",
    );
    assert_rejected(
        &with(|s| s.history.as_mut().expect("set").keep_failed = Some(10_001)),
        "history.keep_failed",
        "0 to 10000",
    );
    assert_rejected(&with(|s| s.max_queued = Some(5)), "max_queued", "concurrency: queue");
    assert_rejected(
        &with(|s| {
            s.concurrency = pb::Concurrency::Queue as i32;
            s.max_queued = Some(0);
        }),
        "max_queued",
        "1 to 1000",
    );
}

#[test]
fn bad_env_and_labels_are_rejected() {
    assert_rejected(
        &with(|s| _ = task(s).env.insert("1X".into(), "v".into())),
        "task.env[\"1X\"]",
        "not a valid variable name",
    );
    assert_rejected(
        &with(|s| _ = task(s).env.insert("ROTA_RUN_ID".into(), "x".into())),
        "task.env[\"ROTA_RUN_ID\"]",
        "reserved",
    );
    assert_rejected(
        &with(|s| _ = task(s).env.insert("OK".into(), "a\0b".into())),
        "task.env[\"OK\"]",
        "NUL",
    );
    assert_rejected(
        &with(|s| {
            _ = s
                .constraints
                .as_mut()
                .expect("set")
                .labels
                .insert("bad key".into(), "x".into())
        }),
        "constraints.labels[\"bad key\"]",
        "label key",
    );
}

#[test]
fn bad_resources_are_rejected() {
    assert_rejected(&with(|s| resources(s).cpu = -1.0), "task.resources.cpu", "out of range");
    assert_rejected(
        &with(|s| resources(s).cpu = f64::NAN),
        "task.resources.cpu",
        "out of range",
    );
    assert_rejected(
        &with(|s| resources(s).memory = "lots".into()),
        "task.resources.memory",
        "memory quantity",
    );
    assert_rejected(
        &with(|s| resources(s).memory = "1Mi".into()),
        "task.resources.memory",
        "minimum",
    );
    let spec = validate(&with(|s| resources(s).memory = "2Gi".into())).expect("valid");
    assert_eq!(spec.task.resources.memory_bytes, Some(2 << 30));
    let spec = validate(&with(|s| resources(s).memory = "1G".into())).expect("valid");
    assert_eq!(spec.task.resources.memory_bytes, Some(1_000_000_000));
}

#[test]
fn bad_paths_users_and_networks_are_rejected() {
    assert_rejected(
        &with(|s| task(s).working_dir = "src".into()),
        "task.working_dir",
        "absolute",
    );
    assert_rejected(&with(|s| task(s).user = "a:b:c".into()), "task.user", "uid:gid");
    assert_rejected(
        &with(|s| task(s).network_mode = "host net".into()),
        "task.network_mode",
        "network mode",
    );
    assert!(bad_fields(&with(|s| task(s).user = "1000:1000".into())).is_empty());
    assert!(bad_fields(&with(|s| task(s).network_mode = "none".into())).is_empty());
}

#[test]
fn missing_task_is_reported_once() {
    assert_rejected(&with(|s| s.task = None), "task", "is required");
}

#[test]
fn oversize_spec_is_rejected_before_anything_else() {
    let spec = with(|s| {
        s.name = "NOT VALID".into();
        task(s).env.insert("BIG".into(), "x".repeat(MAX_SPEC_BYTES));
    });
    assert_rejected(&spec, "spec", "exceeds the limit of 65536 bytes");
}

#[test]
fn every_violation_is_reported() {
    let spec = with(|s| {
        s.name = "Bad".into();
        schedule(s).timezone = "Nowhere/Land".into();
        s.timeout = "x".into();
    });
    assert_eq!(bad_fields(&spec), ["name", "schedule.timezone", "timeout"]);
}

#[test]
fn host_access_is_checked_for_form_and_round_trips() {
    let mut spec = brief_spec();
    let task = spec.task.as_mut().expect("task");
    task.host = Some(pb::HostAccess {
        privileged: true,
        cap_add: vec!["cap_net_admin".into()],
        mounts: vec![pb::Mount {
            host_path: "/srv/cache".into(),
            container_path: "/cache".into(),
            read_only: true,
        }],
        devices: vec!["/dev/fuse".into()],
        host_pid: true,
        host_ipc: false,
    });
    let valid = validate(&spec).expect("valid");
    assert_eq!(valid.task.host.cap_add, vec!["NET_ADMIN"]);
    assert_eq!(validate(&to_proto(&valid)).expect("round trip"), valid);

    let bad = |host: pb::HostAccess, field: &str| {
        let mut spec = brief_spec();
        spec.task.as_mut().expect("task").host = Some(host);
        let error = validate(&spec).expect_err(field);
        assert!(error.violations.iter().any(|v| v.field == field), "{field}: {error}");
    };
    let mount = |host_path: &str| pb::HostAccess {
        mounts: vec![pb::Mount {
            host_path: host_path.into(),
            container_path: "/m".into(),
            read_only: false,
        }],
        ..Default::default()
    };
    bad(mount("relative/path"), "task.host.mounts[0].host_path");
    bad(mount("/srv/../etc"), "task.host.mounts[0].host_path");
    bad(mount("/srv/a:/etc"), "task.host.mounts[0].host_path");
    bad(
        pb::HostAccess {
            devices: vec!["/etc/passwd".into()],
            ..Default::default()
        },
        "task.host.devices[0]",
    );
    bad(
        pb::HostAccess {
            cap_add: vec!["net admin".into()],
            ..Default::default()
        },
        "task.host.cap_add[0]",
    );
    let mut exec = brief_spec();
    let task = exec.task.as_mut().expect("task");
    task.driver = pb::Driver::Exec as i32;
    task.image = String::new();
    task.pull = pb::PullPolicy::Unspecified as i32;
    task.host = Some(pb::HostAccess {
        privileged: true,
        ..Default::default()
    });
    let error = validate(&exec).expect_err("host access with exec");
    assert!(error.violations.iter().any(|v| v.field == "task.host"), "{error}");
}

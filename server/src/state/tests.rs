//! Unit tests of the transition function, and sample values for other tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::job::*;
use super::*;

/// A valid, fully defaulted spec named `name`.
pub(crate) fn sample_spec(name: &str) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        schedule: Schedule {
            trigger: Some(Trigger::Cron("0 30 2 * * *".to_owned())),
            timezone: chrono_tz::Europe::Berlin,
            catch_up: CatchUp::Latest,
            max_catch_up: 10,
            starting_deadline: Some(Duration::from_secs(600)),
        },
        concurrency: Concurrency::Forbid,
        max_queued: 10,
        task: Task {
            driver: Driver::Docker,
            image: Some("registry.example.com/ci/builder:1.4".to_owned()),
            pull: PullPolicy::IfNotPresent,
            command: vec!["sh".to_owned(), "-c".to_owned(), "make test".to_owned()],
            args: vec![],
            env: BTreeMap::from([("GIT_REF".to_owned(), "main".to_owned())]),
            working_dir: None,
            user: None,
            resources: Resources {
                cpu_millis: Some(1000),
                memory_bytes: Some(512 << 20),
            },
            network_mode: None,
            host: Default::default(),
            secret_env: BTreeMap::new(),
        },
        timeout: Some(Duration::from_secs(1800)),
        kill_grace: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            on: BTreeSet::from([RetryOn::Failed, RetryOn::Lost]),
        },
        constraints: BTreeMap::from([("arch".to_owned(), "amd64".to_owned())]),
        history: HistoryPolicy {
            keep_succeeded: 20,
            keep_failed: 50,
            max_age: Duration::from_secs(30 * 86400),
        },
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).single().expect("valid time")
}

fn command(secs: i64, op: Op) -> Command {
    Command { now: at(secs), op }
}

fn create(name: &str, uid: &str) -> Op {
    Op::CreateJob {
        uid: uid.to_owned(),
        spec: sample_spec(name),
    }
}

#[test]
fn create_then_create_again_is_rejected_and_changes_nothing() {
    let mut state = State::default();
    let job = match apply(&mut state, 5, &command(0, create("build", "u1"))) {
        Ok(Response::Job(job)) => job,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!((job.generation, job.revision, job.uid.as_str()), (1, 5, "u1"));
    assert_eq!(job.created_at, at(0));
    state.take_changes().expect("encodes");

    let err = apply(&mut state, 6, &command(1, create("build", "u2"))).expect_err("duplicate");
    assert_eq!(err.kind, RejectionKind::AlreadyExists);
    assert!(err.message.contains("\"build\""), "{}", err.message);
    assert!(state.take_changes().expect("encodes").is_empty());
    assert_eq!(state.job("build").map(|j| j.uid.as_str()), Some("u1"));
}

#[test]
fn update_bumps_generation_only_when_the_spec_changes() {
    let mut state = State::default();
    apply(&mut state, 1, &command(0, create("build", "u1"))).expect("created");

    let same = Op::UpdateJob {
        spec: sample_spec("build"),
        expected_generation: None,
    };
    let Ok(Response::Job(job)) = apply(&mut state, 2, &command(1, same)) else {
        panic!("update of identical spec refused")
    };
    assert_eq!((job.generation, job.revision), (1, 1));

    let mut spec = sample_spec("build");
    spec.timeout = Some(Duration::from_secs(60));
    let changed = Op::UpdateJob {
        spec: spec.clone(),
        expected_generation: Some(1),
    };
    let Ok(Response::Job(job)) = apply(&mut state, 3, &command(2, changed)) else {
        panic!("update refused")
    };
    assert_eq!((job.generation, job.revision, job.updated_at), (2, 3, at(2)));
    assert_eq!(job.created_at, at(0));

    let stale = Op::UpdateJob {
        spec,
        expected_generation: Some(1),
    };
    let err = apply(&mut state, 4, &command(3, stale)).expect_err("stale generation");
    assert_eq!(err.kind, RejectionKind::FailedPrecondition);

    let missing = Op::UpdateJob {
        spec: sample_spec("nope"),
        expected_generation: None,
    };
    assert_eq!(
        apply(&mut state, 5, &command(4, missing)).expect_err("missing").kind,
        RejectionKind::NotFound
    );
}

#[test]
fn apply_creates_updates_and_leaves_identical_specs_alone() {
    let mut state = State::default();
    let op = |spec: JobSpec| Op::ApplyJob {
        uid: "u1".to_owned(),
        spec,
    };
    assert_eq!(state.preview_apply(&sample_spec("a"), at(0)).1, ApplyOutcome::Created);
    let Ok(Response::Applied { outcome, previous, .. }) = apply(&mut state, 1, &command(0, op(sample_spec("a"))))
    else {
        panic!("apply refused")
    };
    assert_eq!((outcome, previous), (ApplyOutcome::Created, None));
    state.take_changes().expect("encodes");

    assert_eq!(state.preview_apply(&sample_spec("a"), at(1)).1, ApplyOutcome::Unchanged);
    let Ok(Response::Applied { outcome, job, .. }) = apply(&mut state, 2, &command(1, op(sample_spec("a")))) else {
        panic!("apply refused")
    };
    assert_eq!((outcome, job.generation, job.revision), (ApplyOutcome::Unchanged, 1, 1));
    assert!(state.take_changes().expect("encodes").is_empty());

    let mut spec = sample_spec("a");
    spec.concurrency = Concurrency::Allow;
    let (preview, outcome, current) = state.preview_apply(&spec, at(2));
    assert_eq!((outcome, preview.generation), (ApplyOutcome::Updated, 2));
    assert_eq!(current.map(|c| c.generation), Some(1));
    let Ok(Response::Applied { outcome, job, previous }) = apply(&mut state, 3, &command(2, op(spec))) else {
        panic!("apply refused")
    };
    assert_eq!((outcome, job.generation), (ApplyOutcome::Updated, 2));
    assert_eq!(previous.map(|p| p.generation), Some(1));
}

#[test]
fn delete_checks_the_expected_uid() {
    let mut state = State::default();
    apply(&mut state, 1, &command(0, create("a", "u1"))).expect("created");
    let wrong = Op::DeleteJob {
        name: "a".to_owned(),
        expected_uid: Some("u0".to_owned()),
    };
    assert_eq!(
        apply(&mut state, 2, &command(1, wrong)).expect_err("wrong uid").kind,
        RejectionKind::FailedPrecondition
    );
    let right = Op::DeleteJob {
        name: "a".to_owned(),
        expected_uid: Some("u1".to_owned()),
    };
    apply(&mut state, 3, &command(2, right.clone())).expect("deleted");
    assert!(state.job("a").is_none());
    assert_eq!(
        apply(&mut state, 4, &command(3, right)).expect_err("gone").kind,
        RejectionKind::NotFound
    );

    // Re-creating gives a new uid.
    apply(&mut state, 5, &command(4, create("a", "u2"))).expect("created again");
    assert_eq!(state.job("a").map(|j| j.uid.as_str()), Some("u2"));
}

#[test]
fn suspend_and_resume_are_idempotent() {
    let mut state = State::default();
    apply(&mut state, 1, &command(0, create("a", "u1"))).expect("created");
    let suspend = |suspended| Op::SetJobSuspended {
        name: "a".to_owned(),
        suspended,
    };
    apply(&mut state, 2, &command(1, suspend(true))).expect("suspended");
    let Ok(Response::Job(job)) = apply(&mut state, 3, &command(2, suspend(true))) else {
        panic!("refused")
    };
    assert!(job.suspended);
    assert_eq!(job.revision, 2, "a no-op suspend changes nothing");
    let Ok(Response::Job(job)) = apply(&mut state, 4, &command(3, suspend(false))) else {
        panic!("refused")
    };
    assert!(!job.suspended);
    assert_eq!(job.generation, 1, "suspension is not a spec change");
}

#[test]
fn rows_round_trip_and_replay_is_deterministic() {
    let ops = [
        create("a", "u1"),
        create("b", "u2"),
        Op::SetJobSuspended {
            name: "b".to_owned(),
            suspended: true,
        },
        Op::DeleteJob {
            name: "a".to_owned(),
            expected_uid: None,
        },
        create("c", "u3"),
        create("c", "u4"),
    ];
    let run = || {
        let mut state = State::default();
        let answers: Vec<_> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| apply(&mut state, i as u64 + 1, &command(i as i64, op.clone())))
            .collect();
        (state, answers)
    };
    let (mut first, first_answers) = run();
    let (second, second_answers) = run();
    assert_eq!(first_answers, second_answers);

    let rows: Vec<_> = first.rows().collect::<Result<_, _>>().expect("encodes");
    let second_rows: Vec<_> = second.rows().collect::<Result<_, _>>().expect("encodes");
    assert_eq!(rows, second_rows);
    assert_eq!(
        rows.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["job/b", "job/c"]
    );

    let restored = State::from_rows(rows.clone()).expect("decodes");
    assert_eq!(restored.job("b"), first.job("b"));
    assert_eq!(restored.job_count(), 2);

    let changes = first.take_changes().expect("encodes");
    let deleted: Vec<_> = changes
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(deleted, ["job/a"]);
}

/// Job `build` (uid `u1`) with two runs of generation 1 and two of
/// generation 2, the current one.
fn two_generations_with_runs() -> State {
    let mut state = State::default();
    let mut spec = sample_spec("build");
    spec.concurrency = Concurrency::Allow;
    let create = Op::CreateJob {
        uid: "u1".to_owned(),
        spec: spec.clone(),
    };
    apply(&mut state, 1, &command(0, create)).expect("created");
    apply(&mut state, 2, &command(1, trigger("build", "r1"))).expect("triggered");
    apply(&mut state, 3, &command(2, trigger("build", "r2"))).expect("triggered");
    spec.timeout = Some(Duration::from_secs(60));
    let update = Op::UpdateJob {
        spec,
        expected_generation: None,
    };
    apply(&mut state, 4, &command(3, update)).expect("updated");
    apply(&mut state, 5, &command(4, trigger("build", "r3"))).expect("triggered");
    apply(&mut state, 6, &command(5, trigger("build", "r4"))).expect("triggered");
    state
}

fn encoded(state: &State) -> Vec<(String, Vec<u8>)> {
    state.rows().collect::<Result<_, _>>().expect("encodes")
}

#[test]
fn a_loaded_state_keeps_one_copy_of_each_generation_spec() {
    let state = two_generations_with_runs();
    let rows = encoded(&state);
    let loaded = State::from_rows(rows.clone()).expect("decodes");
    let reencoded: Vec<_> = loaded.rows().collect::<Result<_, _>>().expect("encodes");
    assert_eq!(reencoded, rows, "sharing changes no row");
    let job = loaded.job("build").expect("job");
    let runs: Vec<&Run> = loaded.runs.iter().map(|(_, run)| run).collect();
    assert_eq!(runs.len(), 4);
    for run in &runs {
        let same_generation = run.generation == job.generation;
        assert_eq!(
            Arc::ptr_eq(&run.spec, &job.spec),
            same_generation,
            "run {} of generation {} shares the job's copy only if of its generation",
            run.id,
            run.generation
        );
        assert_eq!(*run.spec == *job.spec, same_generation);
    }
    let (newer, older): (Vec<&Run>, Vec<&Run>) = runs.iter().partition(|run| run.generation == job.generation);
    assert_eq!((newer.len(), older.len()), (2, 2));
    assert!(
        Arc::ptr_eq(&older[0].spec, &older[1].spec),
        "one copy of the older generation"
    );
}

#[test]
fn a_generation_spec_is_stored_once_while_runs_use_it() {
    let mut state = two_generations_with_runs();
    let rows = encoded(&state);
    let keys: Vec<&str> = rows
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !k.starts_with("run/"))
        .collect();
    assert_eq!(keys, ["gen/u1/1", "gen/u1/2", "job/build"]);
    for (key, value) in rows.iter().filter(|(k, _)| k.starts_with("run/")) {
        let row: serde_json::Value = serde_json::from_slice(value).expect("json");
        assert!(row.get("spec").is_none(), "{key} holds no spec");
        assert!(row.get("generation").is_some(), "{key} names its generation");
    }
    let written: Vec<String> = state
        .take_changes()
        .expect("encodes")
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect();
    assert!(written.contains(&"gen/u1/1".to_owned()) && written.contains(&"gen/u1/2".to_owned()));

    // Deleting the job removes its runs, and with them their specs.
    let delete = Op::DeleteJob {
        name: "build".to_owned(),
        expected_uid: None,
    };
    apply(&mut state, 7, &command(6, delete)).expect("deleted");
    let deleted: BTreeSet<String> = state
        .take_changes()
        .expect("encodes")
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
    assert!(
        deleted.contains("gen/u1/1") && deleted.contains("gen/u1/2"),
        "{deleted:?}"
    );
    assert_eq!(encoded(&state), Vec::new());
}

#[test]
fn runs_load_whatever_the_order_of_their_rows() {
    let state = two_generations_with_runs();
    let rows = encoded(&state);
    let mut reversed = rows.clone();
    reversed.reverse();
    let loaded = State::from_rows(reversed).expect("decodes");
    assert_eq!(encoded(&loaded), rows);
    assert_eq!(loaded.specs.counts(), state.specs.counts());
}

#[test]
fn rows_of_runs_with_their_spec_inline_still_load() {
    // Rows as written before specs were stored apart: every run's row holds
    // its spec, and there is no gen/ row.
    let state = two_generations_with_runs();
    let rows = encoded(&state);
    let old_rows: Vec<(String, Vec<u8>)> = rows
        .iter()
        .filter(|(k, _)| !k.starts_with("gen/"))
        .map(|(key, value)| match key.strip_prefix("run/") {
            Some(id) => {
                let run = state.run(id).expect("run");
                let mut row: serde_json::Value = serde_json::from_slice(value).expect("json");
                row["spec"] = serde_json::to_value(&*run.spec).expect("spec");
                (key.clone(), serde_json::to_vec(&row).expect("json"))
            }
            None => (key.clone(), value.clone()),
        })
        .collect();
    let mut loaded = State::from_rows(old_rows.clone()).expect("decodes");
    for (id, run) in state.runs.iter() {
        assert_eq!(loaded.run(id), Some(run), "run {id} loads as it was");
    }
    assert_eq!(encoded(&loaded), rows, "the same rows as if stored apart");
    let job = loaded.job("build").expect("job").clone();
    let current: Vec<&Run> = loaded.runs_of_job("u1").filter(|r| r.generation == 2).collect();
    assert!(current.iter().all(|r| Arc::ptr_eq(&r.spec, &current[0].spec)));
    assert_eq!(*current[0].spec, *job.spec);
    let written: Vec<String> = loaded
        .take_changes()
        .expect("encodes")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        written,
        ["gen/u1/1", "gen/u1/2"],
        "the specs are stored apart at the next write"
    );

    // Halfway through an upgrade a store holds both kinds of run rows, and
    // the gen rows; even with the gen rows last they load the same.
    let mixed: Vec<(String, Vec<u8>)> = old_rows
        .into_iter()
        .chain(rows.iter().filter(|(k, _)| k.starts_with("gen/")).cloned())
        .collect();
    let loaded = State::from_rows(mixed).expect("decodes");
    assert_eq!(encoded(&loaded), rows);
    assert_eq!(loaded.specs.counts(), state.specs.counts());
}

#[test]
fn a_run_whose_spec_is_stored_nowhere_is_an_error_that_names_it() {
    let state = two_generations_with_runs();
    let rows: Vec<_> = encoded(&state).into_iter().filter(|(k, _)| k != "gen/u1/1").collect();
    let error = State::from_rows(rows).expect_err("a spec is missing");
    let CodecError::MissingSpec {
        key,
        job_uid,
        generation,
    } = &error
    else {
        panic!("unexpected error {error}")
    };
    assert!(key.starts_with("run/"), "{key}");
    assert_eq!((job_uid.as_str(), *generation), ("u1", 1));
    assert!(error.to_string().contains("gen/u1/1"), "{error}");
    let spec = serde_json::to_vec(&sample_spec("build")).expect("json");
    for key in ["gen/no-generation", "gen/u1/01", "gen/u1/+1", "gen/u1/"] {
        assert!(
            matches!(
                State::from_rows([(key, spec.as_slice())]),
                Err(CodecError::UnknownKey(k)) if k == key
            ),
            "{key} is refused"
        );
    }
}

#[test]
fn a_run_row_under_another_runs_key_is_an_error() {
    let rows: Vec<_> = encoded(&two_generations_with_runs())
        .into_iter()
        .map(|(key, value)| match key.as_str() {
            "run/u1-m2" => ("run/u1-m9".to_owned(), value),
            _ => (key, value),
        })
        .collect();
    let error = State::from_rows(rows).expect_err("damaged");
    assert!(
        matches!(&error, CodecError::MismatchedId { key, kind: "run", id } if key == "run/u1-m9" && id == "u1-m2"),
        "{error}"
    );
}

#[test]
fn a_token_row_under_another_id_is_an_error() {
    let mut state = State::default();
    let token = Token {
        id: "t1".into(),
        name: "ci".into(),
        role: TokenRole::Operator,
        hash: "ab".repeat(32),
        created_at: at(0),
        expires_at: None,
        revoked_at: None,
        revision: 0,
    };
    state.create_token(&token, at(0), 1).expect("created");
    let rows = encoded(&state);
    let moved = |from: &str, to: &str| -> Vec<(String, Vec<u8>)> {
        rows.iter()
            .map(|(key, value)| (if key == from { to.to_owned() } else { key.clone() }, value.clone()))
            .collect()
    };
    assert!(State::from_rows(moved("", "")).is_ok(), "as written, it loads");
    let error = State::from_rows(moved("token/t1", "token/t2")).expect_err("damaged");
    assert!(
        matches!(&error, CodecError::MismatchedId { key, kind: "token", id } if key == "token/t2" && id == "t1"),
        "{error}"
    );
    assert!(error.to_string().contains("holds token \"t1\""), "{error}");
}

#[test]
fn unknown_and_corrupt_rows_are_errors_not_panics() {
    assert!(matches!(
        State::from_rows([("zzz/1", b"{}".as_slice())]),
        Err(CodecError::UnknownKey(_))
    ));
    assert!(matches!(
        State::from_rows([("job/a", b"not json".as_slice())]),
        Err(CodecError::Decode { .. })
    ));
}

mod runs;

fn trigger(job: &str, request_id: &str) -> Op {
    Op::TriggerRun {
        job: job.to_owned(),
        request_id: request_id.to_owned(),
        params: BTreeMap::new(),
        force: false,
        trace: None,
    }
}

#[test]
fn a_batch_applies_each_command_as_its_own_entry_would() {
    let mut batched = State::default();
    let mut single = State::default();
    for (index, op) in [(1, create("build", "u1")), (2, create("lint", "u2"))] {
        apply(&mut batched, index, &command(0, op.clone())).expect("created");
        apply(&mut single, index, &command(0, op)).expect("created");
    }
    let ops = [
        trigger("build", "r1"),
        create("build", "u3"),
        trigger("lint", "r2"),
        trigger("missing", "r3"),
    ];
    let batch = Op::Batch {
        commands: ops.iter().cloned().map(|op| command(5, op)).collect(),
    };
    let Ok(Response::Batch(results)) = apply(&mut batched, 10, &command(5, batch)) else {
        panic!("a batch answers with one result per command");
    };
    assert_eq!(results.len(), 4);
    assert!(
        matches!(&results[0], Ok(Response::Triggered { .. })),
        "{:?}",
        results[0]
    );
    assert_eq!(
        results[1].as_ref().map_err(|e| e.kind),
        Err(RejectionKind::AlreadyExists)
    );
    assert!(
        matches!(&results[2], Ok(Response::Triggered { .. })),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().map_err(|e| e.kind), Err(RejectionKind::NotFound));
    // The same commands as separate entries at the same index give the same state.
    for op in ops {
        let _ = apply(&mut single, 10, &command(5, op));
    }
    assert_eq!(
        batched.take_changes().expect("encodes"),
        single.take_changes().expect("encodes")
    );
    // Keys keep commands that would share an index-derived id apart.
    assert_eq!(trigger("build", "a").batch_key(), create("build", "u9").batch_key());
    assert_ne!(trigger("build", "a").batch_key(), trigger("lint", "a").batch_key());
}

#[test]
fn a_batch_inside_a_batch_is_refused_and_changes_nothing() {
    let mut state = State::default();
    apply(&mut state, 1, &command(0, create("build", "u1"))).expect("created");
    state.take_changes().expect("encodes");
    let inner = Op::Batch {
        commands: vec![command(1, trigger("build", "r1"))],
    };
    let outer = Op::Batch {
        commands: vec![command(1, inner)],
    };
    let Ok(Response::Batch(results)) = apply(&mut state, 2, &command(1, outer)) else {
        panic!("a batch answers with one result per command");
    };
    assert_eq!(
        results[0].as_ref().map_err(|e| e.kind),
        Err(RejectionKind::InvalidArgument)
    );
    assert!(state.take_changes().expect("encodes").is_empty());
}

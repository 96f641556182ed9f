//! State-machine commands as they arrive in the Raft log (JSON): decoded,
//! then applied to an empty state and to one with jobs, runs and a worker.
//! A command may be refused; it must never panic the state machine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rota_proto::v1 as pb;
use rota_server::state::{Command, Op, State, WorkerInfo};

/// A state with a scheduled job, a worker and a pending run.
fn seeded() -> State {
    let mut state = State::default();
    let now = chrono::Utc::now();
    let spec = pb::JobSpec {
        name: "nightly".into(),
        schedule: Some(pb::Schedule {
            kind: Some(pb::schedule::Kind::Cron("* * * * *".into())),
            ..Default::default()
        }),
        task: Some(pb::Task {
            driver: pb::Driver::Exec as i32,
            command: vec!["true".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let Ok(spec) = rota_server::spec::validate(&spec) else {
        return state;
    };
    let ops = [
        Op::CreateJob { uid: "u1".into(), spec },
        Op::RegisterWorker {
            worker: "w1".into(),
            info: WorkerInfo::default(),
            held: Vec::new(),
        },
        Op::TriggerRun {
            job: "nightly".into(),
            request_id: "r1".into(),
            params: Default::default(),
            force: false,
            trace: None,
        },
    ];
    for (index, op) in ops.into_iter().enumerate() {
        let _ = state.apply(index as u64 + 1, &Command { now, op });
    }
    state
}

fuzz_target!(|data: &[u8]| {
    let Ok(command) = serde_json::from_slice::<Command>(data) else {
        return;
    };
    for mut state in [State::default(), seeded()] {
        let _ = state.apply(10, &command);
        let _ = state.take_changes();
        // Twice in a row as well: replays happen.
        let _ = state.apply(11, &command);
        let _ = state.take_changes();
    }
});

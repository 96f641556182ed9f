//! Proposes `Tick` when something is due: the earliest of the next schedule
//! slot, timeout or starting deadline, and history expiry, all read from the
//! state's derived index. Between those instants it sleeps (waking early on
//! any state change, which may move the earliest instant).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::RETRY_PAUSE;
use crate::node::NodeHandle;
use crate::state::{Op, Response};

/// Longest sleep when nothing is due (a state change wakes the loop earlier).
const IDLE: Duration = Duration::from_secs(3600);

/// The earliest instant at which a `Tick` has work.
fn next_due(node: &NodeHandle) -> Option<DateTime<Utc>> {
    let applied = node.state.read();
    let index = applied.state.index();
    [
        index.next_fire.first().map(|(at, _)| *at),
        index.deadlines.first().map(|(at, _)| *at),
        index.expiries.first().map(|(at, _)| *at),
        index.drains.first().map(|(at, _)| *at),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// Runs until `cancel`.
pub async fn run(node: NodeHandle, cancel: CancellationToken) {
    let mut changes = node.state.subscribe();
    loop {
        let due = next_due(&node);
        let now = Utc::now();
        if due.is_some_and(|at| at <= now) {
            let span = tracing::info_span!("tick", node = node.id, term = node.term());
            match tracing::Instrument::instrument(node.propose(Op::Tick), span).await {
                Ok(Response::Ticked(summary)) => {
                    tracing::debug!(?summary, "tick");
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "tick not committed");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(RETRY_PAUSE) => continue,
                    }
                }
            }
        }
        let wait = due.and_then(|at| (at - now).to_std().ok()).unwrap_or(IDLE).min(IDLE);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

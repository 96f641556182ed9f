//! Crash points for the chaos tests: `ROTA_TEST_CRASH_AT=POINT:N` makes the
//! process abort the N-th time it reaches storage point `POINT` — in the
//! middle of an append, an apply or a snapshot install, where a SIGKILL from
//! outside would only land by luck. Unset (always, outside the tests), a
//! point costs one atomic load.
//!
//! The points, each between two writes that must not be torn apart:
//! - `append-written`: log entries written, not yet fsynced;
//! - `apply-applied`: entries applied in memory, not yet stored;
//! - `apply-stored`: the state machine's batch stored, openraft not told
//!   (reached only by the applies that write to sled: see
//!   `state_machine::STORE_AFTER`);
//! - `snapshot-built`: a snapshot built and stored, openraft not told;
//! - `snapshot-install-stored`: a received snapshot stored, the state
//!   machine not yet replaced by it;
//! - `snapshot-install-replacing`: the state machine's rows replaced by a
//!   snapshot's, its last-applied id not yet stored.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the crash point.
pub const VAR: &str = "ROTA_TEST_CRASH_AT";

/// Every crash point.
pub const POINTS: [&str; 6] = [
    "append-written",
    "apply-applied",
    "apply-stored",
    "snapshot-built",
    "snapshot-install-stored",
    "snapshot-install-replacing",
];

struct Armed {
    point: String,
    remaining: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

/// Parses `POINT:N` (N ≥ 1; `POINT` alone means 1).
pub fn parse(value: &str) -> Result<(String, u64), String> {
    let (point, count) = value.split_once(':').unwrap_or((value, "1"));
    if !POINTS.contains(&point) {
        return Err(format!(
            "{VAR}: unknown crash point {point:?}; known: {}",
            POINTS.join(", ")
        ));
    }
    match count.parse::<u64>() {
        Ok(n) if n >= 1 => Ok((point.to_owned(), n)),
        _ => Err(format!("{VAR}: {count:?} is not a count ≥ 1 (POINT:N)")),
    }
}

/// Arms the crash point named by [`VAR`], if set; called once at start.
pub fn arm_from_env() -> Result<(), String> {
    let armed = match std::env::var(VAR) {
        Ok(value) => {
            let (point, n) = parse(&value)?;
            tracing::warn!(point, n, "test hook: this server will abort at a storage point");
            Some(Armed {
                point,
                remaining: AtomicU64::new(n),
            })
        }
        Err(_) => None,
    };
    let _ = ARMED.set(armed);
    Ok(())
}

/// Storage point `point` is reached: aborts the process if it is the armed
/// point's N-th time.
pub fn reached(point: &'static str) {
    let Some(Some(armed)) = ARMED.get() else {
        return;
    };
    if armed.point == point && armed.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
        eprintln!("test hook: aborting at storage point {point}");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn crash_points_parse_or_say_what_is_known() {
        assert_eq!(parse("apply-stored:3"), Ok(("apply-stored".into(), 3)));
        assert_eq!(parse("append-written"), Ok(("append-written".into(), 1)));
        let unknown = parse("fsync:1").expect_err("unknown point");
        assert!(
            unknown.contains("apply-stored") && unknown.contains("fsync"),
            "{unknown}"
        );
        assert!(parse("apply-stored:0").is_err());
        assert!(parse("apply-stored:x").is_err());
    }
}

//! Counts and durations of storage work, read by the metrics endpoint
//! ([`crate::metrics`]). Plain atomics: this module needs no metrics library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often something was done and how long it took in all.
pub struct Work {
    count: AtomicU64,
    nanos: AtomicU64,
}

impl Work {
    const fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        }
    }

    /// One more, which took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Their total duration so far, in seconds.
    pub fn seconds(&self) -> f64 {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed)).as_secs_f64()
    }
}

/// Snapshots built by this server (encoded and written durably).
pub static SNAPSHOTS_BUILT: Work = Work::new();

/// Snapshots received from the leader and installed.
pub static SNAPSHOTS_INSTALLED: Work = Work::new();

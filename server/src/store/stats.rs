//! Counts and durations of storage work, read by the metrics endpoint
//! ([`crate::metrics`]): plain atomics for snapshots, histograms (registered
//! by the endpoint) for the latency of making the Raft log durable.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts};

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

/// Buckets of the log's durability latencies, seconds: an fsync takes tens
/// of microseconds on a fast SSD and tens of milliseconds on a loaded disk.
const SYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Buckets of batch sizes, entries.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    // Constant, valid options: this cannot fail.
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .unwrap_or_else(|e| unreachable!("histogram {name}: {e}"))
}

fn latency(name: &str, help: &str) -> Histogram {
    histogram(name, help, &SYNC_BUCKETS)
}

/// Entries handed to the log in one append: how well proposals are batched.
pub static LOG_APPEND_ENTRIES: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "rota_raft_log_append_entries",
        "Raft log appends: entries handed to the log in one append.",
        &BATCH_BUCKETS,
    )
});

/// Operations proposed together in one log entry (group commit).
pub static PROPOSALS_PER_ENTRY: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "rota_raft_proposals_per_entry",
        "Group commit: operations this leader proposed together in one Raft log entry.",
        &BATCH_BUCKETS,
    )
});

/// Entries applied to the state machine in one call.
pub static APPLY_ENTRIES: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "rota_raft_apply_entries",
        "State machine applies: committed entries applied in one call.",
        &BATCH_BUCKETS,
    )
});

/// How long one apply call takes (the entries, their rows stored).
pub static APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    latency(
        "rota_raft_apply_seconds",
        "State machine applies: time to apply one batch of committed entries and store its rows.",
    )
});

/// From handing entries to the log to their fsync completing: what the node
/// waits for before it acknowledges them (batched appends share one fsync).
pub static LOG_APPEND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    latency(
        "rota_raft_log_append_seconds",
        "Raft log appends: time from handing entries to the log to their fsync completing.",
    )
});

/// Synced flushes a caller waits for: votes, truncations, purges.
pub static LOG_SYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    latency(
        "rota_raft_log_sync_seconds",
        "Raft log fsyncs waited for outside appends (votes, truncations, purges).",
    )
});

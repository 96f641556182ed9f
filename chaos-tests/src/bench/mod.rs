//! `rota-bench`: benchmarks that start what they measure — a 3-server rota
//! cluster on loopback (fsync on, as always) and, beside it, the peer it is
//! compared with on the same machine in the same run — and report ratios,
//! which survive a noisy shared machine better than absolute numbers.
//!
//! Scenarios: `writes` (durable replicated writes against a 3-member etcd;
//! built with the `etcd` feature, whose client crate needs `protoc`),
//! [`herd`], [`lateness`], [`throughput`], [`containers`] (against a raw
//! engine loop), [`failover`] and [`footprint`]. Each has a smoke size that
//! CI runs so the tool cannot rot; the numbers of real runs go to
//! BENCHMARKS.md.

pub mod containers;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod failover;
pub mod footprint;
pub mod herd;
pub mod lateness;
pub mod runs;
pub mod throughput;
#[cfg(feature = "etcd")]
pub mod writes;

use std::time::Duration;

use serde_json::json;

/// The size of a load scenario's run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Concurrent clients, one measurement each.
    pub clients: Vec<usize>,
    /// How long each measurement lasts.
    pub duration: Duration,
}

/// Latency samples of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    /// Adds a sample.
    pub fn push(&mut self, latency: Duration) {
        self.samples.push(latency);
    }

    /// Merges another set in.
    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `q` quantile (0.0–1.0), nearest rank; zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }
}

/// One row of a scenario's results.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured, e.g. "rota, 16 clients".
    pub name: String,
    /// Operations per second.
    pub per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Operations that failed.
    pub errors: u64,
}

impl Row {
    /// The row as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "per_second": (self.per_second * 10.0).round() / 10.0,
            "p50_ms": self.p50.as_secs_f64() * 1000.0,
            "p99_ms": self.p99.as_secs_f64() * 1000.0,
            "errors": self.errors,
        })
    }
}

/// Every server's `/metrics` samples (servers started with
/// [`crate::ServerSettings::http`]), by server id.
pub async fn server_metrics(cluster: &crate::Cluster) -> anyhow::Result<Metrics> {
    let mut all = std::collections::BTreeMap::new();
    for id in cluster.running_ids() {
        if let Some(addr) = &cluster.server(id)?.http_addr {
            all.insert(id, crate::scrape(addr).await?);
        }
    }
    Ok(Metrics(all))
}

/// `/metrics` samples of every server, by server id.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub std::collections::BTreeMap<u64, std::collections::BTreeMap<String, f64>>);

impl Metrics {
    /// The mean of histogram `name` (summed over its series) between
    /// `earlier` and these samples, per server, times `scale` (1000 turns
    /// seconds into milliseconds), with the number of observations: where
    /// a measurement spent its time.
    pub fn histogram_means(&self, earlier: &Metrics, name: &str, scale: f64) -> serde_json::Value {
        let sum_of = |samples: &std::collections::BTreeMap<String, f64>, suffix: &str| -> f64 {
            let series = format!("{name}_{suffix}");
            samples
                .iter()
                .filter(|(key, _)| **key == series || key.starts_with(&format!("{series}{{")))
                .map(|(_, value)| value)
                .sum()
        };
        let mut out = serde_json::Map::new();
        for (id, samples) in &self.0 {
            let before = earlier.0.get(id);
            let delta = |suffix: &str| sum_of(samples, suffix) - before.map_or(0.0, |b| sum_of(b, suffix));
            let count = delta("count");
            if count > 0.0 {
                out.insert(
                    format!("server {id}"),
                    json!({
                        "count": count,
                        "mean": (delta("sum") / count * scale * 100.0).round() / 100.0,
                    }),
                );
            }
        }
        serde_json::Value::Object(out)
    }
}

/// Prints rows as a table.
pub fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>7}",
        "", "ops/s", "p50 ms", "p99 ms", "errors"
    );
    for row in rows {
        println!(
            "{:<28} {:>10.1} {:>10.2} {:>10.2} {:>7}",
            row.name,
            row.per_second,
            row.p50.as_secs_f64() * 1000.0,
            row.p99.as_secs_f64() * 1000.0,
            row.errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut l = Latencies::default();
        assert_eq!(l.quantile(0.5), Duration::ZERO);
        for ms in 1..=100 {
            l.push(Duration::from_millis(ms));
        }
        assert_eq!(l.quantile(0.5), Duration::from_millis(50));
        assert_eq!(l.quantile(0.99), Duration::from_millis(99));
        assert_eq!(l.quantile(1.0), Duration::from_millis(100));
        assert_eq!(l.quantile(0.0), Duration::from_millis(1));
    }
}

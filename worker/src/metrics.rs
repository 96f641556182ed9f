//! Prometheus metrics and health of a worker, served over HTTP (`/metrics`,
//! `/healthz`, `/readyz`) when `http_listen` is set.
//!
//! The agent and its tasks update these as things happen; names follow
//! Prometheus conventions (`rota_worker_` prefix, `_total`, `_seconds`) and
//! labels stay bounded (no run or container ids).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rota_proto::telemetry::{Endpoint, encode, register};

/// The metric families of one worker.
pub struct Metrics {
    registry: Registry,
    /// Attempts held that have not ended (starting, running, being stopped).
    pub running_tasks: IntGauge,
    /// Attempts the worker runs at once (its configured slots).
    pub slots: IntGauge,
    /// 1 while registered with the cluster over a live session.
    pub connected: IntGauge,
    /// Registrations with the cluster (the first, then one per reconnect).
    pub registrations: IntCounter,
    /// Attempts started, by driver (`docker`, `exec`, `adopted`).
    pub attempts_started: IntCounterVec,
    /// Attempts that could not start, by driver.
    pub attempts_failed_to_start: IntCounterVec,
    /// Time from creating a container to the engine having started it.
    pub container_start_seconds: Histogram,
    /// Image pulls, by result (`ok`, `error`).
    pub image_pulls: IntCounterVec,
    /// Output bytes the cluster acknowledged.
    pub log_bytes_shipped: IntCounter,
    /// What reconciliation removed, by kind (`container`, `image`).
    pub reconcile_removals: IntCounterVec,
    shutting_down: AtomicBool,
    /// Why the last connection attempt failed, for `/readyz`.
    last_error: Mutex<Option<String>>,
}

impl Metrics {
    /// Registers every family, all bounded labels at zero.
    pub fn new(slots: u32) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let vec = register(&registry, IntCounterVec::new(Opts::new(name, help), &[label]))?;
            for value in values {
                vec.with_label_values(&[value]);
            }
            Ok::<_, prometheus::Error>(vec)
        };
        let drivers = ["docker", "exec", "adopted"];
        let metrics = Metrics {
            running_tasks: register(
                &registry,
                IntGauge::new(
                    "rota_worker_running_tasks",
                    "Attempts held by this worker that have not ended.",
                ),
            )?,
            slots: register(
                &registry,
                IntGauge::new("rota_worker_slots", "Attempts this worker runs at once."),
            )?,
            connected: register(
                &registry,
                IntGauge::new(
                    "rota_worker_connected",
                    "1 while the worker is registered with the cluster over a live session, else 0.",
                ),
            )?,
            registrations: register(
                &registry,
                IntCounter::new(
                    "rota_worker_registrations_total",
                    "Registrations with the cluster (the first, then one per reconnect).",
                ),
            )?,
            attempts_started: counter_vec(
                "rota_worker_attempts_started_total",
                "Attempts started (or adopted after a restart), by driver.",
                "driver",
                &drivers,
            )?,
            attempts_failed_to_start: counter_vec(
                "rota_worker_attempts_failed_to_start_total",
                "Attempts that could not be started, by driver.",
                "driver",
                &drivers,
            )?,
            container_start_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "rota_worker_container_start_seconds",
                        "Time from creating a container to the engine having started it (image pulls excluded).",
                    )
                    .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                ),
            )?,
            image_pulls: counter_vec(
                "rota_worker_image_pulls_total",
                "Image pulls, by result.",
                "result",
                &["ok", "error"],
            )?,
            log_bytes_shipped: register(
                &registry,
                IntCounter::new(
                    "rota_worker_log_shipped_bytes_total",
                    "Bytes of task output the cluster acknowledged.",
                ),
            )?,
            reconcile_removals: counter_vec(
                "rota_worker_reconcile_removals_total",
                "Containers of no attempt held and unused images removed by reconciliation, by kind.",
                "kind",
                &["container", "image"],
            )?,
            shutting_down: AtomicBool::new(false),
            last_error: Mutex::new(None),
            registry,
        };
        metrics.slots.set(i64::from(slots));
        Ok(metrics)
    }

    /// Notes how many attempts held have not ended.
    pub fn set_running(&self, running: usize) {
        self.running_tasks.set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// Notes a session: registered (`Ok`) or not reachable (`Err`, why).
    pub fn set_session(&self, session: Result<(), &str>) {
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match session {
            Ok(()) => {
                self.connected.set(1);
                self.registrations.inc();
                *last_error = None;
            }
            Err(why) => {
                self.connected.set(0);
                *last_error = Some(why.to_owned());
            }
        }
    }

    /// Notes that the worker is shutting down (it takes no new runs).
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}

impl Endpoint for Metrics {
    async fn metrics(&self) -> String {
        encode(&self.registry)
    }

    async fn readiness(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err("shutting down: taking no new runs".to_owned());
        }
        if self.connected.get() == 1 {
            return Ok(());
        }
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Err(match last_error.as_deref() {
            Some(why) => format!("not registered with the cluster: {why}"),
            None => "not registered with the cluster yet".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_follows_the_session_and_shutdown() {
        let metrics = Metrics::new(3).expect("metrics");
        assert_eq!(
            metrics.readiness().await,
            Err("not registered with the cluster yet".to_owned())
        );
        metrics.set_session(Ok(()));
        assert_eq!(metrics.readiness().await, Ok(()));
        metrics.set_session(Err("the server closed the session"));
        assert_eq!(
            metrics.readiness().await,
            Err("not registered with the cluster: the server closed the session".to_owned())
        );
        metrics.set_session(Ok(()));
        metrics.set_shutting_down();
        assert!(metrics.readiness().await.is_err());
        let text = metrics.metrics().await;
        assert!(text.contains("rota_worker_slots 3"), "{text}");
        assert!(text.contains("rota_worker_registrations_total 2"), "{text}");
        assert!(
            text.contains("rota_worker_image_pulls_total{result=\"error\"} 0"),
            "{text}"
        );
    }
}

//! Worker configuration: defaults < config file (TOML) < `ROTA_*`
//! environment < command-line flags, like the server's.
//!
//! Unknown keys in the file are errors. In the environment only variables
//! that name a worker option are read (`ROTA_SERVERS`, `ROTA_WORKER_ID`,
//! `ROTA_SLOTS`, ...). Lists (`servers`, `drivers`) may be written as TOML
//! arrays or comma-separated strings, `labels` as a table or `k=v,k=v`.
//! Every option is documented in `deploy/worker.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

pub use rota_proto::trace::LogFormat;

/// The configuration of `rota-worker`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Servers to connect to (`host:port`); any of them, the worker finds
    /// the leader.
    #[serde(deserialize_with = "list")]
    pub servers: Vec<String>,
    /// This worker's id, stable across its restarts: `[A-Za-z0-9._-]`, 1 to
    /// 63 characters. Default: the host name.
    pub worker_id: Option<String>,
    /// Labels that job constraints match.
    #[serde(deserialize_with = "labels")]
    pub labels: BTreeMap<String, String>,
    /// Attempts run at once.
    pub slots: u32,
    /// Where the worker keeps its journal and buffered output.
    pub data_dir: Option<PathBuf>,
    /// Drivers offered: `docker` and/or `exec`. Empty: `docker` if the
    /// engine answers. `exec` runs job commands as host processes with the
    /// worker's privileges, so it is only offered when listed.
    #[serde(deserialize_with = "list")]
    pub drivers: Vec<String>,
    /// How often containers and images are reconciled.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Images no run has used for this long are removed (`0s`: never).
    #[serde(with = "humantime_serde")]
    pub image_gc_age: Duration,
    /// How long a graceful shutdown (SIGTERM) lets running attempts finish
    /// before it stops them and hands them back.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Log output format.
    pub log_format: LogFormat,
    /// Address of the HTTP endpoint serving `/metrics` (Prometheus),
    /// `/healthz` and `/readyz`; unset: no HTTP endpoint.
    pub http_listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint spans are exported to (e.g.
    /// `http://127.0.0.1:4317`, an OpenTelemetry collector); unset: no export.
    pub otlp_endpoint: Option<String>,
    /// Mutual TLS with the servers (a worker certificate of the cluster's
    /// CA); unset: plain TCP.
    pub tls: Option<TlsFiles>,
    /// A file holding this worker's token (role `worker`), sent on every
    /// session; needed when the cluster has auth enabled.
    pub token_file: Option<PathBuf>,
    /// Host access job specs may ask for (none by default).
    pub security: HostPolicy,
}

pub use crate::policy::HostPolicy;
pub use rota_proto::tls::TlsFiles;

impl Default for Config {
    fn default() -> Self {
        Self {
            servers: vec!["127.0.0.1:7400".to_owned()],
            worker_id: None,
            labels: BTreeMap::new(),
            slots: 4,
            data_dir: None,
            drivers: Vec::new(),
            reconcile_interval: Duration::from_secs(60),
            image_gc_age: Duration::from_secs(24 * 3600),
            shutdown_timeout: Duration::from_secs(60),
            log_format: LogFormat::Text,
            http_listen: None,
            otlp_endpoint: None,
            tls: None,
            token_file: None,
            security: HostPolicy::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrString {
    List(Vec<String>),
    Text(String),
}

fn split_list(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(items) => items,
        ListOrString::Text(text) => split_list(&text).collect(),
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MapOrString {
    Map(BTreeMap<String, String>),
    Text(String),
}

fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    match MapOrString::deserialize(d)? {
        MapOrString::Map(map) => Ok(map),
        MapOrString::Text(text) => parse_labels(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses `k=v,k=v`.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for part in split_list(text) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("labels: {part:?} is not of the form KEY=VALUE"))?;
        labels.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(labels)
}

/// Options given as flags; `None` leaves the lower layers in charge.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct Flags {
    /// Servers, comma-separated host:port (any of them; the leader is found).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<String>,
    /// This worker's id, stable across restarts (default: the host name).
    #[arg(long = "id")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Labels, comma-separated key=value.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// Attempts run at once.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// Directory for the journal and buffered output.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Drivers offered, comma-separated: docker, exec (default: docker).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drivers: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Address for /metrics, /healthz and /readyz over HTTP, e.g.
    /// 127.0.0.1:9500.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint to export trace spans to, e.g.
    /// http://127.0.0.1:4317 (default: none, no export).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or has a bad value or unknown key.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    /// The merged configuration is inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// Option names, as they appear after `ROTA_` in the environment.
const ENV_KEYS: &[&str] = &[
    "servers",
    "worker_id",
    "labels",
    "slots",
    "data_dir",
    "drivers",
    "reconcile_interval",
    "image_gc_age",
    "shutdown_timeout",
    "log_format",
    "http_listen",
    "otlp_endpoint",
    "token_file",
];

/// Most attempts a worker may run at once (the server's bound).
pub const MAX_SLOTS: u32 = 1024;

impl Config {
    /// Merges the layers. `env` is the process environment (injected so tests
    /// can supply their own).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("ROTA_").map(str::to_ascii_lowercase) else {
                continue;
            };
            let key = key.replace("__", ".");
            if ENV_KEYS.contains(&key.as_str()) || key.starts_with("tls.") || key.starts_with("security.") {
                let value = match key.as_str() {
                    // Kept as text: a comma list must not become a number.
                    "servers" | "labels" | "drivers" | "worker_id" => figment::value::Value::from(value),
                    _ => match value.parse() {
                        Ok(value) => value,
                        Err(never) => match never {},
                    },
                };
                figment = figment.merge((key, value));
            }
        }
        figment = figment.merge(Serialized::globals(flags));
        let mut config: Config = figment.extract().map_err(Box::new)?;
        if config.worker_id.is_none() {
            config.worker_id = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .map(|h| h.split('.').next().unwrap_or_default().to_owned());
        }
        config.check()?;
        Ok(config)
    }

    /// The token in `token_file`, if one is configured.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Invalid(format!("token_file {}: {e}", path.display())))?;
        let token = text.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(ConfigError::Invalid(format!(
                "token_file {}: expected the token alone on one line (rotactl token create NAME --role worker)",
                path.display()
            )));
        }
        Ok(Some(token.to_owned()))
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.security.validate().map_err(ConfigError::Invalid)?;
        if self.servers.is_empty() {
            return invalid("servers is empty; give at least one host:port with --servers or ROTA_SERVERS".into());
        }
        for server in &self.servers {
            let ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return invalid(format!("servers: {server:?} is not HOST:PORT"));
            }
        }
        let id = self.worker_id.as_deref().unwrap_or_default();
        let id_ok = !id.is_empty()
            && id.len() <= 63
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !id_ok {
            return invalid(format!(
                "worker_id {id:?} is not valid; accepted: 1 to 63 characters of [A-Za-z0-9._-] (--id or ROTA_WORKER_ID)"
            ));
        }
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return invalid(format!(
                "slots {} is out of range; accepted: 1 to {MAX_SLOTS}",
                self.slots
            ));
        }
        if self.data_dir.is_none() {
            return invalid("data_dir is required: --data-dir, ROTA_DATA_DIR or data_dir in the config file".into());
        }
        for driver in &self.drivers {
            if driver != "docker" && driver != "exec" {
                return invalid(format!("drivers: {driver:?} is not a driver; accepted: docker, exec"));
            }
        }
        for key in self.labels.keys() {
            if key.is_empty() || key.len() > 63 {
                return invalid(format!("labels: key {key:?} must be 1 to 63 characters"));
            }
        }
        if self.reconcile_interval < Duration::from_secs(1) {
            return invalid("reconcile_interval must be at least 1s".into());
        }
        Ok(())
    }

    /// The worker's id (checked by [`Config::load`]).
    pub fn id(&self) -> &str {
        self.worker_id.as_deref().unwrap_or_default()
    }

    /// The data directory (checked by [`Config::load`]).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.as_deref().unwrap_or(Path::new("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn security_and_tls_come_from_the_file_or_the_environment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("worker.toml");
        std::fs::write(
            &file,
            "data_dir = \"/d\"\n[security]\nallow_host_paths = [\"/srv/cache\"]\n[tls]\nca_file = \"/t/ca.pem\"\ncert_file = \"/t/w.pem\"\nkey_file = \"/t/w-key.pem\"\n",
        )
        .expect("write");
        let config = Config::load(
            Some(&file),
            env(&[
                ("ROTA_SECURITY__ALLOW_PRIVILEGED", "true"),
                ("ROTA_SECURITY__ALLOW_CAPABILITIES", "[NET_ADMIN, SYS_PTRACE]"),
            ]),
            &Flags::default(),
        )
        .expect("loads");
        assert!(config.security.allow_privileged);
        assert_eq!(config.security.allow_host_paths, vec![PathBuf::from("/srv/cache")]);
        assert_eq!(config.security.allow_capabilities, vec!["NET_ADMIN", "SYS_PTRACE"]);
        assert_eq!(config.tls.map(|t| t.key_file), Some(PathBuf::from("/t/w-key.pem")));
        let unknown = Config::load(
            Some(&file),
            env(&[("ROTA_SECURITY__ALLOW_EVERYTHING", "true")]),
            &Flags::default(),
        )
        .expect_err("unknown key");
        assert!(unknown.to_string().contains("allow_everything"), "{unknown}");
    }

    #[test]
    fn layers_merge_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("worker.toml");
        std::fs::write(
            &file,
            "servers = [\"a:1\", \"b:2\"]\nworker_id = \"from-file\"\nslots = 2\ndata_dir = \"/d\"\n[labels]\nzone = \"a\"\n",
        )
        .expect("write");
        let flags = Flags {
            worker_id: Some("from-flag".into()),
            ..Flags::default()
        };
        let config = Config::load(
            Some(&file),
            env(&[
                ("ROTA_SLOTS", "3"),
                ("ROTA_LABELS", "zone=b,arch=x86"),
                ("ROTA_NODE_ID", "9"),
            ]),
            &flags,
        )
        .expect("loads");
        assert_eq!(config.servers, vec!["a:1", "b:2"]);
        assert_eq!(config.id(), "from-flag");
        assert_eq!(config.slots, 3);
        assert_eq!(config.labels.get("zone").map(String::as_str), Some("b"));
        assert_eq!(config.labels.get("arch").map(String::as_str), Some("x86"));
    }

    #[test]
    fn bad_values_name_the_option() {
        let flags = |f: Flags| Flags {
            data_dir: Some("/d".into()),
            worker_id: f.worker_id.clone().or(Some("w1".into())),
            ..f
        };
        let cases = [
            (
                flags(Flags {
                    servers: Some("nohost".into()),
                    ..Flags::default()
                }),
                "servers",
            ),
            (
                flags(Flags {
                    worker_id: Some("bad id".into()),
                    ..Flags::default()
                }),
                "worker_id",
            ),
            (
                flags(Flags {
                    slots: Some(0),
                    ..Flags::default()
                }),
                "slots",
            ),
            (
                flags(Flags {
                    drivers: Some("docker,lxc".into()),
                    ..Flags::default()
                }),
                "drivers",
            ),
            (
                flags(Flags {
                    labels: Some("novalue".into()),
                    ..Flags::default()
                }),
                "labels",
            ),
        ];
        for (flags, option) in cases {
            let err = Config::load(None, Vec::new(), &flags)
                .expect_err("rejected")
                .to_string();
            assert!(err.contains(option), "{err:?} should name {option}");
        }
        let err = Config::load(None, Vec::new(), &Flags::default()).expect_err("no data dir");
        assert!(err.to_string().contains("data_dir"), "{err}");
    }

    #[test]
    fn example_config_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/worker.toml");
        let mut from_file: Config = Figment::from(Toml::file_exact(&path))
            .extract()
            .expect("deploy/worker.toml parses");
        // Security is on in the deploy files (issue 10), off by default in
        // the binary; everything else states the defaults.
        assert!(from_file.tls.is_some() && from_file.token_file.is_some());
        assert_eq!(from_file.security.default_memory, "2Gi");
        from_file.tls = None;
        from_file.token_file = None;
        from_file.security.default_memory = String::new();
        assert_eq!(from_file, Config::default());
    }
}

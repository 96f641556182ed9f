//! Job spec files: the YAML (or TOML) shape people write, as in
//! docs/job-spec.md, and its conversion to and from `rota.v1.JobSpec`.
//!
//! Parsing here is structural: unknown keys, wrong types and unknown enum
//! words are refused with the file, the key path and the line. Values
//! (cron syntax, durations, time zones, image references) are checked by the
//! server, which reports the field path of any bad one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::Error;

/// One job spec, as written in a file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// Job name.
    pub name: String,
    /// When it fires; absent for on-demand jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleFile>,
    /// `allow`, `forbid`, `replace` or `queue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyWord>,
    /// Queue bound with `concurrency: queue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
    /// What runs.
    pub task: TaskFile,
    /// Limit on a whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// SIGTERM-to-SIGKILL grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace: Option<String>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryFile>,
    /// Placement constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<ConstraintsFile>,
    /// History retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryFile>,
}

/// `schedule:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// Cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// One-shot instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// IANA zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `none`, `latest` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpWord>,
    /// Bound for `catch_up: all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_catch_up: Option<u32>,
    /// Deadline to start a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<String>,
}

/// `task:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// `docker` or `exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverWord>,
    /// Image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `if-not-present`, `always` or `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullWord>,
    /// Argument array.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Extra arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret environment: sealed by the cluster, never shown in clear.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesFile>,
    /// Docker network mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// Host access (workers refuse it unless their config allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostFile>,
}

/// `task.host:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    /// Privileged mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Capabilities added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Host paths mounted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountFile>,
    /// Host devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// The host's process namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_pid: bool,
    /// The host's IPC namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_ipc: bool,
}

/// One of `task.host.mounts:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountFile {
    /// On the worker.
    pub host_path: String,
    /// In the container.
    pub container_path: String,
    /// Read only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// `task.resources:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesFile {
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// `retry:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Attempts in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// First delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// Delay cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<String>,
    /// Outcomes retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<RetryOnWord>,
}

/// `constraints:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintsFile {
    /// Required worker labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `history:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryFile {
    /// Succeeded runs kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_succeeded: Option<u32>,
    /// Unsuccessful runs kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_failed: Option<u32>,
    /// Maximum age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// `concurrency:` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum ConcurrencyWord {
    Allow,
    Forbid,
    Replace,
    Queue,
}

/// `schedule.catch_up:` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum CatchUpWord {
    None,
    Latest,
    All,
}

/// `task.driver:` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum DriverWord {
    Docker,
    Exec,
}

/// `task.pull:` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum PullWord {
    IfNotPresent,
    Always,
    Never,
}

/// `retry.on:` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum RetryOnWord {
    Failed,
    Lost,
    #[serde(alias = "timed_out")]
    TimedOut,
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

fn some_text(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// A spec file or directory could not be read.
fn file_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InvalidArgument {
        message: format!("{}: {reason}", path.display()),
        violations: vec![],
    }
}

impl SpecFile {
    /// Parses YAML holding one or more specs (`---` separated).
    pub fn parse_yaml(text: &str) -> Result<Vec<SpecFile>, Error> {
        let mut specs = Vec::new();
        let invalid = |e: serde_norway::Error| Error::InvalidArgument {
            message: e.to_string(),
            violations: vec![],
        };
        for document in serde_norway::Deserializer::from_str(text) {
            let value = serde_norway::Value::deserialize(document).map_err(invalid)?;
            // A list of specs or jobs (`rotactl job list -o yaml`), or one.
            let items = match value {
                serde_norway::Value::Sequence(items) => items,
                value => vec![value],
            };
            for value in items {
                // A job as `rotactl job get -o yaml` prints it: the spec is under `spec:`.
                let value = match value.get("spec") {
                    Some(spec) if value.get("uid").is_some() => spec.clone(),
                    _ => value,
                };
                let spec: SpecFile = serde_path_to_error::deserialize(value).map_err(|e| {
                    let path = e.path().to_string();
                    let message = e.into_inner().to_string();
                    Error::InvalidArgument {
                        message: if path == "." {
                            message
                        } else {
                            format!("{path}: {message}")
                        },
                        violations: vec![],
                    }
                })?;
                spec.check()?;
                specs.push(spec);
            }
        }
        Ok(specs)
    }

    /// Parses TOML holding one spec.
    pub fn parse_toml(text: &str) -> Result<SpecFile, Error> {
        let spec: SpecFile = toml::from_str(text).map_err(|e| Error::InvalidArgument {
            message: e.to_string(),
            violations: vec![],
        })?;
        spec.check()?;
        Ok(spec)
    }

    /// What the file's shape cannot say but the protobuf cannot hold either:
    /// a schedule has one kind at most.
    fn check(&self) -> Result<(), Error> {
        if let Some(schedule) = &self.schedule {
            let kinds = [&schedule.cron, &schedule.every, &schedule.at];
            if kinds.iter().filter(|k| k.is_some()).count() > 1 {
                let description = "set only one of cron, every and at".to_owned();
                return Err(Error::InvalidArgument {
                    message: format!("schedule: {description}"),
                    violations: vec![crate::FieldViolation {
                        field: "schedule".into(),
                        description,
                    }],
                });
            }
        }
        Ok(())
    }

    /// Reads specs from a file (`.yaml`, `.yml`, `.json`, `.toml`) or from
    /// every such file of a directory, in name order. Every file is read
    /// before anything is returned; if any cannot be parsed, the error lists
    /// each bad file, so nothing is applied from a half-readable directory.
    pub fn load(path: &Path) -> Result<Vec<(PathBuf, SpecFile)>, Error> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| file_error(path, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && spec_format(p).is_some())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(file_error(path, "holds no .yaml, .yml, .json or .toml files"));
            }
            files
        } else {
            vec![path.to_owned()]
        };
        let mut specs = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            let parsed = std::fs::read_to_string(&file)
                .map_err(|e| Error::InvalidArgument {
                    message: e.to_string(),
                    violations: vec![],
                })
                .and_then(|content| match spec_format(&file) {
                    Some(Format::Toml) => SpecFile::parse_toml(&content).map(|s| vec![s]),
                    Some(Format::Yaml) => SpecFile::parse_yaml(&content),
                    None => Err(Error::InvalidArgument {
                        message: "unknown spec format; use a .yaml, .yml, .json or .toml file".into(),
                        violations: vec![],
                    }),
                });
            match parsed {
                Ok(parsed) => specs.extend(parsed.into_iter().map(|spec| (file.clone(), spec))),
                Err(e) => errors.push(format!("{}: {e}", file.display())),
            }
        }
        if !errors.is_empty() {
            return Err(Error::InvalidArgument {
                message: errors.join("\n"),
                violations: vec![],
            });
        }
        Ok(specs)
    }

    /// Renders as YAML.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# cannot render spec: {e}\n"))
    }

    /// The spec as `rota.v1.JobSpec`.
    pub fn to_proto(&self) -> pb::JobSpec {
        let schedule = self.schedule.as_ref().map(|s| pb::Schedule {
            kind: match (&s.cron, &s.every, &s.at) {
                (Some(cron), _, _) => Some(pb::schedule::Kind::Cron(cron.clone())),
                (None, Some(every), _) => Some(pb::schedule::Kind::Every(every.clone())),
                (None, None, Some(at)) => Some(pb::schedule::Kind::At(at.clone())),
                (None, None, None) => None,
            },
            timezone: text(&s.timezone),
            catch_up: s.catch_up.map_or(0, |w| match w {
                CatchUpWord::None => pb::CatchUp::None as i32,
                CatchUpWord::Latest => pb::CatchUp::Latest as i32,
                CatchUpWord::All => pb::CatchUp::All as i32,
            }),
            max_catch_up: s.max_catch_up,
            starting_deadline: text(&s.starting_deadline),
        });
        let task = &self.task;
        pb::JobSpec {
            name: self.name.clone(),
            schedule,
            concurrency: self.concurrency.map_or(0, |w| match w {
                ConcurrencyWord::Allow => pb::Concurrency::Allow as i32,
                ConcurrencyWord::Forbid => pb::Concurrency::Forbid as i32,
                ConcurrencyWord::Replace => pb::Concurrency::Replace as i32,
                ConcurrencyWord::Queue => pb::Concurrency::Queue as i32,
            }),
            max_queued: self.max_queued,
            task: Some(pb::Task {
                driver: task.driver.map_or(0, |w| match w {
                    DriverWord::Docker => pb::Driver::Docker as i32,
                    DriverWord::Exec => pb::Driver::Exec as i32,
                }),
                image: text(&task.image),
                pull: task.pull.map_or(0, |w| match w {
                    PullWord::IfNotPresent => pb::PullPolicy::IfNotPresent as i32,
                    PullWord::Always => pb::PullPolicy::Always as i32,
                    PullWord::Never => pb::PullPolicy::Never as i32,
                }),
                command: task.command.clone(),
                args: task.args.clone(),
                env: task.env.clone().into_iter().collect::<HashMap<_, _>>(),
                secret_env: task.secret_env.clone().into_iter().collect::<HashMap<_, _>>(),
                working_dir: text(&task.working_dir),
                user: text(&task.user),
                resources: task.resources.as_ref().map(|r| pb::Resources {
                    cpu: r.cpu.unwrap_or_default(),
                    memory: text(&r.memory),
                }),
                network_mode: text(&task.network_mode),
                host: task.host.as_ref().map(|h| pb::HostAccess {
                    privileged: h.privileged,
                    cap_add: h.cap_add.clone(),
                    mounts: h
                        .mounts
                        .iter()
                        .map(|m| pb::Mount {
                            host_path: m.host_path.clone(),
                            container_path: m.container_path.clone(),
                            read_only: m.read_only,
                        })
                        .collect(),
                    devices: h.devices.clone(),
                    host_pid: h.host_pid,
                    host_ipc: h.host_ipc,
                }),
            }),
            timeout: text(&self.timeout),
            kill_grace: text(&self.kill_grace),
            retry: self.retry.as_ref().map(|r| pb::RetryPolicy {
                max_attempts: r.max_attempts.unwrap_or_default(),
                backoff: text(&r.backoff),
                max_backoff: text(&r.max_backoff),
                on: r
                    .on
                    .iter()
                    .map(|w| match w {
                        RetryOnWord::Failed => pb::RetryOn::Failed as i32,
                        RetryOnWord::Lost => pb::RetryOn::Lost as i32,
                        RetryOnWord::TimedOut => pb::RetryOn::TimedOut as i32,
                    })
                    .collect(),
            }),
            constraints: self.constraints.as_ref().map(|c| pb::Constraints {
                labels: c.labels.clone().into_iter().collect(),
            }),
            history: self.history.as_ref().map(|h| pb::HistoryPolicy {
                keep_succeeded: h.keep_succeeded,
                keep_failed: h.keep_failed,
                max_age: text(&h.max_age),
            }),
        }
    }

    /// A spec in file form, from `rota.v1.JobSpec` (e.g. as the server
    /// returns it, with defaults filled in).
    pub fn from_proto(spec: &pb::JobSpec) -> SpecFile {
        let schedule = spec.schedule.as_ref().map(|s| {
            let (cron, every, at) = match &s.kind {
                Some(pb::schedule::Kind::Cron(c)) => (Some(c.clone()), None, None),
                Some(pb::schedule::Kind::Every(e)) => (None, Some(e.clone()), None),
                Some(pb::schedule::Kind::At(a)) => (None, None, Some(a.clone())),
                None => (None, None, None),
            };
            ScheduleFile {
                cron,
                every,
                at,
                timezone: some_text(&s.timezone),
                catch_up: match s.catch_up() {
                    pb::CatchUp::Unspecified => None,
                    pb::CatchUp::None => Some(CatchUpWord::None),
                    pb::CatchUp::Latest => Some(CatchUpWord::Latest),
                    pb::CatchUp::All => Some(CatchUpWord::All),
                },
                max_catch_up: s.max_catch_up,
                starting_deadline: some_text(&s.starting_deadline),
            }
        });
        let task = spec.task.clone().unwrap_or_default();
        SpecFile {
            name: spec.name.clone(),
            schedule,
            concurrency: match spec.concurrency() {
                pb::Concurrency::Unspecified => None,
                pb::Concurrency::Allow => Some(ConcurrencyWord::Allow),
                pb::Concurrency::Forbid => Some(ConcurrencyWord::Forbid),
                pb::Concurrency::Replace => Some(ConcurrencyWord::Replace),
                pb::Concurrency::Queue => Some(ConcurrencyWord::Queue),
            },
            max_queued: spec.max_queued,
            task: TaskFile {
                driver: match task.driver() {
                    pb::Driver::Unspecified => None,
                    pb::Driver::Docker => Some(DriverWord::Docker),
                    pb::Driver::Exec => Some(DriverWord::Exec),
                },
                image: some_text(&task.image),
                pull: match task.pull() {
                    pb::PullPolicy::Unspecified => None,
                    pb::PullPolicy::IfNotPresent => Some(PullWord::IfNotPresent),
                    pb::PullPolicy::Always => Some(PullWord::Always),
                    pb::PullPolicy::Never => Some(PullWord::Never),
                },
                command: task.command.clone(),
                args: task.args.clone(),
                env: task.env.clone().into_iter().collect(),
                secret_env: task.secret_env.clone().into_iter().collect(),
                working_dir: some_text(&task.working_dir),
                user: some_text(&task.user),
                resources: task.resources.as_ref().map(|r| ResourcesFile {
                    cpu: (r.cpu != 0.0).then_some(r.cpu),
                    memory: some_text(&r.memory),
                }),
                network_mode: some_text(&task.network_mode),
                host: task.host.as_ref().map(|h| HostFile {
                    privileged: h.privileged,
                    cap_add: h.cap_add.clone(),
                    mounts: h
                        .mounts
                        .iter()
                        .map(|m| MountFile {
                            host_path: m.host_path.clone(),
                            container_path: m.container_path.clone(),
                            read_only: m.read_only,
                        })
                        .collect(),
                    devices: h.devices.clone(),
                    host_pid: h.host_pid,
                    host_ipc: h.host_ipc,
                }),
            },
            timeout: some_text(&spec.timeout),
            kill_grace: some_text(&spec.kill_grace),
            retry: spec.retry.as_ref().map(|r| RetryFile {
                max_attempts: (r.max_attempts != 0).then_some(r.max_attempts),
                backoff: some_text(&r.backoff),
                max_backoff: some_text(&r.max_backoff),
                on: r
                    .on()
                    .filter_map(|on| match on {
                        pb::RetryOn::Failed => Some(RetryOnWord::Failed),
                        pb::RetryOn::Lost => Some(RetryOnWord::Lost),
                        pb::RetryOn::TimedOut => Some(RetryOnWord::TimedOut),
                        pb::RetryOn::Unspecified => None,
                    })
                    .collect(),
            }),
            constraints: spec
                .constraints
                .as_ref()
                .filter(|c| !c.labels.is_empty())
                .map(|c| ConstraintsFile {
                    labels: c.labels.clone().into_iter().collect(),
                }),
            history: spec.history.as_ref().map(|h| HistoryFile {
                keep_succeeded: h.keep_succeeded,
                keep_failed: h.keep_failed,
                max_age: some_text(&h.max_age),
            }),
        }
    }
}

enum Format {
    Yaml,
    Toml,
}

fn spec_format(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        // JSON is YAML.
        "yaml" | "yml" | "json" => Some(Format::Yaml),
        "toml" => Some(Format::Toml),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIEF_YAML: &str = r#"
name: nightly-build            # [a-z0-9][a-z0-9-]{0,62}
schedule:
  cron: "0 30 2 * * *"         # or: every: 30s | at: 2026-12-01T02:00:00Z
  timezone: Europe/Berlin
  catch_up: latest             # none | latest | all
  max_catch_up: 10
  starting_deadline: 10m
concurrency: forbid            # allow | forbid | replace | queue
task:
  driver: docker               # docker | exec
  image: registry.example.com/ci/builder:1.4
  pull: if-not-present
  command: ["sh", "-c", "make test"]
  env: { GIT_REF: main }
  resources: { cpu: 1.0, memory: 512Mi }
timeout: 30m
kill_grace: 10s
retry: { max_attempts: 3, backoff: 10s, max_backoff: 5m, on: [failed, lost] }
constraints: { labels: { arch: amd64 } }
history: { keep_succeeded: 20, keep_failed: 50, max_age: 30d }
"#;

    #[test]
    fn the_brief_example_parses_and_round_trips() {
        let specs = SpecFile::parse_yaml(BRIEF_YAML).expect("parses");
        assert_eq!(specs.len(), 1);
        let spec = &specs[0];
        let proto = spec.to_proto();
        assert_eq!(proto.concurrency(), pb::Concurrency::Forbid);
        assert_eq!(
            proto.task.as_ref().map(|t| t.image.as_str()),
            Some("registry.example.com/ci/builder:1.4")
        );
        assert_eq!(SpecFile::from_proto(&proto), *spec);
        assert_eq!(SpecFile::parse_yaml(&spec.to_yaml()).expect("reparses"), specs);
    }

    #[test]
    fn toml_has_the_same_keys() {
        let toml = r#"
name = "nightly-build"
concurrency = "forbid"
timeout = "30m"
[schedule]
cron = "0 30 2 * * *"
timezone = "Europe/Berlin"
[task]
image = "debian:12"
command = ["make", "test"]
[task.env]
GIT_REF = "main"
"#;
        let spec = SpecFile::parse_toml(toml).expect("parses");
        assert_eq!(
            spec.schedule.as_ref().and_then(|s| s.cron.as_deref()),
            Some("0 30 2 * * *")
        );
        assert_eq!(spec.task.env.get("GIT_REF").map(String::as_str), Some("main"));
    }

    #[test]
    fn structural_mistakes_name_the_key() {
        let err = SpecFile::parse_yaml("name: a\ntask: { imag: x }\n").expect_err("unknown key");
        assert!(err.to_string().contains("imag"), "{err}");
        let err = SpecFile::parse_yaml("name: a\nconcurrency: sometimes\ntask: {}\n").expect_err("bad word");
        assert!(err.to_string().contains("sometimes"), "{err}");
        assert!(err.to_string().contains("forbid"), "lists the accepted words: {err}");
        let err = SpecFile::parse_toml("name = 'a'\n[task]\ncommand = 'make'\n").expect_err("string for array");
        assert!(err.to_string().contains("command"), "{err}");
        // YAML mistakes name the path of the field.
        let err = SpecFile::parse_yaml("name: a\ntask: { command: 'sh -c hi' }\n").expect_err("string for array");
        assert!(
            err.to_string().starts_with("task.command: invalid type: string"),
            "{err}"
        );
        let err = SpecFile::parse_yaml("name: a\nschedule: { every: 5 }\ntask: {}\n").expect_err("number");
        assert!(err.to_string().starts_with("schedule.every: "), "{err}");
    }

    #[test]
    fn a_list_of_jobs_as_printed_by_list_applies_back() {
        let printed =
            "- name: a\n  uid: u1\n  spec: { name: a, task: { image: x } }\n- name: b\n  task: { image: y }\n";
        let specs = SpecFile::parse_yaml(printed).expect("parses");
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_job_as_printed_by_get_applies_back() {
        let printed =
            "name: a\nuid: 1234\ngeneration: 3\nsuspended: false\nrevision: 9\nspec:\n  name: a\n  task: {image: x}\n";
        let specs = SpecFile::parse_yaml(printed).expect("parses");
        assert_eq!(specs[0].task.image.as_deref(), Some("x"));
        let json = r#"{"name":"a","uid":"u","spec":{"name":"a","task":{"image":"x"}}}"#;
        assert_eq!(SpecFile::parse_yaml(json).expect("json parses"), specs);
    }

    #[test]
    fn a_schedule_has_one_kind_at_most() {
        let err = SpecFile::parse_yaml("name: a\nschedule: { cron: '* * * * *', every: 30s }\ntask: {image: x}\n")
            .expect_err("two kinds");
        assert!(err.to_string().contains("only one of cron, every and at"), "{err}");
        let err = SpecFile::parse_toml(
            "name = 'a'\n[schedule]\nevery = '1m'\nat = '2026-01-01T00:00:00Z'\n[task]\nimage = 'x'\n",
        )
        .expect_err("two kinds");
        assert!(err.to_string().contains("only one of"), "{err}");
    }

    #[test]
    fn several_yaml_documents_in_one_file() {
        let specs =
            SpecFile::parse_yaml("name: a\ntask: {image: x}\n---\nname: b\ntask: {image: y}\n").expect("parses");
        assert_eq!(specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn load_reads_files_and_directories_and_names_the_bad_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.yaml"), "name: a\ntask: {image: x}\n").expect("write");
        std::fs::write(dir.path().join("b.toml"), "name = 'b'\n[task]\nimage = 'y'\n").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        let specs = SpecFile::load(dir.path()).expect("loads");
        assert_eq!(
            specs.iter().map(|(_, s)| s.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );

        std::fs::write(dir.path().join("c.yml"), "name: c\ntask: [oops]\n").expect("write");
        std::fs::write(dir.path().join("d.json"), "{\"name\": \"d\"}").expect("write");
        let err = SpecFile::load(dir.path()).expect_err("bad files");
        assert!(err.to_string().contains("c.yml"), "{err}");
        assert!(err.to_string().contains("d.json"), "every bad file is named: {err}");
    }
}

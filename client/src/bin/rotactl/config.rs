//! `rotactl`'s config file: named contexts (a cluster's servers and the
//! request deadline to use with it), like kubeconfig, and which one is
//! current.
//!
//! ```yaml
//! current-context: prod
//! contexts:
//!   prod:
//!     servers: [rota-1.example.com:7400, rota-2.example.com:7400]
//!   local:
//!     servers: [127.0.0.1:7401]
//!     timeout: 5s
//! ```
//!
//! The file is `--config`, else `ROTACTL_CONFIG`, else
//! `$XDG_CONFIG_HOME/rota/config.yaml` (`~/.config/rota/config.yaml`).
//! Where the servers come from, first match wins: `--servers`; the context
//! named by `--context` or `ROTACTL_CONTEXT`; `ROTA_SERVERS`; the file's
//! current context; `127.0.0.1:7400`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The config file's contents.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Contexts by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// A cluster to talk to.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Its servers, `host:port`.
    pub servers: Vec<String>,
    /// Deadline of each request attempt.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// File holding the API token.
    #[serde(default, rename = "token-file", skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Mutual TLS: the CA, certificate and key files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<rota_client::TlsFiles>,
}

/// Where the config file is, when not given.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("rota").join("config.yaml"))
}

impl Config {
    /// Reads the file at `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let config: Config = serde_norway::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (expected `current-context: NAME` and `contexts: {{NAME: {{servers: [HOST:PORT, ...], timeout: 15s}}}}`)",
                path.display()
            )
        })?;
        Ok(config)
    }

    /// Writes the file at `path` (creating its directory), atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, serde_norway::to_string(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The context names, for messages.
    pub fn names(&self) -> String {
        if self.contexts.is_empty() {
            "none defined; add one with `rotactl config set-context NAME HOST:PORT...`".to_owned()
        } else {
            self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// The context `name`, or the current one when `name` is `None`.
    pub fn context(&self, name: Option<&str>) -> anyhow::Result<Option<(&str, &Context)>> {
        let (wanted, what) = match (name, self.current_context.as_deref()) {
            (Some(name), _) => (name, "no context"),
            (None, Some(current)) => (current, "the current context is"),
            (None, None) => return Ok(None),
        };
        match self.contexts.get_key_value(wanted) {
            Some((name, context)) => Ok(Some((name.as_str(), context))),
            None => bail!(
                "{what} {wanted:?}, which the config file does not define; defined: {} \
                 (rotactl config use-context NAME)",
                self.names()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_round_trips_and_names_its_current_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/config.yaml");
        assert_eq!(Config::load(&path).expect("missing is empty"), Config::default());
        let mut config = Config::default();
        config.contexts.insert(
            "local".into(),
            Context {
                servers: vec!["127.0.0.1:7401".into()],
                timeout: Some(Duration::from_secs(5)),
                ..Context::default()
            },
        );
        config.current_context = Some("local".into());
        config.save(&path).expect("saved");
        let loaded = Config::load(&path).expect("loaded");
        assert_eq!(loaded, config);
        let (name, context) = loaded.context(None).expect("valid").expect("current");
        assert_eq!(name, "local");
        assert_eq!(context.servers, ["127.0.0.1:7401"]);
        let error = loaded.context(Some("prod")).expect_err("unknown context");
        assert!(error.to_string().contains("defined: local"), "{error}");
    }

    #[test]
    fn a_bad_file_says_what_is_expected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "contexts:\n  a: { server: [x] }\n").expect("written");
        let error = Config::load(&path).expect_err("unknown field");
        assert!(error.to_string().contains("servers"), "{error}");
        // A dangling current context is an error only when used, so the
        // config commands can still repair the file.
        std::fs::write(&path, "current-context: b\ncontexts:\n  a: { servers: [x] }\n").expect("written");
        let config = Config::load(&path).expect("loads");
        let error = config.context(None).expect_err("dangling current context");
        assert!(
            error
                .to_string()
                .contains("\"b\", which the config file does not define; defined: a"),
            "{error}"
        );
        assert!(config.context(Some("a")).expect("named").is_some());
    }
}

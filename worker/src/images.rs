//! Which images this worker's runs used, and when last, for image garbage
//! collection.
//!
//! Only images that runs on this worker used are ever collected — an image
//! the operator put on the host is not the worker's to remove — and only
//! when no container uses them (the engine refuses to remove those, and
//! attempts still held are skipped before asking). Kept in
//! `DATA_DIR/images.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Last use of each image, shared between the agent and its GC passes.
#[derive(Debug, Clone)]
pub struct ImageUse {
    path: PathBuf,
    last_used: Arc<Mutex<BTreeMap<String, u64>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ImageUse {
    /// Loads `DATA_DIR/images.json` (empty if absent or unreadable).
    pub fn load(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("images.json");
        let last_used = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            last_used: Arc::new(Mutex::new(last_used)),
        })
    }

    fn change(&self, change: impl FnOnce(&mut BTreeMap<String, u64>)) {
        let mut map = self.last_used.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut map);
        let tmp = self.path.with_extension("json.tmp");
        let saved = serde_json::to_vec(&*map)
            .map_err(std::io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot save image use");
        }
    }

    /// Notes that a run uses `image` now.
    pub fn used(&self, image: &str) {
        self.change(|map| {
            map.insert(image.to_owned(), now_ms());
        });
    }

    /// Forgets `image` (it was removed).
    pub fn forget(&self, image: &str) {
        self.change(|map| {
            map.remove(image);
        });
    }

    /// Images not used for `age` (none when `age` is zero).
    pub fn expired(&self, age: Duration) -> Vec<String> {
        if age.is_zero() {
            return Vec::new();
        }
        let cutoff = now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        let map = self.last_used.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|(_, used)| **used < cutoff)
            .map(|(image, _)| image.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_last_use_and_survives_reload() {
        let dir = tempfile::tempdir().expect("temp dir");
        let images = ImageUse::load(dir.path()).expect("loads");
        images.used("a:1");
        assert!(images.expired(Duration::from_secs(3600)).is_empty());
        assert!(images.expired(Duration::ZERO).is_empty(), "age 0 never collects");
        images.change(|map| {
            map.insert("old:1".into(), 1);
        });
        let reloaded = ImageUse::load(dir.path()).expect("reloads");
        assert_eq!(reloaded.expired(Duration::from_secs(3600)), vec!["old:1".to_owned()]);
        reloaded.forget("old:1");
        assert!(
            ImageUse::load(dir.path())
                .expect("reloads")
                .expired(Duration::from_secs(1))
                .is_empty()
        );
    }
}

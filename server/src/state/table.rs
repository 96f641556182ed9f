//! A keyed collection of the state machine that remembers which keys changed
//! since it was last persisted.
//!
//! The state machine keeps its whole state in memory and persists only what
//! the commands since its last write touched; a [`Table`] records those keys
//! so the store does not have to diff or rewrite everything.
//!
//! Rows are reference-counted and never changed in place (a change inserts
//! a new row), so [`Table::share`] copies a table for a snapshot without
//! copying its rows.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

/// Rows ordered by key, with the set of keys changed since the last
/// [`Table::take_changed`]. Keys are shared strings: a run's id is its key,
/// its own `id` and the derived index's entries, one copy for all.
#[derive(Debug, Clone)]
pub struct Table<T> {
    rows: BTreeMap<Arc<str>, Arc<T>>,
    changed: BTreeSet<Arc<str>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            rows: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }
}

impl<T> Table<T> {
    /// The row under `key`.
    pub fn get(&self, key: &str) -> Option<&T> {
        self.rows.get(key).map(Arc::as_ref)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// All rows in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &T)> {
        self.rows.iter().map(|(key, row)| (key, row.as_ref()))
    }

    /// Rows with keys strictly after `after` (all rows for `None`), in order.
    pub fn iter_after<'a>(&'a self, after: Option<&'a str>) -> impl Iterator<Item = (&'a Arc<str>, &'a T)> {
        let lower = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        self.rows
            .range::<str, _>((lower, Bound::Unbounded))
            .map(|(key, row)| (key, row.as_ref()))
    }

    /// Inserts or replaces a row and marks it changed.
    pub fn insert(&mut self, key: impl Into<Arc<str>>, row: T) {
        self.insert_shared(key, Arc::new(row));
    }

    /// [`Table::insert`] of a row shared with others.
    pub fn insert_shared(&mut self, key: impl Into<Arc<str>>, row: Arc<T>) {
        let key = key.into();
        self.changed.insert(key.clone());
        self.rows.insert(key, row);
    }

    /// Removes a row and marks it changed.
    pub fn remove(&mut self, key: &str) -> Option<Arc<T>> {
        let (key, removed) = self.rows.remove_entry(key)?;
        self.changed.insert(key);
        Some(removed)
    }

    /// How many keys changed since the last [`Table::take_changed`].
    pub fn changed_count(&self) -> usize {
        self.changed.len()
    }

    /// Keys changed since the last call, with their current rows (`None`
    /// for removed keys). Clears the record.
    pub fn take_changed(&mut self) -> Vec<(Arc<str>, Option<&T>)> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .map(|key| {
                let row = self.rows.get(&*key).map(Arc::as_ref);
                (key, row)
            })
            .collect()
    }

    /// Inserts a row loaded from storage, without marking it changed.
    pub fn load(&mut self, key: impl Into<Arc<str>>, row: T) {
        self.load_shared(key, Arc::new(row));
    }

    /// [`Table::load`] of a row shared with others.
    pub fn load_shared(&mut self, key: impl Into<Arc<str>>, row: Arc<T>) {
        self.rows.insert(key.into(), row);
    }

    /// A copy of the rows that shares them with this table (it copies the
    /// keys and counts references, never a row), without the record of
    /// changes.
    pub fn share(&self) -> Self {
        Self {
            rows: self.rows.clone(),
            changed: BTreeSet::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_reported_once_with_current_rows() {
        let mut table = Table::default();
        table.insert("a".to_owned(), 1);
        table.insert("b".to_owned(), 2);
        table.insert("a".to_owned(), 3);
        table.remove("b");
        table.remove("missing");
        let changed: Vec<_> = table.take_changed().into_iter().map(|(k, v)| (k, v.copied())).collect();
        assert_eq!(changed, vec![("a".into(), Some(3)), ("b".into(), None)]);
        assert!(table.take_changed().is_empty());
    }

    #[test]
    fn iter_after_excludes_the_cursor() {
        let mut table = Table::default();
        for key in ["a", "b", "c"] {
            table.load(key.to_owned(), ());
        }
        let keys: Vec<_> = table.iter_after(Some("a")).map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(table.iter_after(None).count(), 3);
        assert!(table.take_changed().is_empty(), "loading marks nothing changed");
    }

    #[test]
    fn a_shared_copy_keeps_its_rows_while_the_table_changes() {
        let mut table = Table::default();
        table.insert("a".to_owned(), String::from("one"));
        table.insert("b".to_owned(), String::from("two"));
        let copy = table.share();
        assert!(
            std::ptr::eq(copy.get("a").expect("a"), table.get("a").expect("a")),
            "rows are shared"
        );
        table.insert("a".to_owned(), String::from("uno"));
        table.remove("b");
        let rows: Vec<_> = copy.iter().map(|(k, v)| (&**k, v.as_str())).collect();
        assert_eq!(rows, [("a", "one"), ("b", "two")]);
        assert_eq!(copy.changed_count(), 0, "a copy has no changes to store");
        assert_eq!(table.get("a").map(String::as_str), Some("uno"));
    }
}

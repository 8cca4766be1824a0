//! A partition's streams by name, and the same names in the order of their hash.
//!
//! [`Streams`] is the stream index's map (`HashMap<String, StreamEntry>`, read through
//! `Deref`) plus `order`: every name beside its [`stream_hash`], sorted. The hash order is the
//! order of the RESP port's SCAN cursor (`src/server/resp_keys.rs`): a SCAN call starts at its
//! cursor's position in O(log n) and reads only the names it passes over, where a listing of
//! every stream of the partition took 0.48 s per call with a million streams.
//!
//! It also counts the names of each database (`database_of`), for DBSIZE and INFO keyspace
//! without a listing of every stream (`Partition::stream_counts`).
//!
//! Invariant: `order` holds exactly `(stream_hash(name), name)` for each name of the map,
//! and `per_database` counts the map's names by database. The map is changed only through
//! the methods below, which keep both (a name is added to or removed from all at once);
//! `check` asserts it in tests.

use std::collections::{BTreeSet, HashMap};
use std::ops::Deref;

use super::change::{database_of, DATABASES};
use super::partition::StreamEntry;
use crate::protocol::stream_hash;

#[derive(Default)]
pub(super) struct Streams {
    map: HashMap<String, StreamEntry>,
    order: BTreeSet<(u64, Box<str>)>,
    /// How many names each database ([`database_of`]) has in the map.
    per_database: [u64; DATABASES as usize],
}

impl Deref for Streams {
    type Target = HashMap<String, StreamEntry>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<'a> IntoIterator for &'a Streams {
    type Item = (&'a String, &'a StreamEntry);
    type IntoIter = std::collections::hash_map::Iter<'a, String, StreamEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl From<HashMap<String, StreamEntry>> for Streams {
    fn from(map: HashMap<String, StreamEntry>) -> Streams {
        let order = map.keys().map(|name| key(name)).collect();
        let mut per_database = [0; DATABASES as usize];
        for name in map.keys() {
            per_database[database_of(name).0 as usize] += 1;
        }
        Streams {
            map,
            order,
            per_database,
        }
    }
}

/// `name`'s place in `order`.
fn key(name: &str) -> (u64, Box<str>) {
    (stream_hash(name.as_bytes()), name.into())
}

impl Streams {
    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut StreamEntry> {
        self.map.get_mut(name)
    }

    /// The entry of `name`, made (empty) if it has none.
    pub(super) fn entry_or_default(&mut self, name: &str) -> &mut StreamEntry {
        if !self.map.contains_key(name) {
            self.order.insert(key(name));
            self.per_database[database_of(name).0 as usize] += 1;
            self.map.insert(name.to_string(), StreamEntry::default());
        }
        self.map.get_mut(name).expect("inserted above")
    }

    pub(super) fn insert(&mut self, name: String, entry: StreamEntry) {
        if self.map.insert(name.clone(), entry).is_none() {
            self.order.insert(key(&name));
            self.per_database[database_of(&name).0 as usize] += 1;
        }
    }

    pub(super) fn remove(&mut self, name: &str) -> Option<StreamEntry> {
        let entry = self.map.remove(name)?;
        let removed = self
            .order
            .remove(&(stream_hash(name.as_bytes()), Box::from(name)));
        assert!(removed, "every stream has its place in the order");
        self.per_database[database_of(name).0 as usize] -= 1;
        Some(entry)
    }

    /// Keeps the streams for which `keep` is true.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&str, &mut StreamEntry) -> bool) {
        let (order, per_database) = (&mut self.order, &mut self.per_database);
        self.map.retain(|name, entry| {
            let kept = keep(name, entry);
            if !kept {
                order.remove(&key(name));
                per_database[database_of(name).0 as usize] -= 1;
            }
            kept
        });
    }

    /// The streams whose hash is at least `from`, in the order of their hashes (equal hashes
    /// by name).
    pub(super) fn at_or_above_hash(
        &self,
        from: u64,
    ) -> impl Iterator<Item = (u64, &str, &StreamEntry)> {
        let start: (u64, Box<str>) = (from, Box::from(""));
        self.order.range(start..).map(|(hash, name)| {
            let entry = self
                .map
                .get(&**name)
                .expect("every name in the order is a stream");
            (*hash, &**name, entry)
        })
    }

    /// How many streams of the map each database has (existing or not yet: see
    /// `Partition::stream_counts`).
    pub(super) fn per_database(&self) -> [u64; DATABASES as usize] {
        self.per_database
    }

    /// Asserts the module's invariant.
    #[cfg(test)]
    pub(super) fn check(&self) {
        assert_eq!(self.order.len(), self.map.len(), "one place per stream");
        let mut per_database = [0; DATABASES as usize];
        for name in self.map.keys() {
            per_database[database_of(name).0 as usize] += 1;
        }
        assert_eq!(per_database, self.per_database, "names counted by database");
        for (hash, name) in &self.order {
            assert!(self.map.contains_key(&**name), "{name:?} is a stream");
            assert_eq!(*hash, stream_hash(name.as_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Added, made, removed and kept streams keep their places; a listing from a hash gives
    /// every stream at or above it in hash order.
    #[test]
    fn streams_are_listed_in_hash_order_from_any_hash() {
        let mut s = Streams::default();
        for i in 0..200 {
            s.entry_or_default(&format!("s{i}"));
        }
        s.insert("s5".into(), StreamEntry::default());
        s.insert("other".into(), StreamEntry::default());
        s.insert("\u{0}3\u{0}x3".into(), StreamEntry::default());
        s.entry_or_default("\u{0}3\u{0}y");
        assert_eq!(s.per_database()[3], 2, "two names of database 3");
        assert!(s.remove("s7").is_some() && s.remove("s7").is_none());
        s.retain(|name, _| !name.ends_with('3'));
        s.check();
        let mut all: Vec<(u64, String)> = s
            .keys()
            .map(|n| (stream_hash(n.as_bytes()), n.clone()))
            .collect();
        all.sort();
        assert_eq!(all.len(), 200 - 1 - 20 + 2);
        assert_eq!(s.per_database()[..4], [180, 0, 0, 1], "x3 ended with a 3");
        for from in [0, all[50].0, all[50].0 + 1, u64::MAX] {
            let listed: Vec<(u64, String)> = s
                .at_or_above_hash(from)
                .map(|(h, n, _)| (h, n.to_string()))
                .collect();
            let expect: Vec<(u64, String)> =
                all.iter().filter(|(h, _)| *h >= from).cloned().collect();
            assert_eq!(listed, expect, "from {from}");
        }
        let rebuilt = Streams::from(s.map);
        rebuilt.check();
    }
}

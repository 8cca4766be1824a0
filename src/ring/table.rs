//! Interning of event-type names (and any other short names) to dense ids, so ring columns
//! hold numbers and a type-prefix filter becomes a set of ids.
//!
//! Owned by the partition's shard, which alone issues ids; ids are stable for the table's
//! life (not persisted: the ring is rebuilt from the journal at start-up, and the table with
//! it). Other threads look names up through [`Names`], a handle on the same list: the list
//! only grows (a new name appends under a write lock, which only a name never seen before
//! takes), and a reader takes the read lock once per query, never per event.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Names ↔ ids (ids start at 1; 0 is never issued).
#[derive(Debug, Default)]
pub struct NameTable {
    ids: HashMap<String, u64>,
    names: Names,
}

/// A read-only handle on a table's names, for any thread.
#[derive(Clone, Debug, Default)]
pub struct Names(Arc<RwLock<Vec<String>>>);

impl NameTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `name`, issuing one if needed.
    pub fn intern(&mut self, name: &str) -> u64 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let mut names = self
            .names
            .0
            .write()
            .expect("the name list is never poisoned");
        names.push(name.to_string());
        let id = names.len() as u64;
        self.ids.insert(name.to_string(), id);
        id
    }

    pub fn id(&self, name: &str) -> Option<u64> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: u64) -> Option<String> {
        self.names.name(id)
    }

    /// Ids of every name starting with `prefix` (all ids for an empty prefix).
    pub fn ids_with_prefix(&self, prefix: &str) -> Vec<u64> {
        self.names.ids_with_prefix(prefix)
    }

    /// A handle other threads read the names through.
    pub fn names(&self) -> Names {
        self.names.clone()
    }
}

impl Names {
    /// The id of `name`, if it was interned.
    pub fn id(&self, name: &str) -> Option<u64> {
        let names = self.0.read().expect("the name list is never poisoned");
        names.iter().position(|n| n == name).map(|i| i as u64 + 1)
    }

    pub fn name(&self, id: u64) -> Option<String> {
        let names = self.0.read().expect("the name list is never poisoned");
        id.checked_sub(1)
            .and_then(|i| names.get(i as usize))
            .cloned()
    }

    /// Ids of every name starting with `prefix` (all ids for an empty prefix).
    pub fn ids_with_prefix(&self, prefix: &str) -> Vec<u64> {
        let names = self.0.read().expect("the name list is never poisoned");
        names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.starts_with(prefix))
            .map(|(i, _)| i as u64 + 1)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_prefixes_select_ids() {
        let mut t = NameTable::new();
        let a = t.intern("OrderPlaced");
        let b = t.intern("OrderShipped");
        let c = t.intern("Payment");
        assert_eq!(t.intern("OrderPlaced"), a);
        assert_eq!(t.name(b).as_deref(), Some("OrderShipped"));
        // Another thread's handle sees the same names, and those issued later.
        let names = t.names();
        let d = t.intern("OrderCancelled");
        assert_eq!(names.ids_with_prefix("Order"), vec![a, b, d]);
        assert_eq!(t.ids_with_prefix("Order"), vec![a, b, d]);
        assert_eq!(t.ids_with_prefix("").len(), 4);
        assert_eq!(t.id("Payment"), Some(c));
        assert_eq!(t.name(0), None);
    }
}

//! Interning of event-type names (and any other short names) to dense ids, so ring columns
//! hold numbers and a type-prefix filter becomes a set of ids.
//!
//! Owned by the partition's shard; ids are stable for the table's life (not persisted: the
//! ring is rebuilt from the journal at start-up, and the table with it).

use std::collections::HashMap;

/// Names ↔ ids (ids start at 1; 0 is never issued).
#[derive(Debug, Default)]
pub struct NameTable {
    ids: HashMap<String, u64>,
    names: Vec<String>,
}

impl NameTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `name`, issuing one if needed.
    pub fn intern(&mut self, name: &str) -> u64 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        self.names.push(name.to_string());
        let id = self.names.len() as u64;
        self.ids.insert(name.to_string(), id);
        id
    }

    pub fn id(&self, name: &str) -> Option<u64> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: u64) -> Option<&str> {
        id.checked_sub(1)
            .and_then(|i| self.names.get(i as usize))
            .map(String::as_str)
    }

    /// Ids of every name starting with `prefix` (all ids for an empty prefix).
    pub fn ids_with_prefix(&self, prefix: &str) -> Vec<u64> {
        self.names
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
        assert_eq!(t.name(b), Some("OrderShipped"));
        assert_eq!(t.ids_with_prefix("Order"), vec![a, b]);
        assert_eq!(t.ids_with_prefix("").len(), 3);
        assert_eq!(t.id("Payment"), Some(c));
        assert_eq!(t.name(0), None);
    }
}

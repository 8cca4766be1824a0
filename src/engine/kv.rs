//! The built-in key-value model that `evringd` serves through EXECUTE and QUERY (model name
//! `"kv"`). Keys are spread over the partitions by the same hash as stream names; each
//! partition's keys live in one [`Engine`](super::Engine) owned by that partition's shard,
//! with its journal in `DATA_DIR/p<N>/kv/`.
//!
//! Commands and queries are JSON objects (the wire blobs), results too:
//!
//! | request | result |
//! |---|---|
//! | `{"op":"set","key":K,"value":V}` | `{"version":n,"lsn":l}` (1 for a new key, +1 per change; l = the command's LSN in the key's partition) |
//! | `{"op":"delete","key":K}` | `{"deleted":true/false,"lsn":l}` |
//! | `{"op":"cas","key":K,"expected_version":n,"value":V}` (n = 0: the key must not exist) | `{"version":n,"lsn":l}`, or error 10 with the current version |
//! | `{"op":"get","key":K}` (query; `"as_of":LSN`: the state with every command below that LSN of the key's partition applied) | `{"key":K,"value":V,"version":n}` or `null` |
//! | `{"op":"list","prefix":P,"limit":n}` (query; all partitions, sorted by key) | `[{"key","value","version"}, …]` |
//!
//! Every change raises a domain event — `KeySet` (`{"key","value","version"}`) or `KeyDeleted`
//! (`{"key"}`) — which SUBSCRIBE target 3 (model `"kv"`) delivers, catch-up then live.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Command, Context, DomainError, Model};

/// One key's value and version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub value: String,
    pub version: u64,
}

#[derive(Default, Debug, Serialize, Deserialize)]
pub struct KvModel {
    pub entries: BTreeMap<String, KvEntry>,
}

impl Model for KvModel {}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum KvCommand {
    Set {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    Cas {
        key: String,
        expected_version: u64,
        value: String,
    },
}

impl KvCommand {
    pub fn key(&self) -> &str {
        match self {
            KvCommand::Set { key, .. } | KvCommand::Delete { key } | KvCommand::Cas { key, .. } => {
                key
            }
        }
    }
}

/// What a command did. A CAS whose expected version does not match changes nothing and
/// reports the current version (the server answers it with error 10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutcome {
    /// The key's new version, and the command's LSN in its partition (`as_of` LSN + 1
    /// shows the state right after it).
    Version {
        version: u64,
        lsn: u64,
    },
    Deleted {
        deleted: bool,
        lsn: u64,
    },
    Conflict {
        current: u64,
    },
}

impl Command<KvModel> for KvCommand {
    const NAME: &'static str = "kv";
    type Output = KvOutcome;
    fn execute(&self, m: &mut KvModel, ctx: &mut Context) -> Result<KvOutcome, DomainError> {
        let lsn = ctx.lsn();
        match self {
            KvCommand::Set { key, value } => {
                let version = set(m, key, value);
                raise_set(ctx, key, value, version);
                Ok(KvOutcome::Version { version, lsn })
            }
            KvCommand::Delete { key } => {
                let deleted = m.entries.remove(key).is_some();
                if deleted {
                    let data = serde_json::json!({"key": key}).to_string();
                    ctx.raise("kv", "KeyDeleted", data);
                }
                Ok(KvOutcome::Deleted { deleted, lsn })
            }
            KvCommand::Cas {
                key,
                expected_version,
                value,
            } => {
                let current = m.entries.get(key).map_or(0, |e| e.version);
                if current != *expected_version {
                    return Ok(KvOutcome::Conflict { current });
                }
                let version = set(m, key, value);
                raise_set(ctx, key, value, version);
                Ok(KvOutcome::Version { version, lsn })
            }
        }
    }
}

/// The domain event of a change: `KeySet` with `{"key","value","version"}`.
fn raise_set(ctx: &mut Context, key: &str, value: &str, version: u64) {
    let data = serde_json::json!({"key": key, "value": value, "version": version}).to_string();
    ctx.raise("kv", "KeySet", data);
}

fn set(m: &mut KvModel, key: &str, value: &str) -> u64 {
    let e = m.entries.entry(key.to_string()).or_insert(KvEntry {
        value: String::new(),
        version: 0,
    });
    e.version += 1;
    e.value = value.to_string();
    e.version
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum KvQuery {
    Get {
        key: String,
        #[serde(default)]
        as_of: Option<u64>,
    },
    List {
        #[serde(default)]
        prefix: String,
        #[serde(default = "default_limit")]
        limit: usize,
    },
}

fn default_limit() -> usize {
    1000
}

/// Largest `limit` of a list query.
pub const LIST_LIMIT_MAX: usize = 10_000;

/// `{"key","value","version"}` of one entry.
pub fn entry_json(key: &str, e: &KvEntry) -> serde_json::Value {
    serde_json::json!({"key": key, "value": e.value, "version": e.version})
}

/// The entries of `m` with `prefix`, in key order, at most `limit`.
pub fn list(m: &KvModel, prefix: &str, limit: usize) -> Vec<serde_json::Value> {
    m.entries
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .take(limit)
        .map(|(k, e)| entry_json(k, e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(m: &mut KvModel, c: KvCommand) -> KvOutcome {
        c.execute(m, &mut Context::new(0, 0)).unwrap()
    }

    #[test]
    fn set_delete_and_cas_follow_versions() {
        let mut m = KvModel::default();
        let set = |k: &str, v: &str| KvCommand::Set {
            key: k.into(),
            value: v.into(),
        };
        let v = |version| KvOutcome::Version { version, lsn: 0 };
        assert_eq!(run(&mut m, set("a", "1")), v(1));
        assert_eq!(run(&mut m, set("a", "2")), v(2));
        let cas = |v: u64| KvCommand::Cas {
            key: "a".into(),
            expected_version: v,
            value: "3".into(),
        };
        assert_eq!(run(&mut m, cas(1)), KvOutcome::Conflict { current: 2 });
        assert_eq!(m.entries["a"].value, "2", "a failed CAS changes nothing");
        assert_eq!(run(&mut m, cas(2)), v(3));
        assert_eq!(
            run(&mut m, KvCommand::Delete { key: "a".into() }),
            KvOutcome::Deleted {
                deleted: true,
                lsn: 0
            }
        );
        assert_eq!(run(&mut m, cas(0)), v(1), "0 = must not exist");
        run(&mut m, set("ab", "x"));
        run(&mut m, set("b", "y"));
        let l = list(&m, "a", 10);
        assert_eq!(l.len(), 2);
        assert_eq!(l[1]["key"], "ab");
    }

    #[test]
    fn the_wire_json_parses_and_mistakes_are_errors() {
        let c: KvCommand = serde_json::from_str(r#"{"op":"set","key":"k","value":"v"}"#).unwrap();
        assert_eq!(c.key(), "k");
        let q: KvQuery = serde_json::from_str(r#"{"op":"get","key":"k","as_of":7}"#).unwrap();
        assert!(matches!(q, KvQuery::Get { as_of: Some(7), .. }));
        assert!(serde_json::from_str::<KvCommand>(r#"{"op":"put","key":"k"}"#).is_err());
        assert!(serde_json::from_str::<KvCommand>(r#"{"op":"set","key":"k"}"#).is_err());
    }
}

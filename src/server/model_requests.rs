//! EXECUTE and QUERY: the built-in key-value model, routed by key, and a served model.
use std::rc::Rc;

use super::route::{error_response, unavailable, unexpected, OpResult, PartOp, Shard};
use super::ApiError;
use crate::protocol::{code, partition_of, Response};

impl Shard {
    /// An operation on the partition's key-value engine.
    pub(super) async fn kv_op(&self, partition: u32, op: PartOp) -> OpResult {
        use crate::engine::kv::{entry_json, list, KvOutcome};
        let Some(engine) = self.kv.get(&partition) else {
            return OpResult::Err(unavailable("key-value partition not on this shard"));
        };
        let engine_err = super::served_model::engine_error;
        match op {
            PartOp::KvExecute(cmd) => match engine.execute(cmd).await {
                Ok(KvOutcome::Version { version, lsn }) => {
                    OpResult::Json(serde_json::json!({"version": version, "lsn": lsn}))
                }
                Ok(KvOutcome::Deleted { deleted, lsn }) => {
                    OpResult::Json(serde_json::json!({"deleted": deleted, "lsn": lsn}))
                }
                Ok(KvOutcome::Conflict { current }) => OpResult::Err(ApiError {
                    code: code::WRONG_EXPECTED_VERSION,
                    message: format!("the key is at version {current}"),
                    current_version: Some(current as i64),
                }),
                Err(e) => OpResult::Err(engine_err(e)),
            },
            PartOp::KvGet { key, as_of: None } => {
                match engine.read(|m| m.entries.get(&key).map(|e| entry_json(&key, e))) {
                    Ok(v) => OpResult::Json(v.unwrap_or(serde_json::Value::Null)),
                    Err(e) => OpResult::Err(engine_err(e)),
                }
            }
            PartOp::KvGet {
                key,
                as_of: Some(lsn),
            } => match engine.state_at(lsn).await {
                Ok(m) => OpResult::Json(
                    m.entries
                        .get(&key)
                        .map_or(serde_json::Value::Null, |e| entry_json(&key, e)),
                ),
                Err(e) => OpResult::Err(ApiError::new(code::INVALID_ARGUMENT, e.to_string())),
            },
            PartOp::KvList { prefix, limit } => match engine.read(|m| list(m, &prefix, limit)) {
                Ok(v) => OpResult::Json(serde_json::Value::Array(v)),
                Err(e) => OpResult::Err(engine_err(e)),
            },
            _ => unreachable!("kv_op is only called with key-value operations"),
        }
    }

    /// EXECUTE / QUERY of the built-in `kv` model: decode the JSON blob, route by key.
    pub(super) async fn model_request(
        self: &Rc<Self>,
        model: &str,
        blob: &[u8],
        is_query: bool,
    ) -> Response {
        use crate::engine::kv::{KvCommand, KvQuery, LIST_LIMIT_MAX};
        if self.shared.served_model.as_deref() == Some(model) {
            let op = PartOp::Model {
                blob: blob.to_vec(),
                is_query,
            };
            return match self.call(0, op).await {
                OpResult::Blob(result) if is_query => Response::Queried { result },
                OpResult::Blob(result) => Response::Executed { result },
                OpResult::Err(e) => error_response(e),
                other => unexpected(other),
            };
        }
        if model != "kv" {
            return Response::error(
                code::INVALID_ARGUMENT,
                format!("no model named {model:?} is served (this server serves \"kv\")"),
            );
        }
        let partitions = self.shared.partitions;
        let bad = |e: serde_json::Error| {
            Response::error(code::INVALID_ARGUMENT, format!("bad kv request: {e}"))
        };
        let result = if is_query {
            let q: KvQuery = match serde_json::from_slice(blob) {
                Ok(q) => q,
                Err(e) => return bad(e),
            };
            match q {
                KvQuery::Get { key, as_of } => {
                    let p = partition_of(&key, partitions);
                    self.call(p, PartOp::KvGet { key, as_of }).await
                }
                KvQuery::List { prefix, limit } => {
                    let limit = limit.min(LIST_LIMIT_MAX);
                    let mut all = Vec::new();
                    for p in 0..partitions {
                        let op = PartOp::KvList {
                            prefix: prefix.clone(),
                            limit,
                        };
                        match self.call(p, op).await {
                            OpResult::Json(serde_json::Value::Array(v)) => all.extend(v),
                            OpResult::Err(e) => return error_response(e),
                            other => return unexpected(other),
                        }
                    }
                    all.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
                    all.truncate(limit);
                    OpResult::Json(serde_json::Value::Array(all))
                }
            }
        } else {
            let c: KvCommand = match serde_json::from_slice(blob) {
                Ok(c) => c,
                Err(e) => return bad(e),
            };
            let p = partition_of(c.key(), partitions);
            self.call(p, PartOp::KvExecute(c)).await
        };
        match result {
            OpResult::Json(v) => {
                let result = serde_json::to_vec(&v).expect("JSON values encode");
                if is_query {
                    Response::Queried { result }
                } else {
                    Response::Executed { result }
                }
            }
            OpResult::Err(e) => error_response(e),
            other => unexpected(other),
        }
    }
}

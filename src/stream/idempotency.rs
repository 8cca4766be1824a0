//! The idempotency window and its rule (docs/PROTOCOL.md, APPEND): which appends repeat
//! events already written, which are new, and which conflict.

use std::collections::HashMap;

use super::error::StreamError;
use crate::protocol::Event;

/// Where an event with an id was written: a retry whose first event has this id gets the
/// original result back.
pub(super) struct IdemEntry {
    pub(super) stream: String,
    pub(super) version: u64,
    pub(super) lsn: u64,
}

/// An append that repeats earlier events (by their ids): their versions and LSNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Retry {
    pub(super) first_version: u64,
    pub(super) first_lsn: u64,
    pub(super) count: u64,
}

/// The idempotency rule for an append of `events` to `stream`, against the window `idem`:
///
/// - no event id of the append is in the window: a new append (`Ok(None)`);
/// - every event has an id, and the ids are in the window at consecutive versions (and LSNs)
///   of `stream`, the first event's first: a retry (`Ok(Some)`), answered with those
///   versions once they are durable — whether the original is durable already or still in
///   flight;
/// - anything else — some ids known and some not, known at other places, an event without an
///   id among known ones, or one id twice in the append: error 12, and nothing is written
///   (writing it would duplicate events, and answering it as a retry would invent a result).
pub(super) fn check_ids(
    idem: &HashMap<[u8; 16], IdemEntry>,
    stream: &str,
    events: &[Event],
) -> Result<Option<Retry>, StreamError> {
    let none = [0u8; 16];
    let Some(known) = events
        .iter()
        .position(|e| e.id != none && idem.contains_key(&e.id))
    else {
        if events.len() > 1 {
            let mut ids: Vec<&[u8; 16]> = events
                .iter()
                .map(|e| &e.id)
                .filter(|id| **id != none)
                .collect();
            ids.sort_unstable();
            if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
                return Err(StreamError::DuplicateEventId(crate::journal::hex(w[0])));
            }
        }
        return Ok(None);
    };
    let first = idem.get(&events[0].id).filter(|_| events[0].id != none);
    let retry = first.filter(|f| f.stream == stream).and_then(|f| {
        events
            .iter()
            .enumerate()
            .all(|(i, e)| {
                idem.get(&e.id).is_some_and(|hit| {
                    e.id != none
                        && hit.stream == stream
                        && hit.version == f.version + i as u64
                        && hit.lsn == f.lsn + i as u64
                })
            })
            .then_some(Retry {
                first_version: f.version,
                first_lsn: f.lsn,
                count: events.len() as u64,
            })
    });
    match retry {
        Some(r) => Ok(Some(r)),
        None => {
            let hit = &idem[&events[known].id];
            Err(StreamError::NotARetry {
                index: known,
                id: crate::journal::hex(&events[known].id),
                stream: hit.stream.clone(),
                version: hit.version,
            })
        }
    }
}

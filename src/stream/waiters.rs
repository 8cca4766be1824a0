//! Readers waiting for a stream's next entries (the RESP port's blocking XREAD): each wait
//! names some streams of the partition, each with the stream ID after which an entry wakes
//! it, and ends at the first such entry made visible ([`Waiters::published`]) or when it is
//! cancelled.
//!
//! Invariant: `by_stream` lists a wait under a stream exactly while the wait is registered
//! in `waits` and names that stream. A wait that ended stays registered (and is not ended
//! again) until its owner ([`super::Partition::wait_for_entries`]) removes it, having taken
//! the end or dropped the wait; the owner keeps the stream names, so they are not copied
//! here but into `by_stream`.

use std::collections::HashMap;
use std::task::{Poll, Waker};

use crate::protocol::StreamId;

/// Names a wait: the shard that asked for it and a number unique there.
pub type WaitKey = (u32, u64);

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// Stream `i` of those waited on has an entry after the ID given with it.
    Ready(usize),
    /// [`super::Partition::cancel_wait`].
    Cancelled,
}

struct Wait {
    end: Option<WaitEnd>,
    waker: Option<Waker>,
}

#[derive(Default)]
pub(super) struct Waiters {
    /// Stream → the waits on it: (wait, the ID an entry must be above, the stream's index in
    /// the wait).
    by_stream: HashMap<String, Vec<(WaitKey, StreamId, usize)>>,
    waits: HashMap<WaitKey, Wait>,
}

impl Waiters {
    /// The waits registered.
    pub(super) fn len(&self) -> usize {
        self.waits.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }

    /// Registers wait `key` on `streams` (stream, the ID an entry must be above).
    pub(super) fn add(&mut self, key: WaitKey, streams: &[(String, StreamId)]) {
        let previous = self.waits.insert(
            key,
            Wait {
                end: None,
                waker: None,
            },
        );
        assert!(previous.is_none(), "wait {key:?} registered twice");
        for (i, (stream, after)) in streams.iter().enumerate() {
            self.by_stream
                .entry(stream.clone())
                .or_default()
                .push((key, *after, i));
        }
    }

    /// Entries of `stream` up to ID `last` became visible: ends the waits on it for an ID
    /// below `last`.
    pub(super) fn published(&mut self, stream: &str, last: StreamId) {
        let Some(list) = self.by_stream.get(stream) else {
            return;
        };
        let ready: Vec<(WaitKey, usize)> = list
            .iter()
            .filter(|(_, after, _)| *after < last)
            .map(|&(key, _, i)| (key, i))
            .collect();
        for (key, i) in ready {
            self.end(key, WaitEnd::Ready(i));
        }
    }

    /// `stream` was deleted, or one of its consumer groups: ends every wait on it, so that
    /// its owner looks again (a group reader answers an error, an XREAD waits on).
    pub(super) fn changed(&mut self, stream: &str) {
        let Some(list) = self.by_stream.get(stream) else {
            return;
        };
        let ready: Vec<(WaitKey, usize)> = list.iter().map(|&(key, _, i)| (key, i)).collect();
        for (key, i) in ready {
            self.end(key, WaitEnd::Ready(i));
        }
    }

    /// Ends wait `key` (if registered and not ended yet) with `end` and wakes its owner.
    pub(super) fn end(&mut self, key: WaitKey, end: WaitEnd) {
        let Some(wait) = self.waits.get_mut(&key) else {
            return;
        };
        if wait.end.is_some() {
            return;
        }
        wait.end = Some(end);
        if let Some(w) = wait.waker.take() {
            w.wake();
        }
    }

    /// How wait `key` ended, or `Pending` (its owner is woken once it ends).
    pub(super) fn poll(&mut self, key: WaitKey, waker: &Waker) -> Poll<WaitEnd> {
        match self.waits.get_mut(&key) {
            None => Poll::Ready(WaitEnd::Cancelled),
            Some(wait) => match wait.end {
                Some(end) => Poll::Ready(end),
                None => {
                    if !wait.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                        wait.waker = Some(waker.clone());
                    }
                    Poll::Pending
                }
            },
        }
    }

    /// Forgets wait `key` on `streams` (those it was added with), ended or not.
    pub(super) fn remove(&mut self, key: WaitKey, streams: &[(String, StreamId)]) {
        if self.waits.remove(&key).is_none() {
            return;
        }
        for (stream, _) in streams {
            if let Some(list) = self.by_stream.get_mut(stream) {
                list.retain(|(k, _, _)| *k != key);
                if list.is_empty() {
                    self.by_stream.remove(stream);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop_waker() -> Waker {
        std::task::Waker::noop().clone()
    }

    #[test]
    fn a_wait_ends_at_the_first_entry_above_its_id_and_leaves_nothing_behind() {
        let mut w = Waiters::default();
        let key = (0, 1);
        w.add(
            key,
            &[
                ("a".into(), StreamId::new(5, 0)),
                ("b".into(), StreamId::new(1, 0)),
            ],
        );
        assert!(w.poll(key, &noop_waker()).is_pending());
        w.published("a", StreamId::new(5, 0));
        w.published("c", StreamId::new(9, 0));
        assert!(w.poll(key, &noop_waker()).is_pending());
        w.published("b", StreamId::new(1, 1));
        assert_eq!(w.poll(key, &noop_waker()), Poll::Ready(WaitEnd::Ready(1)));
        // A later entry or a cancel does not change how it ended.
        w.published("a", StreamId::new(6, 0));
        w.end(key, WaitEnd::Cancelled);
        assert_eq!(w.poll(key, &noop_waker()), Poll::Ready(WaitEnd::Ready(1)));
        w.remove(
            key,
            &[
                ("a".into(), StreamId::new(5, 0)),
                ("b".into(), StreamId::new(1, 0)),
            ],
        );
        assert!(w.is_empty() && w.by_stream.is_empty());
    }

    #[test]
    fn remove_unlists_a_wait_whether_it_ended_or_not() {
        let mut w = Waiters::default();
        let a = [("a".to_string(), StreamId::ZERO)];
        w.add((0, 1), &a);
        w.add((1, 1), &a);
        w.end((0, 1), WaitEnd::Cancelled);
        assert_eq!(
            w.poll((0, 1), &noop_waker()),
            Poll::Ready(WaitEnd::Cancelled)
        );
        w.remove((1, 1), &a);
        assert_eq!(w.by_stream["a"].len(), 1);
        assert_eq!(w.len(), 1);
        w.remove((0, 1), &a);
        assert!(w.is_empty() && w.by_stream.is_empty());
        // Removing twice changes nothing.
        w.add((2, 1), &a);
        w.remove((0, 1), &a);
        assert_eq!(w.by_stream["a"].len(), 1);
    }
}

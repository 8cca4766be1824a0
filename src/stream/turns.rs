//! Appends are placed in the order they reach their partition: each takes a ticket on
//! arrival and places its records when `serving` reaches it, so one waiting for room in the
//! journal holds back the ones behind it, and pipelined appends of a connection get versions
//! in the order they were sent. A ticket given up before its turn (its future dropped) is
//! skipped.

use std::collections::HashMap;

use super::partition::Partition;
use crate::journal::device::Storage;

/// The order in which appends are placed: each takes a ticket on arrival and places when
/// `serving` reaches it.
#[derive(Default)]
pub(super) struct Turns {
    pub(super) next_ticket: u64,
    pub(super) serving: u64,
    /// The task waiting for each ticket's turn.
    pub(super) waiters: HashMap<u64, std::task::Waker>,
    /// Tickets whose appends were dropped before their turn came.
    pub(super) abandoned: std::collections::HashSet<u64>,
}

/// The turn to place an append; the next ticket's turn comes when it is dropped.
pub(super) struct Turn<'a, S: Storage + 'static> {
    pub(super) part: &'a Partition<S>,
}

impl<S: Storage + 'static> Drop for Turn<'_, S> {
    fn drop(&mut self) {
        self.part.end_turn();
    }
}

/// A ticket waiting for its turn; if dropped before it, the ticket is given up so the turns
/// do not stop at it.
pub(super) struct TurnWait<'a, S: Storage + 'static> {
    pub(super) part: &'a Partition<S>,
    pub(super) ticket: u64,
    pub(super) served: bool,
}

impl<S: Storage + 'static> Drop for TurnWait<'_, S> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        let serving = {
            let mut st = self.part.state.borrow_mut();
            st.turns.waiters.remove(&self.ticket);
            st.turns.abandoned.insert(self.ticket);
            st.turns.serving
        };
        if serving == self.ticket {
            // Its turn came while it was being dropped: pass it on.
            self.part
                .state
                .borrow_mut()
                .turns
                .abandoned
                .remove(&self.ticket);
            self.part.end_turn();
        }
    }
}

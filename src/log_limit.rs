//! Rate-limited warnings. A condition that repeats many times a second — a full disk that
//! every append runs into, a process out of file descriptors that every accept runs into —
//! is logged the first time, then at most once per period with the number of repeats in
//! between, so the log says what is wrong without drowning everything else. Callers count
//! every occurrence in a metric; the log is for people, the metric for graphs and alerts.
//!
//! One `LogLimit` per condition and per owner (a journal, a shard): it is not shared across
//! threads.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often a repeated warning is logged at most.
pub const REPEAT_PERIOD: Duration = Duration::from_secs(10);

/// The log state of one repeated condition.
#[derive(Debug)]
pub struct LogLimit {
    period: Duration,
    last: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(REPEAT_PERIOD)
    }
}

impl LogLimit {
    pub fn new(period: Duration) -> Self {
        LogLimit {
            period,
            last: Cell::new(None),
            suppressed: Cell::new(0),
        }
    }

    /// Called at each occurrence: `Some(repeats)` when this one should be logged, with how
    /// many occurrences were not logged since the last one that was; `None` to stay quiet.
    pub fn occurred(&self, now: Instant) -> Option<u64> {
        match self.last.get() {
            Some(t) if now.duration_since(t) < self.period => {
                self.suppressed.set(self.suppressed.get() + 1);
                None
            }
            _ => {
                self.last.set(Some(now));
                Some(self.suppressed.replace(0))
            }
        }
    }

    /// The condition is over: the next occurrence is logged at once.
    pub fn cleared(&self) {
        self.last.set(None);
        self.suppressed.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_then_once_per_period_with_the_repeats() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.occurred(t0), Some(0));
        for i in 1..=999u64 {
            assert_eq!(limit.occurred(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(limit.occurred(t0 + Duration::from_secs(10)), Some(999));
        assert_eq!(limit.occurred(t0 + Duration::from_secs(11)), None);
        limit.cleared();
        assert_eq!(limit.occurred(t0 + Duration::from_secs(12)), Some(0));
    }
}

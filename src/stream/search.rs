//! Galloping search: `slice.partition_point(pred)` found from a guess of where it is.
//!
//! The stream index keeps each stream's versions in vectors (`StreamEntry::lsns`, `ids`) that
//! grow to millions of entries. A binary search over such a vector touches a cold cache line
//! at most of its 20-odd steps, while the answer asked for is nearly always next to a place
//! known beforehand: the versions visible are all but the few newest (an append's versions
//! are placed before their frame is durable), and a consumer group's next entry follows the
//! entries it has read. [`partition_point_near`] probes the guess first, then steps away from
//! it by 1, 2, 4, … until it passes the answer, and ends with a binary search inside the last
//! step: O(log d) probes for an answer `d` away from the guess, one or two when it is right.
//!
//! The answer is `slice.partition_point(pred)` whatever the guess (the tests check every guess
//! on small slices); like it, it requires `pred` to be true on a prefix of the slice and false
//! after.

/// `s.partition_point(pred)`, searched from `guess` outwards (see the module docs).
pub(crate) fn partition_point_near<T>(
    s: &[T],
    guess: usize,
    mut pred: impl FnMut(&T) -> bool,
) -> usize {
    let guess = guess.min(s.len());
    // The answer lies in `lo..=hi`: `pred` holds below `lo` and fails from `hi` on.
    let (lo, hi) = if guess < s.len() && pred(&s[guess]) {
        // Above the guess: step up.
        let mut lo = guess + 1;
        let mut step = 1;
        loop {
            let probe = lo + step - 1;
            if probe >= s.len() {
                break (lo, s.len());
            }
            if !pred(&s[probe]) {
                break (lo, probe);
            }
            lo = probe + 1;
            step *= 2;
        }
    } else {
        // At or below the guess: step down.
        let mut hi = guess;
        let mut step = 1;
        loop {
            if hi < step {
                break (0, hi);
            }
            let probe = hi - step;
            if pred(&s[probe]) {
                break (probe + 1, hi);
            }
            hi = probe;
            step *= 2;
        }
    };
    lo + s[lo..hi].partition_point(pred)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every guess, on every prefix-true slice up to 40 long, finds what a binary search of the
    /// whole slice finds.
    #[test]
    fn every_guess_finds_the_partition_point() {
        for len in 0..40usize {
            let s: Vec<usize> = (0..len).collect();
            for cut in 0..=len {
                for guess in 0..=len + 3 {
                    let mut probes = 0;
                    let at = partition_point_near(&s, guess, |&x| {
                        probes += 1;
                        x < cut
                    });
                    assert_eq!(at, cut, "len {len} cut {cut} guess {guess}");
                    // O(log distance): never more than twice the bits of the distance, plus
                    // the guess and the last step's search.
                    let d = cut.abs_diff(guess.min(len)) + 1;
                    let bits = usize::BITS - d.leading_zeros();
                    assert!(
                        probes as u32 <= 2 * bits + 2,
                        "len {len} cut {cut} guess {guess}: {probes} probes"
                    );
                }
            }
        }
    }

    /// A right guess costs one or two probes: the version after the newest visible one, and
    /// the one before it.
    #[test]
    fn a_right_guess_is_confirmed_in_two_probes() {
        let s: Vec<u64> = (0..1_000_000).collect();
        for cut in [0usize, 1, 500_000, 999_999, 1_000_000] {
            let mut probes = 0;
            let at = partition_point_near(&s, cut, |&x| {
                probes += 1;
                x < cut as u64
            });
            assert_eq!(at, cut);
            assert!(probes <= 2, "cut {cut}: {probes} probes");
        }
    }
}

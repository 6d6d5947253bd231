//! The open loop's schedule: call `n` is due at `start + n / rate`, each on its own due time.
//!
//! Tokio's timers have a resolution of one millisecond, so a loop that wakes on a timer tick
//! and sends what the tick owes sends in bursts: at 8,000 calls/s, eight calls at once every
//! millisecond, the eighth queued behind the seven before it on both sides of the connection.
//! That added ≈ 0.5 ms to the p50 and ≈ 1.2 ms to the p99 of the unaudited server at 8,000/s
//! (docs/benchmarks.md, "The open loop's schedule"). [`Pacer`] sleeps on a timer until about a
//! millisecond before the next due time and then yields to the runtime (whose other tasks, the
//! connections and the calls, run meanwhile) until it is due. It is meant for a client that has
//! a core of its own, as the pinned benchmark client has: the last millisecond before each call
//! keeps that core busy.
//!
//! Every call is timed from its due time, not from when it was sent, so a client that falls
//! behind counts its own lateness against the latency instead of hiding it (no "coordinated
//! omission").

use std::time::{Duration, Instant};

/// Below this much time to the next due time the pacer yields instead of sleeping on a timer,
/// whose wake-up may come up to a millisecond late.
const SPIN: Duration = Duration::from_micros(1500);

/// Due times at a fixed rate from a start.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    rate: f64,
    /// The number of the next call.
    next: u64,
}

impl Pacer {
    /// Calls at `rate` per second (which must be positive and finite) from `start`.
    pub fn new(start: Instant, rate: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "the open loop's rate must be positive, not {rate}"
        );
        Ok(Self {
            start,
            rate,
            next: 0,
        })
    }

    /// When call `n` is due.
    fn due(&self, n: u64) -> Instant {
        self.start + Duration::from_nanos((n as f64 * 1e9 / self.rate).round() as u64)
    }

    /// The due time of the next call, without waiting for it.
    pub fn peek(&self) -> Instant {
        self.due(self.next)
    }

    /// Waits until the next call is due and returns its due time. A call already due (the
    /// client is behind) is returned at once.
    pub async fn next(&mut self) -> Instant {
        let due = self.due(self.next);
        self.next += 1;
        loop {
            let now = Instant::now();
            if now >= due {
                return due;
            }
            if due - now > SPIN {
                tokio::time::sleep_until((due - (SPIN - Duration::from_micros(300))).into()).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn due_times_are_evenly_spaced_at_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 8000.0).unwrap();
        assert_eq!(pacer.peek(), start);
        pacer.next = 8000;
        assert_eq!(pacer.peek(), start + Duration::from_secs(1));
        assert_eq!(pacer.due(1) - pacer.due(0), Duration::from_micros(125));
    }

    #[test]
    fn a_rate_that_is_not_positive_is_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Pacer::new(Instant::now(), rate).is_err(), "{rate}");
        }
    }

    /// No call comes before its due time (a timer tick releases the calls it owes together,
    /// most of them before theirs), and the calls take as long as the rate says.
    #[tokio::test(flavor = "current_thread")]
    async fn no_call_comes_before_its_due_time() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 4000.0).unwrap();
        for n in 0..400u64 {
            let due = pacer.next().await;
            assert_eq!(due, start + Duration::from_micros(250 * n));
            assert!(Instant::now() >= due, "call {n} came early");
        }
        assert!(Instant::now() - start >= Duration::from_micros(99_750));
        // Behind schedule: the calls owed come at once, each with its own due time.
        let mut behind = Pacer::new(Instant::now() - Duration::from_millis(10), 1000.0).unwrap();
        let first = behind.next().await;
        let second = behind.next().await;
        assert_eq!(second - first, Duration::from_millis(1));
    }
}

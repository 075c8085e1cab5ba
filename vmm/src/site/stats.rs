//! Statistics of the remote site calls a body makes: per kind of call
//! (`proto::CALL_KINDS`), how many, how long they waited for the deputy,
//! and a latency histogram. A fixed table of atomics: counting a call
//! allocates nothing and takes no lock; any thread may read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::proto::CALL_KINDS;

/// Upper bounds of the latency buckets, seconds (Prometheus `le`).
pub const LATENCY_BOUNDS: [f64; 11] = [50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1.0];
/// The same in nanoseconds, for the hot path.
const BOUNDS_NS: [u64; 11] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
];

#[derive(Default)]
struct Kind {
    count: AtomicU64,
    nanos: AtomicU64,
    /// Calls per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
}

/// One kind as read: its name, count, total seconds and cumulative
/// bucket counts (one per `LATENCY_BOUNDS` entry, without +Inf).
#[derive(Debug, Clone, PartialEq)]
pub struct KindStats {
    pub kind: &'static str,
    pub count: u64,
    pub seconds: f64,
    pub buckets: [(f64, u64); LATENCY_BOUNDS.len()],
}

pub struct CallStats {
    kinds: [Kind; CALL_KINDS.len()],
}

impl Default for CallStats {
    fn default() -> Self {
        CallStats { kinds: std::array::from_fn(|_| Kind::default()) }
    }
}

impl std::fmt::Debug for CallStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.read()).finish()
    }
}

impl CallStats {
    /// A call of kind `kind` (`Call::kind`) was answered after `took`.
    #[inline]
    pub fn record(&self, kind: usize, took: Duration) {
        let Some(k) = self.kinds.get(kind) else { return };
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let b = BOUNDS_NS.iter().position(|&le| ns <= le).unwrap_or(BOUNDS_NS.len());
        // One writer (the vCPU thread); readers see each number whole.
        k.count.fetch_add(1, Ordering::Relaxed);
        k.nanos.fetch_add(ns, Ordering::Relaxed);
        k.buckets[b].fetch_add(1, Ordering::Relaxed);
    }

    /// The kinds called at least once.
    pub fn read(&self) -> impl Iterator<Item = KindStats> + '_ {
        self.kinds.iter().zip(CALL_KINDS).filter_map(|(k, name)| {
            // Loads of separate atomics: a call counted meanwhile may show
            // in its bucket and not yet in `count`.
            let mut cum = 0u64;
            let buckets = std::array::from_fn(|i| {
                cum += k.buckets[i].load(Ordering::Relaxed);
                (LATENCY_BOUNDS[i], cum)
            });
            let above = k.buckets[BOUNDS_NS.len()].load(Ordering::Relaxed);
            let count = k.count.load(Ordering::Relaxed).max(cum + above);
            (count > 0).then(|| KindStats {
                kind: name,
                count,
                seconds: k.nanos.load(Ordering::Relaxed) as f64 / 1e9,
                buckets,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_their_buckets() {
        let s = CallStats::default();
        let read = CALL_KINDS.iter().position(|k| *k == "read").unwrap();
        s.record(read, Duration::from_micros(40));
        s.record(read, Duration::from_micros(50));
        s.record(read, Duration::from_millis(3));
        s.record(read, Duration::from_secs(5));
        s.record(usize::MAX, Duration::from_secs(1));
        let v: Vec<KindStats> = s.read().collect();
        assert_eq!(v.len(), 1);
        let r = &v[0];
        assert_eq!((r.kind, r.count), ("read", 4));
        assert!((r.seconds - 5.00309).abs() < 1e-9, "{}", r.seconds);
        // <= 50 µs: two; <= 5 ms: three; <= 1 s: still three.
        assert_eq!(r.buckets[0], (50e-6, 2));
        assert_eq!(r.buckets[5].1, 2);
        assert_eq!(r.buckets[6], (5e-3, 3));
        assert_eq!(r.buckets[10], (1.0, 3));
    }
}

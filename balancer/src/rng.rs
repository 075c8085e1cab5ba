//! Randomness as an input.
//!
//! The balancer never creates randomness itself: every function that needs a
//! random choice takes a `&mut dyn Rng`. The daemon passes a generator seeded
//! from the OS; the simulator passes [`SplitMix64`] seeded from the run's seed,
//! so a run is reproducible bit for bit.

/// A source of random 64-bit words. Only `next_u64` must be provided.
pub trait Rng {
    /// The next uniformly distributed 64-bit word.
    fn next_u64(&mut self) -> u64;

    /// A uniform float in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// `true` with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// SplitMix64 (Steele, Lea, Flood): tiny, fast, good enough for simulation
/// and for spreading gossip targets. Not for cryptography.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// An independent-looking stream number `stream` derived from `seed`
    /// (used to give every simulated host its own generator).
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut g = SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // Mix once so that nearby seeds give unrelated streams.
        let s = g.next_u64();
        SplitMix64::new(s)
    }
}

impl Rng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Fisher-Yates shuffle driven by `rng`.
pub fn shuffle<T>(items: &mut [T], rng: &mut dyn Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = SplitMix64::new(8);
        assert_ne!(SplitMix64::new(7).next_u64(), c.next_u64());
    }

    #[test]
    fn below_and_unit_stay_in_range() {
        let mut g = SplitMix64::new(1);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            let u = g.unit();
            assert!((0.0..1.0).contains(&u));
            seen[g.below(5)] += 1;
        }
        // Every bucket is hit roughly 2000 times.
        assert!(seen.iter().all(|&n| n > 1700 && n < 2300), "{seen:?}");
    }

    #[test]
    fn derived_streams_differ() {
        let a = SplitMix64::derive(42, 0).next_u64();
        let b = SplitMix64::derive(42, 1).next_u64();
        assert_ne!(a, b);
    }
}

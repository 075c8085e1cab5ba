//! Migration cost model: how long a live (pre-copy) migration takes and how
//! long the job is frozen, as functions of its memory, its dirty rate and the
//! link bandwidth.
//!
//! Round 0 copies all of the job's memory while it keeps running; each next
//! round copies what was dirtied during the previous one; when the remaining
//! dirty set can be sent within the freeze target (or the rounds stop
//! converging) the job is stopped, the rest and the vCPU state are sent, and
//! it resumes on the target. The balancer uses this to estimate a move's
//! cost; the simulator uses it (with its own parameters) as the truth.

/// Parameters of the pre-copy cost model.
#[derive(Clone, Debug, PartialEq)]
pub struct CostModel {
    /// Link bandwidth, bytes per second.
    pub bandwidth: f64,
    /// Stop iterating when the remaining dirty bytes fit into this freeze.
    pub freeze_target: f64,
    /// Fixed cost before the first byte moves (connect, create the VM on
    /// the target), seconds. The job keeps running meanwhile.
    pub setup: f64,
    /// Time to send and load the vCPU and VMM state while frozen, seconds.
    pub state_time: f64,
    /// Give up iterating after this many rounds.
    pub max_rounds: u32,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel { bandwidth: 1.0e9, freeze_target: 0.005, setup: 0.005, state_time: 0.001, max_rounds: 30 }
    }
}

/// What one migration costs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MigrationCost {
    /// Seconds from the start until the job is stopped (it runs meanwhile).
    pub precopy: f64,
    /// Seconds the job is stopped (downtime).
    pub freeze: f64,
    /// Bytes sent in total.
    pub bytes: f64,
    /// Copy rounds, the final stop-and-copy included.
    pub rounds: u32,
}

impl MigrationCost {
    /// Start to resume on the target.
    pub fn total(&self) -> f64 {
        self.precopy + self.freeze
    }
}

impl CostModel {
    /// Cost of moving a job with `memory` bytes that dirties `dirty_rate`
    /// bytes per second.
    pub fn estimate(&self, memory: u64, dirty_rate: f64) -> MigrationCost {
        let bw = self.bandwidth.max(1.0);
        let mem = memory as f64;
        let dirty_rate = if dirty_rate.is_finite() { dirty_rate.max(0.0) } else { 0.0 };
        let stop_bytes = (self.freeze_target - self.state_time).max(0.0) * bw;
        let mut t = self.setup.max(0.0);
        let mut bytes = 0.0;
        let mut send = mem;
        let mut rounds = 0;
        loop {
            let dt = send / bw;
            t += dt;
            bytes += send;
            rounds += 1;
            let dirty = (dirty_rate * dt).min(mem);
            let stalled = dirty >= send * 0.9;
            if dirty <= stop_bytes || rounds + 1 >= self.max_rounds.max(1) || stalled {
                return MigrationCost {
                    precopy: t,
                    freeze: dirty / bw + self.state_time.max(0.0),
                    bytes: bytes + dirty,
                    rounds: rounds + 1,
                };
            }
            send = dirty;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MIB;

    #[test]
    fn idle_job_is_one_round_and_a_tiny_freeze() {
        let c = CostModel::default().estimate(64 * MIB, 0.0);
        assert_eq!(c.rounds, 2);
        assert!((c.precopy - (0.005 + 64.0 * MIB as f64 / 1e9)).abs() < 1e-9);
        assert!((c.freeze - 0.001).abs() < 1e-12);
    }

    #[test]
    fn moderate_dirty_rate_meets_the_freeze_target() {
        let c = CostModel::default().estimate(512 * MIB, 200.0 * MIB as f64);
        assert!(c.freeze <= 0.005 + 1e-12, "{c:?}");
        assert!(c.rounds > 2);
        assert!(c.bytes > 512.0 * MIB as f64);
    }

    #[test]
    fn dirtying_faster_than_the_link_stops_early_with_a_long_freeze() {
        let c = CostModel::default().estimate(256 * MIB, 2.0e9);
        assert!(c.freeze > 0.1, "{c:?}");
        assert_eq!(c.rounds, 2);
    }
}

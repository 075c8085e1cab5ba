//! Tunables, with the defaults the simulator and the daemon use.
//!
//! All times are seconds (f64) on the host's own monotonic clock; memory
//! sizes are bytes; bandwidth is bytes per second.

use crate::cost::CostModel;

/// One GiB in bytes.
pub const GIB: u64 = 1 << 30;
/// One MiB in bytes.
pub const MIB: u64 = 1 << 20;

/// What a host is: its processors and memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HostSpec {
    /// Cores that run jobs.
    pub cores: u16,
    /// Relative speed of one core (1.0 = the reference core that defines
    /// "one CPU-bound job's load").
    pub speed: f64,
    /// Memory available to jobs, bytes.
    pub memory: u64,
}

impl Default for HostSpec {
    fn default() -> Self {
        HostSpec { cores: 1, speed: 1.0, memory: 16 * GIB }
    }
}

/// Load calculation: per-tick samples are averaged over `window`, then
/// folded into two exponentially smoothed values with different time
/// constants for rising and falling input. A time constant of 0 follows the
/// input at once.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadConfig {
    /// Averaging window for the per-tick samples (MOSIX: one second).
    pub window: f64,
    /// Exported value, time constant when the load rises (fast).
    pub export_rise: f64,
    /// Exported value, time constant when the load falls (slow).
    pub export_decay: f64,
    /// Local value, time constant when the load rises (slow).
    pub local_rise: f64,
    /// Local value, time constant when the load falls (fast).
    pub local_decay: f64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig { window: 1.0, export_rise: 0.0, export_decay: 4.0, local_rise: 2.0, local_decay: 0.5 }
    }
}

/// Information dissemination.
#[derive(Clone, Debug, PartialEq)]
pub struct GossipConfig {
    /// A host sends one gossip message every `period` seconds (and answers
    /// each one it receives), whatever the cluster size.
    pub period: f64,
    /// Each period is stretched or shrunk by up to this fraction at random,
    /// so hosts do not fall into lock-step.
    pub jitter: f64,
    /// Capacity of the load vector (entries about other hosts).
    pub vector_size: usize,
    /// Entries per message, own entry included.
    pub window: usize,
    /// Entries older than this are dropped: that is how a host that left
    /// disappears.
    pub max_age: f64,
    /// Probability that an underloaded host sends its gossip to a known host
    /// that would want to give it work, instead of a uniformly random one.
    pub targeted: f64,
    /// Probability that a gossip goes to one of the seed hosts instead. The
    /// seeds are where separated groups of hosts meet again (after a network
    /// partition, or when a join message was lost).
    pub seed_fraction: f64,
    /// Assumed one-way delay added to an entry's age per hop (hosts do not
    /// share a clock, so ages are carried, not timestamps).
    pub hop_delay: f64,
    /// Only entries younger than this are forwarded as "least loaded" or
    /// "most loaded" news.
    pub fresh_age: f64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            period: 0.25,
            jitter: 0.1,
            vector_size: 32,
            window: 8,
            max_age: 10.0,
            targeted: 0.5,
            seed_fraction: 0.05,
            hop_delay: 0.001,
            fresh_age: 1.0,
        }
    }
}

/// Migration consideration.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsiderConfig {
    /// Hysteresis: a job moves only if this host's normalized load exceeds
    /// the target's load *including the moved job* by more than this many
    /// jobs, i.e. the load difference must exceed one job by this margin.
    pub margin: f64,
    /// A job must have lived at least this long before it is considered
    /// (the rest of the residency rule is the cost test below).
    pub min_residency: f64,
    /// After arriving on a host a job stays at least this long.
    pub settle: f64,
    /// A job does not go back to the host it came from within this time.
    pub cool_down: f64,
    /// A move must gain more than `cost_weight` times its own duration.
    pub cost_weight: f64,
    /// Outgoing moves (requested or transferring) at the same time.
    pub max_in_flight: usize,
    /// Outgoing moves at once while draining: every job must go, so the
    /// host spends its link and CPUs on moves.
    pub drain_in_flight: usize,
    /// Moves started by one consideration at most.
    pub max_moves_per_round: usize,
    /// Migration requests sent per gossip period at most (refusals make a
    /// host re-plan at once; this keeps its message rate bounded).
    pub max_requests_per_period: usize,
    /// Entries older than this are not used as targets.
    pub max_info_age: f64,
    /// A migration request without a reply is forgotten after this long.
    pub request_timeout: f64,
    /// An accepted arrival whose transfer has started
    /// ([`crate::Balancer::migration_incoming`]) is forgotten if it has not
    /// arrived after this long. Before the transfer starts, the reservation
    /// lasts twice `request_timeout` (the acceptance may have been lost).
    pub reservation_timeout: f64,
    /// A target redirects a request only to a host whose information is
    /// younger than this (a stale hint costs more than a second move).
    pub redirect_age: f64,
    /// A host that refused is avoided for this long.
    pub refusal_backoff: f64,
    /// A host that did not answer a request is avoided for this long.
    pub timeout_backoff: f64,
    /// A host to which a move failed is avoided for this long.
    pub failure_backoff: f64,
    /// Free memory below this fraction of the host's memory triggers moves.
    pub mem_low: f64,
    /// ... which continue until this fraction is free.
    pub mem_target: f64,
    /// A target must keep this much memory free after an arrival.
    pub mem_headroom: u64,
}

impl Default for ConsiderConfig {
    fn default() -> Self {
        ConsiderConfig {
            margin: 0.25,
            min_residency: 0.5,
            settle: 0.5,
            cool_down: 20.0,
            cost_weight: 1.0,
            max_in_flight: 2,
            drain_in_flight: 4,
            max_moves_per_round: 4,
            max_requests_per_period: 8,
            max_info_age: 3.0,
            request_timeout: 2.0,
            redirect_age: 0.5,
            reservation_timeout: 30.0,
            refusal_backoff: 0.5,
            timeout_backoff: 2.0,
            failure_backoff: 10.0,
            mem_low: 0.05,
            mem_target: 0.10,
            mem_headroom: 256 * MIB,
        }
    }
}

/// Everything one host's balancer needs.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    pub host: HostSpec,
    pub load: LoadConfig,
    pub gossip: GossipConfig,
    pub consider: ConsiderConfig,
    /// The balancer's *estimate* of what a migration costs (the daemon
    /// should keep `bandwidth` up to date with measured values).
    pub cost: CostModel,
}

impl Config {
    /// The same configuration with gossip every `period` seconds. Information
    /// cannot be fresher than the gossip that carries it, so when gossip is
    /// slower than the default the age limits (fresh, usable as a target,
    /// good for a redirect, expired) and the refusal back-off grow in
    /// proportion; when it is faster they stay as they are.
    pub fn with_gossip_period(mut self, period: f64) -> Self {
        let k = (period / self.gossip.period).max(1.0);
        self.gossip.period = period;
        self.gossip.fresh_age *= k;
        self.gossip.max_age *= k;
        self.consider.max_info_age *= k;
        self.consider.redirect_age *= k;
        self.consider.refusal_backoff *= k;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slower_gossip_stretches_the_age_limits_faster_gossip_keeps_them() {
        let d = Config::default();
        let slow = Config::default().with_gossip_period(4.0 * d.gossip.period);
        assert_eq!(slow.gossip.period, 4.0 * d.gossip.period);
        assert_eq!(slow.gossip.max_age, 4.0 * d.gossip.max_age);
        assert_eq!(slow.consider.max_info_age, 4.0 * d.consider.max_info_age);
        assert_eq!(slow.consider.cool_down, d.consider.cool_down);
        let fast = Config::default().with_gossip_period(d.gossip.period / 10.0);
        assert_eq!(fast.gossip.max_age, d.gossip.max_age);
        assert_eq!(fast.consider.redirect_age, d.consider.redirect_age);
    }
}

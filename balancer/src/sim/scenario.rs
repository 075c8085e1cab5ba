//! Ready-made experiments used by the examples and the tests.

use super::cluster::{JobSpec, Sim, SimConfig, SimError};
use super::ideal::ideal_makespan;
use crate::config::{HostSpec, MIB};

/// Table 1 of the paper (16 hosts, jobs of 300 s): (jobs, optimal, MOSIX)
/// in seconds.
pub const PAPER_TABLE1: [(usize, f64, f64); 19] = [
    (1, 300.0, 301.91),
    (2, 300.0, 302.92),
    (4, 300.0, 304.57),
    (8, 300.0, 305.73),
    (16, 300.0, 310.83),
    (17, 450.0, 456.91),
    (20, 450.0, 462.07),
    (24, 450.0, 471.87),
    (25, 525.0, 533.15),
    (27, 525.0, 549.07),
    (31, 563.0, 574.03),
    (32, 600.0, 603.17),
    (33, 700.0, 705.93),
    (36, 700.0, 715.35),
    (38, 750.0, 759.90),
    (40, 750.0, 767.67),
    (43, 833.0, 833.33),
    (47, 883.0, 901.81),
    (48, 900.0, 916.11),
];

/// A burst experiment: `jobs` identical CPU-bound jobs all started on host
/// 0 of a cluster that has been up for `warmup` seconds.
#[derive(Clone, Debug)]
pub struct Burst {
    pub hosts: Vec<HostSpec>,
    pub jobs: usize,
    /// CPU seconds per job.
    pub duration: f64,
    pub memory: u64,
    pub dirty_rate: f64,
    /// Seconds between the first host joining and the jobs starting.
    pub warmup: f64,
    pub sim: SimConfig,
}

impl Burst {
    /// `hosts` identical single-core hosts, 64 MiB jobs dirtying 32 MiB/s.
    pub fn identical(hosts: usize, jobs: usize, duration: f64, seed: u64) -> Self {
        Burst {
            hosts: vec![HostSpec::default(); hosts],
            jobs,
            duration,
            memory: 64 * MIB,
            dirty_rate: 32.0 * MIB as f64,
            warmup: 10.0,
            sim: SimConfig { seed, ..SimConfig::default() },
        }
    }

    /// Jobs of `memory` bytes, on hosts that can all start every job of
    /// the burst without running short of memory (as in the paper, where
    /// only the CPU was contended), or on hosts of `host_memory` bytes.
    pub fn with_job_memory(mut self, memory: u64, host_memory: Option<u64>) -> Self {
        // A fifth spare: well clear of the memory trigger.
        let room = (self.jobs as u64).saturating_mul(memory).saturating_mul(5) / 4;
        let host = host_memory.unwrap_or_else(|| room.max(HostSpec::default().memory));
        self.memory = memory;
        for h in &mut self.hosts {
            h.memory = host;
        }
        self
    }
}

/// What a burst run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub jobs: usize,
    /// Makespan of the ideal policy.
    pub optimal: f64,
    /// Makespan in the simulation (first submission to last completion).
    pub ours: f64,
    pub moves: u64,
    pub wasted_moves: u64,
    pub requests: u64,
    pub refusals: u64,
    /// Messages sent per host per second while the jobs ran.
    pub msgs_per_host_s: f64,
    /// Bytes sent per host per second while the jobs ran.
    pub bytes_per_host_s: f64,
}

impl Outcome {
    /// Slowdown against the ideal, percent.
    pub fn slowdown(&self) -> f64 {
        if self.optimal > 0.0 {
            (self.ours / self.optimal - 1.0) * 100.0
        } else {
            0.0
        }
    }
}

/// Run one burst experiment.
pub fn run_burst(b: &Burst) -> Result<Outcome, SimError> {
    let n = b.hosts.len().max(1);
    let mut sim = Sim::new(b.sim.clone());
    for (i, h) in b.hosts.iter().enumerate() {
        // Hosts boot over the first second, each contacting one that is up.
        sim.add_host(h.clone(), i as f64 / n as f64);
    }
    for _ in 0..b.jobs {
        sim.add_job(JobSpec {
            work: b.duration,
            memory: b.memory,
            dirty_rate: b.dirty_rate,
            host: 0,
            submit_at: b.warmup,
        });
    }
    let optimal = ideal_makespan(&b.hosts, &vec![(0usize, b.duration); b.jobs]);
    sim.run_until(b.warmup);
    let before = sim.stats().messages;
    let bytes_before = sim.stats().bytes;
    // Leaving every job on its start host is the worst a working balancer
    // can do (even with every message lost); twice that is a hang.
    let alone = ideal_makespan(&b.hosts[..1], &vec![(0usize, b.duration); b.jobs]);
    let limit = b.warmup + 2.0 * alone.max(optimal) + 100.0;
    let end = sim.run_to_completion(limit)?;
    let st = sim.stats().clone();
    let ours = if b.jobs == 0 { 0.0 } else { end - b.warmup };
    let span = (sim.now() - b.warmup).max(1e-9);
    Ok(Outcome {
        jobs: b.jobs,
        optimal,
        ours,
        moves: st.moves,
        wasted_moves: st.wasted_moves,
        requests: st.requests,
        refusals: st.refusals,
        msgs_per_host_s: (st.messages - before) as f64 / n as f64 / span,
        bytes_per_host_s: (st.bytes - bytes_before) as f64 / n as f64 / span,
    })
}

/// Derive a per-row seed so that rows are independent but reproducible.
pub fn row_seed(seed: u64, jobs: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (jobs as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

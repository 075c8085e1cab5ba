//! A deterministic cluster simulator that runs the real balancer code, and
//! the ideal ("optimal") policy of the paper's table 1 for comparison.

pub mod cluster;
pub mod ideal;
pub mod scenario;

pub use cluster::{JobSpec, LogLine, Noise, Sim, SimConfig, SimError, SimStats, Traffic};
pub use ideal::{ideal_equal_jobs, ideal_makespan};
pub use scenario::{run_burst, Burst, Outcome};

#[cfg(test)]
mod tests;

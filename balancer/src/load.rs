//! Load calculation.
//!
//! Every tick the host reports how many threads were runnable (the vCPUs of
//! its jobs plus whatever else runs on the machine). Samples are averaged per
//! window (one second) and folded into two smoothed values:
//!
//! - the **exported** value, sent to other hosts: rises fast, decays slowly,
//!   so a host that is briefly quiet does not attract a herd of jobs;
//! - the **local** value, used to decide whether to send jobs away: rises
//!   slowly, decays fast, so a short burst does not push jobs out.
//!
//! Changes the host knows exactly (a job started, arrived, left or exited)
//! are not noise: [`LoadCalc::adjust`] applies them to both values at once,
//! and to the partial window, as if the job had never (or always) been there.
//!
//! Values are counts of runnable threads; [`normalized`] turns them into the
//! load unit used between hosts: one CPU-bound job on one reference core.

use crate::config::LoadConfig;

/// Load in units of "one CPU-bound job on one reference core".
pub fn normalized(runnable: f64, cores: u16, speed: f64) -> f64 {
    runnable.max(0.0) / (cores.max(1) as f64 * speed.max(1e-6))
}

/// Move `current` toward `target` as a first-order filter with time constant
/// `tau` would over `dt` seconds; `tau <= 0` jumps.
fn approach(current: f64, target: f64, dt: f64, tau: f64) -> f64 {
    if tau <= 0.0 {
        return target;
    }
    let a = 1.0 - (-dt.max(0.0) / tau).exp();
    current + (target - current) * a
}

/// The load calculation state of one host.
#[derive(Clone, Debug)]
pub struct LoadCalc {
    cfg: LoadConfig,
    window_start: Option<f64>,
    sum: f64,
    count: u32,
    exported: f64,
    local: f64,
    primed: bool,
}

impl LoadCalc {
    pub fn new(cfg: LoadConfig) -> Self {
        LoadCalc { cfg, window_start: None, sum: 0.0, count: 0, exported: 0.0, local: 0.0, primed: false }
    }

    /// One tick's sample: `runnable` threads at time `now`.
    pub fn sample(&mut self, now: f64, runnable: f64) {
        let runnable = if runnable.is_finite() { runnable.max(0.0) } else { 0.0 };
        let start = *self.window_start.get_or_insert(now);
        self.sum += runnable;
        self.count += 1;
        let elapsed = now - start;
        if elapsed >= self.cfg.window {
            let avg = self.sum / self.count as f64;
            self.fold(avg, elapsed);
            self.window_start = Some(now);
            self.sum = 0.0;
            self.count = 0;
        }
    }

    fn fold(&mut self, avg: f64, dt: f64) {
        if !self.primed {
            self.exported = avg;
            self.local = avg;
            self.primed = true;
            return;
        }
        let c = &self.cfg;
        let tau_e = if avg > self.exported { c.export_rise } else { c.export_decay };
        let tau_l = if avg > self.local { c.local_rise } else { c.local_decay };
        self.exported = approach(self.exported, avg, dt, tau_e);
        self.local = approach(self.local, avg, dt, tau_l);
    }

    /// A change the host knows exactly: `delta` runnable threads appeared
    /// (positive) or disappeared (negative) right now.
    pub fn adjust(&mut self, delta: f64) {
        self.exported = (self.exported + delta).max(0.0);
        self.local = (self.local + delta).max(0.0);
        if self.count > 0 {
            self.sum = (self.sum + delta * self.count as f64).max(0.0);
        }
    }

    /// Exported (rises fast, decays slowly) runnable threads.
    pub fn exported(&self) -> f64 {
        self.exported
    }

    /// Local (rises slowly, decays fast) runnable threads.
    pub fn local(&self) -> f64 {
        self.local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `value` every 0.1 s from `from` for `secs` seconds; returns the
    /// time after the last sample.
    fn feed(l: &mut LoadCalc, from: f64, secs: f64, value: f64) -> f64 {
        let n = (secs * 10.0).round() as usize;
        let mut t = from;
        for _ in 0..n {
            l.sample(t, value);
            t += 0.1;
        }
        t
    }

    #[test]
    fn exported_rises_fast_local_rises_slowly() {
        let mut l = LoadCalc::new(LoadConfig::default());
        let t = feed(&mut l, 0.0, 5.0, 0.0);
        assert_eq!(l.exported(), 0.0);
        // At least one whole window of the new value has been folded.
        feed(&mut l, t, 2.2, 4.0);
        assert!(l.exported() > 3.9, "exported {}", l.exported());
        assert!(l.local() < 3.2 && l.local() > 0.5, "local {} should lag", l.local());
    }

    #[test]
    fn exported_decays_slowly_local_decays_fast() {
        let mut l = LoadCalc::new(LoadConfig::default());
        let t = feed(&mut l, 0.0, 20.0, 4.0);
        assert!((l.exported() - 4.0).abs() < 1e-6);
        assert!((l.local() - 4.0).abs() < 0.01);
        feed(&mut l, t, 2.2, 0.0);
        assert!(l.exported() > 2.0, "exported {} should decay slowly", l.exported());
        assert!(l.local() < 0.8, "local {} should decay fast", l.local());
    }

    #[test]
    fn short_spike_barely_moves_local() {
        let mut l = LoadCalc::new(LoadConfig::default());
        let t = feed(&mut l, 0.0, 10.0, 1.0);
        // 0.4 s with 3 extra runnable threads, then quiet again.
        let t = feed(&mut l, t, 0.4, 4.0);
        let t = feed(&mut l, t, 1.0, 1.0);
        assert!(l.local() < 1.5, "local {}", l.local());
        assert!(l.exported() > 1.4, "exported {}", l.exported());
        feed(&mut l, t, 10.0, 1.0);
        assert!((l.local() - 1.0).abs() < 0.05);
    }

    #[test]
    fn known_changes_apply_at_once() {
        let mut l = LoadCalc::new(LoadConfig::default());
        let t = feed(&mut l, 0.0, 10.0, 3.0);
        let t = feed(&mut l, t, 0.5, 3.0); // half a window in progress
        l.adjust(-1.0); // a job left
        assert!((l.exported() - 2.0).abs() < 1e-9);
        assert!((l.local() - 2.0).abs() < 1e-9);
        // The rest of the window sees 2 runnable: nothing should change.
        feed(&mut l, t, 3.0, 2.0);
        assert!((l.exported() - 2.0).abs() < 1e-9, "{}", l.exported());
        assert!((l.local() - 2.0).abs() < 1e-9, "{}", l.local());
    }

    #[test]
    fn normalization_uses_cores_and_speed() {
        assert_eq!(normalized(4.0, 4, 1.0), 1.0);
        assert_eq!(normalized(4.0, 2, 2.0), 1.0);
        assert_eq!(normalized(3.0, 1, 1.0), 3.0);
        assert_eq!(normalized(-1.0, 1, 1.0), 0.0);
    }
}

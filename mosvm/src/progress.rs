//! The progress of a live move, for a terminal (an `indicatif` bar:
//! round, pages sent of the round, rate) or for a log (one plain line per
//! round). `mosvm migrate` shows one; `mosvm drain` one per move.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mosvm_host::api::{MovePhase, MoveProgress};

const PAGE: u64 = 4096;

/// Whether to draw bars: stderr is a terminal.
pub fn terminal() -> bool {
    std::io::stderr().is_terminal()
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:.bold} [{bar:28.cyan/blue}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// One move's display.
pub struct MoveBar {
    bar: Option<ProgressBar>,
    label: String,
    /// The last (phase, round) printed as a plain line.
    said: Option<(MovePhase, u32)>,
}

impl MoveBar {
    /// A bar added to `multi` (drawn on stderr) when `draw`, else plain
    /// lines on stderr.
    pub fn new(multi: Option<&MultiProgress>, label: &str, draw: bool) -> MoveBar {
        let bar = draw.then(|| {
            let b = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::hidden());
            let b = match multi {
                Some(m) => m.add(b),
                None => {
                    b.set_draw_target(ProgressDrawTarget::stderr());
                    b
                }
            };
            b.set_style(style());
            b.set_prefix(label.to_string());
            b.set_message("connecting");
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        MoveBar { bar, label: label.to_string(), said: None }
    }

    pub fn update(&mut self, p: &MoveProgress) {
        let words = describe(p);
        match &self.bar {
            Some(b) => {
                b.set_length(p.round_pages.max(1));
                b.set_position(p.round_sent.min(p.round_pages));
                b.set_message(words);
            }
            None => {
                if self.said != Some((p.phase, p.round)) {
                    self.said = Some((p.phase, p.round));
                    eprintln!("{}: {words}", self.label);
                }
            }
        }
    }

    /// Removes the bar (the caller prints the outcome).
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

fn mib(pages: u64) -> f64 {
    (pages * PAGE) as f64 / (1 << 20) as f64
}

/// "round 2: 12.0 of 64.0 MiB, 612 MB/s, 130 MiB sent".
pub fn describe(p: &MoveProgress) -> String {
    match p.phase {
        MovePhase::Connecting => format!("connecting to {}", p.to),
        MovePhase::Copying => format!(
            "round {}: {:.1} of {:.1} MiB, {:.0} MB/s, {:.1} MiB sent in {:.1} s",
            p.round,
            mib(p.round_sent),
            mib(p.round_pages),
            p.rate_mbps,
            p.bytes_sent as f64 / (1 << 20) as f64,
            p.elapsed_ms / 1000.0
        ),
        MovePhase::Stopped => format!(
            "stopped: the last {:.1} MiB and the state are going ({:.1} MiB sent)",
            mib(p.round_pages),
            p.bytes_sent as f64 / (1 << 20) as f64
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        let p = MoveProgress {
            to: "127.0.0.3:4000".into(),
            phase: MovePhase::Copying,
            round: 2,
            round_pages: 16384,
            round_sent: 3072,
            pages_sent: 20000,
            bytes_sent: 20000 * 4096,
            resident_pages: 16384,
            elapsed_ms: 1500.0,
            rate_mbps: 612.4,
        };
        assert_eq!(describe(&p), "round 2: 12.0 of 64.0 MiB, 612 MB/s, 78.1 MiB sent in 1.5 s");
        let c = MoveProgress { phase: MovePhase::Connecting, ..p.clone() };
        assert_eq!(describe(&c), "connecting to 127.0.0.3:4000");
    }
}

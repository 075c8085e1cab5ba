//! The daemon's settings: command-line flags over a TOML file over the
//! defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::membership::Timing;

pub const DEFAULT_PORT: u16 = 7077;
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7077";
pub const DEFAULT_API_SOCK: &str = "/run/mosvm/mosvm.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mosvm";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("'{s}' is not a log format (human or json)")),
        }
    }
}

/// The balancer's tunables (`[balancer]` in the config file), each
/// optional: the `balancer` crate's defaults fill in the rest. Times are
/// seconds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerSettings {
    /// Move jobs automatically (default true).
    pub enabled: Option<bool>,
    /// One gossip message per period, whatever the cluster size.
    pub gossip_period: Option<f64>,
    /// A job must have run this long before it is considered.
    pub residency: Option<f64>,
    /// After arriving a job stays at least this long.
    pub settle: Option<f64>,
    /// A move needs a load difference of more than one job plus this.
    pub hysteresis: Option<f64>,
    /// A job does not go back to a host it left within this time.
    pub cool_down: Option<f64>,
    /// A move must gain more than this many times its own duration.
    pub cost_weight: Option<f64>,
    /// Outgoing moves at the same time.
    pub max_in_flight: Option<usize>,
    /// Outgoing moves at the same time while draining.
    pub drain_in_flight: Option<usize>,
    /// How often the load is sampled.
    pub tick: Option<f64>,
}

impl BalancerSettings {
    fn over(self, under: BalancerSettings) -> BalancerSettings {
        BalancerSettings {
            enabled: self.enabled.or(under.enabled),
            gossip_period: self.gossip_period.or(under.gossip_period),
            residency: self.residency.or(under.residency),
            settle: self.settle.or(under.settle),
            hysteresis: self.hysteresis.or(under.hysteresis),
            cool_down: self.cool_down.or(under.cool_down),
            cost_weight: self.cost_weight.or(under.cost_weight),
            max_in_flight: self.max_in_flight.or(under.max_in_flight),
            drain_in_flight: self.drain_in_flight.or(under.drain_in_flight),
            tick: self.tick.or(under.tick),
        }
    }
}

/// Settings as given, each optional: the flags, or the config file (same
/// keys, e.g. `join = ["10.0.0.2:7077"]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub name: Option<String>,
    pub listen: Option<String>,
    /// The address other hosts reach this one at (default: the listen
    /// address, or when that is 0.0.0.0, the address this host uses
    /// towards its first join address).
    pub advertise: Option<String>,
    pub api_sock: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub join: Option<Vec<String>>,
    pub log_format: Option<LogFormat>,
    /// CPUs this host offers its jobs (default: measured: its cgroup's
    /// quota, else the cores it may run on). May be fractional.
    pub cpus: Option<f64>,
    /// Relative speed of one of its cores (default 1.0).
    pub speed: Option<f64>,
    /// Put the daemon and everything it runs into a cgroup of its own
    /// with a quota of this many CPUs (root only; emulates a smaller host).
    pub cpu_limit: Option<f64>,
    /// Serve Prometheus metrics over HTTP on this ADDR:PORT (default: off).
    pub metrics: Option<String>,
    /// The host directory `mosvm cluster add-host` wrote: every peer
    /// connection is then mutual TLS with the cluster's CA.
    pub tls: Option<PathBuf>,
    /// Run without a cluster identity: anyone who reaches the peer port
    /// may run code here. Explicit, and said loudly at start.
    pub insecure: Option<bool>,
    #[serde(default)]
    pub balancer: BalancerSettings,
}

impl Settings {
    /// Each setting from `self` if given there, else from `under`.
    pub fn over(self, under: Settings) -> Settings {
        Settings {
            name: self.name.or(under.name),
            listen: self.listen.or(under.listen),
            advertise: self.advertise.or(under.advertise),
            api_sock: self.api_sock.or(under.api_sock),
            state_dir: self.state_dir.or(under.state_dir),
            join: self.join.or(under.join),
            log_format: self.log_format.or(under.log_format),
            cpus: self.cpus.or(under.cpus),
            speed: self.speed.or(under.speed),
            cpu_limit: self.cpu_limit.or(under.cpu_limit),
            metrics: self.metrics.or(under.metrics),
            tls: self.tls.or(under.tls),
            insecure: self.insecure.or(under.insecure),
            balancer: self.balancer.over(under.balancer),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("config file {path}: {err}")]
    Parse { path: PathBuf, err: Box<toml::de::Error> },
    #[error("{0}")]
    Invalid(String),
}

/// The daemon's settings, complete and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    /// The peer port, TCP and UDP.
    pub listen: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub api_sock: PathBuf,
    pub state_dir: PathBuf,
    /// HOST:PORT of hosts to join through.
    pub join: Vec<String>,
    pub log_format: LogFormat,
    pub timing: Timing,
    /// The mosvm binary the daemon starts bodies and deputies with: its
    /// own executable (`mosvm host`).
    pub exe: PathBuf,
    pub cpus: Option<f64>,
    pub speed: Option<f64>,
    pub cpu_limit: Option<f64>,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<SocketAddr>,
    pub balance: Balance,
    /// Plain TCP and bare datagrams (`--insecure`), or mutual TLS and
    /// sealed datagrams with this host's identity.
    pub transport: trust::Transport,
}

/// How this host balances.
#[derive(Debug, Clone)]
pub struct Balance {
    pub enabled: bool,
    /// Load sampling period.
    pub tick: std::time::Duration,
    /// The balancer's tunables (its host spec is measured at start).
    pub params: balancer::Config,
}

impl Balance {
    fn from_settings(b: &BalancerSettings) -> Result<Balance, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(m);
        let d = balancer::Config::default();
        let mut params = match b.gossip_period {
            Some(p) if !(p.is_finite() && (0.01..=60.0).contains(&p)) => {
                return Err(bad(format!("balancer.gossip_period {p}: give 0.01 to 60 seconds")))
            }
            Some(p) => d.with_gossip_period(p),
            None => d,
        };
        let secs = |what: &str, v: Option<f64>, max: f64| -> Result<Option<f64>, ConfigError> {
            match v {
                Some(x) if !(x.is_finite() && (0.0..=max).contains(&x)) => {
                    Err(bad(format!("balancer.{what} {x}: give 0 to {max}")))
                }
                other => Ok(other),
            }
        };
        let c = &mut params.consider;
        if let Some(v) = secs("residency", b.residency, 3600.0)? {
            c.min_residency = v;
        }
        if let Some(v) = secs("settle", b.settle, 3600.0)? {
            c.settle = v;
        }
        if let Some(v) = secs("hysteresis", b.hysteresis, 100.0)? {
            c.margin = v;
        }
        if let Some(v) = secs("cool_down", b.cool_down, 86400.0)? {
            c.cool_down = v;
        }
        if let Some(v) = secs("cost_weight", b.cost_weight, 1000.0)? {
            c.cost_weight = v;
        }
        if let Some(n) = b.max_in_flight {
            if n == 0 || n > 64 {
                return Err(bad(format!("balancer.max_in_flight {n}: give 1 to 64")));
            }
            c.max_in_flight = n;
        }
        if let Some(n) = b.drain_in_flight {
            if n == 0 || n > 64 {
                return Err(bad(format!("balancer.drain_in_flight {n}: give 1 to 64")));
            }
            c.drain_in_flight = n;
        }
        let tick = match b.tick {
            Some(t) if !(t.is_finite() && (0.01..=10.0).contains(&t)) => {
                return Err(bad(format!("balancer.tick {t}: give 0.01 to 10 seconds")))
            }
            Some(t) => t,
            None => 0.1,
        };
        Ok(Balance { enabled: b.enabled.unwrap_or(true), tick: std::time::Duration::from_secs_f64(tick), params })
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname terminates
    // or truncates within it.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(s) if r == 0 && !s.is_empty() => s.to_string(),
        _ => "localhost".to_string(),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Config {
    /// Reads a config file's settings.
    pub fn read_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read { path: path.into(), err })?;
        toml::from_str(&text).map_err(|err| ConfigError::Parse { path: path.into(), err: Box::new(err) })
    }

    /// `flags` over the file at `file` (if any) over the defaults.
    pub fn resolve(flags: Settings, file: Option<&Path>) -> Result<Config, ConfigError> {
        let from_file = match file {
            Some(p) => Config::read_file(p)?,
            None => Settings::default(),
        };
        Config::from_settings(flags.over(from_file))
    }

    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(m);
        let name = s.name.unwrap_or_else(hostname);
        if !valid_name(&name) {
            return Err(bad(format!("host name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'")));
        }
        let listen_s = s.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr =
            listen_s.parse().map_err(|_| bad(format!("listen address {listen_s:?} is not IP:PORT")))?;
        let advertise = match s.advertise {
            Some(a) => Some(a.parse().map_err(|_| bad(format!("advertise address {a:?} is not IP:PORT")))?),
            None => None,
        };
        let join: Vec<String> =
            s.join.unwrap_or_default().into_iter().map(|j| j.trim().to_string()).filter(|j| !j.is_empty()).collect();
        for j in &join {
            match j.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {}
                _ => return Err(bad(format!("join address {j:?} is not HOST:PORT"))),
            }
        }
        let positive = |what: &str, v: Option<f64>, max: f64| -> Result<Option<f64>, ConfigError> {
            match v {
                Some(x) if !(x.is_finite() && x >= 0.01 && x <= max) => {
                    Err(bad(format!("{what} {x}: give a number from 0.01 to {max}")))
                }
                other => Ok(other),
            }
        };
        let cpus = positive("cpus", s.cpus, 65535.0)?;
        let speed = positive("speed", s.speed, 1000.0)?;
        let cpu_limit = positive("cpu_limit", s.cpu_limit, 65535.0)?;
        let balance = Balance::from_settings(&s.balancer)?;
        let metrics = match s.metrics {
            Some(m) => Some(m.parse().map_err(|_| bad(format!("metrics address {m:?} is not IP:PORT")))?),
            None => None,
        };
        let transport = match (s.tls, s.insecure.unwrap_or(false)) {
            (Some(_), true) => return Err(bad("give a cluster identity (tls) or insecure, not both".into())),
            (None, false) => {
                return Err(bad("this host has no cluster identity: give --tls DIR (made by `mosvm cluster \
                     add-host`), or --insecure to let anyone who reaches the peer port run code here"
                    .into()))
            }
            (None, true) => trust::Transport::Plain,
            (Some(dir), false) => {
                let t = trust::Transport::from_dir(&dir).map_err(|e| bad(format!("tls {}: {e}", dir.display())))?;
                if let trust::Transport::Tls(tls) = &t {
                    if tls.identity.name != name {
                        return Err(bad(format!(
                            "tls {}: that is the identity of host {:?}, and this host is {name:?} (give --name)",
                            dir.display(),
                            tls.identity.name
                        )));
                    }
                }
                t
            }
        };
        Ok(Config {
            name,
            listen,
            advertise,
            api_sock: s.api_sock.unwrap_or_else(|| DEFAULT_API_SOCK.into()),
            state_dir: s.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            join,
            log_format: s.log_format.unwrap_or_default(),
            timing: Timing::default(),
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mosvm")),
            cpus,
            speed,
            cpu_limit,
            metrics,
            balance,
            transport,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_over_file_over_defaults() {
        let file: Settings = toml::from_str(
            "name = \"filehost\"\nlisten = \"127.0.0.9:9000\"\njoin = [\"127.0.0.2:7077\"]\nlog_format = \"json\"\n",
        )
        .unwrap();
        let flags = Settings { name: Some("flaghost".into()), insecure: Some(true), ..Settings::default() };
        let c = Config::from_settings(flags.over(file)).unwrap();
        assert_eq!(c.name, "flaghost");
        assert_eq!(c.listen, "127.0.0.9:9000".parse().unwrap());
        assert_eq!(c.join, vec!["127.0.0.2:7077".to_string()]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.api_sock, PathBuf::from(DEFAULT_API_SOCK));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));

        let d = Config::from_settings(Settings { insecure: Some(true), ..Settings::default() }).unwrap();
        assert!(!d.transport.is_tls());
        assert_eq!(d.listen.port(), DEFAULT_PORT);
        assert!(d.balance.enabled);
        assert_eq!(d.balance.params, balancer::Config::default());
        assert!(!d.name.is_empty());
    }

    #[test]
    fn balancer_table_over_the_crate_defaults() {
        let file: Settings = toml::from_str(
            "cpus = 0.5\n[balancer]\ngossip_period = 1.0\nresidency = 2.0\nhysteresis = 0.5\ncool_down = 30\nenabled = false\n",
        )
        .unwrap();
        let flags = Settings { cpus: Some(2.0), insecure: Some(true), ..Settings::default() };
        let c = Config::from_settings(flags.over(file)).unwrap();
        assert_eq!(c.cpus, Some(2.0));
        assert!(!c.balance.enabled);
        let d = balancer::Config::default();
        assert_eq!(c.balance.params.gossip.period, 1.0);
        // Slower gossip stretches the age limits (the crate's rule).
        assert!(c.balance.params.gossip.max_age > d.gossip.max_age);
        assert_eq!(c.balance.params.consider.min_residency, 2.0);
        assert_eq!(c.balance.params.consider.margin, 0.5);
        assert_eq!(c.balance.params.consider.cool_down, 30.0);
        assert_eq!(c.balance.params.consider.settle, d.consider.settle);
    }

    #[test]
    fn refusals() {
        assert!(toml::from_str::<Settings>("nmae = \"x\"").is_err());
        let bad = |s: Settings| Config::from_settings(Settings { insecure: Some(true), ..s }).is_err();
        assert!(bad(Settings { listen: Some("nowhere".into()), ..Default::default() }));
        assert!(bad(Settings { name: Some("a b".into()), ..Default::default() }));
        assert!(bad(Settings { join: Some(vec!["host".into()]), ..Default::default() }));
        assert!(bad(Settings { join: Some(vec!["host:0".into()]), ..Default::default() }));
        assert!(bad(Settings { cpus: Some(0.0), ..Default::default() }));
        assert!(bad(Settings { cpu_limit: Some(f64::NAN), ..Default::default() }));
        let tuned = |t: &str| {
            Config::from_settings(Settings { insecure: Some(true), ..toml::from_str::<Settings>(t).unwrap() })
        };
        assert!(tuned("[balancer]\ngossip_period = 0").is_err());
        assert!(tuned("[balancer]\nmax_in_flight = 0").is_err());
        assert!(toml::from_str::<Settings>("[balancer]\ngosip_period = 1").is_err());
    }

    #[test]
    fn an_identity_or_insecure_is_required() {
        let e = Config::from_settings(Settings::default()).unwrap_err().to_string();
        assert!(e.contains("--tls DIR") && e.contains("--insecure"), "{e}");
        let both = Settings { tls: Some("/nowhere".into()), insecure: Some(true), ..Default::default() };
        assert!(Config::from_settings(both).is_err());
        let missing = Settings { tls: Some("/nowhere".into()), ..Default::default() };
        assert!(Config::from_settings(missing).unwrap_err().to_string().contains("/nowhere"));
        // Another host's identity.
        let dir = std::env::temp_dir().join(format!("mosvm-config-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        trust::init_cluster(&dir).unwrap();
        let h1 = trust::add_host(&dir, "h1").unwrap();
        let other = Settings { name: Some("h2".into()), tls: Some(h1.clone()), ..Default::default() };
        assert!(Config::from_settings(other).unwrap_err().to_string().contains("\"h1\""));
        let ok = Config::from_settings(Settings { name: Some("h1".into()), tls: Some(h1), ..Default::default() });
        assert!(ok.unwrap().transport.is_tls());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

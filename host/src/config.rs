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

/// Settings as given, each optional: the flags, or the config file (same
/// keys, e.g. `join = ["10.0.0.2:7077"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
        let flags = Settings { name: Some("flaghost".into()), ..Settings::default() };
        let c = Config::from_settings(flags.over(file)).unwrap();
        assert_eq!(c.name, "flaghost");
        assert_eq!(c.listen, "127.0.0.9:9000".parse().unwrap());
        assert_eq!(c.join, vec!["127.0.0.2:7077".to_string()]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.api_sock, PathBuf::from(DEFAULT_API_SOCK));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));

        let d = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(d.listen.port(), DEFAULT_PORT);
        assert!(!d.name.is_empty());
    }

    #[test]
    fn refusals() {
        assert!(toml::from_str::<Settings>("nmae = \"x\"").is_err());
        let bad = |s: Settings| Config::from_settings(s).is_err();
        assert!(bad(Settings { listen: Some("nowhere".into()), ..Default::default() }));
        assert!(bad(Settings { name: Some("a b".into()), ..Default::default() }));
        assert!(bad(Settings { join: Some(vec!["host".into()]), ..Default::default() }));
        assert!(bad(Settings { join: Some(vec!["host:0".into()]), ..Default::default() }));
    }
}

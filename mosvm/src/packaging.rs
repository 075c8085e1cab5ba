//! What an operator installs beside the binary: shell completions
//! (`mosvm completions SHELL`) and man pages (`mosvm man --dir DIR`),
//! both made from the CLI definition so they never disagree with it.
//! The systemd unit and an example config are in contrib/.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Where to write the pages (created if missing): mosvm.1 and one
    /// mosvm-COMMAND.1 per command.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// The completion script for `shell`.
fn completion_script(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mosvm", &mut out);
    out
}

pub fn completions(args: CompletionsArgs) -> i32 {
    // Rendered first: clap_complete panics on a failed write (`| head`).
    let script = completion_script(args.shell);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("mosvm completions: {e}");
            1
        }
    }
}

/// The pages' date, YYYY-MM-DD: $SOURCE_DATE_EPOCH's (reproducible
/// builds), else today's. Without one roff would take the next field
/// (the source) for the date.
fn page_date() -> String {
    let epoch_s = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let ms = epoch_s.map(|s| s * 1000).unwrap_or_else(mosvm_host::server::now_ms);
    crate::text::utc(ms)[..10].to_string()
}

/// Writes mosvm.1 and a page per visible command into `dir`; returns
/// the files written.
fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // Built once, so that each command's page is named and titled
    // mosvm-COMMAND and its synopsis reads `mosvm COMMAND`.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let commands: Vec<clap::Command> = cli.get_subcommands().filter(|c| !c.is_hide_set()).cloned().collect();
    let date = page_date();
    let mut written = Vec::new();
    for cmd in std::iter::once(cli).chain(commands) {
        let man = clap_mangen::Man::new(cmd)
            .date(&date)
            .source(concat!("mosvm ", env!("CARGO_PKG_VERSION")))
            .manual("mosvm manual");
        written.push(man.generate_to(dir)?);
    }
    Ok(written)
}

pub fn man(args: ManArgs) -> i32 {
    match write_man_pages(&args.dir) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("mosvm man: {}: {e}", args.dir.display());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn contrib(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib").join(name)
    }

    #[test]
    fn completions_know_the_commands() {
        let bash = String::from_utf8(completion_script(Shell::Bash)).unwrap();
        for sub in ["drain", "top", "run", "migrate", "completions"] {
            assert!(bash.contains(sub), "bash completion lacks {sub}");
        }
        // A flag of a command, and the shells themselves as values.
        assert!(bash.contains("--interval"), "top's flags are completed");
        for shell in [Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell] {
            let s = String::from_utf8(completion_script(shell)).unwrap();
            assert!(s.contains("drain") && s.contains("top"), "{shell}");
        }
        match Cli::try_parse_from(["mosvm", "completions", "fish"]).map(|c| c.command) {
            Ok(crate::cli::Command::Completions(c)) => assert_eq!(c.shell, Shell::Fish),
            other => panic!("{other:?}"),
        }
        let e = Cli::try_parse_from(["mosvm", "completions", "tcsh"]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "a wrong shell is a usage error");
        assert!(e.to_string().contains("possible values"), "{e}");
    }

    #[test]
    fn a_man_page_per_command() {
        let dir = std::env::temp_dir().join(format!("mosvm-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = write_man_pages(&dir).unwrap();
        let visible: Vec<String> =
            Cli::command().get_subcommands().filter(|c| !c.is_hide_set()).map(|c| c.get_name().to_string()).collect();
        assert!(visible.len() > 10, "{visible:?}");
        assert_eq!(written.len(), visible.len() + 1);
        for page in std::iter::once("mosvm.1".to_string()).chain(visible.iter().map(|c| format!("mosvm-{c}.1"))) {
            let text = std::fs::read_to_string(dir.join(&page)).unwrap_or_else(|e| panic!("{page}: {e}"));
            // After clap_mangen's two lines defining the apostrophe.
            let first = text.lines().find(|l| !l.starts_with(".ie") && !l.starts_with(".el")).unwrap_or("");
            assert!(first.starts_with(".TH "), "{page} starts with {first:?}");
        }
        let drain = std::fs::read_to_string(dir.join("mosvm-drain.1")).unwrap();
        assert!(
            drain.contains(".TH mosvm-drain 1 20")
                && drain.contains(" \"mosvm 0.")
                && drain.contains("\"mosvm manual\"")
                && drain.contains("mosvm drain"),
            "{drain}"
        );
        assert!(!dir.join("mosvm-man.1").exists(), "the hidden command has no page");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// contrib/mosvm.toml as shipped, and with every example setting
    /// (`#key = value`) switched on: each a config the daemon takes, the
    /// second with every key it reads, so the example cannot rot.
    #[test]
    fn example_config_is_complete_and_valid() {
        use mosvm_host::{Config, Settings};
        let path = contrib("mosvm.toml");
        let shipped = Config::read_file(&path).unwrap();
        // It names an identity directory this machine does not have.
        assert_eq!(shipped.tls.as_deref(), Some(Path::new("/etc/mosvm/tls")));
        assert!(Config::from_settings(shipped.clone()).unwrap_err().to_string().contains("/etc/mosvm/tls"));
        let shipped = Config::from_settings(Settings { tls: None, insecure: Some(true), ..shipped }).unwrap();
        assert_eq!(shipped.api_sock, Path::new(mosvm_host::config::DEFAULT_API_SOCK));
        assert_eq!(shipped.state_dir, Path::new(mosvm_host::config::DEFAULT_STATE_DIR));
        assert!(shipped.cpu_limit.is_none() && shipped.metrics.is_none() && shipped.join.is_empty());

        let text = std::fs::read_to_string(&path).unwrap();
        let on: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let all = std::env::temp_dir().join(format!("mosvm-example-{}.toml", std::process::id()));
        std::fs::write(&all, on).unwrap();
        let s = Config::read_file(&all);
        let _ = std::fs::remove_file(&all);
        let s = s.unwrap();
        // Taken apart field by field: a key added to the daemon and not to
        // the example does not compile.
        let mosvm_host::config::BalancerSettings {
            enabled,
            gossip_period,
            residency,
            settle,
            hysteresis,
            cool_down,
            cost_weight,
            max_in_flight,
            drain_in_flight,
            tick,
        } = &s.balancer;
        let balancer = [
            enabled.is_some(),
            gossip_period.is_some(),
            residency.is_some(),
            settle.is_some(),
            hysteresis.is_some(),
            cool_down.is_some(),
            cost_weight.is_some(),
            max_in_flight.is_some(),
            drain_in_flight.is_some(),
            tick.is_some(),
        ];
        assert!(balancer.iter().all(|&k| k), "a [balancer] key is missing: {:?}", s.balancer);
        let Settings {
            name,
            listen,
            advertise,
            api_sock,
            state_dir,
            join,
            log_format,
            cpus,
            speed,
            cpu_limit,
            metrics,
            tls,
            insecure,
            balancer: _,
        } = &s;
        let keys = [
            name.is_some(),
            listen.is_some(),
            advertise.is_some(),
            api_sock.is_some(),
            state_dir.is_some(),
            join.is_some(),
            log_format.is_some(),
            cpus.is_some(),
            speed.is_some(),
            cpu_limit.is_some(),
            metrics.is_some(),
            tls.is_some(),
            insecure.is_some(),
        ];
        assert!(keys.iter().all(|&k| k), "a key is missing: {s:?}");
        // Both tls and insecure, switched on: refused, as they must be.
        assert!(Config::from_settings(s.clone()).is_err());
        let c = Config::from_settings(Settings { tls: None, ..s }).unwrap();
        // The balancer values shown are its defaults: the example
        // documents them.
        let d = Config::from_settings(Settings { insecure: Some(true), ..Settings::default() }).unwrap();
        assert_eq!(c.balance.params, d.balance.params);
        assert_eq!((c.balance.tick, c.balance.enabled), (d.balance.tick, d.balance.enabled));
    }

    /// The unit starts the binary with the example's path, and keeps the
    /// jobs when the daemon stops (see the comment in it).
    #[test]
    fn systemd_unit() {
        let unit = std::fs::read_to_string(contrib("mosvm.service")).unwrap();
        let set = |k: &str| unit.lines().filter_map(|l| l.strip_prefix(k)?.strip_prefix('=')).next();
        assert_eq!(set("ExecStart"), Some("/usr/local/bin/mosvm host --config /etc/mosvm/mosvm.toml"));
        assert_eq!(set("KillMode"), Some("process"));
        assert_eq!(set("RuntimeDirectory"), Some("mosvm"));
        assert_eq!(set("StateDirectory"), Some("mosvm"));
        assert_eq!(set("Delegate"), Some("yes"));
        assert_eq!(set("Restart"), Some("on-failure"));
    }
}

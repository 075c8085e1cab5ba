//! Command-line handling shared by the examples.

/// `println!` that ends the program quietly when nobody reads the output
/// any more (`| head`), instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::common::say(format_args!($($arg)*))
    };
}

use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;

/// The value given after `flag`, parsed.
pub fn value<T: FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.trim().parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
}

/// The comma-separated list given after `flag` (empty items are skipped).
pub fn list<T: FromStr>(flag: &str, v: Option<String>) -> Result<Vec<T>, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    let items: Vec<T> = v
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| format!("{flag}: cannot parse {s:?}")))
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err(format!("{flag}: empty list"));
    }
    Ok(items)
}

/// Runs `parse` over the command line. `--help` prints `usage` and ends the
/// program successfully; an error is printed with `usage` and ends it with
/// status 2.
pub fn args<A>(
    name: &str,
    usage: &str,
    parse: impl FnOnce(&mut dyn Iterator<Item = String>) -> Result<A, String>,
) -> Result<A, ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        say!("{usage}");
        return Err(ExitCode::SUCCESS);
    }
    parse(&mut args.into_iter()).map_err(|e| {
        eprintln!("{name}: {e}\n{usage}");
        ExitCode::from(2)
    })
}

/// See [`say!`].
pub fn say(line: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    if out.write_fmt(line).and_then(|_| out.write_all(b"\n")).is_err() {
        // What a shell reports for a program killed by SIGPIPE.
        std::process::exit(141);
    }
}

//! The `mosvm` command.

mod api;
mod cli;
mod client;
mod daemon;
mod http;
mod register;
mod run;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Run(args) => run::run(args),
        cli::Command::Receive(args) => run::receive(args),
        cli::Command::Restore(args) => run::restore(args),
        cli::Command::Migrate(args) => client::migrate(args),
        cli::Command::Snapshot(args) => client::snapshot(args),
        cli::Command::Host(args) => daemon::host(args),
        cli::Command::Hosts(args) => daemon::hosts(args),
        cli::Command::Ps(args) => daemon::ps(args),
        cli::Command::Kill(args) => daemon::kill(args),
        cli::Command::Wait(args) => daemon::wait(args),
        cli::Command::Logs(args) => daemon::logs(args),
        cli::Command::Events(args) => daemon::events(args),
    };
    std::process::exit(code);
}

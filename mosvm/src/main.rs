//! The `mosvm` command.

mod cli;
mod run;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Run(args) => run::run(args),
    };
    std::process::exit(code);
}

//! `mosvm cluster init` and `mosvm cluster add-host`: the cluster's CA
//! and its hosts' certificates (see the trust crate).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Create the cluster's CA and gossip key in DIR (keep DIR private:
    /// whoever holds it can add hosts).
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue host NAME its certificate; writes DIR/hosts/NAME, which that
    /// host runs with: `mosvm host --name NAME --tls DIR/hosts/NAME`.
    AddHost {
        name: String,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

pub fn cluster(args: ClusterArgs) -> i32 {
    match args.command {
        ClusterCommand::Init { dir } => match trust::init_cluster(&dir) {
            Ok(ca) => {
                println!("{}: cluster CA \"{}\" created", dir.display(), ca.name);
                println!("next, for each host: mosvm cluster add-host NAME --dir {}", dir.display());
                0
            }
            Err(e) => {
                eprintln!("mosvm cluster init: {e}");
                1
            }
        },
        ClusterCommand::AddHost { name, dir } => match trust::add_host(&dir, &name) {
            Ok(host_dir) => {
                println!("{}: certificate for host {name}", host_dir.display());
                println!(
                    "copy that directory to {name} (keys are 0600) and run there: mosvm host --name {name} --tls DIR"
                );
                0
            }
            Err(e) => {
                eprintln!("mosvm cluster add-host: {e}");
                1
            }
        },
    }
}

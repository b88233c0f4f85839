//! `carton network create | ls | rm | inspect`.

use std::path::Path;

use clap::{Args, Subcommand};

use super::format::{ellipsis, table};
use crate::network::manage;
use crate::state::StateStore;

#[derive(Debug, Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    command: NetworkCommand,
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// Create a bridge network.
    Create {
        /// Driver (only "bridge").
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR form (default: a free /16).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (default: the subnet's first address).
        #[arg(long)]
        gateway: Option<String>,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove networks (refused while containers use them).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

pub fn network(root: &Path, args: NetworkArgs) -> anyhow::Result<i32> {
    match args.command {
        NetworkCommand::Create {
            driver,
            subnet,
            gateway,
            name,
        } => {
            let record =
                manage::create(root, &name, &driver, subnet.as_deref(), gateway.as_deref())?;
            println!("{}", record.id);
            Ok(0)
        }
        NetworkCommand::Ls { quiet } => {
            let networks = manage::list(root)?;
            if quiet {
                for n in &networks {
                    println!("{}", &n.id[..12]);
                }
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = networks
                .iter()
                .map(|n| {
                    vec![
                        n.id[..12].to_string(),
                        n.name.clone(),
                        n.driver.clone(),
                        n.subnet.to_string(),
                        ellipsis(&n.bridge, 15),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NETWORK ID", "NAME", "DRIVER", "SUBNET", "BRIDGE"], &rows)
            );
            Ok(0)
        }
        NetworkCommand::Rm { networks } => {
            let states = StateStore::new(root);
            let mut failed = false;
            for reference in &networks {
                let result = manage::get(root, reference).and_then(|record| {
                    // Containers configured with the network, running or not.
                    let users: Vec<String> = states
                        .list()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|c| c.network == record.name)
                        .map(|c| c.name)
                        .collect();
                    manage::remove(root, reference, &users)
                });
                match result {
                    Ok(_) => println!("{reference}"),
                    Err(e) => {
                        eprintln!("carton: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { super::EXIT_CARTON_ERROR } else { 0 })
        }
        NetworkCommand::Inspect { networks } => {
            let mut out = Vec::new();
            let mut failed = false;
            for reference in &networks {
                match manage::get(root, reference) {
                    Ok(record) => out.push(manage::inspect(&record)),
                    Err(e) => {
                        eprintln!("carton: {e}");
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(if failed { super::EXIT_CARTON_ERROR } else { 0 })
        }
    }
}

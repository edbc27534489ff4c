//! `sluice cluster status`: the cluster as the shared catalogue sees it
//! (docs/design/scale-out.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::CliError;
use crate::config::Config;

/// How long `cluster status` waits for PostgreSQL.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// A node whose publisher has not reported for this long is named silent
/// (it reports every `cluster.publish_interval_ms` while it can).
const SILENT_AFTER_SECONDS: f64 = 30.0;

/// Cluster mode's commands.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum ClusterCommand {
    /// The nodes, their instances in the catalogue, their publishing
    /// backlog and lag, and whether PostgreSQL answers.
    ///
    /// Exits 1 when the catalogue cannot be reached.
    Status {
        /// The TOML configuration file of a node (its `cluster.catalogue`).
        #[arg(long = "config", value_name = "FILE")]
        config_file: Option<PathBuf>,
        /// The catalogue's connection string [default: the configuration's].
        #[arg(long, value_name = "CONNINFO")]
        catalogue: Option<String>,
    },
}

pub(crate) fn run(command: ClusterCommand, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    let ClusterCommand::Status {
        config_file,
        catalogue,
    } = command;
    let config = match &config_file {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let address =
        match (catalogue, &config.cluster.catalogue) {
            (Some(address), _) => address,
            (None, Some(address)) => address.as_str().to_owned(),
            (None, None) => return Err(CliError::BadArgument(
                "no catalogue: pass --catalogue CONNINFO, or --config with cluster.catalogue set"
                    .to_owned(),
            )),
        };
    let nodes = match crate::cluster::status(&address, STATUS_TIMEOUT) {
        Ok(nodes) => nodes,
        Err(error) => {
            writeln!(output, "catalogue: unreachable ({error})")?;
            return Ok(ExitCode::from(1));
        }
    };
    writeln!(output, "catalogue: reachable, {} nodes", nodes.len())?;
    writeln!(
        output,
        "{:<24} {:>12} {:>14} {:>10} {:>12}  state",
        "node", "instances", "backlog_bytes", "lag_s", "last_word_s"
    )?;
    for node in &nodes {
        let state = if node.seen_seconds_ago > SILENT_AFTER_SECONDS {
            "silent (down, or cut off from the catalogue)"
        } else if node.backlog_bytes > 0 {
            "publishing"
        } else {
            "up to date"
        };
        writeln!(
            output,
            "{:<24} {:>12} {:>14} {:>10.1} {:>12.1}  {state}",
            node.node, node.instances, node.backlog_bytes, node.lag_seconds, node.seen_seconds_ago
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

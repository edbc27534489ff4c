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

/// How long a node's DICOM port may take to accept a connection before
/// the node is named down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The UIDs of a down node's unavailable instances listed (the count is
/// whole).
const UNAVAILABLE_LISTED: u32 = 100;

/// Cluster mode's commands.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum ClusterCommand {
    /// The nodes, their instances in the catalogue, their publishing
    /// backlog and lag, whether PostgreSQL answers, and for each node that
    /// is down (its DICOM port refuses, or it went silent) the instances
    /// unavailable meanwhile (not in the object store).
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
    let mut down = Vec::new();
    for node in &nodes {
        let state = match dicom_port_answers(node.dicom_address.as_deref()) {
            Some(false) => {
                down.push(node);
                "down (its DICOM port does not answer)"
            }
            _ if node.seen_seconds_ago > SILENT_AFTER_SECONDS => {
                down.push(node);
                "silent (down, or cut off from the catalogue)"
            }
            _ if node.backlog_bytes > 0 => "publishing",
            _ => "up to date",
        };
        writeln!(
            output,
            "{:<24} {:>12} {:>14} {:>10.1} {:>12.1}  {state}",
            node.node, node.instances, node.backlog_bytes, node.lag_seconds, node.seen_seconds_ago
        )?;
    }
    // What a retrieve cannot have meanwhile: the down nodes' instances not
    // in the object store (the uploaded ones are read from there).
    for node in down {
        writeln!(
            output,
            "unavailable while {} is down: {} instances not in the object store{}",
            node.node,
            node.not_uploaded,
            if node.not_uploaded > 0 { ":" } else { "" }
        )?;
        if node.not_uploaded == 0 {
            continue;
        }
        match crate::cluster::not_uploaded(&address, STATUS_TIMEOUT, &node.node, UNAVAILABLE_LISTED)
        {
            Ok(uids) => {
                for uid in &uids {
                    writeln!(output, "  {}", crate::escape::Escaped(uid))?;
                }
                let listed = uids.len() as u64;
                if node.not_uploaded > listed {
                    writeln!(output, "  ... and {} more", node.not_uploaded - listed)?;
                }
            }
            Err(error) => writeln!(output, "  (cannot list them: {error})")?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a node's DICOM port takes a connection (`None`: no address
/// published, or it does not resolve).
fn dicom_port_answers(address: Option<&str>) -> Option<bool> {
    use std::net::ToSocketAddrs;
    let address = address?.to_socket_addrs().ok()?.next()?;
    Some(std::net::TcpStream::connect_timeout(&address, PROBE_TIMEOUT).is_ok())
}

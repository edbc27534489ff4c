//! Server configuration: built-in defaults, a TOML file, command-line flags.
//!
//! Every option is declared once, in `options.rs`, with its TOML key, flag,
//! type, default, kind and documentation. From that declaration come the
//! resolved [`Config`] structs, the raw per-source settings (`Layer`, the
//! "low" form of ripgrep's lowargs -> hiargs), the clap flags
//! ([`ConfigArgs`]), the checks, and the generated reference
//! ([`markdown_reference`], kept in `docs/configuration.md` by a test).
//!
//! Precedence: built-in defaults < the file named by `--config` < flags. A
//! flag replaces an option's whole value (lists and tables too). Every
//! error names where the bad value was written: `file:line: option `key`:
//! ...` or `command line: flag `--name`: ...`.
//!
//! Architecture invariant: this module knows nothing of sockets, files other
//! than the configuration file, or `sluice-net`'s tables: a
//! [`SopClassSelection`] or [`TransferSyntaxSelection`] is resolved into UID
//! lists by the server, not here.

#[macro_use]
mod macros;
mod docs;
mod error;
mod file;
mod kinds;
mod options;
mod values;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};

pub use docs::{example_toml, markdown_reference, REGENERATE_COMMAND};
pub use error::{ConfigError, Origin};
pub use options::{
    AcceptConfig, AccessConfig, AuditConfig, ClusterConfig, CommitmentConfig, Config,
    MetricsConfig, NetworkConfig, ObjectsConfig, QueryConfig, ServerConfig, StorageConfig,
    ValidationConfig,
};
pub use values::{
    AccessRule, AccessService, AccessServices, AeSelection, AeTitle, CatalogueAddress, CheckMode,
    ConfigEnum, Cores, DuplicatePolicy, EvictPolicy, FileKeysOnFind, FindScope, IoBackend,
    LogFormat, LogLevel, NodeName, ObjectEndpoint, ObjectName, PersonNameMatching, PlainListener,
    PublishMode, RemoteAddress, ReportDelivery, RetrieveSend, SopClassSelection, StorageLayout,
    SyslogAddress, SyslogTransport, TransferSyntaxSelection, Uid, UidConflictPolicy, ValueError,
    ZeroFill, AE_TITLE_LENGTH_MAX, CORES_MAX, UID_LENGTH_MAX,
};

use options::{check_each, option_infos, Layer, Origins};

/// A section of the file, for the reference and `--help` headings.
#[derive(Debug)]
pub(crate) struct SectionInfo {
    pub(crate) name: &'static str,
    pub(crate) title: &'static str,
    pub(crate) doc: &'static str,
}

/// One option's metadata, derived from its declaration.
#[derive(Debug)]
pub(crate) struct OptionInfo {
    pub(crate) section: &'static str,
    pub(crate) name: &'static str,
    /// `section.name`: the TOML key, also the clap argument id.
    pub(crate) key: &'static str,
    pub(crate) flag: &'static str,
    /// The `///` lines, each ending in a newline.
    pub(crate) doc: &'static str,
    pub(crate) type_doc: String,
    pub(crate) choices: Vec<(String, String)>,
    pub(crate) value_name: &'static str,
    /// `Some("element")` or `Some("entry")` for a flag given once per
    /// element or entry.
    pub(crate) repeat_unit: Option<&'static str>,
    /// The default as TOML; `None` when the default is "unset".
    pub(crate) default_toml: Option<String>,
    pub(crate) example_toml: Option<&'static str>,
}

/// The clap argument id of `--config`; unlikely to clash with the ids of a
/// binary that flattens [`ConfigArgs`] into its own parser.
const CONFIG_FILE_ARGUMENT_ID: &str = "sluice.config_file";

/// One AE that Sluice serves, and on which port. Verification is served by
/// every one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedAe {
    /// The Called AE Title senders use.
    pub ae_title: AeTitle,
    /// The TCP port it is reached on.
    pub port: u16,
    /// Whether it accepts C-STORE.
    pub storage: bool,
    /// Whether it accepts Storage Commitment requests.
    pub commitment: bool,
}

impl Config {
    /// Parses a `sluice serve`-style command line (`args[0]` is the program
    /// name): `--config FILE` and the option flags, resolved over the
    /// built-in defaults. `--help` comes back as [`ConfigError::Usage`].
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = command().try_get_matches_from(args)?;
        let config_args = <ConfigArgs as clap::FromArgMatches>::from_arg_matches(&matches)?;
        config_args.resolve()
    }

    /// Reads a configuration file over the built-in defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = file::read_file(path)?;
        Config::from_toml_str(&text, path)
    }

    /// Parses configuration text over the built-in defaults; `path` is only
    /// used to name the file in errors.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let layer = file::parse_layer(text, path)?;
        resolve_layers([layer])
    }

    /// Checks a configuration however it was made (an embedder may build
    /// one in code): every value in range and the options consistent with
    /// each other. Configurations from [`Config::from_args`],
    /// [`Config::from_file`] and [`Config::from_toml_str`] are already
    /// checked.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let origins = Origins::default();
        check_each(self, &origins)?;
        check_relations(self, &origins)
    }

    /// The AE title that serves Storage Commitment.
    pub fn commitment_ae_title(&self) -> &AeTitle {
        self.network
            .commitment_ae_title
            .as_ref()
            .unwrap_or(&self.network.ae_title)
    }

    /// The port on which Storage Commitment is served.
    pub fn commitment_port(&self) -> u16 {
        self.network.commitment_port.unwrap_or(self.network.port)
    }

    /// The AEs to serve: one (the default: storage and commitment on
    /// `ae_title` at `port`), or two when a separate commitment AE title or
    /// port is configured, as the reference PACS has (DICOMServer on 104,
    /// SCServer on 1104).
    pub fn served_aes(&self) -> Vec<ServedAe> {
        let split = *self.commitment_ae_title() != self.network.ae_title
            || self.commitment_port() != self.network.port;
        let mut served = vec![ServedAe {
            ae_title: self.network.ae_title.clone(),
            port: self.network.port,
            storage: true,
            commitment: !split,
        }];
        if split {
            served.push(ServedAe {
                ae_title: self.commitment_ae_title().clone(),
                port: self.commitment_port(),
                storage: false,
                commitment: true,
            });
        }
        served
    }
}

/// Applies layers over the defaults, later layers winning, and checks the
/// result.
fn resolve_layers(layers: impl IntoIterator<Item = Layer>) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let mut origins = Origins::default();
    for layer in layers {
        layer.apply(&mut config, &mut origins);
    }
    check_each(&config, &origins)?;
    check_relations(&config, &origins)?;
    Ok(config)
}

/// Of two options in a relation, the one to name in the error: the one the
/// user set, rather than a built-in default they never wrote.
fn blame<'a>(first: &'a Origin, second: &'a Origin) -> bool {
    matches!(first, Origin::Default) && !matches!(second, Origin::Default)
}

/// Checks between options (one value alone is checked by its kind).
fn check_relations(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let network = &config.network;
    if network.max_associations_per_calling_ae > network.max_associations {
        return Err(
            if blame(
                &origins.max_associations_per_calling_ae,
                &origins.max_associations,
            ) {
                ConfigError::Invalid {
                    origin: origins.max_associations.clone(),
                    option: "network.max_associations",
                    message: format!(
                        "{} is below network.max_associations_per_calling_ae = {} ({}); lower that too",
                        network.max_associations,
                        network.max_associations_per_calling_ae,
                        origins.max_associations_per_calling_ae
                    ),
                }
            } else {
                ConfigError::Invalid {
                    origin: origins.max_associations_per_calling_ae.clone(),
                    option: "network.max_associations_per_calling_ae",
                    message: format!(
                        "{} is above network.max_associations = {} ({})",
                        network.max_associations_per_calling_ae,
                        network.max_associations,
                        origins.max_associations
                    ),
                }
            },
        );
    }
    check_tls(config, origins)?;
    let commitment = &config.commitment;
    if commitment.report_retry_backoff_cap_s < commitment.report_retry_delay_s {
        let delay_s = commitment.report_retry_delay_s.as_secs();
        let cap_s = commitment.report_retry_backoff_cap_s.as_secs();
        return Err(
            if blame(
                &origins.report_retry_backoff_cap_s,
                &origins.report_retry_delay_s,
            ) {
                ConfigError::Invalid {
                    origin: origins.report_retry_delay_s.clone(),
                    option: "commitment.report_retry_delay_s",
                    message: format!(
                        "{delay_s} is above commitment.report_retry_backoff_cap_s = {cap_s} ({}); raise that too",
                        origins.report_retry_backoff_cap_s
                    ),
                }
            } else {
                ConfigError::Invalid {
                    origin: origins.report_retry_backoff_cap_s.clone(),
                    option: "commitment.report_retry_backoff_cap_s",
                    message: format!(
                        "{cap_s} is below commitment.report_retry_delay_s = {delay_s} ({})",
                        origins.report_retry_delay_s
                    ),
                }
            },
        );
    }
    for (requester, target) in &commitment.report_ae_map {
        if !network.remote_aes.contains_key(target) {
            return Err(ConfigError::Invalid {
                origin: origins.report_ae_map.clone(),
                option: "commitment.report_ae_map",
                message: format!(
                    "{requester} -> {target}: {target} has no address in network.remote_aes ({}), so no report could reach it",
                    origins.remote_aes
                ),
            });
        }
    }
    Ok(())
}

/// A TLS port needs a certificate and its key, and is a port of its own;
/// TLS files without a port are a mistake worth saying.
fn check_tls(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let network = &config.network;
    let invalid = |origin: &Origin, option: &'static str, message: String| ConfigError::Invalid {
        origin: origin.clone(),
        option,
        message,
    };
    let remote_tls = network.remote_aes.values().any(RemoteAddress::tls);
    if remote_tls && network.tls_remote_ca.is_none() {
        return Err(invalid(
            &origins.remote_aes,
            "network.remote_aes",
            "a remote AE reached over TLS (tls://) needs network.tls_remote_ca to verify it"
                .to_owned(),
        ));
    }
    if network.tls_certificate.is_some() != network.tls_private_key.is_some() {
        return Err(invalid(
            &origins.tls_certificate,
            "network.tls_certificate",
            "network.tls_certificate and network.tls_private_key go together".to_owned(),
        ));
    }
    let audit = &config.audit;
    let syslog_tls = audit
        .audit_syslog
        .as_ref()
        .is_some_and(|address| address.transport() == SyslogTransport::Tls);
    if syslog_tls != audit.audit_syslog_ca.is_some() {
        return Err(invalid(
            &origins.audit_syslog_ca,
            "audit.audit_syslog_ca",
            "audit.audit_syslog_ca goes with a collector reached over TLS (audit.audit_syslog = \"tls://host:port\") and only with one".to_owned(),
        ));
    }
    if network.plain_listener == PlainListener::Off {
        if network.tls_port.is_none() {
            return Err(invalid(
                &origins.plain_listener,
                "network.plain_listener",
                "\"off\" needs network.tls_port: no listener would be left".to_owned(),
            ));
        }
        if network.commitment_port.is_some() {
            return Err(invalid(
                &origins.plain_listener,
                "network.plain_listener",
                "\"off\" with network.commitment_port, which is a plain listener: unset it (commitment is then served on the TLS port)".to_owned(),
            ));
        }
    }
    // Without a TLS listener, the certificate is still what Sluice
    // presents to remote AEs reached over TLS.
    let presented = remote_tls;
    match network.tls_port {
        Some(port) => {
            if network.tls_certificate.is_none() || network.tls_private_key.is_none() {
                return Err(invalid(
                    &origins.tls_port,
                    "network.tls_port",
                    format!("{port} needs network.tls_certificate and network.tls_private_key"),
                ));
            }
            if port == network.port || Some(port) == network.commitment_port {
                return Err(invalid(
                    &origins.tls_port,
                    "network.tls_port",
                    format!("{port} is already the plain port of network.port or network.commitment_port"),
                ));
            }
        }
        None => {
            for (set, origin, option) in [
                (
                    network.tls_certificate.is_some() && !presented,
                    &origins.tls_certificate,
                    "network.tls_certificate",
                ),
                (
                    network.tls_private_key.is_some() && !presented,
                    &origins.tls_private_key,
                    "network.tls_private_key",
                ),
                (
                    network.tls_client_ca.is_some(),
                    &origins.tls_client_ca,
                    "network.tls_client_ca",
                ),
            ] {
                if set {
                    return Err(invalid(
                        origin,
                        option,
                        "is set but network.tls_port is not: no TLS listener would use it"
                            .to_owned(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The configuration part of a command line: `--config FILE` and one flag
/// per option. A binary flattens it into its own clap parser
/// (`#[command(flatten)] config: ConfigArgs`, or
/// `ConfigArgs::augment_args(cmd)` with the builder) and calls
/// [`ConfigArgs::resolve`].
///
/// Flag values are kept as given and checked in `resolve`, so that flag
/// errors read like file errors: `command line: flag `--port`: ...`.
#[derive(Clone, Debug, Default)]
pub struct ConfigArgs {
    config_file: Option<PathBuf>,
    /// Option key -> the flag's arguments, in order.
    flags: BTreeMap<&'static str, Vec<String>>,
}

impl ConfigArgs {
    /// The file named by `--config`, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.config_file.as_deref()
    }

    /// Resolves defaults < the `--config` file < flags into a checked
    /// configuration.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut flags = Layer::default();
        flags.set_from_flags(&self.flags)?;
        let file = match &self.config_file {
            Some(path) => {
                let text = file::read_file(path)?;
                file::parse_layer(&text, path)?
            }
            None => Layer::default(),
        };
        resolve_layers([file, flags])
    }
}

/// The first sentence of a doc comment, for one-line `--help`.
fn first_sentence(doc: &str) -> String {
    let paragraph = kinds::join_doc_lines(doc);
    match paragraph.find(". ") {
        Some(end) => paragraph[..=end].to_owned(),
        None => paragraph,
    }
}

/// Adds `--config` and every option's flag to `command`.
fn add_arguments(mut command: Command) -> Command {
    command = command.arg(
        Arg::new(CONFIG_FILE_ARGUMENT_ID)
            .long("config")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .action(ArgAction::Set)
            .help("TOML configuration file; flags override it (reference: docs/configuration.md)"),
    );
    for info in option_infos() {
        let title = options::SECTIONS
            .iter()
            .find(|section| section.name == info.section)
            .map_or(info.section, |section| section.title);
        let default = info.default_toml.as_deref().unwrap_or("unset");
        let choices = if info.choices.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = info.choices.iter().map(|(name, _)| name.as_str()).collect();
            format!(" [choices: {}]", names.join(", "))
        };
        let help = format!(
            "{}{choices} [file: {}] [default: {default}]",
            first_sentence(info.doc),
            info.key
        );
        let long_help = format!(
            "{}\n\nFile: {} ({}). Default: {default}.",
            kinds::join_doc_lines(info.doc),
            info.key,
            info.type_doc.replace('`', "")
        );
        command = command.arg(
            Arg::new(info.key)
                .long(info.flag)
                .value_name(info.value_name)
                .value_parser(clap::value_parser!(String))
                .action(if info.repeat_unit.is_some() {
                    ArgAction::Append
                } else {
                    ArgAction::Set
                })
                .help(help)
                .long_help(long_help)
                .help_heading(title),
        );
    }
    command
}

impl clap::Args for ConfigArgs {
    fn augment_args(command: Command) -> Command {
        add_arguments(command)
    }

    fn augment_args_for_update(command: Command) -> Command {
        add_arguments(command)
    }
}

impl clap::FromArgMatches for ConfigArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ConfigArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        // `try_get_*` rather than `get_*`: a binary may build its parser
        // without some of these arguments, which must read as "not given".
        if let Ok(Some(path)) = matches.try_get_one::<PathBuf>(CONFIG_FILE_ARGUMENT_ID) {
            self.config_file = Some(path.clone());
        }
        for info in option_infos() {
            if let Ok(Some(values)) = matches.try_get_many::<String>(info.key) {
                self.flags.insert(info.key, values.cloned().collect());
            }
        }
        Ok(())
    }
}

/// A standalone `sluice serve` parser: `--config` and every option flag.
pub fn command() -> Command {
    add_arguments(
        Command::new("sluice-serve")
            .bin_name("sluice serve")
            .about("Run the Sluice DICOM storage server"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn the_command_line_parser_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn keys_and_flags_are_unique_and_documented() {
        let infos = option_infos();
        let keys: BTreeSet<_> = infos.iter().map(|info| info.key).collect();
        let flags: BTreeSet<_> = infos.iter().map(|info| info.flag).collect();
        assert_eq!(keys.len(), infos.len());
        assert_eq!(flags.len(), infos.len());
        assert!(!flags.contains("config") && !flags.contains("help"));
        for info in &infos {
            assert!(
                info.flag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                info.flag
            );
            assert!(
                info.doc.trim().len() > 20,
                "{} needs a doc comment",
                info.key
            );
            assert!(
                info.default_toml.is_some() || info.example_toml.is_some(),
                "{}",
                info.key
            );
        }
        for section in options::SECTIONS {
            assert!(!section.doc.trim().is_empty(), "{}", section.name);
        }
    }

    #[test]
    fn first_sentences() {
        assert_eq!(first_sentence(" One. Two.\n"), "One.");
        assert_eq!(
            first_sentence(" The ARTIM timer (PS3.8 9.1.5): x.\n"),
            "The ARTIM timer (PS3.8 9.1.5): x."
        );
    }

    #[test]
    fn served_aes_split_only_when_configured() {
        let mut config = Config::default();
        assert_eq!(
            config.served_aes(),
            vec![ServedAe {
                ae_title: "SLUICE".parse().unwrap(),
                port: 11112,
                storage: true,
                commitment: true,
            }]
        );
        config.network.commitment_ae_title = Some("SLUICE".parse().unwrap());
        config.network.commitment_port = Some(11112);
        assert_eq!(config.served_aes().len(), 1);
        config.network.ae_title = "DICOMServer".parse().unwrap();
        config.network.port = 104;
        config.network.commitment_ae_title = Some("SCServer".parse().unwrap());
        config.network.commitment_port = Some(1104);
        let served = config.served_aes();
        assert_eq!(served.len(), 2);
        assert!(served[0].storage && !served[0].commitment);
        assert_eq!(
            (served[1].ae_title.as_str(), served[1].port),
            ("SCServer", 1104)
        );
        assert!(!served[1].storage && served[1].commitment);
    }

    #[test]
    fn validate_catches_out_of_range_values_built_in_code() {
        let mut config = Config::default();
        config.network.port = 0;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "option `network.port`: 0 is below the minimum 1"
        );
    }
}

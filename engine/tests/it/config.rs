//! Configuration: defaults, precedence, error messages (file, line,
//! option), the remote AE table, and the generated docs kept in sync.

use std::path::{Path, PathBuf};

use sluice_engine::config::{self, Config, ConfigError};

/// Where the generated files live, relative to this crate.
fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// Checks a generated file against what the declarations generate now, or
/// rewrites it when `SLUICE_REGENERATE_DOCS=1`.
fn check_generated(name: &str, generated: &str) {
    let path = docs_dir().join(name);
    if std::env::var_os("SLUICE_REGENERATE_DOCS").is_some_and(|value| value == "1") {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(old, new)| old != new)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "docs/{name} is out of date with engine/src/config/options.rs (first difference at line {}); regenerate it with:\n    {}",
            first_difference + 1,
            config::REGENERATE_COMMAND
        );
    }
}

#[test]
fn docs_configuration_md_is_in_sync() {
    check_generated("configuration.md", &config::markdown_reference());
}

#[test]
fn docs_example_toml_is_in_sync() {
    check_generated("sluice.example.toml", &config::example_toml());
}

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use clap::Parser as _;
use proptest::prelude::*;
use sluice_engine::config::{
    AeTitle, ConfigArgs, Cores, DuplicatePolicy, IoBackend, LogFormat, LogLevel, Origin,
    ReportDelivery, ServedAe, SopClassSelection, TransferSyntaxSelection, UidConflictPolicy,
};

/// Loads configuration text as the file `sluice.toml`.
fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("sluice.toml"))
}

/// The message of the error loading `text` gives.
fn file_error(text: &str) -> String {
    match load(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// The message of the error the flags give.
fn flag_error(flags: &[&str]) -> String {
    let args = std::iter::once("sluice").chain(flags.iter().copied());
    match Config::from_args(args) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn ae(text: &str) -> AeTitle {
    text.parse().unwrap()
}

// ---- defaults -------------------------------------------------------------

#[test]
fn no_arguments_give_the_documented_embedded_default() {
    let config = Config::from_args(["sluice"]).unwrap();
    assert_eq!(config, Config::default());

    assert_eq!(config.server.data_directory, PathBuf::from("./sluice-data"));
    assert_eq!(config.server.cores, Cores::Auto);
    assert_eq!(config.server.io_backend, IoBackend::Auto);
    assert_eq!(config.server.log_format, LogFormat::Text);
    assert_eq!(config.server.log_level, LogLevel::Info);

    let network = &config.network;
    assert_eq!(network.ae_title, ae("SLUICE"));
    assert_eq!(network.port, 11112);
    assert_eq!(network.bind_address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(network.commitment_ae_title, None);
    assert_eq!(network.commitment_port, None);
    assert_eq!(network.max_pdu_length, 262_144);
    assert_eq!(network.max_associations, 4096);
    assert_eq!(network.max_associations_per_calling_ae, 1024);
    assert_eq!(network.artim_timeout_ms, Duration::from_secs(30));
    assert_eq!(network.idle_timeout_ms, Duration::from_secs(60));
    assert!(network.calling_ae_allow_list.is_empty());
    assert!(network.remote_aes.is_empty());

    assert_eq!(config.accept.sop_classes, SopClassSelection::Seed);
    assert!(config.accept.extra_sop_classes.is_empty());
    assert_eq!(
        config.accept.transfer_syntaxes,
        TransferSyntaxSelection::Seed
    );

    assert_eq!(config.storage.free_space_floor, 1 << 30);
    assert_eq!(config.storage.duplicate_policy, DuplicatePolicy::Quarantine);
    assert_eq!(
        config.storage.uid_conflict_policy,
        UidConflictPolicy::Quarantine
    );
    assert_eq!(
        config.storage.group_commit_window_us,
        Duration::from_micros(500)
    );
    assert_eq!(config.storage.index_map_size, 64 << 30);

    assert_eq!(
        config.commitment.report_delivery,
        ReportDelivery::SameAssociationOrNew
    );
    assert_eq!(config.commitment.instance_wait_s, Duration::from_secs(3600));
    assert!(config.commitment.report_ae_map.is_empty());

    // One listener, one AE serving storage and commitment.
    assert_eq!(
        config.served_aes(),
        vec![ServedAe {
            ae_title: ae("SLUICE"),
            port: 11112,
            storage: true,
            commitment: true,
        }]
    );
}

#[test]
fn the_reference_states_the_embedded_default() {
    let reference = config::markdown_reference();
    for row in [
        "| [`server.data_directory`](#serverdata_directory) | `--data-dir` | `\"./sluice-data\"` |",
        "| [`network.ae_title`](#networkae_title) | `--ae-title` | `\"SLUICE\"` |",
        "| [`network.port`](#networkport) | `--port` | `11112` |",
        "| [`network.bind_address`](#networkbind_address) | `--bind` | `\"0.0.0.0\"` |",
        "| [`network.max_pdu_length`](#networkmax_pdu_length) | `--max-pdu-length` | `262144` |",
        "| [`accept.sop_classes`](#acceptsop_classes) | `--sop-classes` | `\"seed\"` |",
        "| [`storage.duplicate_policy`](#storageduplicate_policy) | `--duplicate-policy` | `\"quarantine\"` |",
    ] {
        assert!(reference.contains(row), "missing: {row}");
    }
}

#[test]
fn the_example_file_is_the_default() {
    let config =
        Config::from_toml_str(&config::example_toml(), Path::new("sluice.example.toml")).unwrap();
    assert_eq!(config, Config::default());
}

/// Every commented-out example line of the example file, switched on in
/// place of its default, must load: the examples in the docs are valid.
#[test]
fn the_examples_in_the_example_file_are_valid() {
    let is_option_line = |line: &str| {
        line.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    };
    let mut lines: Vec<String> = Vec::new();
    let mut switched_on = 0;
    for line in config::example_toml().lines() {
        match line.strip_prefix("# ") {
            Some(example) if is_option_line(example) => {
                let key = example.split(" = ").next().unwrap();
                if lines
                    .last()
                    .is_some_and(|last| last.starts_with(&format!("{key} = ")))
                {
                    lines.pop();
                }
                lines.push(example.to_owned());
                switched_on += 1;
            }
            _ => lines.push(line.to_owned()),
        }
    }
    assert_eq!(switched_on, 28);
    let text = lines.join("\n");
    let config = Config::from_toml_str(&text, Path::new("examples.toml")).unwrap();
    assert_eq!(
        config.objects.bucket.as_ref().map(|b| b.as_str()),
        Some("sluice-segments")
    );
    assert_eq!(config.network.commitment_ae_title, Some(ae("SCServer")));
    assert_eq!(config.network.commitment_port, Some(1104));
    assert_eq!(config.network.calling_ae_allow_list.len(), 2);
    assert_eq!(config.network.remote_aes.len(), 2);
    assert_eq!(
        config
            .access
            .rule
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "CT_ROOM_1@10.1.2.0/24=store,commitment",
            "VIEWER_1=query,retrieve"
        ]
    );
    assert_eq!(
        config.commitment.report_ae_map[&ae("CT_ROOM_1")],
        ae("CT_ROOM_1_SC")
    );
    assert!(matches!(
        config.accept.transfer_syntaxes,
        TransferSyntaxSelection::List(ref uids) if uids.len() == 2
    ));
}

// ---- precedence -----------------------------------------------------------

#[test]
fn the_file_overrides_defaults_and_flags_override_the_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sluice.toml");
    std::fs::write(
        &path,
        r#"
[server]
data_directory = "/srv/sluice"

[network]
ae_title = "DICOMServer"
port = 104
calling_ae_allow_list = ["CT_ROOM_1", "MR_ROOM_2"]

[storage]
duplicate_policy = "reject"
free_space_floor = "2GiB"
"#,
    )
    .unwrap();

    let from_file = Config::from_file(&path).unwrap();
    assert_eq!(
        from_file.server.data_directory,
        PathBuf::from("/srv/sluice")
    );
    assert_eq!(from_file.network.ae_title, ae("DICOMServer"));
    assert_eq!(from_file.network.port, 104);
    assert_eq!(from_file.storage.duplicate_policy, DuplicatePolicy::Reject);
    assert_eq!(from_file.storage.free_space_floor, 2 << 30);
    assert_eq!(
        from_file.network.idle_timeout_ms,
        Duration::from_secs(60),
        "untouched"
    );

    let path_text = path.to_str().unwrap();
    let config = Config::from_args([
        "sluice",
        "--config",
        path_text,
        "--port",
        "4242",
        "--duplicate-policy",
        "replace",
        "--allow-calling-ae",
        "US_ROOM_3",
    ])
    .unwrap();
    assert_eq!(config.network.port, 4242, "flag beats file");
    assert_eq!(
        config.storage.duplicate_policy,
        DuplicatePolicy::Replace,
        "flag beats file"
    );
    assert_eq!(
        config.network.calling_ae_allow_list,
        vec![ae("US_ROOM_3")],
        "a flag replaces the whole list"
    );
    assert_eq!(
        config.network.ae_title,
        ae("DICOMServer"),
        "file beats default"
    );
    assert_eq!(
        config.storage.free_space_floor,
        2 << 30,
        "file beats default"
    );
    assert_eq!(
        config.network.idle_timeout_ms,
        Duration::from_secs(60),
        "default"
    );
}

#[test]
fn flags_alone_override_defaults() {
    let config = Config::from_args([
        "sluice",
        "--data-dir",
        "/data",
        "--cores",
        "3",
        "--io-backend",
        "portable",
        "--bind",
        "::",
        "--max-pdu-length",
        "64KiB",
        "--artim-timeout-ms",
        "5000",
        "--group-commit-window-us",
        "0",
        "--free-space-floor",
        "0",
        "--sop-classes",
        "any",
        "--extra-sop-class",
        "1.2.3",
        "--extra-sop-class",
        "1.2.4",
        "--transfer-syntaxes",
        "1.2.840.10008.1.2,1.2.840.10008.1.2.1",
        "--commitment-report-delivery",
        "new-association",
    ])
    .unwrap();
    assert_eq!(config.server.data_directory, PathBuf::from("/data"));
    assert_eq!(config.server.cores, Cores::Count(3));
    assert_eq!(config.server.cores.count(), 3);
    assert_eq!(config.server.io_backend, IoBackend::Portable);
    assert_eq!(config.network.bind_address, "::".parse::<IpAddr>().unwrap());
    assert_eq!(config.network.max_pdu_length, 65536);
    assert_eq!(config.network.artim_timeout_ms, Duration::from_millis(5000));
    assert_eq!(config.storage.group_commit_window_us, Duration::ZERO);
    assert_eq!(config.storage.free_space_floor, 0);
    assert_eq!(config.accept.sop_classes, SopClassSelection::Any);
    let extra: Vec<&str> = config
        .accept
        .extra_sop_classes
        .iter()
        .map(|uid| uid.as_str())
        .collect();
    assert_eq!(extra, ["1.2.3", "1.2.4"]);
    let TransferSyntaxSelection::List(uids) = &config.accept.transfer_syntaxes else {
        panic!("expected a list: {:?}", config.accept.transfer_syntaxes);
    };
    assert_eq!(uids[1].as_str(), "1.2.840.10008.1.2.1");
    assert_eq!(
        config.commitment.report_delivery,
        ReportDelivery::NewAssociation
    );
}

/// The way the `sluice` binary will use it: `ConfigArgs` flattened into a
/// derive parser as a subcommand's arguments.
#[test]
fn config_args_flatten_into_a_derive_parser() {
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Command {
        Serve(ConfigArgs),
        Ls {
            #[arg(long)]
            studies: bool,
        },
    }

    let cli =
        Cli::try_parse_from(["sluice", "serve", "--port", "104", "--ae-title", "PACS"]).unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("expected serve");
    };
    assert_eq!(args.config_file(), None);
    let config = args.resolve().unwrap();
    assert_eq!(
        (config.network.port, config.network.ae_title.as_str()),
        (104, "PACS")
    );

    let cli = Cli::try_parse_from(["sluice", "ls", "--studies"]).unwrap();
    assert!(matches!(cli.command, Command::Ls { studies: true }));
}

#[test]
fn seed_layout_serves_two_aes_on_two_ports() {
    let config = load(
        r#"
[network]
ae_title = "DICOMServer"
port = 104
commitment_ae_title = "SCServer"
commitment_port = 1104
"#,
    )
    .unwrap();
    assert_eq!(config.commitment_ae_title(), &ae("SCServer"));
    assert_eq!(config.commitment_port(), 1104);
    assert_eq!(
        config.served_aes(),
        vec![
            ServedAe {
                ae_title: ae("DICOMServer"),
                port: 104,
                storage: true,
                commitment: false,
            },
            ServedAe {
                ae_title: ae("SCServer"),
                port: 1104,
                storage: false,
                commitment: true,
            },
        ]
    );
}

// ---- error messages: file, line, option --------------------------------------

#[test]
fn a_value_below_its_minimum_names_file_line_and_option() {
    let error = load(
        "[server]
data_directory = \"/srv/sluice\"

[network]
max_pdu_length = 1000
",
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "sluice.toml:5: option `network.max_pdu_length`: 1000 is below the minimum 4096"
    );
    assert_eq!(error.line(), Some(5));
    assert_eq!(error.option(), Some("network.max_pdu_length"));
}

/// `storage.segment_zero_fill`: `"auto"` by default, each value parsed,
/// and a bad one refused with the file, its line and the values taken.
#[test]
fn segment_zero_fill_takes_auto_on_and_off() {
    use sluice_engine::config::ZeroFill;
    let default = load("[server]\ndata_directory = \"/srv/sluice\"\n").unwrap();
    assert_eq!(default.storage.segment_zero_fill, ZeroFill::Auto);
    for (text, value) in [
        ("auto", ZeroFill::Auto),
        ("on", ZeroFill::On),
        ("off", ZeroFill::Off),
    ] {
        let config = load(&format!("[storage]\nsegment_zero_fill = \"{text}\"\n")).unwrap();
        assert_eq!(config.storage.segment_zero_fill, value, "{text}");
    }
    let error = load(
        "[server]\ndata_directory = \"/srv/sluice\"\n\n[storage]\nsegment_zero_fill = \"paced\"\n",
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "sluice.toml:5: option `storage.segment_zero_fill`: \"paced\" is not one of \"auto\", \"on\", \"off\""
    );
    assert_eq!(error.line(), Some(5));
}

#[test]
fn each_kind_of_bad_value_is_reported_on_its_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[network]\nport = \"104\"",
            "sluice.toml:2: option `network.port`: expected an integer, found a string",
        ),
        (
            "[network]\n\nport = 0",
            "sluice.toml:3: option `network.port`: 0 is below the minimum 1",
        ),
        (
            "[network]\nport = 70000",
            "sluice.toml:2: option `network.port`: 70000 is above the maximum 65535",
        ),
        (
            "[network]\nmax_pdu_length = \"32MiB\"",
            "sluice.toml:2: option `network.max_pdu_length`: \"32MiB\" is above the maximum 16MiB",
        ),
        (
            "[network]\nae_title = \"ABCDEFGHIJKLMNOPQ\"",
            "sluice.toml:2: option `network.ae_title`: AE title \"ABCDEFGHIJKLMNOPQ\" is 17 characters long; the maximum is 16",
        ),
        (
            "[network]\nae_title = 'A\\B'",
            "sluice.toml:2: option `network.ae_title`: AE title \"A\\\\B\" contains '\\\\', which DICOM forbids in AE titles",
        ),
        (
            "[network]\nae_title = \"    \"",
            "sluice.toml:2: option `network.ae_title`: AE title is empty or all spaces; it needs 1 to 16 characters",
        ),
        (
            "[network]\nae_title = \"CAF\u{c9}\"",
            "sluice.toml:2: option `network.ae_title`: AE title \"CAF\u{c9}\" contains '\u{c9}'; only printable ASCII (the DICOM default character repertoire) is allowed",
        ),
        (
            "[network]\nbind_address = \"localhost\"",
            "sluice.toml:2: option `network.bind_address`: \"localhost\" is not an IPv4 or IPv6 address",
        ),
        (
            "[network]\nartim_timeout_ms = \"30s\"",
            "sluice.toml:2: option `network.artim_timeout_ms`: \"30s\" is a string; write the duration as an integer number of milliseconds: 30000",
        ),
        (
            "[network]\nidle_timeout_ms = 10",
            "sluice.toml:2: option `network.idle_timeout_ms`: 10 is below the minimum 1000",
        ),
        (
            "[storage]\nduplicate_policy = \"keep\"",
            "sluice.toml:2: option `storage.duplicate_policy`: \"keep\" is not one of \"quarantine\", \"reject\", \"replace\", \"drop-if-identical\"",
        ),
        (
            "[storage]\nfree_space_floor = \"2 gigs\"",
            "sluice.toml:2: option `storage.free_space_floor`: \"2 gigs\" is not a size: write a whole number of bytes, optionally with a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB), for example \"2GiB\"",
        ),
        (
            "[storage]\nindex_map_size = 1.5",
            "sluice.toml:2: option `storage.index_map_size`: expected a size (an integer, or a string such as \"2GiB\"), found a float",
        ),
        (
            "[server]\ncores = 0",
            "sluice.toml:2: option `server.cores`: 0 is below the minimum 1",
        ),
        (
            "[server]\ncores = \"all\"",
            "sluice.toml:2: option `server.cores`: \"all\" is neither \"auto\" nor a number of cores",
        ),
        (
            "[server]\ndata_directory = \"\"",
            "sluice.toml:2: option `server.data_directory`: the path is empty",
        ),
        (
            "[server]\ndata_directory = 5",
            "sluice.toml:2: option `server.data_directory`: expected a path (a string), found an integer",
        ),
        (
            "[network]\ncalling_ae_allow_list = \"CT_ROOM_1\"",
            "sluice.toml:2: option `network.calling_ae_allow_list`: expected an array, found a string",
        ),
        (
            "[accept]\ntransfer_syntaxes = []",
            "sluice.toml:2: option `accept.transfer_syntaxes`: the list is empty: no sender could store anything",
        ),
        (
            "[accept]\ntransfer_syntaxes = \"everything\"",
            "sluice.toml:2: option `accept.transfer_syntaxes`: \"everything\" is neither \"seed\" nor \"all\"; for explicit transfer syntaxes write an array of UIDs",
        ),
        (
            "[accept]\nsop_classes = \"all\"",
            "sluice.toml:2: option `accept.sop_classes`: \"all\" is not one of \"seed\", \"all-storage\", \"any\"",
        ),
        // Dotted keys and inline tables name the same option and line.
        (
            "# comment\nnetwork.port = 0",
            "sluice.toml:2: option `network.port`: 0 is below the minimum 1",
        ),
        (
            "\n\nnetwork = { ae_title = \"OK\", port = 0 }",
            "sluice.toml:3: option `network.port`: 0 is below the minimum 1",
        ),
        // Windows line endings count lines the same.
        (
            "[network]\r\n\r\nport = 0\r\n",
            "sluice.toml:3: option `network.port`: 0 is below the minimum 1",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&file_error(text), expected, "for {text:?}");
    }
}

#[test]
fn an_element_of_a_multi_line_array_is_reported_on_its_own_line() {
    let error = file_error(
        r#"[accept]
extra_sop_classes = [
    "1.2.840.113619.4.27",
    "1.2.840.abc",
]
"#,
    );
    assert_eq!(
        error,
        "sluice.toml:4: option `accept.extra_sop_classes`: UID \"1.2.840.abc\" has the component \"abc\"; components are digits only"
    );
}

#[test]
fn unknown_keys_are_rejected_on_their_line_with_a_hint() {
    let cases: &[(&str, &str)] = &[
        (
            "[network]\nport = 104\nprot = 105",
            "sluice.toml:3: unknown option `network.prot`; did you mean `network.port`?",
        ),
        (
            "[network]\nport = 104\n\n[netwrk]\nport = 105",
            "sluice.toml:4: unknown option `netwrk`; did you mean the section `[network]`?",
        ),
        (
            "port = 104",
            "sluice.toml:1: unknown option `port`; options live in sections: did you mean `network.port` (`port` under `[network]`)?",
        ),
        (
            "[server]\nport = 104",
            "sluice.toml:2: unknown option `server.port`; `port` belongs under `[network]`: did you mean `network.port`?",
        ),
        (
            "[network]\nenable_tls = true",
            "sluice.toml:2: unknown option `network.enable_tls`",
        ),
        (
            "[tls]\ncertificate = \"x.pem\"",
            "sluice.toml:1: unknown option `tls`; the sections are [server], [network], [accept], [storage], [validation], [commitment], [query], [metrics], [access], [audit], [cluster], [objects]",
        ),
    ];
    for (text, expected) in cases {
        let error = load(text).unwrap_err();
        assert!(
            matches!(error, ConfigError::UnknownOption { .. }),
            "{error:?}"
        );
        assert_eq!(&error.to_string(), expected, "for {text:?}");
    }
}

#[test]
fn toml_syntax_errors_name_their_line() {
    let error = load("[network]\nport = 104\nae_title = = \"X\"\n").unwrap_err();
    assert!(
        matches!(error, ConfigError::Syntax { line: 3, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("sluice.toml:3: invalid TOML: "),
        "{error}"
    );

    let error = load("[network]\nport = 104\nport = 105\n").unwrap_err();
    assert_eq!(error.line(), Some(3), "{error}");

    let error = file_error("network = 5");
    assert_eq!(
        error,
        "sluice.toml:1: option `network`: `network` is a section: write `[network]` on a line of its own, and its options below it"
    );
}

#[test]
fn relations_between_options_name_the_option_the_user_set() {
    assert_eq!(
        file_error("[network]\nmax_associations = 100\nmax_associations_per_calling_ae = 200\n"),
        "sluice.toml:3: option `network.max_associations_per_calling_ae`: 200 is above network.max_associations = 100 (sluice.toml:2)"
    );
    // Only the global limit was written: it is the one to fix.
    assert_eq!(
        file_error("[network]\n\nmax_associations = 100\n"),
        "sluice.toml:3: option `network.max_associations`: 100 is below network.max_associations_per_calling_ae = 1024 (default); lower that too"
    );
    assert_eq!(
        file_error("[commitment]\nreport_retry_delay_s = 60\nreport_retry_backoff_cap_s = 30\n"),
        "sluice.toml:3: option `commitment.report_retry_backoff_cap_s`: 30 is below commitment.report_retry_delay_s = 60 (sluice.toml:2)"
    );
    assert_eq!(
        file_error(
            r#"[network.remote_aes]
CT_ROOM_1 = "10.1.2.3:104"

[commitment.report_ae_map]
CT_ROOM_1 = "CT_ROOM_1_SC"
"#
        ),
        "sluice.toml:4: option `commitment.report_ae_map`: CT_ROOM_1 -> CT_ROOM_1_SC: CT_ROOM_1_SC has no address in network.remote_aes (sluice.toml:1), so no report could reach it"
    );
}

#[test]
fn a_missing_file_is_named() {
    let error = flag_error(&["--config", "/nonexistent/sluice.toml"]);
    assert!(
        error.starts_with("cannot read configuration file /nonexistent/sluice.toml: "),
        "{error}"
    );
}

#[test]
fn errors_in_a_config_file_name_the_path_given() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("site.toml");
    std::fs::write(&path, "[network]\nport = 104\nmax_pdu_length = 100\n").unwrap();
    let error = flag_error(&["--config", path.to_str().unwrap()]);
    assert_eq!(
        error,
        format!(
            "{}:3: option `network.max_pdu_length`: 100 is below the minimum 4096",
            path.display()
        )
    );
}

#[test]
fn flag_errors_name_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--max-pdu-length", "1000"],
            "command line: flag `--max-pdu-length`: 1000 is below the minimum 4096",
        ),
        (
            &["--port", "http"],
            "command line: flag `--port`: \"http\" is not a whole number",
        ),
        (
            &["--ae-title", "ABCDEFGHIJKLMNOPQ"],
            "command line: flag `--ae-title`: AE title \"ABCDEFGHIJKLMNOPQ\" is 17 characters long; the maximum is 16",
        ),
        (
            &["--remote-ae", "PACS"],
            "command line: flag `--remote-ae`: \"PACS\" is not KEY=VALUE",
        ),
        (
            &["--remote-ae", "PACS=pacs:104", "--remote-ae", " PACS=other:104"],
            "command line: flag `--remote-ae`: PACS is given twice",
        ),
        (
            &["--idle-timeout-ms", "1.5"],
            "command line: flag `--idle-timeout-ms`: \"1.5\" is not a whole number of milliseconds",
        ),
        (
            &["--transfer-syntaxes", "1.2.840.10008.1.2,1.2.x"],
            "command line: flag `--transfer-syntaxes`: UID \"1.2.x\" has the component \"x\"; components are digits only",
        ),
        (
            &["--max-associations", "10"],
            "command line: flag `--max-associations`: 10 is below network.max_associations_per_calling_ae = 1024 (default); lower that too",
        ),
        (
            &["--max-associations", "10", "--max-associations-per-calling-ae", "20"],
            "command line: flag `--max-associations-per-calling-ae`: 20 is above network.max_associations = 10 (flag --max-associations)",
        ),
    ];
    for (flags, expected) in cases {
        assert_eq!(&flag_error(flags), expected, "for {flags:?}");
    }
}

#[test]
fn clap_reports_unknown_and_repeated_flags() {
    let error = Config::from_args(["sluice", "--prot", "104"]).unwrap_err();
    let ConfigError::Usage(usage) = &error else {
        panic!("expected a usage error: {error:?}");
    };
    assert_eq!(usage.kind(), clap::error::ErrorKind::UnknownArgument);
    assert!(error.to_string().contains("--prot"), "{error}");

    let error = Config::from_args(["sluice", "--port", "1", "--port", "2"]).unwrap_err();
    assert!(matches!(error, ConfigError::Usage(_)), "{error:?}");
    assert!(error.to_string().contains("--port"), "{error}");
}

#[test]
fn help_lists_every_flag_with_its_file_key_and_default() {
    let help = config::command().render_help().to_string();
    assert!(help.contains("--config <FILE>"), "{help}");
    assert!(help.contains("--max-pdu-length <SIZE>"), "{help}");
    assert!(
        help.contains("[file: network.max_pdu_length] [default: 262144]"),
        "{help}"
    );
    assert!(help.contains("Storage Commitment:"), "{help}");
}

// ---- tables -----------------------------------------------------------------

#[test]
fn the_remote_ae_table_reads_as_a_table_inline_or_from_flags() {
    let config = load(
        r#"
[network]
port = 104

[network.remote_aes]
CT_ROOM_1 = "10.1.2.3:104"
"MR ROOM 2" = "mr2.hospital.example:11112"
PACS_V6 = "[fd00::5]:104"
" PADDED " = "10.0.0.9:4006"
"#,
    )
    .unwrap();
    let remote = &config.network.remote_aes;
    assert_eq!(remote.len(), 4);
    assert_eq!(remote[&ae("CT_ROOM_1")].to_string(), "10.1.2.3:104");
    let mr = &remote[&ae("MR ROOM 2")];
    assert_eq!((mr.host(), mr.port()), ("mr2.hospital.example", 11112));
    let v6 = &remote[&ae("PACS_V6")];
    assert_eq!((v6.host(), v6.port()), ("fd00::5", 104));
    assert_eq!(remote[&ae("PADDED")].port(), 4006, "AE titles are trimmed");

    let inline = load("[network]\nremote_aes = { A = \"h:1\", B = \"h:2\" }\n").unwrap();
    assert_eq!(inline.network.remote_aes.len(), 2);

    let flags = Config::from_args([
        "sluice",
        "--remote-ae",
        "A=h:1",
        "--remote-ae",
        "B=[::1]:104",
        "--commitment-report-ae",
        "A=B",
    ])
    .unwrap();
    let expected: BTreeMap<AeTitle, String> =
        [(ae("A"), "h:1".into()), (ae("B"), "[::1]:104".into())].into();
    let got: BTreeMap<AeTitle, String> = flags
        .network
        .remote_aes
        .iter()
        .map(|(key, address)| (key.clone(), address.to_string()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(flags.commitment.report_ae_map[&ae("A")], ae("B"));
}

#[test]
fn bad_remote_ae_entries_are_reported_on_their_own_line() {
    assert_eq!(
        file_error(
            r#"[network]
port = 104

[network.remote_aes]
CT_ROOM_1 = "10.1.2.3:104"
PACS_B = "pacs-b.example.org"
"#
        ),
        "sluice.toml:6: option `network.remote_aes`: \"pacs-b.example.org\" is not host:port (for example \"10.0.0.5:104\", \"pacs.example.org:11112\", \"[fd00::5]:104\")"
    );
    assert_eq!(
        file_error("[network.remote_aes]\nA = \"h:1\"\nTHIS_TITLE_IS_TOO_LONG = \"h:2\"\n"),
        "sluice.toml:3: option `network.remote_aes`: AE title \"THIS_TITLE_IS_TOO_LONG\" is 22 characters long; the maximum is 16"
    );
    assert_eq!(
        file_error("[network.remote_aes]\nPACS = \"h:1\"\n\"PACS \" = \"h:2\"\n"),
        "sluice.toml:3: option `network.remote_aes`: PACS appears twice (keys are compared without leading and trailing spaces)"
    );
    assert_eq!(
        file_error("[network.remote_aes]\nPACS = 104\n"),
        "sluice.toml:2: option `network.remote_aes`: expected a string, found an integer"
    );
    assert_eq!(
        file_error("[network.remote_aes]\nPACS = \"fd00::5:104\"\n"),
        "sluice.toml:2: option `network.remote_aes`: \"fd00::5:104\": write an IPv6 address in brackets, for example \"[fd00::5]:104\""
    );
}

#[test]
fn origins_render_for_messages() {
    assert_eq!(Origin::Default.to_string(), "default");
    assert_eq!(Origin::Flag { flag: "port" }.to_string(), "flag --port");
    assert_eq!(
        Origin::File {
            path: PathBuf::from("a/sluice.toml"),
            line: 7
        }
        .to_string(),
        "a/sluice.toml:7"
    );
}

// ---- properties ---------------------------------------------------------------

/// The AE title rule, written independently of the code under test.
fn ae_title_model(text: &str) -> Option<String> {
    let allowed = text.chars().all(|c| (' '..='~').contains(&c) && c != '\\');
    let trimmed = text.trim_matches(' ');
    (allowed && !trimmed.is_empty() && trimmed.len() <= 16).then(|| trimmed.to_owned())
}

/// `text` as a TOML basic string.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ae_titles_follow_the_dicom_rule(text in "[ -~\\\\\u{e9}\t]{0,20}", blank_lines in 0usize..4) {
        let toml = format!("[network]\n{}ae_title = {}\n", "\n".repeat(blank_lines), quoted(&text));
        match (load(&toml), ae_title_model(&text)) {
            (Ok(config), Some(expected)) => prop_assert_eq!(config.network.ae_title.as_str(), expected),
            (Err(error), None) => {
                prop_assert_eq!(error.line(), Some(2 + blank_lines));
                prop_assert_eq!(error.option(), Some("network.ae_title"));
            }
            (result, expected) => prop_assert!(false, "{text:?}: got {result:?}, model says {expected:?}"),
        }
    }

    #[test]
    fn pdu_lengths_read_the_same_from_file_and_flag(length in 0u64..40_000_000) {
        let from_file = load(&format!("[network]\nmax_pdu_length = {length}\n"));
        let from_flag = Config::from_args(["sluice", "--max-pdu-length", &length.to_string()]);
        let in_range = (4096..=16 << 20).contains(&length);
        prop_assert_eq!(from_file.is_ok(), in_range);
        prop_assert_eq!(from_flag.is_ok(), in_range);
        match (from_file, from_flag) {
            (Ok(file), Ok(flag)) => {
                prop_assert_eq!(u64::from(file.network.max_pdu_length), length);
                prop_assert_eq!(file, flag);
            }
            (Err(file), Err(flag)) => {
                prop_assert_eq!(file.line(), Some(2));
                prop_assert!(file.to_string().starts_with("sluice.toml:2: option `network.max_pdu_length`: "));
                prop_assert!(flag.to_string().starts_with("command line: flag `--max-pdu-length`: "));
            }
            (file, flag) => prop_assert!(false, "file {file:?} and flag {flag:?} disagree"),
        }
    }
}

#[test]
fn access_rules_load_from_array_of_tables_and_flags_with_errors_on_their_line() {
    let config = load(
        "[[access.rule]]\n\
         calling_ae = \"CT_ROOM_1\"\n\
         addresses = [\"10.1.2.0/24\", \"fd00::7\"]\n\
         services = [\"store\", \"commitment\"]\n\
         \n\
         [[access.rule]]\n\
         calling_ae = \"*\"\n\
         services = []\n",
    )
    .unwrap();
    let rules: Vec<String> = config.access.rule.iter().map(ToString::to_string).collect();
    assert_eq!(
        rules,
        ["CT_ROOM_1@10.1.2.0/24,fd00::7/128=store,commitment", "*="]
    );
    assert_eq!(
        file_error("[[access.rule]]\ncalling_ae = \"A\"\nservices = [\"store\", \"delete\"]\n"),
        "sluice.toml:3: option `access.rule`: \"delete\" is not a service; the services are store, commitment, query, retrieve"
    );
    assert_eq!(
        file_error("[[access.rule]]\ncalling_ae = \"A\"\naddresses = [\"10.1.2\"]\nservices = []\n"),
        "sluice.toml:3: option `access.rule`: \"10.1.2\" is not an IP address or a network (for example \"10.1.2.3\", \"10.1.2.0/24\", \"fd00::/8\")"
    );
    assert!(
        file_error("[[access.rule]]\ncalling_ae = \"A\"\n").contains("the rule has no services"),
        "a rule must say its services"
    );
    assert!(
        file_error("[[access.rule]]\ncalling_ae = \"A\"\nservice = []\n")
            .contains("unknown key \"service\""),
        "a misspelt key is an error"
    );
    let flags = Config::from_args([
        "sluice-serve",
        "--access-rule",
        "VIEWER@192.168.0.0/16=query,retrieve",
        "--access-rule",
        "*=",
    ])
    .unwrap();
    assert_eq!(flags.access.rule.len(), 2);
    assert_eq!(
        flags.access.rule[0].to_string(),
        "VIEWER@192.168.0.0/16=query,retrieve"
    );
    let error = Config::from_args(["sluice-serve", "--access-rule", "VIEWER=read"]).unwrap_err();
    assert!(
        error.to_string().contains("flag `--access-rule`"),
        "{error}"
    );
}

#[test]
fn a_tls_port_needs_its_files_and_files_need_the_port() {
    assert_eq!(
        file_error("[network]\ntls_port = 2762\n"),
        "sluice.toml:2: option `network.tls_port`: 2762 needs network.tls_certificate and network.tls_private_key"
    );
    assert_eq!(
        file_error("[network]\ntls_certificate = \"server.pem\"\n"),
        "sluice.toml:2: option `network.tls_certificate`: network.tls_certificate and network.tls_private_key go together"
    );
    assert_eq!(
        file_error("[network]\ntls_certificate = \"s.pem\"\ntls_private_key = \"s.key\"\n"),
        "sluice.toml:2: option `network.tls_certificate`: is set but network.tls_port is not: no TLS listener would use it"
    );
    assert_eq!(
        file_error(
            "[network]\nport = 2762\ntls_port = 2762\ntls_certificate = \"s.pem\"\ntls_private_key = \"s.key\"\n"
        ),
        "sluice.toml:3: option `network.tls_port`: 2762 is already the plain port of network.port or network.commitment_port"
    );
    let config = load(
        "[network]\ntls_port = 2762\ntls_certificate = \"s.pem\"\ntls_private_key = \"s.key\"\n",
    )
    .unwrap();
    assert_eq!(config.network.tls_port, Some(2762));
    assert!(config.network.tls_client_ca.is_none());
}

#[test]
fn a_remote_ae_over_tls_needs_the_remote_ca() {
    assert_eq!(
        file_error("[network.remote_aes]\nWS = \"tls://ws.example.org:2762\"\n"),
        "sluice.toml:1: option `network.remote_aes`: a remote AE reached over TLS (tls://) needs network.tls_remote_ca to verify it"
    );
    let config = load(
        "[network]\ntls_remote_ca = \"ca.pem\"\ntls_certificate = \"s.pem\"\ntls_private_key = \"s.key\"\n\
         [network.remote_aes]\nWS = \"tls://ws.example.org:2762\"\nCT = \"10.1.2.3:104\"\n",
    )
    .unwrap();
    let ws = &config.network.remote_aes[&ae("WS")];
    assert!(ws.tls() && ws.host() == "ws.example.org" && ws.port() == 2762);
    assert_eq!(ws.to_string(), "tls://ws.example.org:2762");
    assert!(!config.network.remote_aes[&ae("CT")].tls());
}

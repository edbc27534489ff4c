//! The typed values that configuration options resolve to: AE titles, UIDs,
//! remote addresses, core counts, and the closed sets of choices (policies,
//! backends, selections).
//!
//! Each type validates itself when built (`FromStr`), so a value of one of
//! these types is always well formed, whether it came from the TOML file, a
//! flag, or an embedder's code.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Why a text did not make a valid value; the message is written for a PACS
/// administrator and never includes the option name (the caller adds it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub(crate) String);

impl ValueError {
    /// The human-readable reason.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// Maximum length of an AE title (PS3.5 table 6.2-1, VR AE: 16 bytes).
pub const AE_TITLE_LENGTH_MAX: usize = 16;

/// Maximum length of a UID (PS3.5 9.1: 64 characters).
pub const UID_LENGTH_MAX: usize = 64;

/// A DICOM Application Entity title: 1 to 16 characters of the default
/// character repertoire (printable ASCII), no backslash, no control
/// characters, not all spaces.
///
/// Leading and trailing spaces are not significant in DICOM (PS3.5 VR AE),
/// so they are removed: `" SLUICE "` and `"SLUICE"` are the same title.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AeTitle(String);

impl AeTitle {
    /// The title without padding.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AeTitle {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        if let Some(bad) = text.chars().find(|c| *c == '\\') {
            return Err(ValueError(format!(
                "AE title {text:?} contains {bad:?}, which DICOM forbids in AE titles"
            )));
        }
        if let Some(bad) = text.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(ValueError(format!(
                "AE title {text:?} contains {bad:?}; only printable ASCII (the DICOM default character repertoire) is allowed"
            )));
        }
        let trimmed = text.trim_matches(' ');
        if trimmed.is_empty() {
            return Err(ValueError(
                "AE title is empty or all spaces; it needs 1 to 16 characters".to_owned(),
            ));
        }
        if trimmed.len() > AE_TITLE_LENGTH_MAX {
            return Err(ValueError(format!(
                "AE title {trimmed:?} is {} characters long; the maximum is {AE_TITLE_LENGTH_MAX}",
                trimmed.len()
            )));
        }
        Ok(AeTitle(trimmed.to_owned()))
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A DICOM UID (PS3.5 9.1): up to 64 characters, numeric components
/// separated by single dots, no leading zero in a component of more than
/// one digit.
///
/// Checked here because `sluice-net`'s UID tables are the authority on which
/// UIDs are known, but the syntax check is all configuration needs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uid(String);

impl Uid {
    /// The UID text, without padding.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Uid {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        if text.is_empty() {
            return Err(ValueError("UID is empty".to_owned()));
        }
        if text.len() > UID_LENGTH_MAX {
            return Err(ValueError(format!(
                "UID {text:?} is {} characters long; the maximum is {UID_LENGTH_MAX}",
                text.len()
            )));
        }
        for component in text.split('.') {
            if component.is_empty() {
                return Err(ValueError(format!(
                    "UID {text:?} has an empty component (two dots in a row, or a dot at an end)"
                )));
            }
            if !component.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ValueError(format!(
                    "UID {text:?} has the component {component:?}; components are digits only"
                )));
            }
            if component.len() > 1 && component.starts_with('0') {
                return Err(ValueError(format!(
                    "UID {text:?} has the component {component:?}; a component of more than one digit must not start with 0"
                )));
            }
        }
        Ok(Uid(text.to_owned()))
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Maximum length of a DNS host name (RFC 1035 2.3.4).
const HOST_NAME_LENGTH_MAX: usize = 253;

/// Where a remote AE listens: `host:port`, the host a DNS name or an IP
/// address (IPv6 in brackets: `[fd00::5]:104`). Names are resolved when an
/// association is opened, not at start, so a renumbered host needs no
/// restart.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteAddress {
    host: String,
    port: u16,
    tls: bool,
}

impl RemoteAddress {
    /// Whether associations to it use DICOM TLS (written `tls://host:port`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The host name or IP address, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port, never 0.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for RemoteAddress {
    type Err = ValueError;

    fn from_str(full_text: &str) -> Result<Self, ValueError> {
        let (tls, text) = match full_text.strip_prefix("tls://") {
            Some(rest) => (true, rest),
            None => (false, full_text),
        };
        let not_host_port = || {
            ValueError(format!(
                "{text:?} is not host:port (for example \"10.0.0.5:104\", \"pacs.example.org:11112\", \"[fd00::5]:104\")"
            ))
        };
        let (host, port_text) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(not_host_port)?;
            let port_text = after.strip_prefix(':').ok_or_else(not_host_port)?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(ValueError(format!(
                    "{text:?}: {host:?} in brackets is not an IPv6 address"
                )));
            }
            (host, port_text)
        } else {
            let (host, port_text) = text.rsplit_once(':').ok_or_else(not_host_port)?;
            if host.contains(':') {
                return Err(ValueError(format!(
                    "{text:?}: write an IPv6 address in brackets, for example \"[fd00::5]:104\""
                )));
            }
            check_host(text, host)?;
            (host, port_text)
        };
        let port = match port_text.parse::<u16>() {
            Ok(0) => {
                return Err(ValueError(format!(
                    "{text:?}: port 0 is not a port a peer can listen on"
                )))
            }
            Ok(port) => port,
            Err(_) => {
                return Err(ValueError(format!(
                    "{text:?}: the port {port_text:?} is not a number from 1 to 65535"
                )))
            }
        };
        Ok(RemoteAddress {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

/// How audit messages reach a syslog collector (`audit.audit_syslog`):
/// RFC 5424 messages over UDP (RFC 5426, one datagram each), TCP (RFC 6587
/// octet counting) or TLS (RFC 5425, octet counting too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyslogTransport {
    /// `udp://host:port`.
    Udp,
    /// `tcp://host:port`.
    Tcp,
    /// `tls://host:port`.
    Tls,
}

/// A syslog collector's address: `udp://host:port`, `tcp://host:port` or
/// `tls://host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyslogAddress {
    transport: SyslogTransport,
    address: RemoteAddress,
}

impl SyslogAddress {
    /// UDP or TCP.
    pub fn transport(&self) -> SyslogTransport {
        self.transport
    }

    /// The host name or IP address, without brackets.
    pub fn host(&self) -> &str {
        self.address.host()
    }

    /// The port, never 0.
    pub fn port(&self) -> u16 {
        self.address.port()
    }
}

impl FromStr for SyslogAddress {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let (transport, rest) = if let Some(rest) = text.strip_prefix("udp://") {
            (SyslogTransport::Udp, rest)
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            (SyslogTransport::Tcp, rest)
        } else if let Some(rest) = text.strip_prefix("tls://") {
            (SyslogTransport::Tls, rest)
        } else {
            return Err(ValueError(format!(
                "{text:?} is not udp://host:port, tcp://host:port or tls://host:port (for example \"udp://127.0.0.1:514\")"
            )));
        };
        if rest.contains("://") {
            return Err(ValueError(format!("{text:?}: write one scheme")));
        }
        Ok(SyslogAddress {
            transport,
            address: rest.parse()?,
        })
    }
}

impl fmt::Display for SyslogAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            SyslogTransport::Udp => "udp",
            SyslogTransport::Tcp => "tcp",
            SyslogTransport::Tls => "tls",
        };
        write!(formatter, "{scheme}://{}", self.address)
    }
}

/// A host is an IPv4 address or a DNS name: labels of letters, digits and
/// hyphens, separated by dots.
fn check_host(text: &str, host: &str) -> Result<(), ValueError> {
    if host.is_empty() {
        return Err(ValueError(format!("{text:?}: the host is empty")));
    }
    if host.len() > HOST_NAME_LENGTH_MAX {
        return Err(ValueError(format!(
            "{text:?}: the host name is longer than {HOST_NAME_LENGTH_MAX} characters"
        )));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.split('.').all(label_ok) {
        return Err(ValueError(format!(
            "{text:?}: {host:?} is neither an IP address nor a valid host name"
        )));
    }
    Ok(())
}

impl fmt::Display for RemoteAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            formatter.write_str("tls://")?;
        }
        if self.host.contains(':') {
            write!(formatter, "[{}]:{}", self.host, self.port)
        } else {
            write!(formatter, "{}:{}", self.host, self.port)
        }
    }
}

/// Most cores Sluice will run engine threads on; a bound on per-core state.
pub const CORES_MAX: u16 = 1024;

/// How many cores (engine threads, one ring each) Sluice uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cores {
    /// As many as the process may run on (`std::thread::available_parallelism`,
    /// which honours CPU affinity and cgroup quotas).
    Auto,
    /// Exactly this many, 1 to [`CORES_MAX`].
    Count(u16),
}

impl Cores {
    /// The number of engine threads to start: `Auto` asks the OS now (1 if
    /// it cannot tell), capped at [`CORES_MAX`].
    pub fn count(self) -> usize {
        match self {
            Cores::Count(count) => usize::from(count),
            Cores::Auto => std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(usize::from(CORES_MAX)),
        }
    }
}

/// A closed set of named choices for an option: the names are what the TOML
/// file and the flags accept, the docs go into the generated reference.
pub trait ConfigEnum: Copy + PartialEq + fmt::Debug + 'static {
    /// Every variant: its name in the file and on the command line, and its
    /// one-paragraph description.
    const VARIANTS: &'static [(&'static str, Self, &'static str)];

    /// The name of this variant in the file and on the command line.
    fn name(self) -> &'static str {
        Self::VARIANTS
            .iter()
            .find(|(_, variant, _)| *variant == self)
            .map_or("?", |(name, _, _)| name)
    }
}

/// Declares a `ConfigEnum` with `Display` and `FromStr` from one list.
macro_rules! config_enum {
    (
        $(#[doc = $doc:literal])*
        pub enum $Enum:ident {
            $( $(#[doc = $variant_doc:literal])+ $Variant:ident = $name:literal, )+
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $Enum {
            $( $(#[doc = $variant_doc])+ $Variant, )+
        }

        impl ConfigEnum for $Enum {
            const VARIANTS: &'static [(&'static str, Self, &'static str)] = &[
                $( ($name, $Enum::$Variant, concat!($($variant_doc, "\n"),+)), )+
            ];
        }

        impl fmt::Display for $Enum {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.name())
            }
        }

        impl FromStr for $Enum {
            type Err = ValueError;

            fn from_str(text: &str) -> Result<Self, ValueError> {
                parse_enum(text)
            }
        }
    };
}

/// Looks `text` up among `E`'s variant names; the error lists them all.
pub(crate) fn parse_enum<E: ConfigEnum>(text: &str) -> Result<E, ValueError> {
    E::VARIANTS
        .iter()
        .find(|(name, _, _)| *name == text)
        .map(|(_, variant, _)| *variant)
        .ok_or_else(|| {
            let names: Vec<String> = E::VARIANTS
                .iter()
                .map(|(name, _, _)| format!("\"{name}\""))
                .collect();
            ValueError(format!("{text:?} is not one of {}", names.join(", ")))
        })
}

config_enum! {
    /// Which I/O backend runs the engine threads.
    pub enum IoBackend {
        /// io_uring if the kernel and the container allow it, else the
        /// portable backend; the choice is logged at start.
        Auto = "auto",
        /// io_uring only: start fails if it is unavailable.
        Uring = "uring",
        /// epoll and ordinary file calls, for old kernels and containers
        /// whose seccomp profile blocks io_uring.
        Portable = "portable",
    }
}

config_enum! {
    /// Whether the plain (unencrypted) DICOM listener on `network.port`
    /// runs.
    pub enum PlainListener {
        /// It runs (beside the TLS one, when `network.tls_port` is set).
        On = "on",
        /// Only the TLS listener runs (TLS-only mode).
        Off = "off",
    }
}

config_enum! {
    /// How log lines are written (to standard error).
    pub enum LogFormat {
        /// One human-readable line per event.
        Text = "text",
        /// One JSON object per line, for log collectors.
        Json = "json",
    }
}

config_enum! {
    /// The least severe log events that are written.
    pub enum LogLevel {
        /// Only errors.
        Error = "error",
        /// Errors and warnings.
        Warn = "warn",
        /// Also one line per association and the start-up summary.
        Info = "info",
        /// Also per-instance detail; verbose under load.
        Debug = "debug",
        /// Everything, including protocol traces; for debugging only.
        Trace = "trace",
    }
}

config_enum! {
    /// Which SOP classes the Storage SCP accepts.
    pub enum SopClassSelection {
        /// The storage SOP classes of the reference conformance statement
        /// (GE Centricity PACS-IW 5.0, table 2.3.2-1, with the UIDs as the
        /// DICOM standard spells them) plus GE private 3D Model Storage
        /// (1.2.840.113619.4.26).
        Seed = "seed",
        /// Every storage SOP class of the DICOM standard known to this
        /// version of Sluice.
        AllStorage = "all-storage",
        /// Any SOP class a sender proposes, stored as received without any
        /// check that it is a storage class.
        Any = "any",
    }
}

config_enum! {
    /// How stored instances are laid out in the data directory
    /// (docs/on-disk-format.md; the segment design and its state:
    /// docs/design/segments.md).
    pub enum StorageLayout {
        /// One Part 10 file per instance under `objects/` and `quarantine/`.
        Files = "files",
        /// Records appended to per-core preallocated segment files under
        /// `segments/` (quarantined duplicates and instances above
        /// `segment_record_max` stay files; docs/design/segments.md).
        Segments = "segments",
    }
}

config_enum! {
    /// Whether segments get their blocks written with zeros before records
    /// go in (`storage.segment_zero_fill`; docs/design/segments.md,
    /// "Written blocks" and "Paced and adaptive zero fill").
    pub enum ZeroFill {
        /// As `on` while a core's flush rounds are small (under 1 MiB on
        /// average); while they carry more, its next segment gets no
        /// zeros (it is allocated only).
        Auto = "auto",
        /// A background thread writes zeros over each core's next segment
        /// while the core fills its current one, paced to the core's fill
        /// rate (at full speed while the core is idle).
        On = "on",
        /// Segments are allocated (`fallocate`) only.
        Off = "off",
    }
}

config_enum! {
    /// What happens when an instance arrives whose Study, Series and SOP
    /// Instance UIDs are all already stored.
    pub enum DuplicatePolicy {
        /// The stored instance stays untouched; the newcomer is kept in the
        /// quarantine area with who sent it and when, for an operator to
        /// inspect, release or purge. The sender is told success.
        Quarantine = "quarantine",
        /// The newcomer is refused with a failure status and not kept.
        Reject = "reject",
        /// The newcomer replaces the stored instance; the replaced file is
        /// moved to `orphans/` (no longer indexed), so nothing is lost.
        Replace = "replace",
        /// A byte-identical newcomer is dropped (the sender is told
        /// success); a different one is quarantined as with `quarantine`.
        /// So is an identical one while the stored copy is not yet known
        /// durable (its own store still in progress, or just answered).
        DropIfIdentical = "drop-if-identical",
    }
}

config_enum! {
    /// What a check of received instances does when it finds something
    /// (the validation table of docs/design/ingest.md).
    pub enum CheckMode {
        /// Refuse the instance with the check's failure status; nothing is
        /// kept, the sender is told why.
        Strict = "strict",
        /// Store the instance as received, log a warning and flag it for
        /// `sluice flagged`; the sender is told success.
        Lenient = "lenient",
    }
}

config_enum! {
    /// What happens when an instance arrives whose SOP Instance UID is
    /// already stored under a different Study or Series Instance UID.
    pub enum UidConflictPolicy {
        /// The stored instance stays untouched; the newcomer is kept in
        /// quarantine for review. The sender is told success.
        Quarantine = "quarantine",
        /// The newcomer is refused with a failure status and not kept.
        Reject = "reject",
    }
}

config_enum! {
    /// How a Storage Commitment result (N-EVENT-REPORT) reaches the
    /// requester.
    pub enum ReportDelivery {
        /// On the association that carried the request while it is still
        /// open; once it has closed, on a new association to the requester
        /// (its address from `network.remote_aes`).
        SameAssociationOrNew = "same-association-or-new",
        /// Always on a new association, as the reference PACS does.
        NewAssociation = "new-association",
    }
}

/// Which transfer syntaxes the Storage SCP accepts (data sets are stored as
/// received, never transcoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferSyntaxSelection {
    /// The transfer syntaxes of the reference conformance statement: Implicit
    /// VR Little Endian, Explicit VR Little Endian, RLE Lossless, JPEG
    /// Baseline, JPEG Extended, JPEG Lossless, JPEG Lossless SV1, JPEG 2000
    /// Lossless and JPEG 2000.
    Seed,
    /// Every transfer syntax known to this version of Sluice: the seed ones
    /// plus Deflated Explicit VR Little Endian, Explicit VR Big Endian,
    /// JPEG-LS, HTJ2K and the MPEG/HEVC video syntaxes.
    All,
    /// Exactly these.
    List(Vec<Uid>),
}

impl TransferSyntaxSelection {
    /// The name used in the file and on the command line for the two named
    /// selections.
    pub(crate) const NAMES: [(&'static str, &'static str); 2] = [
        ("seed", "The transfer syntaxes of the reference conformance statement: Implicit VR Little Endian, Explicit VR Little Endian, RLE Lossless, JPEG Baseline, JPEG Extended, JPEG Lossless, JPEG Lossless SV1, JPEG 2000 Lossless, JPEG 2000."),
        ("all", "Every transfer syntax known to this version of Sluice: the seed ones plus Deflated Explicit VR Little Endian, Explicit VR Big Endian, JPEG-LS, HTJ2K and the MPEG/HEVC video syntaxes."),
    ];
}

config_enum! {
    /// How Query/Retrieve matches person names (Patient's Name, Referring
    /// Physician's Name).
    pub enum PersonNameMatching {
        /// Exactly, case included, as PS3.4 C.2.2.2 says (wildcards `*` and
        /// `?` still apply).
        Exact = "exact",
        /// Ignoring case, as Orthanc does: `doe*` finds `DOE^JOHN`.
        CaseInsensitive = "case-insensitive",
    }
}

config_enum! {
    /// How a C-MOVE's or C-GET's C-STOREs send the stored bytes.
    pub enum RetrieveSend {
        /// Read from the file into send buffers, then sent from them.
        Copy = "copy",
        /// From the file to the socket through a pipe (io_uring's splice):
        /// no copy of the data set in user space. Where it cannot (TLS,
        /// the portable backend, a kernel without `IORING_OP_SPLICE`, a
        /// transcoded data set), by copy, as `copy` does.
        Splice = "splice",
    }
}

config_enum! {
    /// Where C-FIND takes the requested keys that the index does not hold
    /// (Orthanc's `StorageAccessOnFind`).
    pub enum FileKeysOnFind {
        /// From the index only: such keys come back empty and the answer
        /// says so (status FF01). No file is read during a C-FIND.
        Never = "never",
        /// From the head of each matching instance's stored file (read up
        /// to `query.file_head_bytes_max`), at IMAGE level only, where one
        /// file is one answer; matching on them too.
        Image = "image",
    }
}

/// Which AE titles an access rule lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AeSelection {
    /// Every AE title.
    Any,
    /// The AE titles of `network.remote_aes`.
    Known,
    /// No AE title.
    None,
    /// Exactly these.
    List(Vec<AeTitle>),
}

impl AeSelection {
    /// The names used in the file and on the command line.
    pub(crate) const NAMES: [(&'static str, &'static str); 3] = [
        ("any", "Every AE title."),
        ("known", "The AE titles listed in `network.remote_aes`."),
        ("none", "No AE title."),
    ];

    /// Whether `ae_title` passes, given the remote AE table.
    pub fn allows<V>(&self, ae_title: &str, remote_aes: &BTreeMap<AeTitle, V>) -> bool {
        match self {
            AeSelection::Any => true,
            AeSelection::Known => remote_aes.keys().any(|known| known.as_str() == ae_title),
            AeSelection::None => false,
            AeSelection::List(titles) => titles.iter().any(|title| title.as_str() == ae_title),
        }
    }
}

/// A service an access rule (`access.rule`) grants a calling AE.
/// Verification is granted to every admitted AE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessService {
    /// C-STORE.
    Store,
    /// Storage Commitment (N-ACTION).
    Commitment,
    /// C-FIND.
    Query,
    /// C-MOVE and C-GET.
    Retrieve,
}

impl AccessService {
    /// Every service, with its name in the file and on the command line.
    pub const ALL: [(AccessService, &'static str); 4] = [
        (AccessService::Store, "store"),
        (AccessService::Commitment, "commitment"),
        (AccessService::Query, "query"),
        (AccessService::Retrieve, "retrieve"),
    ];

    /// The name in the file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AccessService::Store => "store",
            AccessService::Commitment => "commitment",
            AccessService::Query => "query",
            AccessService::Retrieve => "retrieve",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for AccessService {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        AccessService::ALL
            .iter()
            .find(|(_, name)| *name == text.trim())
            .map(|(service, _)| *service)
            .ok_or_else(|| {
                ValueError(format!(
                    "{text:?} is not a service; the services are store, commitment, query, retrieve"
                ))
            })
    }
}

/// A set of [`AccessService`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccessServices(u8);

impl AccessServices {
    /// Every service: what an AE gets when no access rule is configured.
    pub const ALL: AccessServices = AccessServices(0b1111);

    /// Whether `service` is in the set.
    pub fn contains(self, service: AccessService) -> bool {
        self.0 & service.bit() != 0
    }

    /// The set with `service` added.
    #[must_use]
    pub fn with(self, service: AccessService) -> AccessServices {
        AccessServices(self.0 | service.bit())
    }

    /// The services, in the order of [`AccessService::ALL`].
    pub fn iter(self) -> impl Iterator<Item = AccessService> {
        AccessService::ALL
            .into_iter()
            .map(|(service, _)| service)
            .filter(move |service| self.contains(*service))
    }
}

impl fmt::Display for AccessServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(AccessService::name).collect();
        if names.is_empty() {
            f.write_str("verification only")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// The most addresses one access rule may list.
pub const ACCESS_RULE_ADDRESSES_MAX: usize = 256;

/// One rule of the access table (`access.rule`): a calling AE title (or
/// `*`, any), optionally the addresses it may connect from (IP addresses
/// or CIDR networks; none: any address), and the services it may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    /// `None`: any calling AE title (written `*`).
    pub calling_ae_title: Option<AeTitle>,
    /// The networks it may connect from; empty: any.
    pub addresses: Vec<ipnet::IpNet>,
    /// What it may use besides Verification.
    pub services: AccessServices,
}

impl AccessRule {
    /// Whether the rule is about `calling_ae_title`.
    pub fn names(&self, calling_ae_title: &str) -> bool {
        self.calling_ae_title
            .as_ref()
            .is_none_or(|title| title.as_str() == calling_ae_title)
    }

    /// Whether `address` is one the rule admits. An IPv4 peer reached
    /// through an IPv6 socket (`::ffff:a.b.c.d`) is matched as IPv4.
    pub fn admits_address(&self, address: std::net::IpAddr) -> bool {
        let address = address.to_canonical();
        self.addresses.is_empty() || self.addresses.iter().any(|net| net.contains(&address))
    }

    /// The calling AE title as written (`*` for any).
    pub fn calling_ae_text(&self) -> &str {
        self.calling_ae_title.as_ref().map_or("*", AeTitle::as_str)
    }

    /// Parses one address of a rule: a CIDR network, or one IP address.
    pub fn parse_address(text: &str) -> Result<ipnet::IpNet, ValueError> {
        let text = text.trim();
        if let Ok(address) = text.parse::<std::net::IpAddr>() {
            return Ok(ipnet::IpNet::from(address));
        }
        text.parse::<ipnet::IpNet>()
            .map(|net| net.trunc())
            .map_err(|_| {
                ValueError(format!(
                    "{text:?} is not an IP address or a network (for example \"10.1.2.3\", \"10.1.2.0/24\", \"fd00::/8\")"
                ))
            })
    }

    /// Parses the calling AE of a rule: an AE title, or `*` for any.
    pub fn parse_calling_ae(text: &str) -> Result<Option<AeTitle>, ValueError> {
        if text.trim() == "*" {
            Ok(None)
        } else {
            text.parse().map(Some)
        }
    }
}

impl fmt::Display for AccessRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.calling_ae_text())?;
        if !self.addresses.is_empty() {
            let addresses: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
            write!(f, "@{}", addresses.join(","))?;
        }
        let services: Vec<&str> = self.services.iter().map(AccessService::name).collect();
        write!(f, "={}", services.join(","))
    }
}

/// The command-line form: `AE_TITLE[@ADDRESS,...]=SERVICE,...`, for
/// example `CT_ROOM_1@10.1.2.0/24=store,commitment` (`*` for any AE
/// title; an empty service list grants Verification only).
impl FromStr for AccessRule {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let (who, services_text) = text.rsplit_once('=').ok_or_else(|| {
            ValueError(format!(
                "{text:?} is not AE_TITLE[@ADDRESS,...]=SERVICE,... (for example \"CT_ROOM_1@10.1.2.0/24=store,commitment\")"
            ))
        })?;
        let (title_text, addresses_text) = match who.rsplit_once('@') {
            Some((title, addresses)) => (title, Some(addresses)),
            None => (who, None),
        };
        let calling_ae_title = AccessRule::parse_calling_ae(title_text)?;
        let mut addresses = Vec::new();
        if let Some(addresses_text) = addresses_text {
            for address in addresses_text.split(',') {
                if addresses.len() == ACCESS_RULE_ADDRESSES_MAX {
                    return Err(ValueError(format!(
                        "more than {ACCESS_RULE_ADDRESSES_MAX} addresses in one rule"
                    )));
                }
                addresses.push(AccessRule::parse_address(address)?);
            }
        }
        let mut services = AccessServices::default();
        for name in services_text
            .split(',')
            .filter(|name| !name.trim().is_empty())
        {
            services = services.with(name.parse()?);
        }
        Ok(AccessRule {
            calling_ae_title,
            addresses,
            services,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles() {
        assert_eq!("SLUICE".parse::<AeTitle>().unwrap().as_str(), "SLUICE");
        assert_eq!(" PACS 1 ".parse::<AeTitle>().unwrap().as_str(), "PACS 1");
        assert_eq!(
            "ABCDEFGHIJKLMNOP".parse::<AeTitle>().unwrap().as_str(),
            "ABCDEFGHIJKLMNOP"
        );
        let too_long = "ABCDEFGHIJKLMNOPQ".parse::<AeTitle>().unwrap_err();
        assert!(too_long.message().contains("17 characters"), "{too_long}");
        assert!("    ".parse::<AeTitle>().is_err());
        assert!("".parse::<AeTitle>().is_err());
        let backslash = "A\\B".parse::<AeTitle>().unwrap_err();
        assert!(backslash.message().contains("'\\\\'"), "{backslash}");
        assert!("A\tB".parse::<AeTitle>().is_err());
        assert!("CAFÉ".parse::<AeTitle>().is_err());
    }

    #[test]
    fn access_rules_parse_and_match() {
        let rule: AccessRule = "CT_ROOM_1@10.1.2.0/24,192.168.7.9=store,commitment"
            .parse()
            .unwrap();
        assert_eq!(rule.calling_ae_text(), "CT_ROOM_1");
        assert!(rule.names("CT_ROOM_1") && !rule.names("CT_ROOM_2"));
        assert!(rule.admits_address("10.1.2.200".parse().unwrap()));
        assert!(rule.admits_address("::ffff:10.1.2.3".parse().unwrap()));
        assert!(rule.admits_address("192.168.7.9".parse().unwrap()));
        assert!(!rule.admits_address("192.168.7.10".parse().unwrap()));
        assert!(rule.services.contains(AccessService::Store));
        assert!(rule.services.contains(AccessService::Commitment));
        assert!(!rule.services.contains(AccessService::Query));
        assert_eq!(
            rule.to_string(),
            "CT_ROOM_1@10.1.2.0/24,192.168.7.9/32=store,commitment"
        );
        assert_eq!(rule.to_string().parse::<AccessRule>().unwrap(), rule);
        let any: AccessRule = "*=".parse().unwrap();
        assert!(any.names("WHOEVER") && any.admits_address("fd00::1".parse().unwrap()));
        assert_eq!(any.services.to_string(), "verification only");
        // A host address with a prefix is narrowed to its network.
        let host_bits: AccessRule = "A@10.1.2.3/24=query".parse().unwrap();
        assert_eq!(host_bits.addresses[0].to_string(), "10.1.2.0/24");
        assert!("CT_ROOM_1=store,delete".parse::<AccessRule>().is_err());
        assert!("CT_ROOM_1@10.1.2=store".parse::<AccessRule>().is_err());
        assert!("CT_ROOM_1".parse::<AccessRule>().is_err());
    }

    #[test]
    fn uids() {
        for good in ["1.2.840.10008.1.2", "0", "1.0.3", "1.2.840.113619.4.26"] {
            assert!(good.parse::<Uid>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "1..2",
            ".1",
            "1.",
            "1.02",
            "1.2a",
            "1.2 ",
            &"1.".repeat(33),
        ] {
            assert!(bad.parse::<Uid>().is_err(), "{bad:?}");
        }
        let max = format!("1.{}", "2".repeat(62));
        assert!(max.parse::<Uid>().is_ok());
    }

    #[test]
    fn remote_addresses() {
        let address: RemoteAddress = "10.0.0.5:104".parse().unwrap();
        assert_eq!((address.host(), address.port()), ("10.0.0.5", 104));
        let address: RemoteAddress = "pacs-1.example.org:11112".parse().unwrap();
        assert_eq!(address.host(), "pacs-1.example.org");
        let address: RemoteAddress = "[fd00::5]:104".parse().unwrap();
        assert_eq!((address.host(), address.port()), ("fd00::5", 104));
        assert_eq!(address.to_string(), "[fd00::5]:104");
        for bad in [
            "10.0.0.5",
            "10.0.0.5:0",
            "10.0.0.5:70000",
            ":104",
            "fd00::5:104",
            "[nothex]:104",
            "bad_host:104",
            "-x.org:104",
            "[fd00::5]104",
        ] {
            assert!(bad.parse::<RemoteAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn enums_round_trip_by_name() {
        for (name, variant, doc) in DuplicatePolicy::VARIANTS {
            assert_eq!(name.parse::<DuplicatePolicy>().unwrap(), *variant);
            assert_eq!(variant.to_string(), *name);
            assert!(!doc.is_empty());
        }
        let error = "keep".parse::<DuplicatePolicy>().unwrap_err();
        assert_eq!(
            error.message(),
            "\"keep\" is not one of \"quarantine\", \"reject\", \"replace\", \"drop-if-identical\""
        );
    }

    #[test]
    fn cores_auto_is_at_least_one() {
        assert!(Cores::Auto.count() >= 1);
        assert_eq!(Cores::Count(3).count(), 3);
    }
}

/// The longest cluster node name.
pub const NODE_NAME_LENGTH_MAX: usize = 63;

/// A cluster node's name (`cluster.node_name`): 1 to 63 ASCII letters,
/// digits, `.`, `_` or `-`, the form of a host name label, so that it
/// reads the same in logs, the catalogue and `sluice cluster status`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        if text.is_empty() || text.len() > NODE_NAME_LENGTH_MAX {
            return Err(ValueError(format!(
                "node name {text:?} is {} characters long; it needs 1 to {NODE_NAME_LENGTH_MAX}",
                text.len()
            )));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ValueError(format!(
                "node name {text:?} contains {bad:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
            )));
        }
        Ok(NodeName(text.to_owned()))
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Where the shared PostgreSQL catalogue is (`cluster.catalogue`): a
/// libpq connection string, as a URL (`postgresql://user@host:port/db`) or
/// as `key=value` pairs, checked by the client's own parser. A password is
/// better kept out of it (PostgreSQL's `~/.pgpass` or `PGPASSWORD` are not
/// read by this client; use `password=` in a file only root can read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogueAddress(String);

impl CatalogueAddress {
    /// The connection string as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CatalogueAddress {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        // The TLS keys (`sslmode`, `sslrootcert`) as libpq takes them.
        match crate::cluster::tls::parse(text) {
            Ok(_) => Ok(CatalogueAddress(text.to_owned())),
            Err(error) => Err(ValueError(format!(
                "{text:?} is not a PostgreSQL connection string: {error}"
            ))),
        }
    }
}

impl fmt::Display for CatalogueAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

config_enum! {
    /// What a C-FIND answers for in cluster mode (docs/design/scale-out.md,
    /// "Cluster-wide C-FIND").
    pub enum FindScope {
        /// The whole cluster, from the catalogue; this node's index when
        /// the catalogue cannot be reached (logged).
        Cluster = "cluster",
        /// This node's index only, as without cluster mode.
        Local = "local",
    }
}

config_enum! {
    /// When a node publishes its committed entries to the cluster
    /// catalogue, relative to the C-STORE response (docs/design/scale-out.md
    /// argues the choice).
    pub enum PublishMode {
        /// After the answer: the response waits for the local commit only;
        /// the catalogue follows within `cluster.publish_interval_ms`, and
        /// a SOP Instance UID another node published first is moved into
        /// quarantine afterwards.
        AfterAnswer = "after-answer",
        /// Before the answer: the response also waits for the batch's
        /// catalogue commit (one round trip per batch, bounded by
        /// `cluster.publish_timeout_ms`), so a loser is answered as a
        /// quarantined duplicate, as on one node.
        BeforeAnswer = "before-answer",
    }
}

/// The longest object store name (`objects.bucket`, `region`, `key_id`,
/// `key_prefix`).
pub const OBJECT_NAME_LENGTH_MAX: usize = 255;

/// A name the object store is given (a bucket, a region, an access key id,
/// a key prefix): 1 to 255 printable ASCII characters without spaces, so
/// it is signed and sent exactly as written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ObjectName {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        if text.is_empty() || text.len() > OBJECT_NAME_LENGTH_MAX {
            return Err(ValueError(format!(
                "{text:?} is {} characters long; it needs 1 to {OBJECT_NAME_LENGTH_MAX}",
                text.len()
            )));
        }
        if let Some(bad) = text.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(ValueError(format!(
                "{text:?} contains {bad:?}; only printable ASCII without spaces is allowed"
            )));
        }
        Ok(ObjectName(text.to_owned()))
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The object store's S3 endpoint (`objects.endpoint`): an `http` or
/// `https` URL with a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectEndpoint(url::Url);

impl ObjectEndpoint {
    /// The URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl FromStr for ObjectEndpoint {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let url = url::Url::parse(text)
            .map_err(|error| ValueError(format!("{text:?} is not a URL: {error}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ValueError(format!(
                "{text:?} is not an http:// or https:// URL with a host"
            )));
        }
        Ok(ObjectEndpoint(url))
    }
}

impl fmt::Display for ObjectEndpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0.as_str())
    }
}

config_enum! {
    /// When an uploaded and verified segment's local file is deleted
    /// (`objects.evict`).
    pub enum EvictPolicy {
        /// Never: the object is a copy (a backup); reads stay local.
        Never = "never",
        /// As soon as the upload is verified.
        AfterUpload = "after-upload",
        /// While the data directory's file system is fuller than
        /// `objects.evict_disk_above_percent`, oldest segment first.
        WhenDiskAbove = "when-disk-above",
    }
}

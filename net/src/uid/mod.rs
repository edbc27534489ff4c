//! UID catalogues and UID syntax.
//!
//! Owns what Sluice knows about UIDs by heart: every storage SOP class of the
//! standard (with whether it is an image class), the seed's 50 storage classes,
//! the service SOP classes Sluice speaks (Verification, Storage Commitment,
//! Study Root Q/R), the transfer syntaxes with the facts a parser needs
//! (explicit VR, byte order, encapsulated, deflated), and the PS3.5 §9.1 UID
//! syntax check. Lookups are binary searches over static sorted tables: no
//! allocation, no global state.

mod storage_classes;

use storage_classes::STANDARD_STORAGE_SOP_CLASSES;

/// Sluice's UID root: `2.25.` and the decimal form of a UUID (ISO/IEC
/// 9834-8, PS3.5 B.2: `7a0953aa-5d4a-47c8-8785-3765225af25b`, a random
/// version 4 UUID generated once for Sluice and fixed here). A UUID-derived
/// root needs no registration and collides with no organisation's. Every
/// UID Sluice's programs name themselves by is `<root>.<n>`:
/// `.1` the engine's Implementation Class UID, `.2` its seal's creator
/// (both in `sluice-engine`'s `store::part10`), `.3` sluice-loadgen's
/// Implementation Class UID ([`LOADGEN_IMPLEMENTATION_CLASS_UID`]).
#[macro_export]
macro_rules! sluice_uid_root {
    () => {
        "2.25.162214243095143185867674759057077105243"
    };
}

/// sluice-loadgen's Implementation Class UID, sent in its A-ASSOCIATE-RQ
/// and A-ASSOCIATE-AC: `<root>.3` (see [`sluice_uid_root`]). Loadgen is an
/// implementation of its own, so it does not borrow the engine's `.1`.
pub const LOADGEN_IMPLEMENTATION_CLASS_UID: &str = concat!(sluice_uid_root!(), ".3");

/// sluice-loadgen's Implementation Version Name (at most 16 characters).
pub const LOADGEN_IMPLEMENTATION_VERSION_NAME: &str = "SLUICE_LOADGEN";

/// The DICOM Application Context Name (PS3.7 Annex A.2.1).
pub const DICOM_APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
/// Verification SOP Class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Storage Commitment Push Model SOP Class.
pub const STORAGE_COMMITMENT_PUSH_MODEL: &str = "1.2.840.10008.1.20.1";
/// The well-known SOP Instance of the Storage Commitment Push Model SOP Class
/// (the Requested SOP Instance UID of every commitment N-ACTION).
pub const STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
/// Study Root Query/Retrieve Information Model - FIND.
pub const STUDY_ROOT_QR_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
/// Study Root Query/Retrieve Information Model - MOVE.
pub const STUDY_ROOT_QR_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
/// Study Root Query/Retrieve Information Model - GET.
pub const STUDY_ROOT_QR_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
/// Patient Root Query/Retrieve Information Model - FIND.
pub const PATIENT_ROOT_QR_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
/// Patient Root Query/Retrieve Information Model - MOVE.
pub const PATIENT_ROOT_QR_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
/// Patient Root Query/Retrieve Information Model - GET.
pub const PATIENT_ROOT_QR_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";

/// CT Image Storage (named because tests and benches use it everywhere).
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// MR Image Storage.
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// GE private 3D Model Storage, accepted by the seed (table 2.3.2-1).
pub const GE_PRIVATE_3D_MODEL_STORAGE: &str = "1.2.840.113619.4.26";

/// Transfer syntax UIDs named in code.
pub mod ts {
    /// Implicit VR Little Endian, the default transfer syntax.
    pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
    /// Explicit VR Little Endian.
    pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
    /// Deflated Explicit VR Little Endian.
    pub const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
    /// Explicit VR Big Endian (retired).
    pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
    /// RLE Lossless.
    pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
    /// JPEG Baseline (Process 1).
    pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
    /// JPEG Extended (Process 2 & 4).
    pub const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
    /// JPEG Lossless, Non-Hierarchical (Process 14).
    pub const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.57";
    /// JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14, SV1).
    pub const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
    /// JPEG 2000 Image Compression (Lossless Only).
    pub const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
    /// JPEG 2000 Image Compression.
    pub const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";
}

/// One storage SOP class of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageSopClass {
    /// The SOP Class UID.
    pub uid: &'static str,
    /// The standard's name (PS3.6 Annex A), "(Retired)" included where retired.
    pub name: &'static str,
    /// Retired from the standard (still accepted when configured).
    pub retired: bool,
    /// An image class: its IOD includes the Image Pixel module, so an instance
    /// must carry Rows, Columns, Bits Allocated, Samples per Pixel, Photometric
    /// Interpretation and Pixel Data (7FE0,0010) for the C-STORE checks (A900,
    /// C010, C011). Sluice counts as image classes exactly the classes whose
    /// standard name contains "Image Storage" (CT, MR, CR, DX, US, XA, NM, PET,
    /// SC, VL, video, ophthalmic, hardcopy...) plus Enhanced US Volume Storage.
    /// Classes whose pixels live elsewhere or are optional (Segmentation,
    /// Parametric Map with float pixel data, waveforms, SR, presentation
    /// states, RT objects other than RT Image, Raw Data, Encapsulated
    /// documents, the GE private 3D model) are not image classes: a false
    /// "not image" only skips a check, a false "image" would reject valid data.
    pub image: bool,
}

impl StorageSopClass {
    const fn new(uid: &'static str, name: &'static str, retired: bool, image: bool) -> Self {
        Self {
            uid,
            name,
            retired,
            image,
        }
    }
}

/// Private storage SOP classes Sluice knows (the seed's GE 3D model).
static PRIVATE_STORAGE_SOP_CLASSES: &[StorageSopClass] = &[StorageSopClass::new(
    GE_PRIVATE_3D_MODEL_STORAGE,
    "GE Private 3D Model Storage",
    false,
    false,
)];

/// Every storage SOP class of the DICOM standard, current and retired, sorted
/// by UID. Does not include private classes (see [`storage_sop_class`]).
pub fn standard_storage_sop_classes() -> &'static [StorageSopClass] {
    STANDARD_STORAGE_SOP_CLASSES
}

/// The storage SOP classes of the seed's table 2.3.2-1 (49 standard classes
/// and the GE private 3D Model Storage, 50 in all), with the standard's UIDs:
/// the seed's table 2.3.2-1 misprints several (CT as 1.2.840.10008.5.1.4.1.2,
/// CR, US, US multi-frame, MR, NM likewise miss a ".1"); its presentation
/// context table 2.3.2-6 and the standard give the ones below.
pub static SEED_STORAGE_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.1",        // Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.2",        // CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",      // Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.6",        // Ultrasound Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.3",        // Ultrasound Multi-frame Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.6.1",      // Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1",      // Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.6.2",      // Enhanced US Volume Storage
    "1.2.840.10008.5.1.4.1.1.4",        // MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",      // Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.3",      // Enhanced MR Color Image Storage
    "1.2.840.10008.5.1.4.1.1.20",       // Nuclear Medicine Image Storage
    "1.2.840.10008.5.1.4.1.1.128",      // Positron Emission Tomography Image Storage
    "1.2.840.10008.5.1.4.1.1.130",      // Enhanced PET Image Storage
    "1.2.840.10008.5.1.4.1.1.7",        // Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.1",      // Multi-frame Single Bit SC Image Storage
    "1.2.840.10008.5.1.4.1.1.7.2",      // Multi-frame Grayscale Byte SC Image Storage
    "1.2.840.10008.5.1.4.1.1.7.3",      // Multi-frame Grayscale Word SC Image Storage
    "1.2.840.10008.5.1.4.1.1.7.4",      // Multi-frame True Color SC Image Storage
    "1.2.840.10008.5.1.4.1.1.12.1",     // X-Ray Angiographic Image Storage
    "1.2.840.10008.5.1.4.1.1.12.1.1",   // Enhanced XA Image Storage
    "1.2.840.10008.5.1.4.1.1.12.2",     // X-Ray Radiofluoroscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.12.2.1",   // Enhanced XRF Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",      // Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",    // Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2",      // Digital Mammography X-Ray - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",    // Digital Mammography X-Ray - For Processing
    "1.2.840.10008.5.1.4.1.1.1.3",      // Digital Intra-Oral X-Ray - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.3.1",    // Digital Intra-Oral X-Ray - For Processing
    "1.2.840.10008.5.1.4.1.1.77.1.1",   // VL Endoscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.2",   // VL Microscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.3",   // VL Slide-Coordinates Microscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.4",   // VL Photographic Image Storage
    "1.2.840.10008.5.1.4.1.1.88.50",    // Mammography CAD SR Storage
    "1.2.840.10008.5.1.4.1.1.11.1",     // Grayscale Softcopy Presentation State Storage
    "1.2.840.10008.5.1.4.1.1.88.59",    // Key Object Selection Document Storage
    "1.2.840.10008.5.1.4.1.1.66.1",     // Spatial Registration Storage
    "1.2.840.10008.5.1.4.1.1.88.22",    // Enhanced SR Storage
    "1.2.840.10008.5.1.4.1.1.481.1",    // RT Image Storage
    "1.2.840.10008.5.1.4.1.1.481.3",    // RT Structure Set Storage
    GE_PRIVATE_3D_MODEL_STORAGE,        // GE Private 3D Model Storage
    "1.2.840.10008.5.1.4.1.1.13.1.3",   // Breast Tomosynthesis Image Storage
    "1.2.840.10008.5.1.4.1.1.13.1.1",   // X-Ray 3D Angiographic Image Storage
    "1.2.840.10008.5.1.4.1.1.13.1.2",   // X-Ray 3D Craniofacial Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.1.1", // Video Endoscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.2.1", // Video Microscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.4.1", // Video Photographic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.1", // Ophthalmic Photography 8 Bit Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.2", // Ophthalmic Photography 16 Bit Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.4", // Ophthalmic Tomography Image Storage
];

/// Looks up a storage SOP class (standard or the known private ones) by UID.
/// Trailing NUL padding on `uid` is ignored.
pub fn storage_sop_class(uid: &str) -> Option<&'static StorageSopClass> {
    let uid = trim_uid_padding(uid);
    STANDARD_STORAGE_SOP_CLASSES
        .binary_search_by(|class| class.uid.cmp(uid))
        .ok()
        .and_then(|index| STANDARD_STORAGE_SOP_CLASSES.get(index))
        .or_else(|| {
            PRIVATE_STORAGE_SOP_CLASSES
                .iter()
                .find(|class| class.uid == uid)
        })
}

/// Whether `uid` is a known storage SOP class that is an image class (see
/// [`StorageSopClass::image`]). Unknown UIDs are not image classes.
pub fn is_image_sop_class(uid: &str) -> bool {
    storage_sop_class(uid).is_some_and(|class| class.image)
}

/// Whether `uid` is one of the seed's storage SOP classes.
pub fn is_seed_storage_sop_class(uid: &str) -> bool {
    let uid = trim_uid_padding(uid);
    SEED_STORAGE_SOP_CLASSES.contains(&uid)
}

/// The storage SOP class `uid` most likely misprints, when `uid` is none: a
/// class whose UID is `uid` with one component more (the seed's table
/// 2.3.2-1 drops a ".1" from several: CT as 1.2.840.10008.5.1.4.1.2, CR as
/// 1.2.840.10008.5.1.4.1.1). The seed's classes are tried first, then the
/// standard's in UID order. For logs: "did you mean ...".
pub fn storage_sop_class_misprinted_as(uid: &str) -> Option<&'static StorageSopClass> {
    let uid = trim_uid_padding(uid);
    if uid.is_empty() || storage_sop_class(uid).is_some() {
        return None;
    }
    let ours: Vec<&str> = uid.split('.').collect();
    let one_component_more = |class: &&str| {
        let theirs: Vec<&str> = class.split('.').collect();
        theirs.len() == ours.len() + 1
            && (0..theirs.len()).any(|skipped| {
                theirs
                    .iter()
                    .enumerate()
                    .filter(|(at, _)| *at != skipped)
                    .map(|(_, component)| component)
                    .eq(ours.iter())
            })
    };
    SEED_STORAGE_SOP_CLASSES
        .iter()
        .copied()
        .chain(STANDARD_STORAGE_SOP_CLASSES.iter().map(|class| class.uid))
        .find(one_component_more)
        .and_then(storage_sop_class)
}

/// Byte order of a transfer syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Little endian (every current transfer syntax).
    Little,
    /// Big endian (Explicit VR Big Endian, retired).
    Big,
}

/// What a parser must know about a transfer syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransferSyntaxFacts {
    /// Explicit VR (every transfer syntax but Implicit VR Little Endian).
    pub explicit_vr: bool,
    /// Byte order of the data set encoding.
    pub byte_order: ByteOrder,
    /// Pixel Data is encapsulated (undefined length, fragments in items).
    pub encapsulated: bool,
    /// The whole data set is deflated (RFC 1951) after the file meta group:
    /// nothing can be parsed without inflating first.
    pub deflated: bool,
}

impl TransferSyntaxFacts {
    const fn native(explicit_vr: bool, byte_order: ByteOrder) -> Self {
        Self {
            explicit_vr,
            byte_order,
            encapsulated: false,
            deflated: false,
        }
    }

    const fn encapsulated() -> Self {
        Self {
            explicit_vr: true,
            byte_order: ByteOrder::Little,
            encapsulated: true,
            deflated: false,
        }
    }
}

/// One transfer syntax of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSyntax {
    /// The transfer syntax UID.
    pub uid: &'static str,
    /// The standard's name.
    pub name: &'static str,
    /// Encoding facts.
    pub facts: TransferSyntaxFacts,
    /// Retired from the standard.
    pub retired: bool,
}

const fn encapsulated_ts(uid: &'static str, name: &'static str) -> TransferSyntax {
    TransferSyntax {
        uid,
        name,
        facts: TransferSyntaxFacts::encapsulated(),
        retired: false,
    }
}

/// The transfer syntaxes Sluice knows, sorted by UID (byte-wise): the seed's
/// nine, and beyond the seed Deflated Explicit VR LE, Explicit VR BE,
/// Encapsulated Uncompressed, JPEG-LS, JPEG 2000 Part 2, HTJ2K, JPEG XL, and
/// the MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265 video syntaxes.
static TRANSFER_SYNTAXES: &[TransferSyntax] = &[
    TransferSyntax {
        uid: ts::IMPLICIT_VR_LITTLE_ENDIAN,
        name: "Implicit VR Little Endian",
        facts: TransferSyntaxFacts::native(false, ByteOrder::Little),
        retired: false,
    },
    TransferSyntax {
        uid: ts::EXPLICIT_VR_LITTLE_ENDIAN,
        name: "Explicit VR Little Endian",
        facts: TransferSyntaxFacts::native(true, ByteOrder::Little),
        retired: false,
    },
    encapsulated_ts(
        "1.2.840.10008.1.2.1.98",
        "Encapsulated Uncompressed Explicit VR Little Endian",
    ),
    TransferSyntax {
        uid: ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        name: "Deflated Explicit VR Little Endian",
        facts: TransferSyntaxFacts {
            explicit_vr: true,
            byte_order: ByteOrder::Little,
            encapsulated: false,
            deflated: true,
        },
        retired: false,
    },
    TransferSyntax {
        uid: ts::EXPLICIT_VR_BIG_ENDIAN,
        name: "Explicit VR Big Endian",
        facts: TransferSyntaxFacts::native(true, ByteOrder::Big),
        retired: true,
    },
    encapsulated_ts("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.100.1",
        "Fragmentable MPEG2 Main Profile / Main Level",
    ),
    encapsulated_ts("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level"),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.101.1",
        "Fragmentable MPEG2 Main Profile / High Level",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.102",
        "MPEG-4 AVC/H.264 High Profile / Level 4.1",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.102.1",
        "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.103",
        "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.103.1",
        "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.104",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.104.1",
        "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.105",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.105.1",
        "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.106",
        "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.106.1",
        "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.107",
        "HEVC/H.265 Main Profile / Level 5.1",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.108",
        "HEVC/H.265 Main 10 Profile / Level 5.1",
    ),
    encapsulated_ts("1.2.840.10008.1.2.4.110", "JPEG XL Lossless"),
    encapsulated_ts("1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression"),
    encapsulated_ts("1.2.840.10008.1.2.4.112", "JPEG XL"),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.203",
        "High-Throughput JPEG 2000 Image Compression",
    ),
    encapsulated_ts(ts::JPEG_BASELINE, "JPEG Baseline (Process 1)"),
    encapsulated_ts(ts::JPEG_EXTENDED, "JPEG Extended (Process 2 & 4)"),
    encapsulated_ts(
        ts::JPEG_LOSSLESS,
        "JPEG Lossless, Non-Hierarchical (Process 14)",
    ),
    encapsulated_ts(
        ts::JPEG_LOSSLESS_SV1,
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.80",
        "JPEG-LS Lossless Image Compression",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.81",
        "JPEG-LS Lossy (Near-Lossless) Image Compression",
    ),
    encapsulated_ts(
        ts::JPEG_2000_LOSSLESS,
        "JPEG 2000 Image Compression (Lossless Only)",
    ),
    encapsulated_ts(ts::JPEG_2000, "JPEG 2000 Image Compression"),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.92",
        "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)",
    ),
    encapsulated_ts(
        "1.2.840.10008.1.2.4.93",
        "JPEG 2000 Part 2 Multi-component Image Compression",
    ),
    encapsulated_ts(ts::RLE_LOSSLESS, "RLE Lossless"),
];

/// The nine transfer syntaxes the seed accepts for storage (requirements §1).
pub static SEED_TRANSFER_SYNTAXES: &[&str] = &[
    ts::IMPLICIT_VR_LITTLE_ENDIAN,
    ts::EXPLICIT_VR_LITTLE_ENDIAN,
    ts::RLE_LOSSLESS,
    ts::JPEG_BASELINE,
    ts::JPEG_EXTENDED,
    ts::JPEG_LOSSLESS,
    ts::JPEG_LOSSLESS_SV1,
    ts::JPEG_2000_LOSSLESS,
    ts::JPEG_2000,
];

/// Every transfer syntax of the catalogue, sorted by UID.
pub fn transfer_syntaxes() -> &'static [TransferSyntax] {
    TRANSFER_SYNTAXES
}

/// Looks up a transfer syntax by UID (trailing NUL padding ignored).
pub fn transfer_syntax(uid: &str) -> Option<&'static TransferSyntax> {
    let uid = trim_uid_padding(uid);
    TRANSFER_SYNTAXES
        .binary_search_by(|syntax| syntax.uid.cmp(uid))
        .ok()
        .and_then(|index| TRANSFER_SYNTAXES.get(index))
}

/// Removes the trailing NUL bytes that pad a UID value to even length
/// (PS3.5 §9.1). Nothing else is trimmed: a space is not valid UID padding.
pub fn trim_uid_padding(uid: &str) -> &str {
    uid.trim_end_matches('\0')
}

/// The longest UID the standard allows, in characters.
pub const UID_LENGTH_MAX: usize = 64;

/// Why a UID is not valid (PS3.5 §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UidError {
    /// The UID is empty (after removing trailing NUL padding).
    #[error("UID is empty")]
    Empty,
    /// The UID is longer than 64 characters.
    #[error("UID is {length} characters long, the maximum is 64")]
    TooLong {
        /// Length in characters, padding excluded.
        length: usize,
    },
    /// A character other than a digit or a dot.
    #[error("UID has byte {byte:#04x} at position {position}; only digits and dots are allowed")]
    InvalidCharacter {
        /// Zero-based byte position.
        position: usize,
        /// The offending byte.
        byte: u8,
    },
    /// Two consecutive dots, or a leading or trailing dot.
    #[error("UID has an empty component at position {position}")]
    EmptyComponent {
        /// Zero-based byte position where the empty component starts.
        position: usize,
    },
    /// A multi-digit component starting with 0.
    #[error("UID has a component with a leading zero at position {position}")]
    LeadingZero {
        /// Zero-based byte position of the component.
        position: usize,
    },
}

/// Checks a UID value against its VR (PS3.5 §6.2, UI): 1..=64 characters,
/// digits and dots only. Trailing NUL padding is tolerated (and not
/// counted). Returns the value without padding. This is what may go on the
/// wire in a UI element; whether the components are well formed is
/// [`check_uid`]'s question.
pub fn check_uid_value(uid: &[u8]) -> Result<&str, UidError> {
    let mut end = uid.len();
    while let Some(end_minus_one) = end.checked_sub(1) {
        if uid.get(end_minus_one) != Some(&0) {
            break;
        }
        end = end_minus_one;
    }
    let body = uid.get(..end).unwrap_or_default();
    if body.is_empty() {
        return Err(UidError::Empty);
    }
    if body.len() > UID_LENGTH_MAX {
        return Err(UidError::TooLong { length: body.len() });
    }
    if let Some((position, &byte)) = body
        .iter()
        .enumerate()
        .find(|(_, byte)| !matches!(byte, b'0'..=b'9' | b'.'))
    {
        return Err(UidError::InvalidCharacter { position, byte });
    }
    // Only ASCII digits and dots remain: this conversion cannot fail.
    std::str::from_utf8(body).map_err(|_| UidError::Empty)
}

/// A UID that passed [`check_uid_tolerant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TolerantUid<'a> {
    /// The UID, padding removed.
    pub uid: &'a str,
    /// The position of the first component with a leading zero, if any:
    /// the one departure from PS3.5 §9.1 this check lets through.
    pub leading_zero: Option<usize>,
}

/// Checks UID syntax like [`check_uid`], but lets components with a leading
/// zero through (reporting the first): real modalities emit them
/// (`1.2.840.113619.2.55.3.0123`), every parser reads them, and archives
/// (Orthanc, dcm4chee) store them with a warning. Everything else is an
/// error: empty components, foreign characters, more than 64 characters.
pub fn check_uid_tolerant(uid: &[u8]) -> Result<TolerantUid<'_>, UidError> {
    let body = check_uid_value(uid)?;
    let bytes = body.as_bytes();
    let mut leading_zero = None;
    let mut component_start = 0usize;
    for (position, &byte) in bytes.iter().enumerate() {
        if byte == b'.' {
            if position == component_start {
                return Err(UidError::EmptyComponent { position });
            }
            component_start = position.saturating_add(1);
        } else if byte == b'0'
            && position == component_start
            && bytes
                .get(position.saturating_add(1))
                .is_some_and(|next| *next != b'.')
        {
            // A zero that starts a component must be the whole component.
            leading_zero.get_or_insert(position);
        }
    }
    if component_start == bytes.len() {
        return Err(UidError::EmptyComponent {
            position: component_start,
        });
    }
    Ok(TolerantUid {
        uid: body,
        leading_zero,
    })
}

/// Checks UID syntax: 1..=64 characters of digits and dots, no empty
/// component, no leading zero in a multi-digit component. Trailing NUL
/// padding is tolerated (and not counted). Returns the UID without padding.
/// Every other flaw is reported before a leading zero, so a caller that
/// tolerates leading zeros ([`check_uid_tolerant`]) never accepts another.
pub fn check_uid(uid: &[u8]) -> Result<&str, UidError> {
    let checked = check_uid_tolerant(uid)?;
    match checked.leading_zero {
        Some(position) => Err(UidError::LeadingZero { position }),
        None => Ok(checked.uid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadgen_names_itself_under_sluices_root_with_valid_values() {
        assert!(LOADGEN_IMPLEMENTATION_CLASS_UID.starts_with(concat!(sluice_uid_root!(), ".")));
        assert_eq!(
            check_uid(LOADGEN_IMPLEMENTATION_CLASS_UID.as_bytes()),
            Ok(LOADGEN_IMPLEMENTATION_CLASS_UID)
        );
        assert!(LOADGEN_IMPLEMENTATION_VERSION_NAME.len() <= 16);
    }

    #[test]
    fn catalogue_is_sorted_and_unique() {
        for pair in STANDARD_STORAGE_SOP_CLASSES.windows(2) {
            assert!(
                pair[0].uid < pair[1].uid,
                "{} !< {}",
                pair[0].uid,
                pair[1].uid
            );
        }
        for pair in TRANSFER_SYNTAXES.windows(2) {
            assert!(
                pair[0].uid < pair[1].uid,
                "{} !< {}",
                pair[0].uid,
                pair[1].uid
            );
        }
        for class in STANDARD_STORAGE_SOP_CLASSES
            .iter()
            .chain(PRIVATE_STORAGE_SOP_CLASSES)
        {
            assert_eq!(check_uid(class.uid.as_bytes()), Ok(class.uid));
        }
        for syntax in TRANSFER_SYNTAXES {
            assert_eq!(check_uid(syntax.uid.as_bytes()), Ok(syntax.uid));
        }
    }

    #[test]
    fn storage_catalogue_counts_and_known_uids() {
        assert_eq!(STANDARD_STORAGE_SOP_CLASSES.len(), 214);
        assert_eq!(
            STANDARD_STORAGE_SOP_CLASSES
                .iter()
                .filter(|class| class.retired)
                .count(),
            20
        );
        assert_eq!(
            STANDARD_STORAGE_SOP_CLASSES
                .iter()
                .filter(|class| class.image)
                .count(),
            76
        );
        let expect = |uid: &str, name: &str, image: bool| {
            let class = storage_sop_class(uid).unwrap_or_else(|| panic!("{uid} missing"));
            assert_eq!(class.name, name);
            assert_eq!(class.image, image, "{name}");
        };
        expect("1.2.840.10008.5.1.4.1.1.2", "CT Image Storage", true);
        expect("1.2.840.10008.5.1.4.1.1.4", "MR Image Storage", true);
        expect(
            "1.2.840.10008.5.1.4.1.1.1",
            "Computed Radiography Image Storage",
            true,
        );
        expect(
            "1.2.840.10008.5.1.4.1.1.2.1",
            "Enhanced CT Image Storage",
            true,
        );
        expect(
            "1.2.840.10008.5.1.4.1.1.7",
            "Secondary Capture Image Storage",
            true,
        );
        expect(
            "1.2.840.10008.5.1.4.1.1.88.11",
            "Basic Text SR Storage",
            false,
        );
        expect(
            "1.2.840.10008.5.1.4.1.1.104.1",
            "Encapsulated PDF Storage",
            false,
        );
        expect("1.2.840.113619.4.26", "GE Private 3D Model Storage", false);
        expect(
            "1.2.840.10008.5.1.4.1.1.6",
            "Ultrasound Image Storage (Retired)",
            true,
        );
        assert!(
            storage_sop_class("1.2.840.10008.5.1.4.1.1.6")
                .unwrap()
                .retired
        );
        // Padded input, and the seed's misprinted CT UID is not a class.
        assert!(storage_sop_class("1.2.840.10008.5.1.4.1.1.2\0").is_some());
        assert!(storage_sop_class("1.2.840.10008.5.1.4.1.2").is_none());
        assert!(storage_sop_class(VERIFICATION).is_none());
        assert!(storage_sop_class(STORAGE_COMMITMENT_PUSH_MODEL).is_none());
        assert!(is_image_sop_class(CT_IMAGE_STORAGE));
        assert!(!is_image_sop_class("1.2.3"));
    }

    #[test]
    fn the_seeds_misprinted_class_uids_name_the_class_meant() {
        let meant = |uid| storage_sop_class_misprinted_as(uid).map(|class| class.name);
        assert_eq!(meant("1.2.840.10008.5.1.4.1.2"), Some("CT Image Storage"));
        assert_eq!(
            meant("1.2.840.10008.5.1.4.1.1"),
            Some("Computed Radiography Image Storage")
        );
        assert_eq!(meant("1.2.840.10008.5.1.4.1.4\0"), Some("MR Image Storage"));
        // A class is no misprint; nothing near is nothing.
        assert_eq!(meant(CT_IMAGE_STORAGE), None);
        assert_eq!(meant("1.2.3"), None);
        assert_eq!(meant(""), None);
    }

    #[test]
    fn seed_classes_are_fifty_known_and_distinct() {
        assert_eq!(SEED_STORAGE_SOP_CLASSES.len(), 50);
        for (index, uid) in SEED_STORAGE_SOP_CLASSES.iter().enumerate() {
            assert!(
                storage_sop_class(uid).is_some(),
                "seed class {uid} not in catalogue"
            );
            assert!(
                !SEED_STORAGE_SOP_CLASSES[..index].contains(uid),
                "duplicate {uid}"
            );
        }
        let images = SEED_STORAGE_SOP_CLASSES
            .iter()
            .filter(|uid| is_image_sop_class(uid))
            .count();
        // All but Mammography CAD SR, GSPS, KOS, Spatial Registration,
        // Enhanced SR, RT Structure Set and the GE 3D model.
        assert_eq!(images, 43);
        assert!(is_seed_storage_sop_class("1.2.840.10008.5.1.4.1.1.2\0"));
        assert!(!is_seed_storage_sop_class("1.2.840.10008.5.1.4.1.1.88.11"));
    }

    #[test]
    fn transfer_syntax_facts() {
        let implicit = transfer_syntax(ts::IMPLICIT_VR_LITTLE_ENDIAN)
            .unwrap()
            .facts;
        assert!(!implicit.explicit_vr && !implicit.encapsulated && !implicit.deflated);
        let big = transfer_syntax("1.2.840.10008.1.2.2\0").unwrap();
        assert_eq!(big.facts.byte_order, ByteOrder::Big);
        assert!(big.facts.explicit_vr && big.retired);
        assert!(
            transfer_syntax(ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
                .unwrap()
                .facts
                .deflated
        );
        for uid in [
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.201",
            "1.2.840.10008.1.2.4.107",
            ts::JPEG_2000,
        ] {
            let facts = transfer_syntax(uid).unwrap().facts;
            assert!(
                facts.encapsulated && facts.explicit_vr && !facts.deflated,
                "{uid}"
            );
        }
        for uid in SEED_TRANSFER_SYNTAXES {
            assert!(transfer_syntax(uid).is_some(), "{uid}");
        }
        assert!(transfer_syntax("1.2.840.10008.1.2.4.999").is_none());
    }

    #[test]
    fn uid_syntax() {
        assert_eq!(check_uid(b"1.2.840.10008.1.1"), Ok("1.2.840.10008.1.1"));
        assert_eq!(
            check_uid(b"1.2.840.10008.1.2.1\0"),
            Ok("1.2.840.10008.1.2.1")
        );
        assert_eq!(check_uid(b"0"), Ok("0"));
        assert_eq!(check_uid(b"1.0.3"), Ok("1.0.3"));
        assert_eq!(check_uid(b""), Err(UidError::Empty));
        assert_eq!(check_uid(b"\0\0"), Err(UidError::Empty));
        assert_eq!(
            check_uid(b"1..2"),
            Err(UidError::EmptyComponent { position: 2 })
        );
        assert_eq!(
            check_uid(b".1"),
            Err(UidError::EmptyComponent { position: 0 })
        );
        assert_eq!(
            check_uid(b"1.2."),
            Err(UidError::EmptyComponent { position: 4 })
        );
        assert_eq!(
            check_uid(b"1.02"),
            Err(UidError::LeadingZero { position: 2 })
        );
        assert_eq!(
            check_uid(b"1.2 "),
            Err(UidError::InvalidCharacter {
                position: 3,
                byte: b' '
            })
        );
        assert_eq!(
            check_uid(b"1.a"),
            Err(UidError::InvalidCharacter {
                position: 2,
                byte: b'a'
            })
        );
        let sixty_four = "1.".repeat(31) + "12";
        assert_eq!(sixty_four.len(), 64);
        assert!(check_uid(sixty_four.as_bytes()).is_ok());
        let sixty_five = sixty_four.clone() + "3";
        assert_eq!(
            check_uid(sixty_five.as_bytes()),
            Err(UidError::TooLong { length: 65 })
        );
        // NUL inside is not padding.
        assert!(matches!(
            check_uid(b"1.2\0.3"),
            Err(UidError::InvalidCharacter { .. })
        ));
    }
    /// Found by fuzzing (fuzz/regressions/dimse_command/): the DIMSE decoder
    /// tolerates a leading zero or an empty component, so a UID whose first
    /// flaw is one of those must not hide a foreign character after it.
    #[test]
    fn a_foreign_character_is_reported_before_a_tolerated_flaw() {
        assert_eq!(
            check_uid(b"1.2.0N0"),
            Err(UidError::InvalidCharacter {
                position: 5,
                byte: b'N'
            })
        );
        assert_eq!(
            check_uid(b"1..2.x"),
            Err(UidError::InvalidCharacter {
                position: 5,
                byte: b'x'
            })
        );
    }

    #[test]
    fn uid_value_and_tolerant_checks() {
        // The VR check: length and characters only.
        assert_eq!(check_uid_value(b"1.2..3\0"), Ok("1.2..3"));
        assert_eq!(check_uid_value(b".1.02."), Ok(".1.02."));
        assert_eq!(check_uid_value(b""), Err(UidError::Empty));
        assert!(matches!(
            check_uid_value(b"1.2.3\n"),
            Err(UidError::InvalidCharacter { position: 5, .. })
        ));
        let sixty_five = "1.".repeat(32) + "1";
        assert_eq!(
            check_uid_value(sixty_five.as_bytes()),
            Err(UidError::TooLong { length: 65 })
        );
        // The tolerant check lets leading zeros through, and nothing else.
        assert_eq!(
            check_uid_tolerant(b"1.2.840.113619.2.55.3.0123"),
            Ok(TolerantUid {
                uid: "1.2.840.113619.2.55.3.0123",
                leading_zero: Some(22)
            })
        );
        assert_eq!(
            check_uid_tolerant(b"1.0.3"),
            Ok(TolerantUid {
                uid: "1.0.3",
                leading_zero: None
            })
        );
        for (uid, error) in [
            (&b"1.02..3"[..], UidError::EmptyComponent { position: 5 }),
            (b".1.2.3", UidError::EmptyComponent { position: 0 }),
            (b"1.2.3.", UidError::EmptyComponent { position: 6 }),
            (
                b"1.02.x",
                UidError::InvalidCharacter {
                    position: 5,
                    byte: b'x',
                },
            ),
        ] {
            assert_eq!(check_uid_tolerant(uid), Err(error), "{uid:?}");
            assert_eq!(check_uid(uid), Err(error), "{uid:?}");
        }
        assert_eq!(
            check_uid(b"1.2.03"),
            Err(UidError::LeadingZero { position: 4 })
        );
    }
}

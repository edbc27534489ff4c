//! The DICOMDIR: the Basic Directory IOD (PS3.3 Annex F) in a Part 10 file
//! named `DICOMDIR` at the root of a File-set.
//!
//! Offsets in the directory ((0004,1200), (0004,1202), (0004,1400),
//! (0004,1420)) count bytes from the first byte of the File Meta
//! Information (PS3.3 F.3.2.2), which begins with the 128-byte preamble
//! (PS3.10 §7.1): they are offsets from the file's first byte. Each points at
//! the Item tag of a Directory Record Sequence item.

pub mod reader;
pub mod writer;

use sluice_net::dimse::Tag;

/// Media Storage Directory Storage, the DICOMDIR's SOP class.
pub const MEDIA_STORAGE_DIRECTORY_STORAGE: &str = "1.2.840.10008.1.3.10";

/// File-set ID (0004,1130).
pub const FILE_SET_ID: Tag = Tag(0x0004, 0x1130);
/// Offset of the First Directory Record of the Root Directory Entity.
pub const FIRST_ROOT_RECORD: Tag = Tag(0x0004, 0x1200);
/// Offset of the Last Directory Record of the Root Directory Entity.
pub const LAST_ROOT_RECORD: Tag = Tag(0x0004, 0x1202);
/// File-set Consistency Flag (0004,1212).
pub const FILE_SET_CONSISTENCY_FLAG: Tag = Tag(0x0004, 0x1212);
/// Directory Record Sequence (0004,1220).
pub const DIRECTORY_RECORD_SEQUENCE: Tag = Tag(0x0004, 0x1220);
/// Offset of the Next Directory Record (0004,1400).
pub const NEXT_RECORD: Tag = Tag(0x0004, 0x1400);
/// Record In-use Flag (0004,1410).
pub const RECORD_IN_USE: Tag = Tag(0x0004, 0x1410);
/// Offset of Referenced Lower-Level Directory Entity (0004,1420).
pub const LOWER_LEVEL: Tag = Tag(0x0004, 0x1420);
/// Directory Record Type (0004,1430).
pub const RECORD_TYPE: Tag = Tag(0x0004, 0x1430);
/// Referenced File ID (0004,1500).
pub const REFERENCED_FILE_ID: Tag = Tag(0x0004, 0x1500);
/// Referenced SOP Class UID in File (0004,1510).
pub const REFERENCED_SOP_CLASS: Tag = Tag(0x0004, 0x1510);
/// Referenced SOP Instance UID in File (0004,1511).
pub const REFERENCED_SOP_INSTANCE: Tag = Tag(0x0004, 0x1511);
/// Referenced Transfer Syntax UID in File (0004,1512).
pub const REFERENCED_TRANSFER_SYNTAX: Tag = Tag(0x0004, 0x1512);

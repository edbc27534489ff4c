//! The `u64` tag a core gives every io operation: what it is for in the top
//! byte, and below it the connection serial, job key or round it belongs to.
//! The handler routes each completion by its tag's kind.

/// What an operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagKind {
    /// A send on a connection (value: its serial).
    Send = 1,
    /// A connection's ARTIM or idle timer (value: its serial).
    ConnTimer = 2,
    /// A job's temporary file opened (value: its key).
    Open = 3,
    /// A job's write (value: its key).
    Write = 4,
    /// A job's `fdatasync` (value: its key).
    SyncData = 5,
    /// A job's rename into its area (value: its key).
    Rename = 6,
    /// A directory opened for its fsync round (value: the round).
    DirOpen = 7,
    /// A directory's fsync (value: the round).
    DirSync = 8,
    /// The group-commit window.
    CommitWindow = 9,
    /// Nobody waits for it (closes, unlinks).
    Ignored = 10,
    /// An outbound connection's connect (value: its serial).
    Connect = 11,
    /// The in-doubt clears' timer.
    ClearTimer = 12,
    /// The end of the shutdown's drain time.
    DrainDeadline = 13,
    /// A C-FIND's next page (value: the association's serial).
    FindStep = 14,
    /// A Q/R sender's file opened (value: the serial of the association
    /// that carries its C-STOREs).
    RetrieveOpen = 15,
    /// A Q/R sender's file read (value: as `RetrieveOpen`).
    RetrieveRead = 16,
    /// A C-MOVE sub-association's connect (value: its serial).
    RetrieveConnect = 17,
    /// The next epoch of retrieval's share of the core (value: 0).
    RetrieveShare = 18,
    /// A segment's flush round (value: the round).
    SegmentSync = 19,
    /// A data-set PDV's rest received straight into its record buffer
    /// (value: the association's serial).
    RecvIntoRecord = 20,
    /// Headers, a command or a small value received exactly into the
    /// connection's buffer (value: the association's serial).
    RecvExact = 21,
    /// The segments' flush window: held flush rounds are submitted.
    FlushWindow = 22,
}

const KIND_SHIFT: u32 = 56;

/// Largest value a tag carries below its kind.
pub(crate) const VALUE_MAX: u64 = (1 << KIND_SHIFT) - 1;

const KINDS: [TagKind; 22] = [
    TagKind::Send,
    TagKind::ConnTimer,
    TagKind::Open,
    TagKind::Write,
    TagKind::SyncData,
    TagKind::Rename,
    TagKind::DirOpen,
    TagKind::DirSync,
    TagKind::CommitWindow,
    TagKind::Ignored,
    TagKind::Connect,
    TagKind::ClearTimer,
    TagKind::DrainDeadline,
    TagKind::FindStep,
    TagKind::RetrieveOpen,
    TagKind::RetrieveRead,
    TagKind::RetrieveConnect,
    TagKind::RetrieveShare,
    TagKind::SegmentSync,
    TagKind::RecvIntoRecord,
    TagKind::RecvExact,
    TagKind::FlushWindow,
];

/// The tag of an operation of `kind` for `value`.
pub(crate) fn tag(kind: TagKind, value: u64) -> u64 {
    debug_assert!(value <= VALUE_MAX, "tag value {value} too large");
    ((kind as u64) << KIND_SHIFT) | (value & VALUE_MAX)
}

/// A tag's kind (`None` for a tag no core made) and value.
pub(crate) fn split(tag: u64) -> (Option<TagKind>, u64) {
    let code = tag >> KIND_SHIFT;
    let kind = KINDS.iter().copied().find(|kind| *kind as u64 == code);
    (kind, tag & VALUE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for kind in KINDS {
            assert_eq!(split(tag(kind, 0)), (Some(kind), 0));
            assert_eq!(split(tag(kind, VALUE_MAX)), (Some(kind), VALUE_MAX));
        }
        assert_eq!(split(0).0, None);
        assert_eq!(split(u64::MAX).0, None);
    }
}

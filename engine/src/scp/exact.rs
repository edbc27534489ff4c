//! Receiving exactly (docs/design/segments.md, "Receiving exactly"): on a
//! plain association that sends large data PDVs, the pooled multishot
//! receive is kept from running ahead of the handler. Headers, commands
//! and small values are received into a small buffer of the connection
//! ([`Next::Buffer`], no `MSG_WAITALL`, so never waiting for bytes that may
//! not come): a header inside a data set exactly, a message's start or a
//! small value with whatever follows it up to the buffer's size (so a
//! command, the data set's first small PDV and the next headers take one
//! receive, not three: docs/design/segments.md, "Server CPU at 512 KB,
//! session 10"); and each large data PDV's value (or its rest) straight
//! into its place in the record buffer ([`Next::Record`]); so the bytes of
//! a data set land in place even when the peer writes whole instances at
//! once. Anything else (a control PDU's
//! body, a value too large for the buffer that is not a record's, a PDV
//! between the two sizes, a lend refused) goes back to the pooled receive,
//! and an association whose data set had no large PDV leaves the mode at
//! its end: small instances pay nothing.
//!
//! [`Exact`] is the connection's part: whether the mode is on, the buffer,
//! and the decision of the next receive from where the endpoint's stream
//! is ([`sluice_net::endpoint::Ahead`]). The handler carries it out.

use sluice_io::{AlignedBuf, SubmitError};
use sluice_net::endpoint::Ahead;

/// The smallest data PDV that puts an association in the mode (at the end
/// of its data set), and the smallest rest of a data PDV received straight
/// into the record buffer while the pooled receive is armed (stopping that
/// receive costs more than copying less: docs/design/segments.md,
/// "Zero-copy receive").
pub(crate) const RECEIVE_INTO_RECORD_MIN: u32 = 64 * 1024;

/// The connection's buffer: headers, a command set, a small value and the
/// headers after it.
const BUF_LEN: usize = 8192;

/// A PDV item header, and a PDU header with the item header after it.
const ITEM_HEADER: usize = 6;
const PDU_AND_ITEM_HEADERS: usize = 12;

/// The next receive of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The pooled multishot receive (the runtime arms it again once no
    /// receive into a buffer is asked for).
    Pooled,
    /// Exactly `len` bytes, the rest of a streamed data PDV's value,
    /// straight into their place in the record buffer (`MSG_WAITALL`).
    Record(usize),
    /// At most `len` bytes into the connection's buffer, whatever has
    /// arrived (a header inside a data set: exactly its bytes, so the
    /// value after it lands in the record buffer).
    Buffer(usize),
}

/// A connection's exact receive (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Exact {
    /// The association's last data set had a data PDV of
    /// [`RECEIVE_INTO_RECORD_MIN`] or more (a plain association on the
    /// segments layout): headers and small values are received exactly.
    on: bool,
    /// A data set ended while `on` and the pooled receive may be armed:
    /// the next decision may stop it, once (the bytes it took first
    /// preempt the switch, and then the pooled receive goes on).
    switch_due: bool,
    /// The buffer when not lent (allocated at its first use).
    buf: Option<AlignedBuf>,
    /// The buffer is lent to a receive.
    lent: bool,
    /// The runtime cannot receive into a buffer (the portable backend).
    unsupported: bool,
}

impl Exact {
    /// The buffer is lent to a receive: nothing else arrives meanwhile.
    pub(crate) fn is_lent(&self) -> bool {
        self.lent
    }

    /// A data set ended; `pdv_max` is the largest value of its data PDVs,
    /// `eligible` says the association is plain and the layout segments.
    pub(crate) fn data_set_ended(&mut self, pdv_max: u32, eligible: bool) {
        self.on = eligible && !self.unsupported && pdv_max >= RECEIVE_INTO_RECORD_MIN;
        self.switch_due = self.on;
    }

    /// The next receive, from where the stream is (`ahead`; `None` when
    /// the connection cannot receive into a buffer now). `direct`: the
    /// last receive went into a buffer, so the pooled receive is stopped
    /// until this turn ends; else it is armed and stopping it costs a
    /// cancel and its final completion. `streaming`: a C-STORE's data set
    /// is arriving. `lend_preempted`: a lent record buffer of this
    /// instance came back unused (the pooled receive took the bytes).
    pub(crate) fn next(
        &mut self,
        ahead: Option<Ahead>,
        direct: bool,
        streaming: bool,
        lend_preempted: bool,
    ) -> Next {
        let exact = self.on && (direct || self.switch_due);
        let next = match ahead {
            None => Next::Pooled,
            Some(Ahead::Header { bytes, pdu }) => {
                if exact && !streaming {
                    // Between messages: whatever has arrived, up to the
                    // buffer (the command, the data set's first PDV and
                    // the first bytes of the next, in one receive).
                    Next::Buffer(BUF_LEN)
                } else if exact || (direct && streaming) {
                    Next::Buffer(bytes + if pdu { ITEM_HEADER } else { 0 })
                } else {
                    Next::Pooled
                }
            }
            Some(Ahead::Value {
                remaining,
                streamed,
                last,
                pdu_ends,
            }) => {
                let after = if pdu_ends {
                    PDU_AND_ITEM_HEADERS
                } else {
                    ITEM_HEADER
                };
                let large = remaining >= RECEIVE_INTO_RECORD_MIN;
                // With the pooled receive armed, only a large rest is worth
                // stopping it, once an instance; after a receive into a
                // buffer, the data set's last PDV too when exact.
                let into_record = if direct {
                    large || (exact && last)
                } else {
                    large && !lend_preempted
                };
                let remaining = remaining as usize;
                if exact && remaining + after <= BUF_LEN {
                    // A value that fits: with what follows it, up to the
                    // buffer (a data PDV's first bytes after it are copied,
                    // the rest lands in place; a receive is saved).
                    Next::Buffer(BUF_LEN)
                } else if streamed && into_record {
                    Next::Record(remaining)
                } else {
                    Next::Pooled
                }
            }
        };
        if !direct && next != Next::Pooled {
            self.switch_due = false;
        }
        next
    }

    /// The buffer, lent to a receive of at most `len` bytes.
    pub(crate) fn lend(&mut self, len: usize) -> AlignedBuf {
        debug_assert!(!self.lent && len <= BUF_LEN);
        self.lent = true;
        self.buf
            .take()
            .unwrap_or_else(|| AlignedBuf::zeroed(BUF_LEN))
    }

    /// The buffer back, from a receive (or refused: `error`).
    pub(crate) fn returned(&mut self, buf: AlignedBuf, error: Option<&SubmitError>) {
        self.lent = false;
        self.buf = Some(buf);
        self.refused(error);
    }

    /// A receive into a buffer was refused: on a runtime that cannot
    /// receive into one, the mode never comes back.
    pub(crate) fn refused(&mut self, error: Option<&SubmitError>) {
        if matches!(error, Some(SubmitError::Unsupported)) {
            self.unsupported = true;
            self.on = false;
            self.switch_due = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: usize, pdu: bool) -> Option<Ahead> {
        Some(Ahead::Header { bytes, pdu })
    }

    fn value(remaining: u32, streamed: bool, last: bool) -> Option<Ahead> {
        Some(Ahead::Value {
            remaining,
            streamed,
            last,
            pdu_ends: true,
        })
    }

    #[test]
    fn off_it_decides_as_the_zero_copy_receive_did() {
        let mut exact = Exact::default();
        // Between instances and inside commands: the pooled receive.
        assert_eq!(
            exact.next(header(6, true), true, false, false),
            Next::Pooled
        );
        assert_eq!(
            exact.next(value(200, false, true), true, false, false),
            Next::Pooled
        );
        // A large rest: into the record, armed or not, unless preempted.
        assert_eq!(
            exact.next(value(200_000, true, false), false, true, false),
            Next::Record(200_000)
        );
        assert_eq!(
            exact.next(value(200_000, true, false), false, true, true),
            Next::Pooled
        );
        assert_eq!(
            exact.next(value(1_000, true, true), true, true, false),
            Next::Pooled
        );
        // Headers inside a data set after a receive into a buffer.
        assert_eq!(
            exact.next(header(6, false), true, true, false),
            Next::Buffer(6)
        );
        assert_eq!(
            exact.next(header(6, true), true, true, false),
            Next::Buffer(12)
        );
        assert_eq!(
            exact.next(header(6, true), false, true, false),
            Next::Pooled
        );
    }

    #[test]
    fn on_it_receives_headers_commands_and_values_exactly() {
        let mut exact = Exact::default();
        exact.data_set_ended(RECEIVE_INTO_RECORD_MIN - 1, true);
        assert_eq!(
            exact.next(header(6, true), false, false, false),
            Next::Pooled
        );
        exact.data_set_ended(RECEIVE_INTO_RECORD_MIN, false);
        assert_eq!(
            exact.next(header(6, true), false, false, false),
            Next::Pooled
        );
        exact.data_set_ended(262_138, true);
        // The switch off the pooled receive, once: between messages,
        // whatever has arrived up to the buffer.
        assert_eq!(
            exact.next(header(6, true), false, false, false),
            Next::Buffer(BUF_LEN)
        );
        assert_eq!(
            exact.next(header(6, true), false, false, false),
            Next::Pooled
        );
        // Then into buffers: a command's value with what follows it, a
        // header inside a data set exactly.
        assert_eq!(
            exact.next(value(180, false, true), true, false, false),
            Next::Buffer(BUF_LEN)
        );
        assert_eq!(
            exact.next(header(6, true), true, false, false),
            Next::Buffer(BUF_LEN)
        );
        assert_eq!(
            exact.next(header(2, false), true, true, false),
            Next::Buffer(2)
        );
        assert_eq!(
            exact.next(header(6, true), true, true, false),
            Next::Buffer(12)
        );
        assert_eq!(
            exact.next(value(262_138, true, false), true, true, false),
            Next::Record(262_138)
        );
        // Between the buffer and the threshold: the record when it ends
        // the data set, else the pooled receive.
        assert_eq!(
            exact.next(value(20_000, true, true), true, true, false),
            Next::Record(20_000)
        );
        assert_eq!(
            exact.next(value(20_000, true, false), true, true, false),
            Next::Pooled
        );
        assert_eq!(
            exact.next(value(20_000, false, true), true, true, false),
            Next::Pooled
        );
        // A value that fits takes what follows it too, up to the buffer;
        // one that does not with its headers goes to the record.
        let small = |remaining| {
            Some(Ahead::Value {
                remaining,
                streamed: true,
                last: true,
                pdu_ends: false,
            })
        };
        assert_eq!(
            exact.next(small(100), true, true, false),
            Next::Buffer(BUF_LEN)
        );
        assert_eq!(
            exact.next(small(BUF_LEN as u32 - 6), true, true, false),
            Next::Buffer(BUF_LEN)
        );
        assert_eq!(
            exact.next(small(BUF_LEN as u32 - 5), true, true, false),
            Next::Record(BUF_LEN - 5)
        );
        // Nowhere to go exactly (a control PDU's body): the pooled receive.
        assert_eq!(exact.next(None, true, false, false), Next::Pooled);
        // A runtime that cannot: never again.
        exact.refused(Some(&SubmitError::Unsupported));
        exact.data_set_ended(262_138, true);
        assert_eq!(
            exact.next(header(6, true), true, false, false),
            Next::Pooled
        );
    }
}

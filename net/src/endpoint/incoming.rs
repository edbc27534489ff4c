//! What comes out of an [`Endpoint`](super::Endpoint) on the way in: the
//! [`Incoming`] events, how a data set is delivered ([`DataSet`]), the DIMSE
//! rules a peer can break ([`Violation`]), and the message reassembly that
//! turns PDV fragments into them ([`Assembly`]).
//!
//! The reassembly owns one rule of PS3.7 §9.3.1 / PS3.8 Annex E: a message
//! is its command set's PDVs, then (if the command says one follows) its data
//! set's PDVs, on one presentation context, never interleaved with another
//! message. Anything else from the peer is a [`Violation`].

use std::ops::Range;

use crate::assoc::Indication;
use crate::dimse::{Command, CommandField, DimseError, COMMAND_SET_LENGTH_MAX};
use crate::pdu::DecodeError;

/// One thing the peer did, in the order it did it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// An upper-layer indication or confirmation: an A-ASSOCIATE-RQ to
    /// answer ([`Endpoint::answer_association`](super::Endpoint::answer_association)),
    /// the AC or RJ of ours, a release to answer
    /// ([`Endpoint::answer_release`](super::Endpoint::answer_release)) or its
    /// confirmation, an abort. Never [`Indication::PData`]: the endpoint
    /// consumes it and hands out the PDVs as [`Incoming::Command`] and
    /// [`Incoming::Data`].
    Indication(Indication),
    /// A complete, decoded command set, received on an accepted
    /// presentation context.
    Command {
        /// The presentation context it arrived on.
        context_id: u8,
        /// The command.
        command: Command,
        /// Whether and how its data set comes.
        data_set: DataSet,
    },
    /// Bytes of a streamed data set ([`DataSet::Streamed`]): `range` is a
    /// range of the `input` slice given to
    /// [`Endpoint::receive`](super::Endpoint::receive), so a caller holding
    /// that slice in a refcounted receive buffer can lend the range onward
    /// (to a file write) without copying it.
    Data {
        /// The presentation context (the command's).
        context_id: u8,
        /// Where the bytes are in `input`.
        range: Range<usize>,
        /// This range ends the data set.
        last: bool,
    },
    /// The peer broke the protocol. The endpoint has already answered it: an
    /// A-ABORT (or, for an unreadable A-ASSOCIATE-RQ, an A-ASSOCIATE-RJ) is
    /// queued and it reads nothing more. For a malformed PDU the state
    /// machine's [`Indication::Aborted`] follows; for a DIMSE violation
    /// nothing follows (the abort is ours, AA-1).
    Violation(Violation),
}

/// How the data set of an [`Incoming::Command`] is delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataSet {
    /// The command says no data set follows (Command Data Set Type 0101).
    Absent,
    /// The data set follows as [`Incoming::Data`] ranges, the last one with
    /// `last` set. Only C-STORE-RQ data sets are streamed
    /// ([`streams_data_set`]): they are the large ones, on either role (a
    /// Storage SCP, a C-GET SCU receiving its sub-operations).
    Streamed,
    /// The data set, collected whole before the command was handed out
    /// (responses' identifiers, N-ACTION and N-EVENT-REPORT information,
    /// C-FIND/C-MOVE/C-GET identifiers).
    Collected(Vec<u8>),
    /// The data set to collect was longer than
    /// [`EndpointConfig::collect_length_max`](super::EndpointConfig::collect_length_max):
    /// it was read and dropped, so the caller can answer with a status
    /// instead of aborting.
    TooLong {
        /// Its length, in bytes.
        length: u64,
    },
}

/// Whether the data set announced by `command` comes out streamed
/// ([`DataSet::Streamed`]) rather than collected. True for C-STORE-RQ only.
pub fn streams_data_set(command: &Command) -> bool {
    matches!(command, Command::CStoreRq(_))
}

/// A DIMSE-level rule the peer broke (or a PDU that does not decode).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Bytes that do not decode as a PDU.
    #[error("malformed PDU: {0}")]
    Pdu(DecodeError),
    /// A command set that does not decode.
    #[error("undecodable command set: {0}")]
    Command(DimseError),
    /// A command set longer than [`COMMAND_SET_LENGTH_MAX`].
    #[error("command set longer than {limit} bytes")]
    CommandTooLong {
        /// The limit.
        limit: usize,
    },
    /// A command on a presentation context that was not accepted.
    #[error("command on presentation context {context_id}, which was not accepted")]
    ContextNotAccepted {
        /// The context ID.
        context_id: u8,
    },
    /// A data set PDV with no command before it announcing one.
    #[error("data set PDV on presentation context {context_id} without a command announcing one")]
    DataWithoutCommand {
        /// The context ID.
        context_id: u8,
    },
    /// A data set on another presentation context than its command.
    #[error("data set on presentation context {data} after a command on {command}")]
    DataOnOtherContext {
        /// The command's context.
        command: u8,
        /// The data set's context.
        data: u8,
    },
    /// The fragments of one command set on two presentation contexts.
    #[error("command set begun on presentation context {first} continued on {then}")]
    CommandOnOtherContext {
        /// The first fragment's context.
        first: u8,
        /// The later fragment's context.
        then: u8,
    },
    /// A command before the data set of the previous one ended.
    #[error("command on presentation context {context_id} before the data set of the previous {previous} ended")]
    CommandBeforeDataSetEnded {
        /// The new command's context.
        context_id: u8,
        /// The command whose data set was still coming.
        previous: CommandField,
    },
}

/// One PDV fragment, as the reassembly needs it.
#[derive(Clone, Debug)]
pub(super) struct Fragment<'a> {
    pub context_id: u8,
    pub is_command: bool,
    /// The fragment ends its command set or data set.
    pub last: bool,
    pub bytes: &'a [u8],
    /// Where `bytes` are in the caller's input.
    pub range: Range<usize>,
}

/// Where the reassembly is between PDVs.
#[derive(Debug)]
pub(super) enum Assembly {
    /// Between messages.
    Idle,
    /// Collecting a command set's fragments (in `Reassembly::command_bytes`).
    Command { context_id: u8 },
    /// Handing out the data set of the command given out last.
    Streaming {
        context_id: u8,
        command_field: CommandField,
    },
    /// Collecting the data set of `command`, which is held until it ends.
    Collecting {
        context_id: u8,
        command: Box<Command>,
        bytes: Vec<u8>,
        length: u64,
    },
}

/// DIMSE message reassembly: PDV fragments in, [`Incoming::Command`] and
/// [`Incoming::Data`] out.
#[derive(Debug)]
pub(super) struct Reassembly {
    assembly: Assembly,
    /// The command set being collected; kept between messages so its
    /// capacity is reused.
    command_bytes: Vec<u8>,
    collect_length_max: usize,
}

impl Reassembly {
    pub fn new(collect_length_max: usize) -> Self {
        Reassembly {
            assembly: Assembly::Idle,
            command_bytes: Vec::new(),
            collect_length_max,
        }
    }

    /// Forgets the message in progress (the association ended or was aborted).
    pub fn reset(&mut self) {
        self.assembly = Assembly::Idle;
        self.command_bytes.clear();
    }

    /// Whether a data-set fragment on `context_id` would be handed out now
    /// as [`Incoming::Data`] (a streamed data set on that context).
    pub fn streams_on(&self, context_id: u8) -> bool {
        matches!(self.assembly, Assembly::Streaming { context_id: streaming, .. } if streaming == context_id)
    }

    /// Whether a streamed data set is being handed out (its last fragment
    /// not yet seen).
    pub fn is_streaming(&self) -> bool {
        matches!(self.assembly, Assembly::Streaming { .. })
    }

    /// Takes one fragment. `accepted` tells whether a context ID was
    /// accepted. `Ok(None)`: nothing to hand out yet.
    pub fn fragment(
        &mut self,
        fragment: Fragment<'_>,
        accepted: impl Fn(u8) -> bool,
    ) -> Result<Option<Incoming>, Violation> {
        debug_assert!(fragment.range.len() == fragment.bytes.len());
        if fragment.is_command {
            self.command_fragment(fragment, accepted)
        } else {
            self.data_fragment(fragment)
        }
    }

    fn command_fragment(
        &mut self,
        fragment: Fragment<'_>,
        accepted: impl Fn(u8) -> bool,
    ) -> Result<Option<Incoming>, Violation> {
        let context_id = fragment.context_id;
        match &self.assembly {
            Assembly::Idle => {
                debug_assert!(self.command_bytes.is_empty());
                if !accepted(context_id) {
                    return Err(Violation::ContextNotAccepted { context_id });
                }
                self.assembly = Assembly::Command { context_id };
            }
            Assembly::Command { context_id: first } => {
                if *first != context_id {
                    return Err(Violation::CommandOnOtherContext {
                        first: *first,
                        then: context_id,
                    });
                }
            }
            Assembly::Streaming { command_field, .. } => {
                return Err(Violation::CommandBeforeDataSetEnded {
                    context_id,
                    previous: *command_field,
                })
            }
            Assembly::Collecting { command, .. } => {
                return Err(Violation::CommandBeforeDataSetEnded {
                    context_id,
                    previous: command.command_field(),
                })
            }
        }
        if self
            .command_bytes
            .len()
            .saturating_add(fragment.bytes.len())
            > COMMAND_SET_LENGTH_MAX
        {
            return Err(Violation::CommandTooLong {
                limit: COMMAND_SET_LENGTH_MAX,
            });
        }
        self.command_bytes.extend_from_slice(fragment.bytes);
        if !fragment.last {
            return Ok(None);
        }
        let decoded = Command::decode(&self.command_bytes);
        self.command_bytes.clear();
        self.assembly = Assembly::Idle;
        let command = decoded.map_err(Violation::Command)?;
        if !command.data_set_present() {
            return Ok(Some(Incoming::Command {
                context_id,
                command,
                data_set: DataSet::Absent,
            }));
        }
        if streams_data_set(&command) {
            self.assembly = Assembly::Streaming {
                context_id,
                command_field: command.command_field(),
            };
            return Ok(Some(Incoming::Command {
                context_id,
                command,
                data_set: DataSet::Streamed,
            }));
        }
        self.assembly = Assembly::Collecting {
            context_id,
            command: Box::new(command),
            bytes: Vec::new(),
            length: 0,
        };
        Ok(None)
    }

    fn data_fragment(&mut self, fragment: Fragment<'_>) -> Result<Option<Incoming>, Violation> {
        let context_id = fragment.context_id;
        // Taken out and put back unless the data set ends (a violation
        // resets the reassembly anyway).
        match std::mem::replace(&mut self.assembly, Assembly::Idle) {
            Assembly::Idle | Assembly::Command { .. } => {
                Err(Violation::DataWithoutCommand { context_id })
            }
            Assembly::Streaming {
                context_id: command_context_id,
                command_field,
            } => {
                same_context(command_context_id, context_id)?;
                if !fragment.last {
                    self.assembly = Assembly::Streaming {
                        context_id,
                        command_field,
                    };
                    if fragment.bytes.is_empty() {
                        // An empty PDV that does not end the data set says nothing.
                        return Ok(None);
                    }
                }
                Ok(Some(Incoming::Data {
                    context_id,
                    range: fragment.range,
                    last: fragment.last,
                }))
            }
            Assembly::Collecting {
                context_id: command_context_id,
                command,
                mut bytes,
                length,
            } => {
                same_context(command_context_id, context_id)?;
                let length = length.saturating_add(fragment.bytes.len() as u64);
                let within_limit = length <= self.collect_length_max as u64;
                if within_limit {
                    bytes.extend_from_slice(fragment.bytes);
                } else if !bytes.is_empty() {
                    // Over the limit: what was kept goes, the rest is only counted.
                    bytes = Vec::new();
                }
                if !fragment.last {
                    self.assembly = Assembly::Collecting {
                        context_id,
                        command,
                        bytes,
                        length,
                    };
                    return Ok(None);
                }
                let data_set = if within_limit {
                    debug_assert_eq!(bytes.len() as u64, length);
                    DataSet::Collected(bytes)
                } else {
                    debug_assert!(bytes.is_empty());
                    DataSet::TooLong { length }
                };
                Ok(Some(Incoming::Command {
                    context_id,
                    command: *command,
                    data_set,
                }))
            }
        }
    }
}

/// A data set PDV on `data` belongs to the command on `command` only if they are one context.
fn same_context(command: u8, data: u8) -> Result<(), Violation> {
    if command == data {
        Ok(())
    } else {
        Err(Violation::DataOnOtherContext { command, data })
    }
}

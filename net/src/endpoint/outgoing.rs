//! The way back: DIMSE messages encoded into the endpoint's transmit
//! buffer, fragmented within the peer's Maximum Length, after the state
//! machine allowed P-DATA (Evt9) and on an accepted presentation context.
//!
//! Two shapes: a whole message whose data set is in memory
//! ([`Endpoint::send_message`]: responses, identifiers, N-ACTION and
//! N-EVENT-REPORT information), and a command whose (large) data set the
//! caller sends from its own buffers or files without copying it
//! ([`Endpoint::send_command_for_data_set`], which returns the
//! [`PDataFragmenter`] that frames it).

use super::Endpoint;
use crate::assoc::{AssocError, Input};
use crate::dimse::{Command, CommandField, DimseError};
use crate::pdata::{encode_message, PDataFragmenter};
use crate::pdu::EncodeError;

/// Why a message was not queued. Nothing was queued in any case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The state does not allow P-DATA now (not established, released, aborting).
    #[error(transparent)]
    NotAllowed(#[from] AssocError),
    /// The presentation context was not accepted.
    #[error("presentation context {context_id} was not accepted")]
    ContextNotAccepted {
        /// The context ID.
        context_id: u8,
    },
    /// The command's Command Data Set Type disagrees with the data set given.
    #[error("{command_field} announces {} data set but {} was given", if *announced { "a" } else { "no" }, if *announced { "none" } else { "one" })]
    DataSetMismatch {
        /// The command.
        command_field: CommandField,
        /// Whether the command announces a data set.
        announced: bool,
    },
    /// The command set cannot be encoded.
    #[error("cannot encode the command set: {0}")]
    Command(#[from] DimseError),
    /// The message cannot be framed (the peer's maximum leaves no room).
    #[error("cannot frame the message: {0}")]
    Frame(#[from] EncodeError),
}

impl Endpoint {
    /// Queues `command` and, when it announces one, its `data_set`, both
    /// framed at the peer's Maximum Length on `context_id`.
    pub fn send_message(
        &mut self,
        context_id: u8,
        command: &Command,
        data_set: Option<&[u8]>,
    ) -> Result<(), SendError> {
        if command.data_set_present() != data_set.is_some() {
            return Err(SendError::DataSetMismatch {
                command_field: command.command_field(),
                announced: command.data_set_present(),
            });
        }
        let pdu_length_max_peer = self.prepare_send(context_id)?;
        let start = self.transmit.len();
        let result = self.queue_command(context_id, command, pdu_length_max_peer);
        let result = result.and_then(|()| match data_set {
            Some(data_set) => Ok(encode_message(
                context_id,
                false,
                data_set,
                pdu_length_max_peer,
                &mut self.transmit,
            )?),
            None => Ok(()),
        });
        if result.is_err() {
            self.transmit.truncate(start);
        }
        result
    }

    /// Queues `command`, which announces a data set of `data_set_length`
    /// bytes that the caller sends itself, right after the bytes of
    /// [`Endpoint::poll_transmit`], as the PDUs the returned fragmenter
    /// describes (headers only: a caller can `writev` them with slices of
    /// its own buffer or file, no copy). No other message may be sent
    /// before that data set ends (PS3.8 Annex E: messages do not interleave).
    pub fn send_command_for_data_set(
        &mut self,
        context_id: u8,
        command: &Command,
        data_set_length: u64,
    ) -> Result<PDataFragmenter, SendError> {
        if !command.data_set_present() {
            return Err(SendError::DataSetMismatch {
                command_field: command.command_field(),
                announced: false,
            });
        }
        let pdu_length_max_peer = self.prepare_send(context_id)?;
        // Built first, so an error queues nothing.
        let fragmenter = Self::fragmenter(context_id, data_set_length, pdu_length_max_peer)?;
        let start = self.transmit.len();
        if let Err(error) = self.queue_command(context_id, command, pdu_length_max_peer) {
            self.transmit.truncate(start);
            return Err(error);
        }
        Ok(fragmenter)
    }

    /// Queues `command`, which announces a data set whose length is not
    /// known yet: its bytes follow as parts ([`Endpoint::send_data_set_part`])
    /// as the caller gets them, the last part flagged. No other message may
    /// be sent before that part (PS3.8 Annex E: messages do not interleave).
    pub fn send_command_before_parts(
        &mut self,
        context_id: u8,
        command: &Command,
    ) -> Result<(), SendError> {
        if !command.data_set_present() {
            return Err(SendError::DataSetMismatch {
                command_field: command.command_field(),
                announced: false,
            });
        }
        let pdu_length_max_peer = self.prepare_send(context_id)?;
        let start = self.transmit.len();
        let result = self.queue_command(context_id, command, pdu_length_max_peer);
        if result.is_err() {
            self.transmit.truncate(start);
        }
        result
    }

    /// Queues one part of the data set announced by
    /// [`Endpoint::send_command_before_parts`], framed at the peer's
    /// Maximum Length; `last` flags its final fragment as the data set's
    /// last (an empty last part is one empty fragment).
    pub fn send_data_set_part(
        &mut self,
        context_id: u8,
        part: &[u8],
        last: bool,
    ) -> Result<(), SendError> {
        let pdu_length_max_peer = self.prepare_send(context_id)?;
        let fragmenter =
            PDataFragmenter::part(context_id, part.len() as u64, pdu_length_max_peer, last)?;
        for fragment in fragmenter {
            self.transmit.extend_from_slice(&fragment.headers);
            let value = fragment
                .value_range()
                .and_then(|range| part.get(range))
                .unwrap_or_default();
            self.transmit.extend_from_slice(value);
        }
        Ok(())
    }

    /// A P-DATA request (Evt9): `Ok` when the state allows sending P-DATA.
    fn pdata_request(&mut self) -> Result<(), AssocError> {
        self.actions.clear();
        self.association
            .handle_into(Input::PDataRequest, &mut self.actions)?;
        // DT-1/AR-7 have no action of their own.
        debug_assert!(self.actions.is_empty());
        Ok(())
    }

    /// A fragmenter for a data set the caller frames itself, on this context.
    fn fragmenter(
        context_id: u8,
        data_set_length: u64,
        pdu_length_max_peer: u32,
    ) -> Result<PDataFragmenter, SendError> {
        Ok(PDataFragmenter::new(
            context_id,
            false,
            data_set_length,
            pdu_length_max_peer,
        )?)
    }

    /// Checks that P-DATA may be sent on `context_id`; the peer's Maximum Length.
    fn prepare_send(&mut self, context_id: u8) -> Result<u32, SendError> {
        self.pdata_request()?;
        let negotiated =
            self.negotiated()
                .ok_or(SendError::NotAllowed(AssocError::PDataBeforeEstablished {
                    state: self.state(),
                }))?;
        if negotiated.presentation_context(context_id).is_none() {
            return Err(SendError::ContextNotAccepted { context_id });
        }
        Ok(negotiated.pdu_length_max_peer)
    }

    fn queue_command(
        &mut self,
        context_id: u8,
        command: &Command,
        pdu_length_max_peer: u32,
    ) -> Result<(), SendError> {
        self.command_scratch.clear();
        command.encode_into(&mut self.command_scratch)?;
        encode_message(
            context_id,
            true,
            &self.command_scratch,
            pdu_length_max_peer,
            &mut self.transmit,
        )?;
        Ok(())
    }
}

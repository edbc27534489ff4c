//! The P-DATA-TF fast path: framing presentation data values without copying
//! them, and writing P-DATA-TF headers for a sender.
//!
//! Three tools, one wire format (PS3.8 §9.3.5, Annex E):
//! - [`StreamDecoder`]: fed successive receive-buffer slices of any size (a
//!   PDU may span many reads, a read may hold many PDUs). It yields
//!   [`StreamEvent`]s whose value bytes are borrowed from the slice it was
//!   given; a PDV that spans reads comes out as several [`PdvFragment`]s.
//!   Control PDUs (small) are buffered internally up to their cap and decoded
//!   with [`crate::pdu`]. "Need more bytes" is a normal answer.
//! - [`frame_pdu`]: for a caller holding whole PDUs in one buffer, yields a
//!   [`Frame`]; a P-DATA-TF iterates its [`Pdv`]s, borrowed.
//! - [`PDataFragmenter`] and [`encode_message`]: split a command set or data
//!   set into PDVs/PDUs within the peer's maximum length. The fragmenter only
//!   produces headers, so a sender can `writev` headers and slices of its own
//!   buffer (or file) without assembling PDUs.
//!
//! Checks on every P-DATA-TF: PDU-length within the negotiated maximum (a
//! specific error), each PDV item-length at least 2 and within its PDU. The
//! presentation context ID is not judged here: the service layer knows
//! which contexts were accepted.

use crate::pdu::{
    decode_pdu_body, peek_header, DecodeError, DecodeLimits, EncodeError, Pdu, PduType,
    PDU_HEADER_LENGTH, PDV_ITEM_HEADER_LENGTH,
};

/// Message control header bit 0: command information (PS3.8 E.2).
const CONTROL_COMMAND: u8 = 0x01;
/// Message control header bit 1: last fragment (PS3.8 E.2).
const CONTROL_LAST: u8 = 0x02;

/// One presentation data value, borrowed from the buffer it was framed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pdv<'a> {
    /// Presentation-context-ID (PDV item byte 5).
    pub presentation_context_id: u8,
    /// Message control header bit 0: command (true) or data set.
    pub is_command: bool,
    /// Message control header bit 1: last fragment of the command or data set.
    pub is_last: bool,
    /// The fragment's bytes (after the message control header).
    pub bytes: &'a [u8],
}

/// Part of one PDV's value, borrowed from the slice given to
/// [`StreamDecoder::next_event`]. A PDV whose value spans reads comes out
/// as several fragments; concatenated they are the PDV's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PdvFragment<'a> {
    /// Presentation-context-ID of the PDV.
    pub presentation_context_id: u8,
    /// Message control header bit 0 of the PDV.
    pub is_command: bool,
    /// Message control header bit 1 of the PDV: this PDV ends the command or
    /// data set (the message is complete when `is_last && pdv_complete`).
    pub is_last: bool,
    /// These bytes of the PDV's value. They are always the last
    /// `bytes.len()` bytes consumed by the step that yields the fragment,
    /// `input[step.consumed - bytes.len()..step.consumed]`, so a caller that
    /// owns `input` (a refcounted receive buffer) can lend that range onward
    /// instead of copying it.
    pub bytes: &'a [u8],
    /// Offset of `bytes` within the PDV's value.
    pub value_offset: u32,
    /// True on the fragment that ends the PDV.
    pub pdv_complete: bool,
}

/// The rest of a PDV value the decoder is inside
/// ([`StreamDecoder::pending_value`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingValue {
    /// Presentation-context-ID of the PDV.
    pub presentation_context_id: u8,
    /// Message control header bit 0 of the PDV.
    pub is_command: bool,
    /// Message control header bit 1 of the PDV: it ends its command or
    /// data set.
    pub is_last: bool,
    /// Value bytes still to come.
    pub remaining: u32,
    /// Bytes of its PDU after the value: 0 when a PDU header follows it,
    /// else a PDV item header does.
    pub pdu_remaining: u32,
}

/// What the stream decoder found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    /// A P-DATA-TF header passed the length checks; its PDVs follow. Tell the
    /// association state machine (`Input::PDataReceived`) before handling them.
    PDataStart {
        /// The PDU-length field.
        pdu_length: u32,
    },
    /// Bytes of a PDV value.
    PdvFragment(PdvFragment<'a>),
    /// A complete control PDU (never [`Pdu::PDataTf`]).
    Control(Pdu),
}

/// One step of the stream decoder: an event, if one was complete, and how
/// many bytes of the given slice were consumed. With no event, the whole
/// slice was consumed into the decoder's state and it needs more bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step<'a> {
    /// The event found, `None` when the slice ran out first.
    pub event: Option<StreamEvent<'a>>,
    /// Bytes of the slice consumed by this step.
    pub consumed: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamState {
    /// Collecting a 6-byte PDU header into `header`.
    PduHeader,
    /// Collecting a 6-byte PDV item header into `header`.
    PdvHeader { pdu_remaining: u32 },
    /// Handing out a PDV value.
    PdvValue {
        pdu_remaining: u32,
        presentation_context_id: u8,
        is_command: bool,
        is_last: bool,
        value_offset: u32,
        value_remaining: u32,
    },
    /// Buffering a control PDU body into `control`.
    Control { pdu_type: PduType, pdu_length: u32 },
    /// An error was returned; the stream cannot be resynchronised.
    Failed,
}

/// Incremental PDU decoder for a receive path that gets bytes in pieces of
/// any size. Memory: 6 header bytes plus one control PDU body, at most
/// [`DecodeLimits::associate_length_max`].
///
/// A completion-driven caller loops over each received slice:
/// ```
/// # use sluice_net::pdata::{StreamDecoder, StreamEvent};
/// # use sluice_net::pdu::DecodeLimits;
/// # let received: &[u8] = &[0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0];
/// let mut decoder = StreamDecoder::new(DecodeLimits::default());
/// let mut offset = 0;
/// while let Some(rest) = received.get(offset..) {
///     let step = decoder.next_event(rest)?;
///     offset += step.consumed;
///     let Some(event) = step.event else { break }; // all consumed; await the next read
///     match event {
///         StreamEvent::PDataStart { .. } => { /* tell the state machine */ }
///         StreamEvent::PdvFragment(fragment) => { /* write fragment.bytes */ }
///         StreamEvent::Control(pdu) => { /* feed the state machine */ }
///     }
/// }
/// # Ok::<(), sluice_net::pdu::DecodeError>(())
/// ```
#[derive(Debug)]
pub struct StreamDecoder {
    limits: DecodeLimits,
    state: StreamState,
    header: [u8; 6],
    header_filled: usize,
    control: Vec<u8>,
    /// Type of the PDU whose header was read last.
    current_pdu_type: Option<PduType>,
    /// Type of the PDU the returned error was found in, when known.
    failed_pdu_type: Option<PduType>,
    /// The largest data-set (not command) PDV value whose header was read
    /// since [`StreamDecoder::take_data_value_max`] last took it.
    data_value_max: u32,
}

impl StreamDecoder {
    /// A decoder at a PDU boundary.
    pub fn new(limits: DecodeLimits) -> Self {
        StreamDecoder {
            limits,
            state: StreamState::PduHeader,
            header: [0; 6],
            header_filled: 0,
            control: Vec::new(),
            current_pdu_type: None,
            failed_pdu_type: None,
            data_value_max: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    /// Sets the largest P-DATA-TF PDU-length accepted from now on: the
    /// Maximum Length we announced, once the association is negotiated.
    pub fn set_pdata_length_max(&mut self, pdata_length_max: u32) {
        self.limits.pdata_length_max = pdata_length_max;
    }

    /// True between PDUs with no partial PDU buffered: a transport close here
    /// loses nothing.
    pub fn is_at_pdu_boundary(&self) -> bool {
        self.state == StreamState::PduHeader && self.header_filled == 0
    }

    /// The PDV whose value is being handed out, when the decoder is inside
    /// one with bytes still to come: its context, whether it is a command,
    /// and how many value bytes remain. The next that many bytes of the
    /// stream are that value's, whatever they hold, so a caller may receive
    /// them wherever it wants them and feed them here after (they come out
    /// as one fragment when fed in one slice).
    pub fn pending_value(&self) -> Option<PendingValue> {
        match self.state {
            StreamState::PdvValue {
                pdu_remaining,
                presentation_context_id,
                is_command,
                is_last,
                value_remaining,
                ..
            } if value_remaining > 0 => Some(PendingValue {
                presentation_context_id,
                is_command,
                is_last,
                remaining: value_remaining,
                pdu_remaining,
            }),
            _ => None,
        }
    }

    /// Whether [`StreamDecoder::header_bytes_ahead`] counts the bytes of a
    /// PDU header (else of a PDV item header, or none).
    pub fn at_pdu_header(&self) -> bool {
        self.state == StreamState::PduHeader
    }

    /// The largest value length of the data-set PDVs (message control
    /// header bit 0 clear) whose item headers were read since the last
    /// call, and starts counting again: how large the PDVs a peer sends
    /// are, for a caller that receives large ones differently.
    pub fn take_data_value_max(&mut self) -> u32 {
        std::mem::take(&mut self.data_value_max)
    }

    /// When the decoder is at, or inside, a PDU header or a PDV item
    /// header: how many bytes complete it. The next that many bytes of the
    /// stream are that header's, so a caller that receives exactly those
    /// takes nothing past it.
    pub fn header_bytes_ahead(&self) -> Option<usize> {
        match self.state {
            StreamState::PduHeader | StreamState::PdvHeader { .. } => {
                Some(PDU_HEADER_LENGTH.saturating_sub(self.header_filled))
            }
            _ => None,
        }
    }

    /// After an error: the type of the PDU it was found in, when the header
    /// had been read. An undecodable A-ASSOCIATE-RQ is answered with
    /// A-ASSOCIATE-RJ rather than A-ABORT, so the state machine needs it
    /// (`InvalidPdu::new`).
    pub fn failed_pdu_type(&self) -> Option<PduType> {
        self.failed_pdu_type
    }

    /// Decodes from `input` up to the next event.
    ///
    /// Returns the event, if one completed, and the bytes consumed. An event
    /// borrows from `input`. `event == None` means all of `input` was
    /// consumed and more bytes are needed. After an error the decoder stays
    /// failed ([`DecodeError::DecoderFailed`]): the peer must be aborted.
    pub fn next_event<'a>(&mut self, input: &'a [u8]) -> Result<Step<'a>, DecodeError> {
        let result = self.step(input);
        if let Err(error) = &result {
            if self.state != StreamState::Failed {
                self.failed_pdu_type = error.pdu_type().or(self.current_pdu_type);
            }
            self.state = StreamState::Failed;
            self.control = Vec::new();
        }
        result
    }

    /// Iterates the events in `input`; [`Feed::consumed`] tells how far it got
    /// (all of `input` once the iterator returned `None`).
    pub fn feed<'d, 'a>(&'d mut self, input: &'a [u8]) -> Feed<'d, 'a> {
        Feed {
            decoder: self,
            input,
            consumed: 0,
            done: false,
        }
    }

    fn step<'a>(&mut self, input: &'a [u8]) -> Result<Step<'a>, DecodeError> {
        let mut position = 0usize;
        loop {
            let rest = input.get(position..).unwrap_or_default();
            match self.state {
                StreamState::Failed => return Err(DecodeError::DecoderFailed),
                StreamState::PduHeader => {
                    position = position.saturating_add(self.fill_header(rest));
                    if self.header_filled < PDU_HEADER_LENGTH {
                        return Ok(need_more(input));
                    }
                    self.header_filled = 0;
                    self.current_pdu_type = None;
                    let header = peek_header(&self.header)?.ok_or(DecodeError::FieldTruncated {
                        field: "PDU header",
                    })?;
                    self.current_pdu_type = Some(header.pdu_type);
                    header.check_limits(&self.limits)?;
                    if header.pdu_type == PduType::PDataTf {
                        self.state = StreamState::PdvHeader {
                            pdu_remaining: header.pdu_length,
                        };
                        return Ok(Step {
                            event: Some(StreamEvent::PDataStart {
                                pdu_length: header.pdu_length,
                            }),
                            consumed: position,
                        });
                    }
                    // Bounded by check_limits: the cap or 4 bytes.
                    self.control =
                        Vec::with_capacity(usize::try_from(header.pdu_length).unwrap_or(0));
                    self.state = StreamState::Control {
                        pdu_type: header.pdu_type,
                        pdu_length: header.pdu_length,
                    };
                }
                StreamState::PdvHeader { pdu_remaining } => {
                    if self.header_filled == 0 && (pdu_remaining as usize) < PDV_ITEM_HEADER_LENGTH
                    {
                        return Err(DecodeError::PdvHeaderPastPdu {
                            remaining: pdu_remaining,
                        });
                    }
                    position = position.saturating_add(self.fill_header(rest));
                    if self.header_filled < PDV_ITEM_HEADER_LENGTH {
                        return Ok(need_more(input));
                    }
                    self.header_filled = 0;
                    let item = parse_pdv_header(self.header, pdu_remaining)?;
                    if !item.is_command {
                        self.data_value_max = self.data_value_max.max(item.value_length);
                    }
                    self.state = StreamState::PdvValue {
                        pdu_remaining: item.pdu_remaining_after_value,
                        presentation_context_id: item.presentation_context_id,
                        is_command: item.is_command,
                        is_last: item.is_last,
                        value_offset: 0,
                        value_remaining: item.value_length,
                    };
                }
                StreamState::PdvValue {
                    pdu_remaining,
                    presentation_context_id,
                    is_command,
                    is_last,
                    value_offset,
                    value_remaining,
                } => {
                    if value_remaining > 0 && rest.is_empty() {
                        return Ok(need_more(input));
                    }
                    let take = rest.len().min(value_remaining as usize);
                    let bytes = rest.get(..take).unwrap_or_default();
                    position = position.saturating_add(take);
                    // take <= value_remaining, a u32.
                    let taken = u32::try_from(take).unwrap_or(value_remaining);
                    let value_remaining = value_remaining.saturating_sub(taken);
                    let pdv_complete = value_remaining == 0;
                    self.state = if !pdv_complete {
                        StreamState::PdvValue {
                            pdu_remaining,
                            presentation_context_id,
                            is_command,
                            is_last,
                            value_offset: value_offset.saturating_add(taken),
                            value_remaining,
                        }
                    } else if pdu_remaining == 0 {
                        StreamState::PduHeader
                    } else {
                        StreamState::PdvHeader { pdu_remaining }
                    };
                    return Ok(Step {
                        event: Some(StreamEvent::PdvFragment(PdvFragment {
                            presentation_context_id,
                            is_command,
                            is_last,
                            bytes,
                            value_offset,
                            pdv_complete,
                        })),
                        consumed: position,
                    });
                }
                StreamState::Control {
                    pdu_type,
                    pdu_length,
                } => {
                    let wanted = (pdu_length as usize).saturating_sub(self.control.len());
                    let take = rest.len().min(wanted);
                    self.control
                        .extend_from_slice(rest.get(..take).unwrap_or_default());
                    position = position.saturating_add(take);
                    if take < wanted {
                        return Ok(need_more(input));
                    }
                    let body = std::mem::take(&mut self.control);
                    self.state = StreamState::PduHeader;
                    let pdu = decode_pdu_body(pdu_type, &body)?;
                    return Ok(Step {
                        event: Some(StreamEvent::Control(pdu)),
                        consumed: position,
                    });
                }
            }
        }
    }

    /// Copies header bytes from `rest` into `self.header`; returns how many.
    fn fill_header(&mut self, rest: &[u8]) -> usize {
        let wanted = PDU_HEADER_LENGTH.saturating_sub(self.header_filled);
        let take = wanted.min(rest.len());
        if let (Some(target), Some(source)) = (
            self.header
                .get_mut(self.header_filled..self.header_filled.saturating_add(take)),
            rest.get(..take),
        ) {
            target.copy_from_slice(source);
            self.header_filled = self.header_filled.saturating_add(take);
            take
        } else {
            0
        }
    }
}

fn need_more(input: &[u8]) -> Step<'_> {
    Step {
        event: None,
        consumed: input.len(),
    }
}

/// Iterator over the events of one input slice; see [`StreamDecoder::feed`].
#[derive(Debug)]
pub struct Feed<'d, 'a> {
    decoder: &'d mut StreamDecoder,
    input: &'a [u8],
    consumed: usize,
    done: bool,
}

impl<'a> Feed<'_, 'a> {
    /// Bytes of the input consumed so far.
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

impl<'a> Iterator for Feed<'_, 'a> {
    type Item = Result<StreamEvent<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.input.get(self.consumed..).unwrap_or_default();
        match self.decoder.next_event(rest) {
            Ok(step) => {
                self.consumed = self.consumed.saturating_add(step.consumed);
                if step.event.is_none() {
                    self.done = true;
                }
                step.event.map(Ok)
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

struct PdvHeader {
    presentation_context_id: u8,
    is_command: bool,
    is_last: bool,
    value_length: u32,
    pdu_remaining_after_value: u32,
}

/// Parses a PDV item header with `pdu_remaining` bytes (header included)
/// left in its PDU.
fn parse_pdv_header(header: [u8; 6], pdu_remaining: u32) -> Result<PdvHeader, DecodeError> {
    // PS3.8 Table 9-23: 1-4 Item-length, 5 Presentation-context-ID,
    // 6-xxx Presentation-data-value whose first byte is the message control header.
    let [l0, l1, l2, l3, presentation_context_id, control] = header;
    let length = u32::from_be_bytes([l0, l1, l2, l3]);
    if length < 2 {
        return Err(DecodeError::PdvLengthTooShort { length });
    }
    let after_length_field = pdu_remaining.saturating_sub(4);
    if length > after_length_field {
        return Err(DecodeError::PdvLengthPastPdu {
            length,
            remaining: after_length_field,
        });
    }
    Ok(PdvHeader {
        presentation_context_id,
        is_command: control & CONTROL_COMMAND != 0,
        is_last: control & CONTROL_LAST != 0,
        value_length: length.saturating_sub(2),
        pdu_remaining_after_value: after_length_field.saturating_sub(length),
    })
}

/// A whole PDU framed in a caller's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A P-DATA-TF, its PDVs borrowed.
    PData(PDataTf<'a>),
    /// A control PDU, decoded.
    Control(Pdu),
}

/// Frames the PDU at the start of `bytes`: `Ok(None)` until the whole PDU is
/// there, otherwise the frame and the bytes it took. The header is checked
/// against `limits` before anything else.
pub fn frame_pdu<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<Option<(Frame<'a>, usize)>, DecodeError> {
    let Some(header) = peek_header(bytes)? else {
        return Ok(None);
    };
    header.check_limits(limits)?;
    let Ok(total) = usize::try_from(header.total_length()) else {
        return Ok(None);
    };
    let Some(body) = bytes.get(PDU_HEADER_LENGTH..total) else {
        return Ok(None);
    };
    let frame = if header.pdu_type == PduType::PDataTf {
        Frame::PData(PDataTf::parse(body)?)
    } else {
        Frame::Control(decode_pdu_body(header.pdu_type, body)?)
    };
    Ok(Some((frame, total)))
}

/// The body of a P-DATA-TF whose PDV items have been checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PDataTf<'a> {
    body: &'a [u8],
}

impl<'a> PDataTf<'a> {
    /// Checks the PDV items of a P-DATA-TF body (the bytes after the PDU
    /// header): at least one, each item-length at least 2 and within the body.
    pub fn parse(body: &'a [u8]) -> Result<Self, DecodeError> {
        if body.is_empty() {
            return Err(DecodeError::PDataEmpty);
        }
        let Ok(body_length) = u32::try_from(body.len()) else {
            return Err(DecodeError::PDataTooLong {
                length: u32::MAX,
                length_max: u32::MAX,
            });
        };
        let mut offset = 0usize;
        let mut remaining = body_length;
        while remaining > 0 {
            let header = body
                .get(offset..offset.saturating_add(PDV_ITEM_HEADER_LENGTH))
                .and_then(|h| <[u8; 6]>::try_from(h).ok())
                .ok_or(DecodeError::PdvHeaderPastPdu { remaining })?;
            let item = parse_pdv_header(header, remaining)?;
            remaining = item.pdu_remaining_after_value;
            offset = body_length.saturating_sub(remaining) as usize;
        }
        Ok(PDataTf { body })
    }

    /// The PDV items, in order.
    pub fn pdvs(&self) -> Pdvs<'a> {
        Pdvs { rest: self.body }
    }

    /// The body bytes (PDV items).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// Iterator over the PDVs of a checked [`PDataTf`].
#[derive(Clone, Debug)]
pub struct Pdvs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Pdvs<'a> {
    type Item = Pdv<'a>;

    fn next(&mut self) -> Option<Pdv<'a>> {
        // The items were checked by PDataTf::parse; a failed get() ends the
        // iteration instead of panicking.
        let [l0, l1, l2, l3, presentation_context_id, control, ref rest @ ..] = *self.rest else {
            return None;
        };
        let value_length = (u32::from_be_bytes([l0, l1, l2, l3]) as usize).saturating_sub(2);
        let (bytes, tail) = rest.split_at_checked(value_length)?;
        self.rest = tail;
        Some(Pdv {
            presentation_context_id,
            is_command: control & CONTROL_COMMAND != 0,
            is_last: control & CONTROL_LAST != 0,
            bytes,
        })
    }
}

/// Length of the headers in front of each fragment a [`PDataFragmenter`]
/// produces: PDU header (6) and PDV item header (6).
pub const PDATA_HEADERS_LENGTH: usize = PDU_HEADER_LENGTH + PDV_ITEM_HEADER_LENGTH;

/// PDU-length used when the peer announced 0 (no maximum): large enough to
/// amortise headers, small enough to keep a sender's write sizes sane.
pub const PDATA_LENGTH_WHEN_PEER_UNLIMITED: u32 = 1 << 20;

/// One P-DATA-TF PDU carrying one PDV: the 12 header bytes and the range of
/// the message's value bytes that follow them on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PDataFragment {
    /// PDU header then PDV item header (with message control header).
    pub headers: [u8; PDATA_HEADERS_LENGTH],
    /// Offset of this fragment's bytes within the message.
    pub value_offset: u64,
    /// Number of value bytes after the headers.
    pub value_length: u32,
}

impl PDataFragment {
    /// The fragment's byte range within the message, for slicing an
    /// in-memory buffer. `None` if it does not fit `usize`.
    pub fn value_range(&self) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(self.value_offset).ok()?;
        let end = start.checked_add(self.value_length as usize)?;
        Some(start..end)
    }
}

/// Splits one message (a command set or a data set) of known length into
/// P-DATA-TF PDUs of one PDV each, every PDU within the peer's maximum
/// length; the last PDV has the last-fragment bit. Produces headers only.
#[derive(Clone, Debug)]
pub struct PDataFragmenter {
    presentation_context_id: u8,
    is_command: bool,
    message_length: u64,
    offset: u64,
    fragment_length_max: u32,
    finished: bool,
    /// Whether the message ends with these bytes: the last fragment is then
    /// flagged last. False for a part of a data set that more parts follow
    /// ([`PDataFragmenter::part`]).
    ends_message: bool,
}

impl PDataFragmenter {
    /// Fragments `length` bytes of a data set sent in parts (its whole
    /// length unknown when it starts, as when relaying one as it arrives):
    /// as [`PDataFragmenter::new`], except that the last fragment is
    /// flagged last only when `last` (this part ends the data set).
    pub fn part(
        presentation_context_id: u8,
        length: u64,
        pdu_length_max_peer: u32,
        last: bool,
    ) -> Result<Self, EncodeError> {
        let mut fragmenter =
            Self::new(presentation_context_id, false, length, pdu_length_max_peer)?;
        fragmenter.ends_message = last;
        Ok(fragmenter)
    }

    /// Fragments a message of `message_length` bytes for a peer whose
    /// Maximum Length is `pdu_length_max_peer` (0 = no limit: then
    /// [`PDATA_LENGTH_WHEN_PEER_UNLIMITED`]). Errors when the maximum leaves
    /// no room for a value byte after the 6-byte PDV header.
    pub fn new(
        presentation_context_id: u8,
        is_command: bool,
        message_length: u64,
        pdu_length_max_peer: u32,
    ) -> Result<Self, EncodeError> {
        let pdu_length_max = if pdu_length_max_peer == 0 {
            PDATA_LENGTH_WHEN_PEER_UNLIMITED
        } else {
            pdu_length_max_peer
        };
        let fragment_length_max = pdu_length_max
            .checked_sub(PDV_ITEM_HEADER_LENGTH as u32)
            .filter(|&length| length > 0)
            .ok_or(EncodeError::PduLengthMaxTooSmall {
                length_max: pdu_length_max_peer,
            })?;
        Ok(PDataFragmenter {
            presentation_context_id,
            is_command,
            message_length,
            offset: 0,
            fragment_length_max,
            finished: false,
            ends_message: true,
        })
    }

    /// Number of PDUs this message takes.
    pub fn fragment_count(&self) -> u64 {
        self.message_length
            .div_ceil(u64::from(self.fragment_length_max))
            .max(1)
    }
}

impl Iterator for PDataFragmenter {
    type Item = PDataFragment;

    fn next(&mut self) -> Option<PDataFragment> {
        if self.finished {
            return None;
        }
        let left = self.message_length.saturating_sub(self.offset);
        let value_length = u32::try_from(left.min(u64::from(self.fragment_length_max)))
            .unwrap_or(self.fragment_length_max);
        let is_last = left <= u64::from(self.fragment_length_max);
        let headers = pdata_headers(
            self.presentation_context_id,
            self.is_command,
            is_last && self.ends_message,
            value_length,
        );
        let fragment = PDataFragment {
            headers,
            value_offset: self.offset,
            value_length,
        };
        self.offset = self.offset.saturating_add(u64::from(value_length));
        self.finished = is_last;
        Some(fragment)
    }
}

/// The 12 header bytes of a single-PDV P-DATA-TF carrying `value_length` bytes.
/// `value_length` must be at most `u32::MAX - 12`; the fragmenter guarantees it.
fn pdata_headers(
    presentation_context_id: u8,
    is_command: bool,
    is_last: bool,
    value_length: u32,
) -> [u8; 12] {
    let item_length = value_length.saturating_add(2);
    let pdu_length = item_length.saturating_add(4);
    let [p0, p1, p2, p3] = pdu_length.to_be_bytes();
    let [i0, i1, i2, i3] = item_length.to_be_bytes();
    [
        // PS3.8 Table 9-22: 1 PDU-type 04H, 2 reserved, 3-6 PDU-length.
        PduType::PDataTf.code(),
        0,
        p0,
        p1,
        p2,
        p3,
        // PS3.8 Table 9-23: 1-4 Item-length, 5 Presentation-context-ID, then
        // the message control header (PS3.8 E.2).
        i0,
        i1,
        i2,
        i3,
        presentation_context_id,
        message_control_header(is_command, is_last),
    ]
}

fn message_control_header(is_command: bool, is_last: bool) -> u8 {
    (if is_command { CONTROL_COMMAND } else { 0 }) | (if is_last { CONTROL_LAST } else { 0 })
}

/// Appends one PDV item (header and value) to `out`; used by the owned
/// P-DATA-TF encoder in [`crate::pdu`].
pub(crate) fn write_pdv(
    out: &mut Vec<u8>,
    presentation_context_id: u8,
    is_command: bool,
    is_last: bool,
    value: &[u8],
) -> Result<(), EncodeError> {
    let item_length = u32::try_from(value.len())
        .ok()
        .and_then(|length| length.checked_add(2))
        .ok_or(EncodeError::PduTooLong {
            length: value.len(),
        })?;
    out.extend_from_slice(&item_length.to_be_bytes());
    out.push(presentation_context_id);
    out.push(message_control_header(is_command, is_last));
    out.extend_from_slice(value);
    Ok(())
}

/// Appends a whole message as P-DATA-TF PDUs (one PDV each) to `out`: the
/// contiguous form of [`PDataFragmenter`], for small messages such as command sets.
pub fn encode_message(
    presentation_context_id: u8,
    is_command: bool,
    message: &[u8],
    pdu_length_max_peer: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let fragmenter = PDataFragmenter::new(
        presentation_context_id,
        is_command,
        message.len() as u64,
        pdu_length_max_peer,
    )?;
    let fragment_count = usize::try_from(fragmenter.fragment_count()).unwrap_or(usize::MAX);
    out.reserve(
        message
            .len()
            .saturating_add(fragment_count.saturating_mul(PDATA_HEADERS_LENGTH)),
    );
    for fragment in fragmenter {
        out.extend_from_slice(&fragment.headers);
        let value = fragment
            .value_range()
            .and_then(|range| message.get(range))
            .unwrap_or_default();
        out.extend_from_slice(value);
    }
    Ok(())
}

/// Appends one P-DATA-TF carrying `pdvs` (several PDVs in one PDU) to `out`.
pub fn encode_pdata_tf(pdvs: &[Pdv<'_>], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if pdvs.is_empty() {
        return Err(EncodeError::NoPresentationDataValue);
    }
    let start = out.len();
    out.extend_from_slice(&[PduType::PDataTf.code(), 0, 0, 0, 0, 0]);
    for pdv in pdvs {
        if let Err(error) = write_pdv(
            out,
            pdv.presentation_context_id,
            pdv.is_command,
            pdv.is_last,
            pdv.bytes,
        ) {
            out.truncate(start);
            return Err(error);
        }
    }
    let body_length = out
        .len()
        .saturating_sub(start)
        .saturating_sub(PDU_HEADER_LENGTH);
    let Some(pdu_length) = u32::try_from(body_length).ok().filter(|&l| l != u32::MAX) else {
        out.truncate(start);
        return Err(EncodeError::PduTooLong {
            length: body_length,
        });
    };
    if let Some(field) = out.get_mut(start.saturating_add(2)..start.saturating_add(6)) {
        field.copy_from_slice(&pdu_length.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_pdv_pdu(pcid: u8, control: u8, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_pdata_tf(
            &[Pdv {
                presentation_context_id: pcid,
                is_command: control & 1 != 0,
                is_last: control & 2 != 0,
                bytes: value,
            }],
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn pdata_headers_match_hand_written_bytes() {
        let bytes = one_pdv_pdu(3, 0x03, b"ab");
        assert_eq!(bytes, [4, 0, 0, 0, 0, 8, 0, 0, 0, 4, 3, 3, b'a', b'b']);
    }

    #[test]
    fn stream_decoder_borrows_value_bytes() {
        let bytes = one_pdv_pdu(1, 0x02, b"hello");
        let mut decoder = StreamDecoder::new(DecodeLimits::default());
        let start = decoder.next_event(&bytes).unwrap();
        assert_eq!(
            start.event,
            Some(StreamEvent::PDataStart { pdu_length: 11 })
        );
        let rest = &bytes[start.consumed..];
        let step = decoder.next_event(rest).unwrap();
        let Some(StreamEvent::PdvFragment(fragment)) = step.event else {
            panic!("expected a fragment, got {:?}", step.event)
        };
        assert_eq!(fragment.bytes, b"hello");
        // Same memory as the input: no copy.
        assert_eq!(fragment.bytes.as_ptr(), rest[6..].as_ptr());
        assert!(fragment.pdv_complete && fragment.is_last && !fragment.is_command);
        assert!(decoder.is_at_pdu_boundary());
    }

    #[test]
    fn empty_pdv_value_is_reported_complete() {
        let bytes = one_pdv_pdu(1, 0x03, b"");
        let events: Vec<_> = StreamDecoder::new(DecodeLimits::default())
            .feed(&bytes)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(
            events[1],
            StreamEvent::PdvFragment(PdvFragment {
                bytes: [],
                pdv_complete: true,
                is_last: true,
                ..
            })
        ));
    }

    #[test]
    fn fragmenter_respects_peer_maximum() {
        let fragments: Vec<_> = PDataFragmenter::new(5, false, 25, 16).unwrap().collect();
        assert_eq!(fragments.len(), 3);
        assert_eq!(
            fragments.iter().map(|f| f.value_length).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        assert!(fragments
            .iter()
            .all(|f| u32::from_be_bytes(f.headers[2..6].try_into().unwrap()) <= 16));
        assert_eq!(
            fragments.iter().filter(|f| f.headers[11] & 2 != 0).count(),
            1
        );
        assert_eq!(fragments[2].headers[11], 0x02);
    }

    #[test]
    fn fragmenter_sends_one_pdv_for_an_empty_message() {
        let fragments: Vec<_> = PDataFragmenter::new(1, true, 0, 16384).unwrap().collect();
        assert_eq!(fragments.len(), 1);
        assert_eq!(fragments[0].value_length, 0);
        assert_eq!(fragments[0].headers[11], 0x03);
    }

    #[test]
    fn fragmenter_rejects_a_maximum_without_room() {
        assert_eq!(
            PDataFragmenter::new(1, true, 10, 6).err(),
            Some(EncodeError::PduLengthMaxTooSmall { length_max: 6 })
        );
    }

    #[test]
    fn pdv_length_below_two_is_specific() {
        let bytes = [4, 0, 0, 0, 0, 6, 0, 0, 0, 1, 1, 0];
        assert_eq!(
            frame_pdu(&bytes, &DecodeLimits::default()).err(),
            Some(DecodeError::PdvLengthTooShort { length: 1 })
        );
    }
}

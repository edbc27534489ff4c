//! `dimse_command`: one command set (the concatenated command PDVs) through
//! [`Command::decode`].
//!
//! Must hold: a decoded command encodes (but for values decode accepts
//! leniently, below), decodes back equal and encodes to the same bytes.

use sluice_net::dimse::{Command, DimseError};

pub(crate) fn run(input: &[u8]) {
    let command = match Command::decode(input) {
        Ok(command) => command,
        Err(error) => {
            let _ = (error.tag(), error.command_field(), error.to_string());
            return;
        }
    };
    let _ = (
        command.command_field(),
        command.status(),
        command.message_id(),
        command.data_set_present(),
    );
    let bytes = match command.encode() {
        Ok(bytes) => bytes,
        // Decode is lenient where senders in the field are (a UID with a
        // leading-zero component, an Error Comment or AE title outside the
        // repertoire), encode strict. Issue #19 item 2 is the consequence: a
        // C-STORE-RSP that echoes such a UID cannot be encoded. Until that
        // is decided, a value decode accepts and encode refuses ends the run.
        Err(DimseError::InvalidUid { .. } | DimseError::InvalidValue { .. }) => return,
        Err(error) => panic!("a decoded command must encode: {error}"),
    };
    let again = Command::decode(&bytes).expect("our own encoding must decode");
    assert_eq!(
        again, command,
        "decode -> encode -> decode changed the command"
    );
    assert_eq!(again.encode().ok(), Some(bytes), "encoding is not stable");
}

//! The harnesses, one module per target (see [`crate::TARGETS`]).

pub(crate) mod association;
pub(crate) mod commitment;
pub(crate) mod dimse_command;
pub(crate) mod head_scan;
pub(crate) mod pdata_stream;
pub(crate) mod pdu;
pub(crate) mod small_dataset;

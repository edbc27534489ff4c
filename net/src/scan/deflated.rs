//! Head scanning of Deflated Explicit VR Little Endian data sets (PS3.5
//! A.5): the received bytes are a raw RFC 1951 stream of an Explicit VR
//! Little Endian data set. [`DatasetScanner`] inflates them through a fixed
//! 32 KiB window into the ordinary [`HeadScanner`], so the engine keeps
//! storing the bytes exactly as received while still getting the UIDs and
//! the C-STORE checks. Nothing inflated is kept beyond the window.
//!
//! The whole stream is inflated (not only its head) because the scanner's
//! verdict includes "the data set ends on an element boundary". Inflating
//! costs CPU in proportion to the inflated size, which a peer controls
//! through the compression ratio; [`INFLATED_PER_RECEIVED_MAX`] bounds that
//! amplification, and a stream beyond it is refused as malformed.
//!
//! Bytes after the deflate stream's end block are not the data set's: one
//! zero pad byte (PS3.5 A.5 lets an odd-length stream be padded), and an
//! 8-byte gzip member trailer (CRC-32 and the inflated size modulo 2^32: a
//! stream written with gzip's tools, as David Clunie's `image_dfl` sample
//! in pydicom's test files is) are expected and ignored; anything else is
//! counted ([`DatasetHead::trailing_bytes`]) for the C-STORE check to judge
//! (`LenientCheck::DeflateTrailingBytes`). Both DCMTK and pydicom ignore
//! such bytes. (Refusing every byte past the pad answered C010 "cannot be
//! inflated" to that sample: issue #19.)

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

use super::{DatasetEncoding, DatasetHead, HeadScanner, NotScannable, ScanError, TruncatedIn};
use crate::uid;

/// Inflated bytes allowed per received byte, plus [`INFLATED_SLACK_BYTES`].
/// Real images deflate 2:1 to 10:1 (a blank image far more); 1024:1 is
/// beyond any real data set and keeps a decompression bomb to a bounded
/// CPU cost per byte received.
pub const INFLATED_PER_RECEIVED_MAX: u64 = 1024;
/// Inflated bytes allowed whatever was received (a small data set of
/// mostly zeros).
pub const INFLATED_SLACK_BYTES: u64 = 64 * 1024 * 1024;
const WINDOW_BYTES: usize = 32 * 1024;

/// A head scanner for any catalogued transfer syntax: plain, or deflated
/// and inflated on the fly.
#[derive(Debug)]
pub struct DatasetScanner {
    scanner: HeadScanner,
    inflater: Option<Inflater>,
}

struct Inflater {
    state: Box<InflateState>,
    window: Box<[u8; WINDOW_BYTES]>,
    received_bytes: u64,
    inflated_bytes: u64,
    ended: bool,
    /// Bytes received after the deflate stream's end.
    trailing_bytes: u64,
    /// The first of them (a gzip trailer is 8).
    trailing_head: [u8; GZIP_TRAILER_BYTES],
    /// Whether they are all zero (a pad).
    trailing_zero: bool,
    error: Option<ScanError>,
}

/// A gzip member trailer: CRC-32, then the inflated size modulo 2^32.
const GZIP_TRAILER_BYTES: usize = 8;

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("received_bytes", &self.received_bytes)
            .field("inflated_bytes", &self.inflated_bytes)
            .field("ended", &self.ended)
            .field("error", &self.error)
            .finish()
    }
}

impl DatasetScanner {
    /// A scanner for the data set of a catalogued transfer syntax; deflated
    /// syntaxes are inflated as they arrive.
    pub fn for_transfer_syntax(uid: &str) -> Result<Self, NotScannable> {
        let syntax = uid::transfer_syntax(uid).ok_or(NotScannable::UnknownTransferSyntax)?;
        if !syntax.facts.deflated {
            return Ok(Self {
                scanner: HeadScanner::for_transfer_syntax(uid)?,
                inflater: None,
            });
        }
        Ok(Self {
            scanner: HeadScanner::new(DatasetEncoding::ExplicitVrLittleEndian),
            inflater: Some(Inflater {
                state: InflateState::new_boxed(DataFormat::Raw),
                window: Box::new([0; WINDOW_BYTES]),
                received_bytes: 0,
                inflated_bytes: 0,
                ended: false,
                trailing_bytes: 0,
                trailing_head: [0; GZIP_TRAILER_BYTES],
                trailing_zero: true,
                error: None,
            }),
        })
    }

    /// Whether the data set arrives deflated.
    pub fn is_deflated(&self) -> bool {
        self.inflater.is_some()
    }

    /// Feeds the next received bytes. Returns the first structure or
    /// inflation error (and again on every later call).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        let Some(inflater) = self.inflater.as_mut() else {
            return self.scanner.feed(chunk);
        };
        if let Some(error) = inflater.error {
            return Err(error);
        }
        inflater.received_bytes += chunk.len() as u64;
        let mut input = chunk;
        while !input.is_empty() {
            if inflater.ended {
                // Not the data set's: kept aside for `finish` to judge.
                inflater.note_trailing(input);
                return Ok(());
            }
            let result = inflate(
                &mut inflater.state,
                input,
                &mut inflater.window[..],
                MZFlush::None,
            );
            input = input.get(result.bytes_consumed..).unwrap_or_default();
            inflater.inflated_bytes += result.bytes_written as u64;
            let budget = inflater
                .received_bytes
                .saturating_mul(INFLATED_PER_RECEIVED_MAX)
                .saturating_add(INFLATED_SLACK_BYTES);
            if inflater.inflated_bytes > budget {
                return Err(inflater.fail(ScanError::Inflate {
                    offset: inflater.inflated_bytes,
                }));
            }
            let inflated = inflater
                .window
                .get(..result.bytes_written)
                .unwrap_or_default();
            // A structure error is the data set's verdict: inflate no more
            // (the rest of this chunk is dropped, so the stream cannot be
            // resumed) and return it on every later feed.
            if let Err(error) = self.scanner.feed(inflated) {
                return Err(inflater.fail(error));
            }
            match result.status {
                Ok(MZStatus::StreamEnd) => inflater.ended = true,
                Ok(MZStatus::Ok) => {}
                // No progress: everything fed is consumed and the window was
                // not full; more input is needed.
                Err(MZError::Buf) if result.bytes_consumed == 0 && result.bytes_written == 0 => {
                    break
                }
                Err(MZError::Buf) => {}
                Ok(MZStatus::NeedDict) | Err(_) => {
                    return Err(inflater.fail(ScanError::Inflate {
                        offset: inflater.inflated_bytes,
                    }));
                }
            }
        }
        Ok(())
    }

    /// Ends the scan. A deflated stream that did not reach its end block is
    /// a truncated data set; an inflation error is the data set's error.
    pub fn finish(mut self) -> DatasetHead {
        let Some(mut inflater) = self.inflater.take() else {
            return self.scanner.finish();
        };
        // Drain what the inflater still holds (its output window was full).
        while inflater.error.is_none() && !inflater.ended {
            let result = inflate(
                &mut inflater.state,
                &[],
                &mut inflater.window[..],
                MZFlush::Finish,
            );
            let inflated = inflater
                .window
                .get(..result.bytes_written)
                .unwrap_or_default();
            let _ = self.scanner.feed(inflated);
            match result.status {
                Ok(MZStatus::StreamEnd) => inflater.ended = true,
                _ if result.bytes_written > 0 => {}
                _ => break,
            }
        }
        let mut head = self.scanner.finish();
        head.trailing_bytes = inflater.unexpected_trailing_bytes();
        if let Some(error) = inflater.error {
            head.end = Err(error);
        } else if !inflater.ended && head.end.is_ok() {
            head.end = Err(ScanError::Truncated {
                offset: head.length,
                inside: TruncatedIn::Deflate,
            });
        }
        head
    }
}

impl Inflater {
    fn note_trailing(&mut self, bytes: &[u8]) {
        for (offset, byte) in bytes.iter().enumerate() {
            let position = self.trailing_bytes.saturating_add(offset as u64);
            if let Some(slot) = usize::try_from(position)
                .ok()
                .and_then(|position| self.trailing_head.get_mut(position))
            {
                *slot = *byte;
            }
        }
        self.trailing_zero &= bytes.iter().all(|byte| *byte == 0);
        self.trailing_bytes = self.trailing_bytes.saturating_add(bytes.len() as u64);
    }

    /// The bytes after the stream that are neither the PS3.5 pad nor a
    /// gzip trailer whose size matches what was inflated.
    fn unexpected_trailing_bytes(&self) -> u64 {
        let pad = self.trailing_bytes == 1 && self.trailing_zero;
        let [_, _, _, _, s0, s1, s2, s3] = self.trailing_head;
        let gzip = self.trailing_bytes == GZIP_TRAILER_BYTES as u64
            && u64::from(u32::from_le_bytes([s0, s1, s2, s3])) == self.inflated_bytes % (1 << 32);
        if pad || gzip {
            0
        } else {
            self.trailing_bytes
        }
    }

    fn fail(&mut self, error: ScanError) -> ScanError {
        self.error = Some(error);
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::deflate::compress_to_vec;

    /// Found by fuzzing (fuzz/regressions/head_scan/): after a structure
    /// error the deflated scanner dropped the rest of the chunk it was
    /// inflating, so the next chunk desynchronised the inflater and the
    /// data set's error became an inflation error; and an empty feed
    /// answered `Ok`. The error must come back on every later feed and end
    /// the head, as for a plain data set.
    #[test]
    fn a_structure_error_is_returned_on_every_later_feed_and_ends_the_head() {
        // (0008,0005) with the VR "C_", which is none, then 100 kB that
        // do not compress, so the error is found inside the first chunk.
        let mut dataset = vec![0x08, 0x00, 0x05, 0x00, b'C', b'_', 2, 0, b'I', b'S'];
        let mut state = 0x5111_CE00_u32;
        dataset.extend((0..100_000).map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        }));
        let deflated = compress_to_vec(&dataset, 6);
        let (first, second) = deflated.split_at(deflated.len() / 2);
        let mut scanner =
            DatasetScanner::for_transfer_syntax(uid::ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
                .unwrap();
        let error = scanner.feed(first).unwrap_err();
        assert!(matches!(error, ScanError::InvalidVr { .. }), "{error:?}");
        assert_eq!(scanner.feed(second), Err(error));
        assert_eq!(scanner.feed(&[]), Err(error));
        assert_eq!(scanner.finish().end, Err(error));
    }
}

//! P-DATA framing throughput: the streaming decoder (fed 64 KiB receive
//! slices, as a socket read would hand them over) and the contiguous framer
//! (whole PDUs in one buffer), for 16 KiB and 1 MiB P-DATA-TF PDUs.
//!
//! Framing touches only headers (values are borrowed slices), so the figure
//! to expect is far above any disk or network: it is the per-PDU cost
//! spread over the PDU's bytes. Under `cargo test` criterion runs each
//! benchmark once, as a smoke test.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_net::pdata::{encode_message, frame_pdu, Frame, StreamDecoder, StreamEvent};
use sluice_net::pdu::DecodeLimits;
use std::hint::black_box;

/// Bytes handed to the stream decoder per call, like one receive completion.
const RECEIVE_SLICE_BYTES: usize = 64 * 1024;
/// Size of the message framed per run: 8 MiB of data set.
const MESSAGE_BYTES: usize = 8 << 20;

/// A data set of `MESSAGE_BYTES` sent as P-DATA-TF PDUs of `pdu_length` each.
fn stream_of(pdu_length: u32) -> Vec<u8> {
    let message: Vec<u8> = (0..MESSAGE_BYTES).map(|i| (i % 251) as u8).collect();
    let mut stream = Vec::new();
    encode_message(1, false, &message, pdu_length, &mut stream).expect("encodable");
    stream
}

fn limits(pdu_length: u32) -> DecodeLimits {
    DecodeLimits {
        pdata_length_max: pdu_length,
        ..DecodeLimits::default()
    }
}

/// Streaming decoder over the stream in receive-sized slices; returns the value bytes seen.
fn run_stream_decoder(stream: &[u8], pdu_length: u32) -> usize {
    let mut decoder = StreamDecoder::new(limits(pdu_length));
    let mut value_bytes = 0;
    for slice in stream.chunks(RECEIVE_SLICE_BYTES) {
        let mut offset = 0;
        loop {
            let step = decoder.next_event(&slice[offset..]).expect("valid stream");
            offset += step.consumed;
            match step.event {
                None => break,
                Some(StreamEvent::PdvFragment(fragment)) => {
                    value_bytes += black_box(fragment.bytes).len()
                }
                Some(_) => {}
            }
        }
    }
    value_bytes
}

/// Contiguous framer over the whole stream; returns the value bytes seen.
fn run_framer(stream: &[u8], pdu_length: u32) -> usize {
    let limits = limits(pdu_length);
    let mut value_bytes = 0;
    let mut offset = 0;
    while let Some((frame, used)) = frame_pdu(&stream[offset..], &limits).expect("valid stream") {
        if let Frame::PData(pdata) = frame {
            for pdv in pdata.pdvs() {
                value_bytes += black_box(pdv.bytes).len();
            }
        }
        offset += used;
    }
    value_bytes
}

fn pdata_framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("pdata_framing");
    for (label, pdu_length) in [("16KiB", 16 * 1024u32), ("1MiB", 1 << 20)] {
        let stream = stream_of(pdu_length);
        // Both paths must see every value byte, or the figure means nothing.
        assert_eq!(run_stream_decoder(&stream, pdu_length), MESSAGE_BYTES);
        assert_eq!(run_framer(&stream, pdu_length), MESSAGE_BYTES);
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("stream_decoder", label),
            &stream,
            |b, stream| b.iter(|| run_stream_decoder(stream, pdu_length)),
        );
        group.bench_with_input(
            BenchmarkId::new("contiguous_framer", label),
            &stream,
            |b, stream| b.iter(|| run_framer(stream, pdu_length)),
        );
    }
    group.finish();
}

criterion_group!(benches, pdata_framing);
criterion_main!(benches);

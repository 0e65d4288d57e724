//! The frame tracker against frames written by tungstenite (an independent RFC 6455 implementation):
//! every boundary found, across every way of splitting the bytes, and broken headers refused.

use std::io::Cursor;

use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};

use super::*;

/// One frame as bytes, masked with `mask` when given.
fn frame(opcode: OpCode, payload: &[u8], fin: bool, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut frame = Frame::message(payload.to_vec(), opcode, fin);
    frame.header_mut().mask = mask;
    let mut out = Vec::new();
    frame.format(&mut out).expect("format a frame");
    out
}

fn text(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    frame(OpCode::Data(Data::Text), payload, true, mask)
}

/// Frames of every length class (7-bit, 16-bit, 64-bit), masked and not, fragments and controls.
fn stream() -> (Vec<u8>, Vec<usize>) {
    let key = Some([1, 2, 3, 4]);
    let frames = [
        text(b"", None),
        text(b"hello", key),
        frame(OpCode::Data(Data::Binary), &[7; 125], true, None),
        frame(OpCode::Data(Data::Binary), &[8; 126], false, key),
        {
            let mut ping = Frame::ping(b"ping".to_vec());
            ping.header_mut().mask = key;
            ping.into_bytes()
        },
        frame(OpCode::Data(Data::Continue), &[9; 65_535], false, None),
        frame(OpCode::Data(Data::Continue), &[10; 65_536], true, key),
        Frame::close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .into_bytes(),
    ];
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for f in frames {
        bytes.extend_from_slice(&f);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

trait IntoBytes {
    fn into_bytes(self) -> Vec<u8>;
}

impl IntoBytes for Frame {
    fn into_bytes(self) -> Vec<u8> {
        let mut out = Vec::new();
        self.format(&mut out).expect("format a frame");
        out
    }
}

/// Feeds `bytes` in chunks of `chunk` and records the offset of every frame end.
fn ends_found(bytes: &[u8], chunk: usize) -> (Vec<usize>, Vec<u8>) {
    let mut tracker = FrameTracker::default();
    let (mut ends, mut opcodes, mut offset) = (Vec::new(), Vec::new(), 0);
    for piece in bytes.chunks(chunk) {
        let mut rest = piece;
        while !rest.is_empty() {
            let step = tracker.advance(rest);
            assert!(step.consumed > 0, "no progress at offset {offset}");
            offset += step.consumed;
            rest = &rest[step.consumed..];
            if let Some(opcode) = step.ended {
                ends.push(offset);
                opcodes.push(opcode);
                assert!(tracker.at_boundary());
            }
        }
    }
    (ends, opcodes)
}

#[test]
fn every_frame_end_is_found_whatever_the_read_sizes() {
    let (bytes, ends) = stream();
    for chunk in [1, 2, 3, 5, 13, 14, 127, 4096, bytes.len()] {
        let (found, opcodes) = ends_found(&bytes, chunk);
        assert_eq!(found, ends, "chunk size {chunk}");
        assert_eq!(opcodes, [1, 1, 2, 2, 9, 0, 0, 8], "chunk size {chunk}");
    }
}

#[test]
fn a_fresh_tracker_is_at_a_boundary_and_a_split_header_is_not() {
    let mut tracker = FrameTracker::default();
    assert!(tracker.at_boundary());
    let bytes = text(b"abc", Some([9, 9, 9, 9]));
    assert_eq!(tracker.advance(&bytes[..1]), Step::none(1));
    assert!(!tracker.at_boundary(), "inside a header");
    assert_eq!(tracker.advance(&bytes[1..4]), Step::none(3));
    assert!(!tracker.at_boundary(), "inside the masking key");
    let step = tracker.advance(&bytes[4..]);
    assert_eq!(step.consumed, bytes.len() - 4);
    assert_eq!(step.ended, Some(1));
}

#[test]
fn advance_stops_at_the_end_of_the_frame_in_progress() {
    let first = text(&[b'x'; 300], None);
    let mut both = first.clone();
    both.extend_from_slice(&text(b"next", None));
    let mut tracker = FrameTracker::default();
    assert!(!tracker.feed(&first[..10]));
    assert_eq!(
        tracker.advance(&first[10..100]),
        Step::none(90),
        "frame not done"
    );
    let step = tracker.advance(&both[100..]);
    assert_eq!(
        step,
        Step {
            consumed: first.len() - 100,
            ended: Some(1)
        }
    );
    assert!(tracker.at_boundary());
}

#[test]
fn feed_reports_a_close_frame_only_once_it_is_complete() {
    let close = Frame::close(None).into_bytes();
    let mut tracker = FrameTracker::default();
    assert!(!tracker.feed(&text(b"data", None)));
    assert!(!tracker.feed(&close[..1]));
    assert!(tracker.feed(&close[1..]));
}

#[test]
fn a_64_bit_length_with_the_top_bit_set_breaks_the_tracker() {
    let mut header = vec![0x82, 127];
    header.extend_from_slice(&(1u64 << 63).to_be_bytes());
    let mut tracker = FrameTracker::default();
    assert_eq!(tracker.advance(&header), Step::none(header.len()));
    assert!(tracker.is_broken());
    assert!(!tracker.at_boundary());
    assert_eq!(tracker.advance(b"more"), Step::none(4));
    assert!(!tracker.feed(&Frame::close(None).into_bytes()));
}

#[test]
fn fragmented_or_oversized_control_frames_break_the_tracker() {
    for header in [&[0x08u8, 0x00][..], &[0x88, 126, 0, 200]] {
        let mut tracker = FrameTracker::default();
        tracker.feed(header);
        assert!(tracker.is_broken(), "{header:?}");
    }
}

#[test]
fn the_injected_close_frame_parses_as_1001_going_away_masked_and_not() {
    for mask in [None, Some([0xde, 0xad, 0xbe, 0xef])] {
        let bytes = close_frame(GOING_AWAY, "going away", mask);
        let mut cursor = Cursor::new(&bytes);
        let (header, len) = FrameHeader::parse(&mut cursor)
            .expect("valid header")
            .expect("complete header");
        assert!(header.is_final);
        assert_eq!(header.opcode, OpCode::Control(Control::Close));
        assert_eq!(header.mask, mask);
        let start = usize::try_from(cursor.position()).expect("small");
        let mut payload = bytes[start..].to_vec();
        assert_eq!(payload.len() as u64, len);
        if let Some(key) = mask {
            payload
                .iter_mut()
                .zip(key.iter().cycle())
                .for_each(|(b, k)| *b ^= k);
        }
        assert_eq!(&payload[..2], &1001u16.to_be_bytes());
        assert_eq!(&payload[2..], b"going away");
    }
}

#[test]
fn a_long_close_reason_is_cut_at_a_character_boundary_to_fit_125_bytes() {
    let reason = "é".repeat(100);
    let bytes = close_frame(GOING_AWAY, &reason, None);
    assert_eq!(bytes[1], 124, "2-byte code plus 61 two-byte characters");
    assert!(std::str::from_utf8(&bytes[4..]).is_ok());
}

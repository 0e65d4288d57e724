//! WebSocket frame boundaries (RFC 6455 §5.2) in a byte stream that the proxy copies but does not
//! decode, and the close frame (§5.5.1) it injects at one of those boundaries.
//!
//! The tracker reads each frame's header (2 to 14 bytes) and counts its payload; it never buffers or
//! unmasks payload bytes, so following a stream costs a few comparisons per frame.

/// Opcode of a close frame (RFC 6455 §5.2, §11.8).
pub const OPCODE_CLOSE: u8 = 0x8;

/// Close status code "going away": the server is going down (RFC 6455 §7.4.1).
pub const GOING_AWAY: u16 = 1001;

/// The longest frame header: 2 bytes, a 64-bit extended length, a 4-byte masking key (§5.2).
const MAX_HEADER: usize = 14;

/// Largest payload of a control frame, in bytes (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Follows the frames of one direction of a WebSocket connection.
///
/// Frame by frame: the header bytes are collected (they may arrive split across reads), then the
/// payload length it announces is counted down. A header that breaks RFC 6455 §5.2 or §5.5 (a 64-bit
/// length with its top bit set, a fragmented or oversized control frame) makes the tracker
/// [`broken`](FrameTracker::is_broken): it stops looking, and the proxy no longer injects frames
/// into that stream.
#[derive(Clone, Debug, Default)]
pub struct FrameTracker {
    header: [u8; MAX_HEADER],
    /// Header bytes collected so far.
    have: usize,
    /// True once the header is complete and until the payload is.
    in_payload: bool,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// Opcode of the current frame.
    opcode: u8,
    broken: bool,
}

/// What [`FrameTracker::advance`] did with a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the slice taken: up to the end of the current frame, or all of them.
    pub consumed: usize,
    /// The opcode of the frame that ended exactly at `consumed`, if one did.
    pub ended: Option<u8>,
}

// === impl FrameTracker ===

impl FrameTracker {
    /// True between two frames (nothing of the next frame seen yet) and not broken: a frame written
    /// now would not cut into another.
    pub fn at_boundary(&self) -> bool {
        !self.broken && !self.in_payload && self.have == 0
    }

    /// True once the stream broke RFC 6455 §5.2 or §5.5 (see the type's doc).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Takes bytes of `data` up to the end of the current frame (or all of `data` when it ends
    /// first). A broken tracker takes everything and reports no frame end.
    pub fn advance(&mut self, data: &[u8]) -> Step {
        let mut used = 0;
        if self.broken {
            return Step::none(data.len());
        }
        if !self.in_payload {
            used = self.collect_header(data);
            if !self.in_payload {
                return Step::none(if self.broken { data.len() } else { used });
            }
        }
        let available = u64::try_from(data.len() - used).unwrap_or(u64::MAX);
        let take = self.remaining.min(available);
        self.remaining -= take;
        // `take` is at most `data.len() - used`, so it fits a usize.
        used += usize::try_from(take).unwrap_or(data.len() - used);
        if self.remaining > 0 {
            return Step::none(used);
        }
        self.in_payload = false;
        self.have = 0;
        Step {
            consumed: used,
            ended: Some(self.opcode),
        }
    }

    /// Takes all of `data`; true when a close frame ended in it.
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        let mut closed = false;
        while !data.is_empty() {
            let step = self.advance(data);
            closed |= step.ended == Some(OPCODE_CLOSE);
            data = &data[step.consumed..];
        }
        closed
    }

    /// Copies header bytes until the header is complete, then parses it; returns the bytes taken.
    fn collect_header(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        while self.have < self.header_len() {
            let Some(&byte) = data.get(used) else {
                return used;
            };
            self.header[self.have] = byte;
            self.have += 1;
            used += 1;
        }
        match parse_header(&self.header[..self.have]) {
            Some((opcode, len)) => {
                self.opcode = opcode;
                self.remaining = len;
                self.in_payload = true;
            }
            None => self.broken = true,
        }
        used
    }

    /// The full header length once the second byte is known (2 until then).
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let second = self.header[1];
        let extended = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }
}

/// The opcode and payload length of a complete header, or `None` when it breaks RFC 6455.
fn parse_header(header: &[u8]) -> Option<(u8, u64)> {
    let (first, second) = (*header.first()?, *header.get(1)?);
    let opcode = first & 0x0f;
    let fin = first & 0x80 != 0;
    let len = match second & 0x7f {
        126 => u64::from(u16::from_be_bytes(header.get(2..4)?.try_into().ok()?)),
        127 => u64::from_be_bytes(header.get(2..10)?.try_into().ok()?),
        short => u64::from(short),
    };
    if len >> 63 != 0 {
        // §5.2: the most significant bit of a 64-bit length must be 0.
        return None;
    }
    let control = opcode & 0x8 != 0;
    if control && (!fin || len > MAX_CONTROL_PAYLOAD) {
        // §5.5: control frames are never fragmented and carry at most 125 bytes.
        return None;
    }
    Some((opcode, len))
}

/// A close frame with status `code` and a UTF-8 `reason` (RFC 6455 §5.5.1), unmasked as a server
/// sends it, or masked with `mask` as a client must (§5.3). `reason` is cut to fit the 125-byte
/// control payload, at a character boundary.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    // At most 125 bytes, so the length fits the 7-bit field.
    let len = u8::try_from(payload.len()).unwrap_or(125);
    let mut frame = vec![0x80 | OPCODE_CLOSE];
    match mask {
        None => {
            frame.push(len);
            frame.extend_from_slice(&payload);
        }
        Some(key) => {
            frame.push(0x80 | len);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
    }
    frame
}

// === impl Step ===

impl Step {
    fn none(consumed: usize) -> Step {
        Step {
            consumed,
            ended: None,
        }
    }
}

#[cfg(test)]
mod tests;

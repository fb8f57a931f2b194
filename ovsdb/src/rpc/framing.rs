//! Streaming framing of JSON-RPC 1.0 over a byte stream.
//!
//! OVSDB sends JSON values back to back with no delimiter. This scanner finds
//! where each top-level value ends, resuming across reads, so one read may
//! yield several messages and one message may span many reads. Scanning is
//! incremental (each byte is looked at once) and 64 bytes at a time, so a
//! 26 MB monitor reply costs one pass of a few milliseconds, and a message
//! longer than the configured maximum ends the session instead of growing
//! memory without bound.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default maximum size of one message: large enough for a 100k-MAC
/// `hardware_vtep` dump (about 26 MB) with room to spare.
pub const DEFAULT_MAX_MESSAGE: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("message exceeds the maximum size of {max} bytes")]
    TooLarge { max: usize },
    #[error("invalid JSON-RPC framing: unexpected byte {byte:#04x} between messages")]
    Unexpected { byte: u8 },
    #[error("invalid JSON: unbalanced '{0}'")]
    Unbalanced(char),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Finds top-level JSON objects (and arrays) in a byte stream.
#[derive(Debug)]
pub struct JsonFramer {
    max: usize,
    /// Bytes of the current message already scanned.
    scanned: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Total bytes ever consumed, for liveness accounting by the caller.
    bytes_seen: u64,
}

impl Default for JsonFramer {
    fn default() -> Self {
        JsonFramer::new(DEFAULT_MAX_MESSAGE)
    }
}

impl JsonFramer {
    pub fn new(max_message: usize) -> JsonFramer {
        JsonFramer {
            max: max_message,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            bytes_seen: 0,
        }
    }

    pub fn max_message(&self) -> usize {
        self.max
    }

    /// True while part of a message has been received but not all of it.
    pub fn in_message(&self) -> bool {
        self.scanned > 0
    }

    /// Scans `buf` and splits off the next complete message, if there is one.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        if self.scanned == 0 {
            // Between messages only whitespace may appear.
            let skip = buf
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
                .count();
            if skip > 0 {
                let _ = buf.split_to(skip);
                self.bytes_seen += skip as u64;
            }
            match buf.first() {
                None => return Ok(None),
                Some(b'{') | Some(b'[') => {}
                Some(&byte) => return Err(FramingError::Unexpected { byte }),
            }
        }
        let bytes = &buf[..];
        let mut i = self.scanned;
        // Whole 64-byte blocks go through the bit-parallel scan; the tail
        // that is left (less than a block) byte by byte, resuming with the
        // same state on the next read.
        while let Some(block) = bytes.get(i..i + BLOCK) {
            if let Some(end) = self.scan_block(block, i)? {
                return self.split_frame(buf, end);
            }
            i += BLOCK;
        }
        while i < bytes.len() {
            let byte = bytes[i];
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
            } else {
                match byte {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        if self.depth == 0 {
                            return Err(FramingError::Unbalanced(byte as char));
                        }
                        self.depth -= 1;
                        if self.depth == 0 {
                            return self.split_frame(buf, i);
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        self.scanned = i;
        if self.scanned > self.max {
            return Err(FramingError::TooLarge { max: self.max });
        }
        Ok(None)
    }

    /// Splits off the message that ends at `end` (its closing bracket).
    fn split_frame(
        &mut self,
        buf: &mut BytesMut,
        end: usize,
    ) -> Result<Option<Bytes>, FramingError> {
        let frame = buf.split_to(end + 1).freeze();
        self.bytes_seen += frame.len() as u64;
        self.scanned = 0;
        self.in_string = false;
        self.escaped = false;
        if frame.len() > self.max {
            return Err(FramingError::TooLarge { max: self.max });
        }
        Ok(Some(frame))
    }

    /// Scans one block at `offset` of the message, the way simdjson's stage 1
    /// does: a mask per byte class, escapes and string interiors as bit
    /// arithmetic, then bracket depth by population count. Only a block in
    /// which the depth may return to zero is walked bracket by bracket.
    /// Returns the offset of the message's closing bracket, if it is here.
    fn scan_block(&mut self, block: &[u8], offset: usize) -> Result<Option<usize>, FramingError> {
        let classes = ByteClasses::of(block);
        let escaped = self.escaped_bytes(classes.backslash);
        let quotes = classes.quote & !escaped;
        let mut inside = prefix_xor(quotes);
        if self.in_string {
            inside = !inside;
        }
        self.in_string = inside >> 63 == 1;
        if !self.in_string {
            // A backslash outside a string is bad JSON for the decoder to
            // reject; it must not escape the next string's first byte.
            self.escaped = false;
        }
        let opens = classes.open & !inside;
        let closes = classes.close & !inside;
        let n_closes = closes.count_ones();
        if self.depth > n_closes {
            self.depth = self.depth + opens.count_ones() - n_closes;
            return Ok(None);
        }
        let mut brackets = opens | closes;
        while brackets != 0 {
            let at = brackets.trailing_zeros();
            let bit = 1u64 << at;
            if opens & bit != 0 {
                self.depth += 1;
            } else {
                let pos = offset + at as usize;
                if self.depth == 0 {
                    return Err(FramingError::Unbalanced(block[at as usize] as char));
                }
                self.depth -= 1;
                if self.depth == 0 {
                    return Ok(Some(pos));
                }
            }
            brackets &= brackets - 1;
        }
        Ok(None)
    }

    /// Which bytes of a block a backslash escapes, carrying an escape that
    /// starts on the block's last byte into the next. Backslashes are rare
    /// in OVSDB traffic, so this walks them one by one.
    fn escaped_bytes(&mut self, backslashes: u64) -> u64 {
        if backslashes == 0 && !self.escaped {
            return 0;
        }
        let mut escaped = 0u64;
        let mut starts = backslashes;
        if self.escaped {
            escaped |= 1;
            starts &= !1;
        }
        self.escaped = false;
        while starts != 0 {
            let at = starts.trailing_zeros();
            if at == 63 {
                self.escaped = true;
                break;
            }
            escaped |= 1 << (at + 1);
            // The escaped byte, even a backslash, starts nothing.
            starts &= !(1 << at) & !(1 << (at + 1));
        }
        escaped
    }
}

const BLOCK: usize = 64;

/// One bit per byte of a block, for each byte class the framer cares about.
#[derive(Debug, Default, PartialEq, Eq)]
struct ByteClasses {
    quote: u64,
    backslash: u64,
    /// `{` or `[`.
    open: u64,
    /// `}` or `]`.
    close: u64,
}

impl ByteClasses {
    /// `{`/`[` and `}`/`]` differ only in bit 0x20, so setting that bit
    /// turns each pair into one comparison.
    #[cfg(target_arch = "x86_64")]
    fn of(block: &[u8]) -> ByteClasses {
        assert_eq!(block.len(), BLOCK);
        // SAFETY: SSE2 is part of the x86_64 baseline, so every x86_64 CPU
        // has it.
        unsafe { ByteClasses::of_sse2(block) }
    }

    /// Sixteen bytes per comparison.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse2")]
    fn of_sse2(block: &[u8]) -> ByteClasses {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let (quote, backslash) = (_mm_set1_epi8(b'"' as i8), _mm_set1_epi8(b'\\' as i8));
        let (open, close, fold) = (
            _mm_set1_epi8(b'{' as i8),
            _mm_set1_epi8(b'}' as i8),
            _mm_set1_epi8(0x20),
        );
        let mut classes = ByteClasses::default();
        for (k, lane) in block.chunks_exact(16).enumerate() {
            // SAFETY: `lane` is 16 readable bytes; the load is unaligned.
            let v = unsafe { _mm_loadu_si128(lane.as_ptr().cast::<__m128i>()) };
            let folded = _mm_or_si128(v, fold);
            let shift = 16 * k;
            classes.quote |= (_mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) as u16 as u64) << shift;
            classes.backslash |=
                (_mm_movemask_epi8(_mm_cmpeq_epi8(v, backslash)) as u16 as u64) << shift;
            classes.open |=
                (_mm_movemask_epi8(_mm_cmpeq_epi8(folded, open)) as u16 as u64) << shift;
            classes.close |=
                (_mm_movemask_epi8(_mm_cmpeq_epi8(folded, close)) as u16 as u64) << shift;
        }
        classes
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn of(block: &[u8]) -> ByteClasses {
        ByteClasses::of_scalar(block)
    }

    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn of_scalar(block: &[u8]) -> ByteClasses {
        let mut classes = ByteClasses::default();
        for (at, &byte) in block.iter().enumerate() {
            let bit = 1u64 << at;
            match byte {
                b'"' => classes.quote |= bit,
                b'\\' => classes.backslash |= bit,
                b'{' | b'[' => classes.open |= bit,
                b'}' | b']' => classes.close |= bit,
                _ => {}
            }
        }
        classes
    }
}

/// Bit i of the result is the XOR of bits 0..=i: set from an opening quote
/// up to (not including) its closing quote.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

impl Decoder for JsonFramer {
    type Item = Bytes;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        self.next_frame(src)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.iter().all(u8::is_ascii_whitespace) => Ok(None),
            None => Err(FramingError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in the middle of a message",
            ))),
        }
    }
}

/// Outgoing messages are already serialized; the encoder only copies them.
impl Encoder<Bytes> for JsonFramer {
    type Error = FramingError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FramingError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Result<Vec<String>, FramingError> {
        let mut f = JsonFramer::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(fr) = f.next_frame(&mut buf)? {
                out.push(String::from_utf8(fr.to_vec()).unwrap());
            }
        }
        Ok(out)
    }

    #[test]
    fn several_messages_in_one_read() {
        let got = frames(&[br#"{"id":1,"result":[]} {"id":"echo","method":"echo","params":[]}"#])
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], r#"{"id":"echo","method":"echo","params":[]}"#);
    }

    #[test]
    fn message_split_at_every_byte() {
        let msg = br#"{"a":"x}\"{y\\","b":[1,{"c":"]"}]}"#;
        for cut in 0..msg.len() {
            let got = frames(&[&msg[..cut], &msg[cut..]]).unwrap();
            assert_eq!(
                got,
                vec![String::from_utf8(msg.to_vec()).unwrap()],
                "cut {cut}"
            );
        }
        // one byte at a time, including an escape split from its character
        let chunks: Vec<&[u8]> = msg.chunks(1).collect();
        assert_eq!(frames(&chunks).unwrap().len(), 1);
    }

    #[test]
    fn too_large_is_an_error_before_the_end_arrives() {
        let mut f = JsonFramer::new(64);
        let mut buf = BytesMut::from(&b"{\"a\":\""[..]);
        buf.extend_from_slice(&[b'x'; 100]);
        assert!(matches!(
            f.next_frame(&mut buf),
            Err(FramingError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_between_messages_is_an_error() {
        assert!(frames(&[b"{} x"]).is_err());
        assert!(frames(&[b"}"]).is_err());
        assert!(frames(&[b"\"str\""]).is_err());
    }

    /// Strings with runs of backslashes, quotes and brackets, placed at every
    /// offset against the 64-byte block boundaries, split into two reads at
    /// every byte.
    #[test]
    fn escapes_and_strings_across_block_boundaries() {
        for pad in 0..2 * BLOCK {
            for backslashes in 0..4 {
                let text = format!(
                    "{}{}\"}}]{{[ \u{e9}",
                    "x".repeat(pad),
                    "\\".repeat(backslashes)
                );
                let msg = serde_json::json!({"k": text, "n": [1, {"a": []}], "t": "\\"});
                let msg = serde_json::to_string(&msg).unwrap();
                let wire = format!("{msg}\n{msg}");
                for cut in (0..wire.len()).step_by(7) {
                    let got = frames(&[&wire.as_bytes()[..cut], &wire.as_bytes()[cut..]]).unwrap();
                    assert_eq!(got, vec![msg.clone(), msg.clone()], "pad {pad} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn a_message_ending_inside_a_block_leaves_the_rest_for_the_next() {
        let first = format!("{{\"a\":\"{}\"}}", "y".repeat(100));
        let second = r#"[1,"]",{"b":"\\"}]"#;
        let got = frames(&[format!("{first}{second}").as_bytes()]).unwrap();
        assert_eq!(got, vec![first, second.to_string()]);
    }

    #[test]
    fn unbalanced_close_in_a_block_is_an_error() {
        let mut wire = format!("{{\"a\":\"{}\"}}", "z".repeat(80)).into_bytes();
        wire.extend_from_slice(&[b' '; 70]);
        wire.extend_from_slice(b"]");
        wire.extend_from_slice(&[b' '; 70]);
        let mut f = JsonFramer::new(1 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        assert!(f.next_frame(&mut buf).unwrap().is_some());
        assert!(f.next_frame(&mut buf).is_err());
    }

    /// The vector classifier and the portable one agree on every byte value
    /// in every lane position.
    #[test]
    fn byte_classes_match_the_portable_classifier() {
        let mut block = [0u8; BLOCK];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..2000 {
            for (at, b) in block.iter_mut().enumerate() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Every byte value appears, and the interesting ones often.
                *b = if round < 256 {
                    (round + at) as u8
                } else {
                    b"\"\\{}[]ax"[(x % 8) as usize] ^ if x.is_multiple_of(97) { 0x20 } else { 0 }
                };
            }
            assert_eq!(ByteClasses::of(&block), ByteClasses::of_scalar(&block));
        }
    }
}

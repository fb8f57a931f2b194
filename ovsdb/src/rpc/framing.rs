//! Streaming framing of JSON-RPC 1.0 over a byte stream.
//!
//! OVSDB sends JSON values back to back with no delimiter. This scanner finds
//! where each top-level value ends, resuming across reads, so one read may
//! yield several messages and one message may span many reads. Scanning is
//! incremental (each byte is looked at once) so a 26 MB monitor reply costs
//! one pass, and a message longer than the configured maximum ends the
//! session instead of growing memory without bound.

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
        while i < bytes.len() {
            if self.in_string {
                // Jump to the next quote or backslash: strings are most of the data.
                match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                    None => {
                        if self.escaped {
                            self.escaped = false;
                        }
                        i = bytes.len();
                        break;
                    }
                    Some(off) => {
                        if self.escaped {
                            // The byte right after a backslash is escaped, whatever it is.
                            self.escaped = false;
                            i += 1;
                            continue;
                        }
                        i += off;
                        if bytes[i] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            match bytes[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    if self.depth == 0 {
                        return Err(FramingError::Unbalanced(bytes[i] as char));
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        let frame = buf.split_to(i + 1).freeze();
                        self.bytes_seen += frame.len() as u64;
                        self.scanned = 0;
                        if frame.len() > self.max {
                            return Err(FramingError::TooLarge { max: self.max });
                        }
                        return Ok(Some(frame));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        self.scanned = i;
        if self.scanned > self.max {
            return Err(FramingError::TooLarge { max: self.max });
        }
        Ok(None)
    }
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
}

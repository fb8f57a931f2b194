//! Incremental stanza framer (XMPP.md §1.5).
//!
//! TF does not run a streaming XML parser over the whole connection: it searches the byte
//! stream for `<iq` / `<message` and the first matching closing tag, skipping XML declarations
//! and keepalive octets in between. We do the same, so we accept exactly what a TF peer sends
//! (a mid-stream `<?xml version="1.0"?>` before every config iq, `0xC8 0x80` keepalives) and
//! parse each stanza on its own with quick-xml.

use crate::element::Element;
use crate::error::FrameError;
use crate::header::{find, scan_header, HeaderScan, StreamHeader};
use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

/// Default largest stanza accepted from a peer. TF batches at most 16 config objects or 32
/// routes per stanza, far below this.
pub const DEFAULT_MAX_STANZA: usize = 1 << 20;
/// Largest XML declaration / processing instruction accepted between stanzas.
const MAX_DECL: usize = 512;

/// What the framer found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete top-level `iq` or `message`.
    Stanza(Element),
    /// A run of keepalive octets (space, tab, CR, LF, or `0xC8 0x80`).
    Keepalive,
    /// `</stream:stream>`: the peer is closing.
    StreamEnd,
}

/// A complete top-level `iq` or `message`, cut from the stream but not parsed yet, so that a
/// receiver can decode hot stanzas straight from the bytes ([`crate::fast`]) and parse
/// everything else into an [`Element`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStanza {
    bytes: Bytes,
}

impl RawStanza {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The stanza as text; a stanza that is not UTF-8 is a framing error, as in
    /// [`Framer::next_frame`].
    pub fn text(&self) -> Result<&str, FrameError> {
        std::str::from_utf8(&self.bytes).map_err(|_| FrameError::InvalidUtf8)
    }

    /// Parses into an element tree: exactly what [`Framer::next_frame`] would have returned.
    pub fn parse(&self) -> Result<Element, FrameError> {
        Ok(Element::parse(self.text()?)?)
    }
}

/// What [`Framer::next_raw_frame`] found: [`Frame`] with the stanza left unparsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    Stanza(RawStanza),
    Keepalive,
    StreamEnd,
}

/// Buffers received bytes and cuts them into frames. Pure: no I/O.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_stanza: usize,
    /// Where to resume searching for the closing tag of the stanza at the buffer start.
    resume: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(DEFAULT_MAX_STANZA)
    }
}

fn is_keepalive_octet(b: u8) -> bool {
    matches!(b, 0x20 | 0x0A | 0x0D | 0x09)
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned()
}

impl Framer {
    pub fn new(max_stanza: usize) -> Self {
        Framer {
            buf: BytesMut::with_capacity(16 * 1024),
            max_stanza: max_stanza.max(64),
            resume: 0,
        }
    }

    pub fn max_stanza(&self) -> usize {
        self.max_stanza
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The receive buffer, for reading from a socket straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when only keepalive octets (or nothing) are buffered.
    pub fn is_idle(&self) -> bool {
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if is_keepalive_octet(b) {
                i += 1;
            } else if b == 0xC8 && self.buf.get(i + 1).is_none_or(|&n| n == 0x80) {
                i += 2;
            } else {
                return false;
            }
        }
        true
    }

    /// Takes the stream header off the front of the buffer (§1.2).
    pub fn take_header(&mut self) -> Result<Option<StreamHeader>, FrameError> {
        match scan_header(&self.buf)? {
            HeaderScan::Incomplete => Ok(None),
            HeaderScan::Complete { header, consumed } => {
                self.buf.advance(consumed);
                self.resume = 0;
                Ok(Some(header))
            }
        }
    }

    /// Takes any one top-level element (used for the TLS negotiation nonzas of §1.4, which may
    /// be self-closing). Whitespace before it is skipped.
    pub fn take_nonza(&mut self) -> Result<Option<Element>, FrameError> {
        let skip = self.buf.iter().take_while(|&&b| is_ws(b)).count();
        self.buf.advance(skip);
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.buf[0] != b'<' {
            return Err(FrameError::UnexpectedData(show(&self.buf)));
        }
        let Some(name_end) = self.element_name()? else {
            return Ok(None);
        };
        let Some((tag_end, self_closing)) = self.start_tag_end()? else {
            return Ok(None);
        };
        let raw = if self_closing {
            self.cut(tag_end)
        } else {
            let mut close = Vec::with_capacity(name_end + 1);
            close.extend_from_slice(b"</");
            close.extend_from_slice(&self.buf[1..name_end]);
            match self.take_until_close(&close, tag_end)? {
                Some(raw) => raw,
                None => return Ok(None),
            }
        };
        raw.parse().map(Some)
    }

    /// Returns the next frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        Ok(match self.next_raw_frame()? {
            None => None,
            Some(RawFrame::Stanza(raw)) => Some(Frame::Stanza(raw.parse()?)),
            Some(RawFrame::Keepalive) => Some(Frame::Keepalive),
            Some(RawFrame::StreamEnd) => Some(Frame::StreamEnd),
        })
    }

    /// Like [`Framer::next_frame`], but stanzas are cut and not parsed (see [`RawStanza`]).
    pub fn next_raw_frame(&mut self) -> Result<Option<RawFrame>, FrameError> {
        // A loop, not recursion, so a flood of declarations cannot exhaust the stack.
        loop {
            if let Some(step) = self.step()? {
                return Ok(step);
            }
        }
    }

    /// One framing step: `Some(result)` when done, `None` after skipping a declaration.
    fn step(&mut self) -> Result<Option<Option<RawFrame>>, FrameError> {
        // Keepalive octets between stanzas.
        let mut skip = 0;
        while skip < self.buf.len() {
            let b = self.buf[skip];
            if is_keepalive_octet(b) {
                skip += 1;
            } else if b == 0xC8 {
                match self.buf.get(skip + 1) {
                    Some(0x80) => skip += 2,
                    Some(_) => return Err(FrameError::UnexpectedData(show(&self.buf[skip..]))),
                    None => break, // the second octet has not arrived yet
                }
            } else {
                break;
            }
        }
        if skip > 0 {
            self.buf.advance(skip);
            self.resume = 0;
            return Ok(Some(Some(RawFrame::Keepalive)));
        }
        if self.buf.is_empty() || self.buf[0] == 0xC8 {
            return Ok(Some(None));
        }
        if self.buf[0] != b'<' {
            return Err(FrameError::UnexpectedData(show(&self.buf)));
        }
        if self.buf.len() < 2 {
            return Ok(Some(None));
        }
        // XML declaration (TF sends one before every config iq) or any processing instruction.
        if self.buf[1] == b'?' {
            return match find(&self.buf[..self.buf.len().min(MAX_DECL)], b"?>") {
                Some(end) => {
                    // Whitespace right after a declaration belongs to it, not a keepalive.
                    let mut skip = end + 2;
                    while skip < self.buf.len() && is_ws(self.buf[skip]) {
                        skip += 1;
                    }
                    self.buf.advance(skip);
                    self.resume = 0;
                    Ok(None)
                }
                None if self.buf.len() >= MAX_DECL => Err(FrameError::BadDeclaration),
                None => Ok(Some(None)),
            };
        }
        if self.buf[1] == b'/' {
            const END: &[u8] = b"</stream:stream";
            let n = self.buf.len().min(END.len());
            if self.buf[..n] != END[..n] {
                return Err(FrameError::UnexpectedData(show(&self.buf)));
            }
            let mut i = END.len();
            while i < self.buf.len() && is_ws(self.buf[i]) {
                i += 1;
            }
            return match self.buf.get(i) {
                None => Ok(Some(None)),
                Some(b'>') => {
                    self.buf.advance(i + 1);
                    Ok(Some(Some(RawFrame::StreamEnd)))
                }
                Some(_) => Err(FrameError::UnexpectedData(show(&self.buf))),
            };
        }
        let Some(name_end) = self.element_name()? else {
            return Ok(Some(None));
        };
        let close: &[u8] = match &self.buf[1..name_end] {
            b"iq" => b"</iq",
            b"message" => b"</message",
            other => {
                let name = std::str::from_utf8(other).map_err(|_| FrameError::InvalidUtf8)?;
                return Err(FrameError::UnexpectedElement(name.to_string()));
            }
        };
        let Some((tag_end, self_closing)) = self.start_tag_end()? else {
            return Ok(Some(None));
        };
        if self_closing {
            let name = String::from_utf8_lossy(&close[2..]).into_owned();
            return Err(FrameError::SelfClosing(name));
        }
        Ok(Some(
            self.take_until_close(close, tag_end)?.map(RawFrame::Stanza),
        ))
    }

    /// Where the element name after `<` at the buffer start ends (the name is
    /// `buf[1..end]`), `None` if not all of it has arrived.
    fn element_name(&self) -> Result<Option<usize>, FrameError> {
        let mut i = 1;
        while i < self.buf.len() {
            let b = self.buf[i];
            if is_ws(b) || b == b'>' || b == b'/' {
                break;
            }
            if i > 64 || b == b'<' || b == b'"' || b == b'\'' || b == b'=' {
                return Err(FrameError::UnexpectedData(show(&self.buf)));
            }
            i += 1;
        }
        if i >= self.buf.len() {
            if self.buf.len() > 66 {
                return Err(FrameError::UnexpectedData(show(&self.buf)));
            }
            return Ok(None);
        }
        if i == 1 {
            return Err(FrameError::UnexpectedData(show(&self.buf)));
        }
        std::str::from_utf8(&self.buf[1..i]).map_err(|_| FrameError::InvalidUtf8)?;
        Ok(Some(i))
    }

    /// Offset just past the `>` of the start tag at the buffer start (quotes respected), and
    /// whether the tag is self-closing.
    fn start_tag_end(&self) -> Result<Option<(usize, bool)>, FrameError> {
        let mut quote: Option<u8> = None;
        for (i, &b) in self.buf.iter().enumerate().skip(1) {
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'"' || b == b'\'' => quote = Some(b),
                None if b == b'<' => return Err(FrameError::UnexpectedData(show(&self.buf))),
                None if b == b'>' => {
                    let self_closing = i > 0 && self.buf[i - 1] == b'/';
                    if i + 1 > self.max_stanza {
                        return Err(FrameError::TooLarge {
                            limit: self.max_stanza,
                        });
                    }
                    return Ok(Some((i + 1, self_closing)));
                }
                None => {}
            }
        }
        if self.buf.len() > self.max_stanza {
            return Err(FrameError::TooLarge {
                limit: self.max_stanza,
            });
        }
        Ok(None)
    }

    /// Finds `close` (`</name`) + optional whitespace + `>` after `from` and cuts the element
    /// out.
    fn take_until_close(
        &mut self,
        close: &[u8],
        from: usize,
    ) -> Result<Option<RawStanza>, FrameError> {
        let finder = memmem::Finder::new(close);
        let mut search = self.resume.max(from);
        while let Some(rel) = finder.find(&self.buf[search..]) {
            let at = search + rel;
            let mut i = at + close.len();
            while i < self.buf.len() && is_ws(self.buf[i]) {
                i += 1;
            }
            match self.buf.get(i) {
                Some(b'>') => {
                    let end = i + 1;
                    if end > self.max_stanza {
                        return Err(FrameError::TooLarge {
                            limit: self.max_stanza,
                        });
                    }
                    return Ok(Some(self.cut(end)));
                }
                // `</iqx` or similar: not our closing tag, keep searching after it.
                Some(_) => search = at + 1,
                // The closing tag may still be arriving.
                None => {
                    self.resume = at;
                    return self.check_size();
                }
            }
        }
        if self.buf.len() > self.max_stanza {
            return Err(FrameError::TooLarge {
                limit: self.max_stanza,
            });
        }
        self.resume = self.buf.len().saturating_sub(close.len()).max(from);
        Ok(None)
    }

    fn check_size(&self) -> Result<Option<RawStanza>, FrameError> {
        if self.buf.len() > self.max_stanza {
            Err(FrameError::TooLarge {
                limit: self.max_stanza,
            })
        } else {
            Ok(None)
        }
    }

    fn cut(&mut self, end: usize) -> RawStanza {
        let bytes = self.buf.split_to(end).freeze();
        self.resume = 0;
        RawStanza { bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG_IQ: &str = "<?xml version=\"1.0\"?>\n<iq type=\"set\" from=\"network-control@contrailsystems.com\" to=\"tor-agent-a/config\"><config><update/></config></iq>";

    fn frames(input: &[u8], max: usize) -> Result<Vec<Frame>, FrameError> {
        let mut f = Framer::new(max);
        f.push(input);
        let mut out = Vec::new();
        while let Some(fr) = f.next_frame()? {
            out.push(fr);
        }
        Ok(out)
    }

    #[test]
    fn frames_iq_message_keepalives_and_declarations() {
        let mut input = Vec::new();
        input.extend_from_slice(b"\xC8\x80");
        input.extend_from_slice(CONFIG_IQ.as_bytes());
        input.extend_from_slice(b" \n\t\r\xC8\x80\xC8\x80");
        input.extend_from_slice(b"<message from=\"x\"><event/></message >");
        input.extend_from_slice(b"</stream:stream>");
        let out = frames(&input, DEFAULT_MAX_STANZA).unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(out[0], Frame::Keepalive);
        match &out[1] {
            Frame::Stanza(e) => {
                assert_eq!(e.name, "iq");
                assert_eq!(e.attr("to"), Some("tor-agent-a/config"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[2], Frame::Keepalive);
        assert!(matches!(&out[3], Frame::Stanza(e) if e.name == "message"));
        assert_eq!(out[4], Frame::StreamEnd);
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let mut input = Vec::new();
        input.extend_from_slice(CONFIG_IQ.as_bytes());
        input.extend_from_slice(
            b"\xC8\x80<message a='&lt;/iq&gt;'><x>&lt;/message&gt;</x></message>",
        );
        let whole = frames(&input, DEFAULT_MAX_STANZA).unwrap();
        let stanzas: Vec<_> = whole
            .iter()
            .filter(|f| matches!(f, Frame::Stanza(_)))
            .collect();
        assert_eq!(stanzas.len(), 2);
        for cut in 0..input.len() {
            let mut f = Framer::new(DEFAULT_MAX_STANZA);
            let mut got = Vec::new();
            f.push(&input[..cut]);
            while let Some(fr) = f.next_frame().unwrap() {
                got.push(fr);
            }
            f.push(&input[cut..]);
            while let Some(fr) = f.next_frame().unwrap() {
                got.push(fr);
            }
            let got: Vec<_> = got
                .iter()
                .filter(|f| matches!(f, Frame::Stanza(_)))
                .collect();
            assert_eq!(got, stanzas, "cut at {cut}");
        }
    }

    #[test]
    fn closing_tag_lookalikes_are_skipped() {
        let out = frames(b"<iq><iqx/></iqx></iq>", 1000);
        // `</iqx>` does not close the iq, but `<iqx/></iqx>` is malformed XML anyway.
        assert!(out.is_err());
        let out = frames(b"<iq><iqx></iqx></iq>", 1000).unwrap();
        assert!(matches!(&out[0], Frame::Stanza(e) if e.child("iqx").is_some()));
    }

    #[test]
    fn rejects_what_tf_peers_never_send() {
        assert_eq!(
            frames(b"<presence/>", 1000),
            Err(FrameError::UnexpectedElement("presence".into()))
        );
        assert_eq!(
            frames(b"<iq type='set'/>", 1000),
            Err(FrameError::SelfClosing("iq".into()))
        );
        assert!(matches!(
            frames(b"hello", 1000),
            Err(FrameError::UnexpectedData(_))
        ));
        assert!(matches!(
            frames(b"\xC8\x81", 1000),
            Err(FrameError::UnexpectedData(_))
        ));
        assert!(matches!(
            frames(b"<iq><a></b></iq>", 1000),
            Err(FrameError::Parse(_))
        ));
        assert!(matches!(
            frames(b"<iq>\xFF</iq>", 1000),
            Err(FrameError::InvalidUtf8)
        ));
        assert!(matches!(
            frames(b"</iq>", 1000),
            Err(FrameError::UnexpectedData(_))
        ));
    }

    #[test]
    fn a_flood_of_declarations_does_not_recurse() {
        let mut f = Framer::new(1000);
        f.push(&b"<?x?>".repeat(200_000));
        f.push(b"<iq type='set'></iq>");
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Stanza(_)))));
    }

    #[test]
    fn enforces_the_maximum_stanza_size() {
        let mut f = Framer::new(100);
        f.push(b"<iq type='set'>");
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&[b'a'; 100]);
        assert_eq!(f.next_frame(), Err(FrameError::TooLarge { limit: 100 }));
        // A start tag that never ends is bounded too.
        let mut f = Framer::new(100);
        f.push(b"<message ");
        f.push(&[b'a'; 200]);
        assert_eq!(f.next_frame(), Err(FrameError::TooLarge { limit: 100 }));
        // An unterminated declaration is bounded.
        let mut f = Framer::new(100);
        f.push(b"<?xml ");
        f.push(&[b' '; MAX_DECL]);
        assert_eq!(f.next_frame(), Err(FrameError::BadDeclaration));
    }

    #[test]
    fn header_then_stanzas_in_one_buffer() {
        let mut f = Framer::default();
        f.push(b"<?xml version='1.0'?><stream:stream from='a' xmlns:stream='http://etherx.jabber.org/streams'><iq type='set'></iq>");
        let h = f.take_header().unwrap().unwrap();
        assert_eq!(h.from(), Some("a"));
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Stanza(_))));
        assert!(f.is_idle());
    }

    #[test]
    fn nonzas_may_self_close() {
        let mut f = Framer::default();
        f.push(b"<stream:features><starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></starttls></stream:features><proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        let features = f.take_nonza().unwrap().unwrap();
        assert!(features
            .child("starttls")
            .unwrap()
            .child("required")
            .is_some());
        let proceed = f.take_nonza().unwrap().unwrap();
        assert_eq!(proceed.name, "proceed");
        assert_eq!(f.buffered(), 0);
    }
}

//! The XMPP stream header (XMPP.md §1.2), written byte-exactly as TF writes it and parsed as
//! leniently as TF parses it.

use crate::element::escape_attr;
use crate::error::FrameError;

/// The CN's bare JID: `to` of the agent's header and `from` of every CN stanza.
pub const CN_JID: &str = "network-control@contrailsystems.com";
/// The namespace TF uses to mark the end of the header.
pub const STREAM_NS: &str = "http://etherx.jabber.org/streams";
/// The constant stream id a TF CN sends.
pub const CN_STREAM_ID: &str = "++123";
/// Largest header accepted; TF headers are about 200 bytes.
pub const MAX_HEADER_SIZE: usize = 4096;

/// A received stream header. Only `from`, `to` and `xmlns` matter to TF; `id`, `version` and
/// `xml:lang` are kept for logging but never checked (§1.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamHeader {
    pub attrs: Vec<(String, String)>,
}

impl StreamHeader {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn from(&self) -> Option<&str> {
        self.attr("from")
    }
    pub fn to(&self) -> Option<&str> {
        self.attr("to")
    }
    /// The default namespace: the agent's sub-cluster name on agent headers.
    pub fn xmlns(&self) -> Option<&str> {
        self.attr("xmlns")
    }
}

/// The agent's header: `from` = agent name, `xmlns` = sub-cluster name (usually empty).
pub fn client_header(agent_name: &str, subcluster: &str) -> String {
    format!(
        "<stream:stream from=\"{}\" to=\"{}\" version=\"1.0\" xml:lang=\"en\" xmlns=\"{}\" xmlns:stream=\"{}\" >",
        escape_attr(agent_name),
        CN_JID,
        escape_attr(subcluster),
        STREAM_NS
    )
}

/// The CN's reply: `from` = CN hostname, `to` = the agent's `from`, id `++123`.
pub fn server_header(cn_hostname: &str, agent_name: &str) -> String {
    format!(
        "<stream:stream from=\"{}\" to=\"{}\" id=\"{}\" version=\"1.0\" xml:lang=\"en\" xmlns=\"jabber:client\" xmlns:stream=\"{}\" >",
        escape_attr(cn_hostname),
        escape_attr(agent_name),
        CN_STREAM_ID,
        STREAM_NS
    )
}

/// Result of scanning for a header.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderScan {
    /// More bytes are needed.
    Incomplete,
    /// A header was found; it and everything before it took `consumed` bytes.
    Complete {
        header: StreamHeader,
        consumed: usize,
    },
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn bad(msg: impl Into<String>) -> FrameError {
    FrameError::BadHeader(msg.into())
}

/// Scans `buf` for a stream header, optionally preceded by whitespace and an XML declaration.
/// The header must end with `xmlns:stream="http://etherx.jabber.org/streams"`, optional
/// whitespace and `>`, which is how TF finds its end (§1.2).
pub fn scan_header(buf: &[u8]) -> Result<HeaderScan, FrameError> {
    let limit = buf.len().min(MAX_HEADER_SIZE);
    let incomplete = || {
        if buf.len() >= MAX_HEADER_SIZE {
            Err(bad(format!("no header within {MAX_HEADER_SIZE} bytes")))
        } else {
            Ok(HeaderScan::Incomplete)
        }
    };
    let mut pos = 0;
    loop {
        while pos < limit && is_ws(buf[pos]) {
            pos += 1;
        }
        if pos >= limit {
            return incomplete();
        }
        let rest = &buf[pos..];
        if rest.len() < 2 {
            return incomplete();
        }
        if rest.starts_with(b"<?") {
            match find(rest, b"?>") {
                Some(end) => {
                    pos += end + 2;
                    continue;
                }
                None => return incomplete(),
            }
        }
        break;
    }
    const OPEN: &[u8] = b"<stream:stream";
    let rest = &buf[pos..];
    let n = rest.len().min(OPEN.len());
    if rest[..n] != OPEN[..n] {
        return Err(bad(format!(
            "expected <stream:stream, got {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(40)])
        )));
    }
    if rest.len() <= OPEN.len() {
        return incomplete();
    }
    if !is_ws(rest[OPEN.len()]) {
        return Err(bad("<stream:stream must be followed by whitespace"));
    }
    let mut i = pos + OPEN.len();
    let mut attrs: Vec<(String, String)> = Vec::new();
    loop {
        while i < limit && is_ws(buf[i]) {
            i += 1;
        }
        if i >= limit {
            return incomplete();
        }
        if buf[i] == b'>' {
            let last_ok =
                matches!(attrs.last(), Some((k, v)) if k == "xmlns:stream" && v == STREAM_NS);
            if !last_ok {
                return Err(bad(
                    "the last attribute must be xmlns:stream=\"http://etherx.jabber.org/streams\"",
                ));
            }
            return Ok(HeaderScan::Complete {
                header: StreamHeader { attrs },
                consumed: i + 1,
            });
        }
        if buf[i] == b'/' {
            return Err(bad("the stream header must not be self-closing"));
        }
        let name_start = i;
        while i < limit && !is_ws(buf[i]) && buf[i] != b'=' && buf[i] != b'>' && buf[i] != b'/' {
            i += 1;
        }
        if i >= limit {
            return incomplete();
        }
        let name = std::str::from_utf8(&buf[name_start..i])
            .map_err(|_| bad("attribute name is not UTF-8"))?
            .to_string();
        if name.is_empty() || name.contains(['<', '"', '\'']) {
            return Err(bad(format!("bad attribute name {name:?}")));
        }
        while i < limit && is_ws(buf[i]) {
            i += 1;
        }
        if i >= limit {
            return incomplete();
        }
        if buf[i] != b'=' {
            return Err(bad(format!("attribute {name} has no value")));
        }
        i += 1;
        while i < limit && is_ws(buf[i]) {
            i += 1;
        }
        if i >= limit {
            return incomplete();
        }
        let quote = buf[i];
        if quote != b'"' && quote != b'\'' {
            return Err(bad(format!("attribute {name} value is not quoted")));
        }
        i += 1;
        let value_start = i;
        while i < limit && buf[i] != quote {
            if buf[i] == b'<' {
                return Err(bad("'<' inside an attribute value"));
            }
            i += 1;
        }
        if i >= limit {
            return incomplete();
        }
        let raw = std::str::from_utf8(&buf[value_start..i])
            .map_err(|_| bad("attribute value is not UTF-8"))?;
        let value = quick_xml::escape::unescape(raw)
            .map_err(|e| bad(format!("attribute {name}: {e}")))?
            .into_owned();
        i += 1;
        if i < limit && !is_ws(buf[i]) && buf[i] != b'>' && buf[i] != b'/' {
            return Err(bad("attributes must be separated by whitespace"));
        }
        attrs.push((name, value));
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = r#"<stream:stream from="tor-agent-a" to="network-control@contrailsystems.com" version="1.0" xml:lang="en" xmlns="" xmlns:stream="http://etherx.jabber.org/streams" >"#;
    const CN: &str = r#"<stream:stream from="cn-host-1" to="tor-agent-a" id="++123" version="1.0" xml:lang="en" xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams" >"#;

    #[test]
    fn writes_headers_exactly_as_the_spec_examples() {
        assert_eq!(client_header("tor-agent-a", ""), AGENT);
        assert_eq!(server_header("cn-host-1", "tor-agent-a"), CN);
    }

    fn complete(input: &[u8]) -> (StreamHeader, usize) {
        match scan_header(input).unwrap() {
            HeaderScan::Complete { header, consumed } => (header, consumed),
            HeaderScan::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn parses_both_spec_headers() {
        let (h, n) = complete(AGENT.as_bytes());
        assert_eq!(n, AGENT.len());
        assert_eq!(h.from(), Some("tor-agent-a"));
        assert_eq!(h.to(), Some(CN_JID));
        assert_eq!(h.xmlns(), Some(""));
        let (h, _) = complete(CN.as_bytes());
        assert_eq!(h.attr("id"), Some("++123"));
        assert_eq!(h.to(), Some("tor-agent-a"));
    }

    #[test]
    fn accepts_declaration_single_quotes_and_no_space() {
        let s = "\n <?xml version='1.0'?>\n<stream:stream from='a' to='b' xmlns:stream='http://etherx.jabber.org/streams'><iq";
        let (h, n) = complete(s.as_bytes());
        assert_eq!(h.from(), Some("a"));
        assert_eq!(&s[n..], "<iq");
        let s = "<stream:stream from=\"a\" xmlns:stream=\"http://etherx.jabber.org/streams\"\n\t >";
        assert_eq!(complete(s.as_bytes()).1, s.len());
    }

    #[test]
    fn incomplete_at_every_split() {
        for cut in 0..AGENT.len() {
            assert_eq!(
                scan_header(&AGENT.as_bytes()[..cut]).unwrap(),
                HeaderScan::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn rejects_bad_headers() {
        for bad in [
            "<iq type='set'>",
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' from='a'>",
            "<stream:stream from='a'>",
            "<stream:stream from=a xmlns:stream='http://etherx.jabber.org/streams'>",
            "<stream:stream from='a'xmlns:stream='http://etherx.jabber.org/streams'>",
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
            "<stream:streamx>",
            "hello",
        ] {
            assert!(scan_header(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(scan_header(&vec![b' '; MAX_HEADER_SIZE]).is_err());
    }
}

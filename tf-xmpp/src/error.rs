//! Error types. Every error a peer can cause is a value, never a panic.

use std::io;

/// An XML document (one stanza or one nonza) could not be parsed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("XML nested deeper than {0} elements")]
    TooDeep(usize),
    #[error("unknown entity reference &{0};")]
    UnknownEntity(String),
    #[error("DTDs are not allowed")]
    Doctype,
    #[error("document has no root element")]
    NoRoot,
    #[error("content after the root element: {0:?}")]
    TrailingContent(String),
    #[error("text outside the root element: {0:?}")]
    StrayText(String),
    #[error("element <{0}> is not closed")]
    Unclosed(String),
}

/// The byte stream between stanzas (or the stream header) broke the rules of XMPP.md §1.2/§1.5.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("stanza exceeds the maximum size of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unexpected data between stanzas: {0:?}")]
    UnexpectedData(String),
    #[error("unexpected top-level element <{0}> (only iq and message are allowed)")]
    UnexpectedElement(String),
    #[error("self-closing top-level <{0}/> is not allowed")]
    SelfClosing(String),
    #[error("stanza is not valid UTF-8")]
    InvalidUtf8,
    #[error("bad stream header: {0}")]
    BadHeader(String),
    #[error("malformed processing instruction or XML declaration")]
    BadDeclaration,
    #[error("stanza XML: {0}")]
    Parse(#[from] ParseError),
}

/// A stanza parsed as XML but does not have the shape XMPP.md prescribes.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StanzaError {
    #[error("missing element <{0}>")]
    Missing(&'static str),
    #[error("missing attribute {0}")]
    MissingAttr(&'static str),
    #[error("invalid value {value:?} for {field}")]
    Invalid { field: &'static str, value: String },
    #[error("unexpected stanza: {0}")]
    Unexpected(String),
}

impl StanzaError {
    pub(crate) fn invalid(field: &'static str, value: impl Into<String>) -> Self {
        StanzaError::Invalid {
            field,
            value: value.into(),
        }
    }
}

/// Errors of the async session layer.
#[derive(Debug, thiserror::Error)]
pub enum XmppError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Stanza(#[from] StanzaError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("peer closed the connection{0}")]
    Closed(&'static str),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("stream negotiation: {0}")]
    Negotiation(String),
}

//! A small owned XML element tree, parsed with quick-xml.
//!
//! Names are matched literally and namespaces are not resolved, as TF's pugixml-based parser
//! does: `xmlns` attributes are ordinary attributes here.

use crate::error::ParseError;
use quick_xml::events::Event;
use quick_xml::XmlVersion;
use std::fmt::Write as _;

/// Deepest nesting accepted from a peer. TF documents nest about 8 levels; this bounds recursion.
pub const MAX_DEPTH: usize = 64;

/// One XML element with its attributes in document order and its children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

/// A child of an element: a nested element or character data (entities resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: appends an attribute.
    pub fn attr_with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attrs.push((name.into(), value.into()));
        self
    }

    /// Builder: appends a child element.
    pub fn child_with(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends text.
    pub fn text_with(mut self, text: impl Into<String>) -> Self {
        let text = text.into();
        if !text.is_empty() {
            self.children.push(Node::Text(text));
        }
        self
    }

    /// Builder: appends `<name>text</name>`.
    pub fn leaf(self, name: &str, text: impl ToString) -> Self {
        self.child_with(Element::new(name).text_with(text.to_string()))
    }

    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Value of the first attribute with this literal name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// First child element with this name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    /// All child elements with this name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.name == name)
    }

    /// First element with this name anywhere below this one (depth first, document order).
    pub fn descendant(&self, name: &str) -> Option<&Element> {
        for e in self.elements() {
            if e.name == name {
                return Some(e);
            }
            if let Some(found) = e.descendant(name) {
                return Some(found);
            }
        }
        None
    }

    /// Concatenated direct character data.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Trimmed text of the first child with this name (`None` when the child is absent).
    pub fn child_text(&self, name: &str) -> Option<String> {
        self.child(name).map(|c| c.text().trim().to_string())
    }

    /// Parses one complete XML document (an optional declaration, one root element).
    pub fn parse(xml: &str) -> Result<Element, ParseError> {
        parse_document(xml)
    }

    /// Serialises with double-quoted attributes; empty elements are written as `<x/>`.
    pub fn write_to(&self, out: &mut String) {
        self.write_inner(out, false);
    }

    /// Serialises like [`Element::write_to`] but never self-closes this (top-level) element,
    /// because TF finds stanzas by their closing tag (XMPP.md §1.5).
    pub fn write_stanza_to(&self, out: &mut String) {
        self.write_inner(out, true);
    }

    /// [`Element::write_to`] into a new string.
    pub fn to_xml(&self) -> String {
        let mut s = String::new();
        self.write_to(&mut s);
        s
    }

    /// [`Element::write_stanza_to`] into a new string.
    pub fn to_stanza(&self) -> String {
        let mut s = String::new();
        self.write_stanza_to(&mut s);
        s
    }

    fn write_inner(&self, out: &mut String, force_close: bool) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            escape_attr_into(v, out);
            out.push('"');
        }
        if self.children.is_empty() && !force_close {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for c in &self.children {
            match c {
                Node::Element(e) => e.write_inner(out, false),
                Node::Text(t) => escape_text_into(t, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

/// Escapes character data.
pub fn escape_text_into(s: &str, out: &mut String) {
    if !s.bytes().any(|b| matches!(b, b'&' | b'<' | b'>')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// Escapes a double-quoted attribute value (whitespace controls as character references so
/// attribute-value normalisation on the other side gives them back unchanged).
pub fn escape_attr_into(s: &str, out: &mut String) {
    if !s
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\t' | b'\n' | b'\r'))
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Writes a decimal number without the formatting machinery.
pub(crate) fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
}

/// Writes `<name>text</name>`, or `<name/>` for empty text: what [`leaf`] serialises to.
pub(crate) fn write_leaf(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    if text.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    escape_text_into(text, out);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// [`write_leaf`] for a number.
pub(crate) fn write_leaf_u32(out: &mut String, name: &str, v: u32) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    push_u64(out, v.into());
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// [`write_leaf`] for a boolean (`true` / `false`).
pub(crate) fn write_leaf_bool(out: &mut String, name: &str, v: bool) {
    write_leaf(out, name, if v { "true" } else { "false" });
}

/// Escapes an attribute value into a new string.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_attr_into(s, &mut out);
    out
}

fn resolve_ref(name: &str) -> Result<String, ParseError> {
    if let Some(num) = name.strip_prefix('#') {
        let code = if let Some(hex) = num.strip_prefix('x') {
            u32::from_str_radix(hex, 16)
        } else {
            num.parse::<u32>()
        }
        .map_err(|_| ParseError::UnknownEntity(name.to_string()))?;
        match char::from_u32(code) {
            Some(c) if c != '\0' => Ok(c.to_string()),
            _ => Err(ParseError::UnknownEntity(name.to_string())),
        }
    } else {
        quick_xml::escape::resolve_predefined_entity(name)
            .map(str::to_string)
            .ok_or_else(|| ParseError::UnknownEntity(name.to_string()))
    }
}

fn append_text(stack: &mut [Element], root_done: bool, text: &str) -> Result<(), ParseError> {
    match stack.last_mut() {
        Some(top) => {
            if let Some(Node::Text(prev)) = top.children.last_mut() {
                prev.push_str(text);
            } else if !text.is_empty() {
                top.children.push(Node::Text(text.to_string()));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None if root_done => Err(ParseError::TrailingContent(snippet(text))),
        None => Err(ParseError::StrayText(snippet(text))),
    }
}

fn snippet(s: &str) -> String {
    s.chars().take(40).collect()
}

fn start_element(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, ParseError> {
    let name = String::from_utf8_lossy(start.name().as_ref().as_bytes()).into_owned();
    let mut el = Element::new(name);
    for attr in start.attributes().with_checks(true) {
        let attr = attr.map_err(|e| ParseError::Xml(e.to_string()))?;
        let key = attr.key.as_ref().to_string();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| ParseError::Xml(e.to_string()))?;
        el.attrs.push((key, value.into_owned()));
    }
    Ok(el)
}

fn parse_document(xml: &str) -> Result<Element, ParseError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.trim_text(false);
    }
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| ParseError::Xml(e.to_string()))?;
        match ev {
            Event::Start(s) => {
                if root.is_some() {
                    return Err(ParseError::TrailingContent(
                        String::from_utf8_lossy(s.name().as_ref().as_bytes()).into_owned(),
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(ParseError::TooDeep(MAX_DEPTH));
                }
                stack.push(start_element(&s)?);
            }
            Event::Empty(s) => {
                if root.is_some() {
                    return Err(ParseError::TrailingContent(
                        String::from_utf8_lossy(s.name().as_ref().as_bytes()).into_owned(),
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(ParseError::TooDeep(MAX_DEPTH));
                }
                let el = start_element(&s)?;
                match stack.last_mut() {
                    Some(top) => top.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                // check_end_names guarantees the name matches the open element.
                let el = stack
                    .pop()
                    .ok_or_else(|| ParseError::Xml("unmatched end tag".into()))?;
                match stack.last_mut() {
                    Some(top) => top.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                append_text(&mut stack, root.is_some(), &text)?;
            }
            Event::CData(c) => {
                let text = c.xml10_content();
                append_text(&mut stack, root.is_some(), &text)?;
            }
            Event::GeneralRef(r) => {
                let text = resolve_ref(&r)?;
                append_text(&mut stack, root.is_some(), &text)?;
            }
            Event::DocType(_) => return Err(ParseError::Doctype),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(ParseError::Unclosed(open.name.clone()));
    }
    root.ok_or(ParseError::NoRoot)
}

/// Convenience for building `<name>value</name>` leaves.
pub(crate) fn leaf(name: &str, value: impl ToString) -> Element {
    Element::new(name).text_with(value.to_string())
}

/// Parses an unsigned integer field; empty text means 0 (TF writes every member, even unset ones).
pub(crate) fn parse_u64_str(
    field: &'static str,
    text: Option<&str>,
) -> Result<u64, crate::error::StanzaError> {
    match text {
        None => Ok(0),
        Some("") => Ok(0),
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| crate::error::StanzaError::invalid(field, t)),
    }
}

/// Parses a u32 field like [`parse_u64_str`].
pub(crate) fn parse_u32_field(
    field: &'static str,
    text: Option<String>,
) -> Result<u32, crate::error::StanzaError> {
    parse_u32_str(field, text.as_deref())
}

/// [`parse_u32_field`] on borrowed text.
pub(crate) fn parse_u32_str(
    field: &'static str,
    text: Option<&str>,
) -> Result<u32, crate::error::StanzaError> {
    let v = parse_u64_str(field, text)?;
    u32::try_from(v).map_err(|_| crate::error::StanzaError::invalid(field, text.unwrap_or("")))
}

/// Parses a boolean field (`true`/`false`/`1`/`0`; empty means false).
pub(crate) fn parse_bool_field(
    field: &'static str,
    text: Option<String>,
) -> Result<bool, crate::error::StanzaError> {
    parse_bool_str(field, text.as_deref())
}

/// [`parse_bool_field`] on borrowed text.
pub(crate) fn parse_bool_str(
    field: &'static str,
    text: Option<&str>,
) -> Result<bool, crate::error::StanzaError> {
    match text {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(crate::error::StanzaError::invalid(field, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_attributes_text_and_children() {
        let el = Element::parse(
            r#"<?xml version="1.0"?><iq type='set' to="a/b"><x a="1&amp;2">t&lt;1&#65;</x><y/></iq>"#,
        )
        .unwrap();
        assert_eq!(el.name, "iq");
        assert_eq!(el.attr("type"), Some("set"));
        assert_eq!(el.attr("to"), Some("a/b"));
        let x = el.child("x").unwrap();
        assert_eq!(x.attr("a"), Some("1&2"));
        assert_eq!(x.text(), "t<1A");
        assert!(el.child("y").unwrap().children.is_empty());
    }

    #[test]
    fn rejects_malformed_documents() {
        assert!(matches!(
            Element::parse("<a><b></a>"),
            Err(ParseError::Xml(_))
        ));
        assert!(matches!(
            Element::parse("<a>"),
            Err(ParseError::Unclosed(_))
        ));
        assert!(matches!(
            Element::parse("<a/><b/>"),
            Err(ParseError::TrailingContent(_))
        ));
        assert!(matches!(
            Element::parse("x<a/>"),
            Err(ParseError::StrayText(_))
        ));
        assert!(matches!(
            Element::parse("<a>&foo;</a>"),
            Err(ParseError::UnknownEntity(_))
        ));
        assert!(matches!(
            Element::parse("<!DOCTYPE a><a/>"),
            Err(ParseError::Doctype)
        ));
        assert!(Element::parse("").is_err());
        assert!(Element::parse("<a x='1' x='2'/>").is_err());
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(Element::parse(&deep), Err(ParseError::TooDeep(MAX_DEPTH)));
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(Element::parse(&ok).is_ok());
    }

    #[test]
    fn writes_escaped_and_round_trips() {
        let el = Element::new("iq")
            .attr_with("v", "a\"<&>\n")
            .child_with(Element::new("t").text_with("x<&>y"))
            .child_with(Element::new("e"));
        let xml = el.to_stanza();
        assert_eq!(
            xml,
            "<iq v=\"a&quot;&lt;&amp;&gt;&#10;\"><t>x&lt;&amp;&gt;y</t><e/></iq>"
        );
        assert_eq!(Element::parse(&xml).unwrap(), el);
        assert_eq!(Element::new("iq").to_stanza(), "<iq></iq>");
        assert_eq!(Element::new("iq").to_xml(), "<iq/>");
    }
}

//! [`Warning`]: something in the input that kproxy skipped or corrected, and where it was.

use std::fmt;

/// The longest object name kept in a warning, in bytes (Kubernetes names are at most 253).
const MAX_NAME_BYTES: usize = 253;
/// The longest input value quoted in a warning's message, in bytes.
const MAX_QUOTED_BYTES: usize = 100;
/// The longest field path or message kept in a warning, in bytes.
const MAX_TEXT_BYTES: usize = 1000;

/// Which object a [`Warning`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ObjectRef {
    /// The object's kind: `Service`, `EndpointSlice` or `Node`.
    pub kind: String,
    /// `metadata.namespace` (`None` for cluster-scoped kinds such as Node).
    pub namespace: Option<String>,
    /// `metadata.name` (`""` when the object has none).
    pub name: String,
}

impl ObjectRef {
    pub(crate) fn new(kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            kind: truncate(kind, MAX_NAME_BYTES),
            namespace: namespace.map(|ns| truncate(ns, MAX_NAME_BYTES)),
            name: truncate(name, MAX_NAME_BYTES),
        }
    }
}

impl fmt::Display for ObjectRef {
    /// `Service default/web`, `Node node-a`; a missing name shows as `<unnamed>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", Escaped(&self.kind))?;
        if let Some(ns) = &self.namespace {
            write!(f, "{}/", Escaped(ns))?;
        }
        if self.name.is_empty() {
            f.write_str("<unnamed>")
        } else {
            write!(f, "{}", Escaped(&self.name))
        }
    }
}

/// Something in the input that kproxy skipped or corrected: which file and object, which
/// field, what was wrong and what was done about it.
///
/// Its [`Display`](fmt::Display) form is
/// `<file>: <Kind> <namespace>/<name>: <field>: <message>`, leaving out the parts that are
/// unknown, for example
/// `svc.yaml: Service default/web: spec.ports[1].protocol: unknown protocol "ICMP" (expected TCP, UDP or SCTP); port ignored`.
/// Control characters from the input are escaped and long values shortened, so a warning
/// is always one line of bounded length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Warning {
    /// The file (or the source name given to
    /// [`load_str`](crate::manifests::load_str)); `None` for objects converted directly.
    pub file: Option<String>,
    /// The object, when known.
    pub object: Option<ObjectRef>,
    /// A JSON-path-like location inside the object, such as `spec.ports[1].protocol`; for
    /// a document the loader could not attribute to an object, its place in the file
    /// (`document 2`, `items[3]`).
    pub field: Option<String>,
    /// What was wrong and what was done about it.
    pub message: String,
}

impl Warning {
    pub(crate) fn new(
        object: Option<ObjectRef>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Warning {
        Warning {
            file: None,
            object,
            field: field.map(|f| truncate(&f, MAX_TEXT_BYTES)),
            message: truncate(&message.into(), MAX_TEXT_BYTES),
        }
    }

    pub(crate) fn in_file(mut self, file: &str) -> Warning {
        if !file.is_empty() {
            self.file = Some(truncate(file, MAX_TEXT_BYTES));
        }
        self
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", Escaped(file))?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{}: ", Escaped(field))?;
        }
        write!(f, "{}", Escaped(&self.message))
    }
}

/// Writes a string with control characters (`\n`, `\u{1b}`, …), line and paragraph
/// separators and bidirectional-text controls escaped, so that input cannot break a log
/// line or disguise what it shows.
struct Escaped<'a>(&'a str);

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if needs_escape(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// `s`, cut at a character boundary to at most `max` bytes plus `…`.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// An input value quoted for a message: Rust string syntax (escapes included), shortened.
pub(crate) fn quote(s: &str) -> String {
    format!("{:?}", truncate(s, MAX_QUOTED_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_leaves_out_unknown_parts() {
        let mut w = Warning::new(
            Some(ObjectRef::new("Service", Some("ns"), "web")),
            Some("spec.ports[0].port".into()),
            "0 is out of range 1-65535; port ignored",
        );
        assert_eq!(
            w.to_string(),
            "Service ns/web: spec.ports[0].port: 0 is out of range 1-65535; port ignored"
        );
        w = w.in_file("a.yaml");
        assert_eq!(
            w.to_string(),
            "a.yaml: Service ns/web: spec.ports[0].port: 0 is out of range 1-65535; port ignored"
        );
        let node = Warning::new(Some(ObjectRef::new("Node", None, "")), None, "m");
        assert_eq!(node.to_string(), "Node <unnamed>: m");
        assert_eq!(Warning::new(None, None, "m").to_string(), "m");
    }

    #[test]
    fn odd_names_stay_on_one_bounded_line() {
        let name = format!("a\nb\u{1b}[31m{}", "é".repeat(1000));
        let w = Warning::new(Some(ObjectRef::new("Node", None, &name)), None, "x\ny");
        let text = w.to_string();
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        assert!(text.starts_with("Node a\\nb\\u{1b}[31méé"), "{text}");
        let w = Warning::new(None, None, "a\u{2028}b\u{202e}c\u{85}d");
        assert_eq!(w.to_string(), "a\\u{2028}b\\u{202e}c\\u{85}d");
        assert!(text.len() < 400, "{}", text.len());
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}

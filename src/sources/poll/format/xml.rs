//! `format = "xml"`: an XML body mapped to JSON, so that `records`, `key` and the watermark
//! point into it as into any JSON page.
//!
//! The mapping is the one of `xmltodict` (Python) and `xml2js` with `explicitArray: false`,
//! which most users of XML APIs already know:
//!
//! - the document becomes an object with one member, the root element's name;
//! - an element with neither attributes nor child elements becomes its text, a JSON string
//!   (`<name>Ada</name>` → `"Ada"`), or `null` when it has no text (`<name/>`);
//! - any other element becomes an object: each attribute as `"@name": "value"`, each child
//!   element under its name, and its text, if any, as `"#text"`;
//! - a child name that occurs more than once in an element becomes an array of the children,
//!   in document order; a name that occurs once is not an array;
//! - names are kept as written, namespace prefix included (`atom:link`);
//! - text is the element's character data and CDATA sections, references resolved, joined
//!   and then trimmed of leading and trailing whitespace; every value is a string (no number
//!   or boolean is guessed); comments, processing instructions and the DOCTYPE are dropped.
//!
//! A body that is not well-formed XML (per `quick-xml`), refers to an entity other than the
//! five predefined ones, or nests elements deeper than [`MAX_DEPTH`] is an error whose text
//! names the problem and the byte offset; the mapping never panics, whatever the bytes.

use serde_json::{Map, Value};

use quick_xml::{escape::resolve_predefined_entity, events::Event, Reader, XmlVersion};

/// The deepest element nesting mapped. Each element level is at most two JSON levels (an
/// object, an array of repeated elements), which keeps the JSON within `serde_json`'s own
/// nesting limit of 128.
pub const MAX_DEPTH: usize = 60;

/// An element being read: its name, attributes, children so far, and text so far.
struct Open {
    name: String,
    members: Map<String, Value>,
    has_children: bool,
    text: String,
}

impl Open {
    fn new(name: String) -> Self {
        Open {
            name,
            members: Map::new(),
            has_children: false,
            text: String::new(),
        }
    }

    /// Adds a finished child element, turning a repeated name into an array.
    fn add_child(&mut self, name: String, value: Value) {
        self.has_children = true;
        match self.members.get_mut(&name) {
            // A child's own value is never an array, so an array here holds repetitions.
            Some(Value::Array(repeated)) => repeated.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                self.members.insert(name, value);
            }
        }
    }

    /// The element's JSON value.
    fn finish(self) -> (String, Value) {
        let text = self.text.trim();
        if self.members.is_empty() {
            let value = if text.is_empty() {
                Value::Null
            } else {
                Value::String(text.to_owned())
            };
            return (self.name, value);
        }
        let mut members = self.members;
        if !text.is_empty() {
            members.insert("#text".to_owned(), Value::String(text.to_owned()));
        }
        (self.name, Value::Object(members))
    }
}

/// Maps an XML document to JSON text, as the module documentation states.
///
/// # Errors
/// The body is not well-formed XML, uses an undeclared entity, has no root element, or nests
/// deeper than [`MAX_DEPTH`]; the text names the problem and its byte offset.
pub fn to_json(body: &[u8]) -> Result<Vec<u8>, String> {
    let value = to_value(body)?;
    serde_json::to_vec(&value).map_err(|e| e.to_string())
}

/// Maps an XML document to a JSON value (see [`to_json`]).
///
/// # Errors
/// As [`to_json`].
pub fn to_value(body: &[u8]) -> Result<Value, String> {
    let mut reader = Reader::from_reader(body);
    let mut open: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let at = |reader: &Reader<&[u8]>| reader.buffer_position();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("{e} (at byte {})", reader.error_position()))?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(format!("a second root element (at byte {})", at(&reader)));
            }
            Event::Start(start) => {
                if open.len() >= MAX_DEPTH {
                    return Err(format!(
                        "elements nest deeper than {MAX_DEPTH} levels (at byte {})",
                        at(&reader)
                    ));
                }
                let element = element(&start, &reader)?;
                open.push(element);
            }
            Event::Empty(start) => {
                let element = element(&start, &reader)?;
                close(&mut open, &mut root, element);
            }
            Event::End(_) => {
                // quick-xml checks that the end tag matches the open one.
                let element = open.pop().ok_or_else(|| {
                    format!("an end tag with no open element (at byte {})", at(&reader))
                })?;
                close(&mut open, &mut root, element);
            }
            Event::Text(text) => {
                let content = text.xml10_content();
                match open.last_mut() {
                    Some(element) => element.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => {
                        return Err(format!(
                            "text outside the root element (at byte {})",
                            at(&reader)
                        ))
                    }
                }
            }
            Event::CData(cdata) => {
                let Some(element) = open.last_mut() else {
                    return Err(format!(
                        "CDATA outside the root element (at byte {})",
                        at(&reader)
                    ));
                };
                element.text.push_str(&cdata.xml10_content());
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(character)) => character.to_string(),
                    Ok(None) => {
                        let name = reference.xml10_content();
                        match resolve_predefined_entity(&name) {
                            Some(text) => text.to_owned(),
                            None => {
                                return Err(format!(
                                    "the entity `&{name};` is not one of XML's predefined entities (at byte {})",
                                    at(&reader)
                                ))
                            }
                        }
                    }
                    Err(error) => return Err(format!("{error} (at byte {})", at(&reader))),
                };
                match open.last_mut() {
                    Some(element) => element.text.push_str(&resolved),
                    None => {
                        return Err(format!(
                            "a reference outside the root element (at byte {})",
                            at(&reader)
                        ))
                    }
                }
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(unclosed) = open.last() {
        return Err(format!(
            "the document ends inside the element `<{}>`",
            unclosed.name
        ));
    }
    let (name, value) = root.ok_or_else(|| "the document has no root element".to_owned())?;
    let mut document = Map::new();
    document.insert(name, value);
    Ok(Value::Object(document))
}

/// A start tag's name and attributes.
fn element(
    start: &quick_xml::events::BytesStart<'_>,
    reader: &Reader<&[u8]>,
) -> Result<Open, String> {
    let mut element = Open::new(start.name().as_ref().to_owned());
    for attribute in start.attributes() {
        let attribute =
            attribute.map_err(|e| format!("{e} (at byte {})", reader.buffer_position()))?;
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| format!("{e} (at byte {})", reader.buffer_position()))?;
        let name = format!("@{}", attribute.key.as_ref());
        element
            .members
            .insert(name, Value::String(value.into_owned()));
    }
    Ok(element)
}

/// Hands a finished element to its parent, or makes it the root.
fn close(open: &mut [Open], root: &mut Option<(String, Value)>, element: Open) {
    let (name, value) = element.finish();
    match open.last_mut() {
        Some(parent) => parent.add_child(name, value),
        None => *root = Some((name, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn map(xml: &str) -> Value {
        to_value(xml.as_bytes()).unwrap()
    }

    #[test]
    fn elements_attributes_text_and_repetitions_map_as_documented() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<response status="ok">
  <items count="2">
    <item id="1"><name>Ada &amp; Grace</name><tag>a</tag><tag>b</tag></item>
    <item id="2"><name><![CDATA[<Linus>]]></name><empty/><note lang="en">hi &#x263A;</note></item>
  </items>
  <next/>
</response>"#;
        assert_eq!(
            map(xml),
            json!({"response": {
                "@status": "ok",
                "items": {
                    "@count": "2",
                    "item": [
                        {"@id": "1", "name": "Ada & Grace", "tag": ["a", "b"]},
                        {"@id": "2", "name": "<Linus>", "empty": null,
                         "note": {"@lang": "en", "#text": "hi \u{263A}"}}
                    ]
                },
                "next": null
            }})
        );
    }

    #[test]
    fn a_single_child_is_not_an_array_and_prefixes_are_kept() {
        assert_eq!(
            map(r#"<feed xmlns:atom="x"><atom:link href="/a"/><count>3</count></feed>"#),
            json!({"feed": {"@xmlns:atom": "x", "atom:link": {"@href": "/a"}, "count": "3"}})
        );
    }

    #[test]
    fn malformed_documents_are_errors_that_name_the_problem() {
        for (xml, wanted) in [
            ("<a><b></a>", "b"),
            ("<a>", "ends inside"),
            ("", "no root element"),
            ("<a/><b/>", "second root"),
            ("<a>&nbsp;</a>", "nbsp"),
            ("text<a/>", "outside the root"),
            ("<a x=1/>", "byte"),
        ] {
            let error = to_value(xml.as_bytes()).unwrap_err();
            assert!(error.contains(wanted), "{xml}: {error}");
        }
    }

    #[test]
    fn nesting_is_capped_below_serde_json_limit() {
        let deep = |levels: usize| "<a>".repeat(levels) + &"</a>".repeat(levels);
        let error = to_value(deep(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(error.contains("nest deeper"), "{error}");
        let json = to_json(deep(MAX_DEPTH).as_bytes()).unwrap();
        serde_json::from_slice::<&serde_json::value::RawValue>(&json).unwrap();
        // Repetition at every level doubles the JSON depth; it still parses.
        let repeated = "<a>".repeat(MAX_DEPTH - 1) + "<b/><b/>" + &"</a>".repeat(MAX_DEPTH - 1);
        let json = to_json(repeated.as_bytes()).unwrap();
        serde_json::from_slice::<&serde_json::value::RawValue>(&json).unwrap();
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(json) = to_json(&bytes) {
                prop_assert!(serde_json::from_slice::<Value>(&json).is_ok());
            }
        }

        #[test]
        fn xml_like_text_never_panics(text in "[<>/a-c=\"'&;#x0-9 !\\[\\]CDAT?-]{0,200}") {
            let _ = to_json(text.as_bytes());
        }
    }
}

//! The protobuf text format as protobuf's C++ `TextFormat` prints it, which
//! is what p4c writes: one field per line in field-number order, a repeated
//! field as one entry per element, map entries sorted by key, `Any`
//! expanded when its type is known, strings and bytes C-escaped.
//!
//! prost-reflect's own printer writes repeated fields in list syntax
//! (`tables: [{...}, {...}]`): valid, but unlike every P4Info in the wild
//! and unstable for maps, which makes diffs against p4c output useless.

use std::fmt::Write;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value};

/// `message`'s fields in text format, at nesting depth 0.
pub(super) fn print(message: &DynamicMessage) -> String {
    let mut out = String::new();
    print_body(message, 0, &mut out);
    out
}

fn print_body(message: &DynamicMessage, indent: usize, out: &mut String) {
    if let Some((type_url, packed)) = expand_any(message) {
        open(&format!("[{type_url}]"), indent, out);
        print_body(&packed, indent + 2, out);
        close(indent, out);
        return;
    }
    let mut fields: Vec<_> = message.fields().collect();
    fields.sort_by_key(|(field, _)| field.number());
    for (field, value) in fields {
        match value {
            Value::List(elements) => {
                for element in elements {
                    print_field(&field, element, indent, out);
                }
            }
            Value::Map(entries) => {
                let mut entries: Vec<_> = entries.iter().collect();
                entries.sort_by_key(|(key, _)| *key);
                let value_field = field
                    .kind()
                    .as_message()
                    .expect("a map field's kind is its entry message")
                    .map_entry_value_field();
                for (key, value) in entries {
                    open(field.name(), indent, out);
                    line(&format!("key: {}", map_key(key)), indent + 2, out);
                    print_field(&value_field, value, indent + 2, out);
                    close(indent, out);
                }
            }
            single => print_field(&field, single, indent, out),
        }
    }
}

fn print_field(field: &FieldDescriptor, value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Message(message) => {
            open(field.name(), indent, out);
            print_body(message, indent + 2, out);
            close(indent, out);
        }
        scalar => {
            let scalar = scalar_text(scalar, &field.kind());
            line(&format!("{}: {scalar}", field.name()), indent, out);
        }
    }
}

fn scalar_text(value: &Value, kind: &Kind) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::String(s) => quote(s.as_bytes()),
        Value::Bytes(b) => quote(b),
        Value::EnumNumber(number) => kind
            .as_enum()
            .and_then(|e| e.get_value(*number))
            .map_or_else(|| number.to_string(), |v| v.name().to_owned()),
        Value::Message(_) | Value::List(_) | Value::Map(_) => {
            unreachable!("print_body handles messages, lists and maps")
        }
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => quote(s.as_bytes()),
    }
}

/// A double-quoted string with C escapes, as C++ `CEscape` writes it:
/// non-ASCII and control bytes in three-digit octal.
fn quote(bytes: &[u8]) -> String {
    let mut quoted = String::with_capacity(bytes.len() + 2);
    quoted.push('"');
    for &byte in bytes {
        match byte {
            b'\n' => quoted.push_str("\\n"),
            b'\r' => quoted.push_str("\\r"),
            b'\t' => quoted.push_str("\\t"),
            b'"' => quoted.push_str("\\\""),
            b'\'' => quoted.push_str("\\'"),
            b'\\' => quoted.push_str("\\\\"),
            0x20..=0x7e => quoted.push(char::from(byte)),
            _ => write!(quoted, "\\{byte:03o}").expect("writing to a String"),
        }
    }
    quoted.push('"');
    quoted
}

/// The type URL and unpacked body of a `google.protobuf.Any` whose type
/// the message's descriptor pool knows.
fn expand_any(message: &DynamicMessage) -> Option<(String, DynamicMessage)> {
    if message.descriptor().full_name() != "google.protobuf.Any" {
        return None;
    }
    let any: prost_types::Any = message.transcode_to().ok()?;
    let type_name = any.type_url.rsplit('/').next()?;
    let descriptor = message
        .descriptor()
        .parent_pool()
        .get_message_by_name(type_name)?;
    let body = DynamicMessage::decode(descriptor, any.value.as_slice()).ok()?;
    Some((any.type_url, body))
}

fn open(name: &str, indent: usize, out: &mut String) {
    line(&format!("{name} {{"), indent, out);
}

fn close(indent: usize, out: &mut String) {
    line("}", indent, out);
}

fn line(text: &str, indent: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', indent));
    out.push_str(text);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quote_escapes_like_c_escape() {
        assert_eq!(quote(b"@noWarn(\"unused\")"), r#""@noWarn(\"unused\")""#);
        assert_eq!(quote(b"a\\b\n\t'"), r#""a\\b\n\t\'""#);
        assert_eq!(quote(&[0x00, 0x01, 0x7f, 0xff]), r#""\000\001\177\377""#);
    }
}

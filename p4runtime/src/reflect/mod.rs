//! The compiled descriptors, and conversions between prost messages and
//! their text and JSON forms through prost-reflect.
//!
//! prost itself only speaks the binary wire format; text and JSON go through
//! a [`DynamicMessage`] built from the same descriptors the prost types were
//! generated from, so the two views cannot drift apart.

mod text;

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::{Error, Result};

/// The encoded `FileDescriptorSet` of every proto in this crate (and of
/// `google/protobuf/any.proto`, which they import), without source info.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// The descriptors of [`FILE_DESCRIPTOR_SET`], decoded on first use.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
        DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("build.rs writes a valid, self-contained descriptor set")
    });
    &POOL
}

/// The descriptor of a message this crate compiled, e.g. `p4.config.v1.P4Info`.
fn descriptor(full_name: &str) -> MessageDescriptor {
    descriptor_pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("message `{full_name}` is not in the compiled protos"))
}

fn to_dynamic<M: Message>(full_name: &str, message: &M) -> DynamicMessage {
    let mut dynamic = DynamicMessage::new(descriptor(full_name));
    dynamic
        .transcode_from(message)
        .expect("a prost message re-decodes with its own descriptor");
    dynamic
}

fn from_dynamic<M: Message + Default>(dynamic: &DynamicMessage) -> Result<M> {
    dynamic
        .transcode_to()
        .map_err(|source| Error::Transcode { source })
}

/// Parses the protobuf text format into the prost message `M`, whose full
/// proto name is `full_name`.
pub(crate) fn from_text<M: Message + Default>(full_name: &str, text: &str) -> Result<M> {
    let dynamic = DynamicMessage::parse_text_format(descriptor(full_name), text)
        .map_err(|source| Error::ParseText { source })?;
    from_dynamic(&dynamic)
}

/// Prints `message` in the protobuf text format, as protobuf's C++ library
/// (and so p4c) prints it.
pub(crate) fn to_text<M: Message>(full_name: &str, message: &M) -> String {
    text::print(&to_dynamic(full_name, message))
}

/// Parses the protobuf JSON mapping into the prost message `M`.
pub(crate) fn from_json<M: Message + Default>(full_name: &str, json: &str) -> Result<M> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(descriptor(full_name), &mut deserializer)
        .and_then(|dynamic| deserializer.end().map(|()| dynamic))
        .map_err(|source| Error::ParseJson { source })?;
    from_dynamic(&dynamic)
}

/// Prints `message` in the protobuf JSON mapping, indented.
///
/// Fails only for a `google.protobuf.Any` whose type is not in
/// [`descriptor_pool`], since JSON has no form for opaque Any bytes.
pub(crate) fn to_json<M: Message>(full_name: &str, message: &M) -> Result<String> {
    let mut json = Vec::new();
    let mut serializer = serde_json::Serializer::pretty(&mut json);
    to_dynamic(full_name, message)
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|source| Error::WriteJson { source })?;
    Ok(String::from_utf8(json).expect("serde_json writes UTF-8"))
}

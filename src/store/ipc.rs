//! Checks on Arrow IPC messages that come from outside (DoPut and DoExchange bodies, prepared
//! statement parameters, stored files) before arrow-rs decodes them.
//!
//! arrow-rs turns a flatbuffer schema into its types with `unimplemented!` and `panic!` for
//! values it does not know: a type tag of 0 or past the last type, an integer of 7 bits, a list
//! with two children, a decimal 300 digits wide. Sent by a client, any of these would unwind
//! through the request instead of answering it. [`check_schema`] walks the schema first and
//! refuses what the conversion would panic on, so the client gets INVALID_ARGUMENT naming the
//! field. Record batch messages are checked for buffers that lie outside their body, and a
//! compressed one for the size it declares it will decompress to, so a small body cannot ask the
//! decoder for terabytes.
//!
//! Those checks cover the structure; the decoder's own assertions on array lengths, null counts
//! and offsets are many and change between arrow releases, so decoding also runs inside
//! [`crate::contain`].

use arrow::datatypes::{DataType, Field, UnionFields};
use arrow::ipc::{self, Message, MessageHeader};

use crate::error::{Error, Result};

/// Nesting deeper than this is refused; real schemas stay far below it.
const MAX_DEPTH: usize = 64;

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("malformed Arrow IPC: {what}"))
}

/// Checks an IPC message header (as FlightData carries it) and returns the bytes its body takes
/// once decoded: the body's length, or for a compressed batch the sum of the uncompressed
/// lengths its buffers declare (each compressed buffer starts with that length as an i64; -1
/// marks a buffer sent uncompressed).
pub fn check_message(header: &[u8], body: &[u8]) -> Result<u64> {
    let message = ipc::root_as_message(header).map_err(malformed)?;
    check_message_schema(&message)?;
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => message.header_as_dictionary_batch().and_then(|d| d.data()),
        _ => None,
    };
    let Some(batch) = batch else { return Ok(body.len() as u64) };
    let compressed = batch.compression().is_some();
    let mut total = 0u64;
    for buffer in batch.buffers().iter().flatten() {
        // arrow-rs slices each buffer out of the body without checking that it lies inside.
        let (start, length) = usize::try_from(buffer.offset())
            .ok()
            .zip(usize::try_from(buffer.length()).ok())
            .filter(|(offset, length)| offset.checked_add(*length).is_some_and(|end| end <= body.len()))
            .ok_or_else(|| malformed("a buffer lies outside the message body"))?;
        if !compressed || length == 0 {
            continue;
        }
        let prefix = body
            .get(start..start + 8)
            .ok_or_else(|| malformed("a compressed buffer is shorter than its length prefix"))?;
        let declared = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
        total = total.saturating_add(if declared < 0 { length as u64 } else { declared as u64 });
    }
    Ok(total.max(body.len() as u64))
}

/// Checks every message of an Arrow IPC stream before a `StreamReader` reads it, and that its
/// bodies decode to at most `max_bytes` together.
pub fn check_stream(mut stream: &[u8], max_bytes: u64) -> Result<()> {
    let mut total = 0u64;
    while !stream.is_empty() {
        let (message_len, header, body) = encapsulated(stream)?;
        if header.is_empty() {
            break; // end of stream
        }
        total = total.saturating_add(check_message(header, body)?);
        check_expanded(total, max_bytes)?;
        stream = &stream[message_len..];
    }
    Ok(())
}

/// Checks an IPC file block (an encapsulated message followed by its body) before a
/// `FileDecoder` decodes it, and that its body decodes to at most `max_bytes`. `meta_len` is the
/// footer's metadata length for the block: the decoder takes the body from there, so it must be
/// where the message's own length puts it, or the body checked would not be the body decoded.
pub fn check_block(block: &[u8], meta_len: i32, max_bytes: u64) -> Result<()> {
    let (end, header, body) = encapsulated(block)?;
    if header.is_empty() {
        return Err(malformed("a block without a message"));
    }
    let body_start = end - body.len();
    if usize::try_from(meta_len).ok() != Some(body_start) {
        return Err(malformed("the footer's metadata length disagrees with the message"));
    }
    check_expanded(check_message(header, body)?, max_bytes)
}

/// Where an IPC file block's flatbuffer header and body lie within it, as FlightData carries
/// them (`data_header`, `data_body`).
pub fn block_parts(block: &[u8]) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let (end, header, body) = encapsulated(block)?;
    let header_start = header.as_ptr() as usize - block.as_ptr() as usize;
    Ok((header_start..header_start + header.len(), end - body.len()..end))
}

fn check_expanded(bytes: u64, max_bytes: u64) -> Result<()> {
    if bytes > max_bytes {
        return Err(Error::ResourceExhausted(format!(
            "Arrow IPC body would decode to {bytes} bytes; at most {max_bytes} are accepted here"
        )));
    }
    Ok(())
}

/// Splits an encapsulated message: the optional continuation marker, a little-endian i32 length,
/// the flatbuffer header (padded to that length) and the body the header declares. Returns the
/// bytes the whole message takes, the header and the body.
fn encapsulated(bytes: &[u8]) -> Result<(usize, &[u8], &[u8])> {
    let skip = if bytes.starts_with(&[0xff; 4]) { 4 } else { 0 };
    let len = bytes.get(skip..skip + 4).ok_or_else(|| malformed("message too short"))?;
    let len = usize::try_from(i32::from_le_bytes(len.try_into().expect("4 bytes")))
        .map_err(|_| malformed("negative message length"))?;
    let header_start = skip + 4;
    let header = header_start
        .checked_add(len)
        .and_then(|end| bytes.get(header_start..end))
        .ok_or_else(|| malformed("message header past the end"))?;
    if header.is_empty() {
        return Ok((header_start, header, &[]));
    }
    let message = ipc::root_as_message(header).map_err(malformed)?;
    let body_len = usize::try_from(message.bodyLength()).map_err(|_| malformed("negative body length"))?;
    let body_start = header_start + len;
    let body = body_start
        .checked_add(body_len)
        .and_then(|end| bytes.get(body_start..end))
        .ok_or_else(|| malformed("message body past the end"))?;
    Ok((body_start + body_len, header, body))
}

fn check_message_schema(message: &Message) -> Result<()> {
    match message.header_as_schema() {
        Some(schema) => check_schema(schema),
        None => Ok(()),
    }
}

/// Refuses a flatbuffer schema that `arrow::ipc::convert::fb_to_schema` would panic on.
pub fn check_schema(schema: ipc::Schema) -> Result<()> {
    let fields = schema.fields().ok_or_else(|| malformed("schema without fields"))?;
    for field in fields {
        if field.type_type() == ipc::Type::Decimal && schema.endianness() == ipc::Endianness::Big {
            return Err(malformed("big-endian decimals are not supported"));
        }
        check_field(field, 0)?;
    }
    Ok(())
}

/// Checks one field and its children. Longer than most functions here: it is one arm per Arrow
/// type, kept in one match so that a type it does not check is visible at a glance.
fn check_field(field: ipc::Field, depth: usize) -> Result<()> {
    let name = field.name().unwrap_or_default();
    let bad = |what: &str| malformed(format!("field `{}`: {what}", name.chars().take(64).collect::<String>()));
    if depth > MAX_DEPTH {
        return Err(bad("nested too deeply"));
    }
    if let Some(dictionary) = field.dictionary() {
        let index = dictionary.indexType().ok_or_else(|| bad("dictionary without an index type"))?;
        if !matches!(index.bitWidth(), 8 | 16 | 32 | 64) {
            return Err(bad("dictionary index of an unsupported width"));
        }
    }
    let children = field.children();
    let child_count = children.map_or(0, |c| c.len());
    let exactly = |n: usize| -> Result<()> {
        if children.is_some() && child_count == n { Ok(()) } else { Err(bad(&format!("expected {n} child field(s)"))) }
    };
    let missing = || bad("type parameters missing");
    use ipc::Type as T;
    match field.type_type() {
        T::Null | T::Bool | T::Binary | T::BinaryView | T::LargeBinary | T::Utf8 | T::Utf8View | T::LargeUtf8 => {}
        T::Struct_ => {}
        T::Int => {
            let int = field.type_as_int().ok_or_else(missing)?;
            if !matches!(int.bitWidth(), 8 | 16 | 32 | 64) {
                return Err(bad("integer of an unsupported width"));
            }
        }
        T::FixedSizeBinary => {
            field.type_as_fixed_size_binary().ok_or_else(missing)?;
        }
        T::FloatingPoint => {
            let float = field.type_as_floating_point().ok_or_else(missing)?;
            if !matches!(float.precision(), ipc::Precision::HALF | ipc::Precision::SINGLE | ipc::Precision::DOUBLE) {
                return Err(bad("unknown floating point precision"));
            }
        }
        T::Date => {
            let date = field.type_as_date().ok_or_else(missing)?;
            if !matches!(date.unit(), ipc::DateUnit::DAY | ipc::DateUnit::MILLISECOND) {
                return Err(bad("unknown date unit"));
            }
        }
        T::Time => {
            let time = field.type_as_time().ok_or_else(missing)?;
            let supported = matches!(
                (time.bitWidth(), time.unit()),
                (32, ipc::TimeUnit::SECOND | ipc::TimeUnit::MILLISECOND)
                    | (64, ipc::TimeUnit::MICROSECOND | ipc::TimeUnit::NANOSECOND)
            );
            if !supported {
                return Err(bad("unsupported time width and unit"));
            }
        }
        T::Timestamp => check_time_unit(field.type_as_timestamp().ok_or_else(missing)?.unit())
            .map_err(|_| bad("unknown timestamp unit"))?,
        T::Duration => check_time_unit(field.type_as_duration().ok_or_else(missing)?.unit())
            .map_err(|_| bad("unknown duration unit"))?,
        T::Interval => {
            let interval = field.type_as_interval().ok_or_else(missing)?;
            use ipc::IntervalUnit as U;
            if !matches!(interval.unit(), U::YEAR_MONTH | U::DAY_TIME | U::MONTH_DAY_NANO) {
                return Err(bad("unknown interval unit"));
            }
        }
        T::List | T::LargeList | T::ListView | T::LargeListView => exactly(1)?,
        T::FixedSizeList => {
            exactly(1)?;
            field.type_as_fixed_size_list().ok_or_else(missing)?;
        }
        T::Map => {
            exactly(1)?;
            field.type_as_map().ok_or_else(missing)?;
        }
        T::RunEndEncoded => exactly(2)?,
        T::Decimal => {
            let decimal = field.type_as_decimal().ok_or_else(missing)?;
            if u8::try_from(decimal.precision()).is_err() || i8::try_from(decimal.scale()).is_err() {
                return Err(bad("decimal precision or scale out of range"));
            }
            if !matches!(decimal.bitWidth(), 32 | 64 | 128 | 256) {
                return Err(bad("decimal of an unsupported width"));
            }
        }
        T::Union => {
            let union = field.type_as_union().ok_or_else(missing)?;
            if !matches!(union.mode(), ipc::UnionMode::Dense | ipc::UnionMode::Sparse) {
                return Err(bad("unknown union mode"));
            }
            if let Some(ids) = union.typeIds() {
                // The type ids must pair one to one with the children, as arrow requires.
                let placeholders = (0..child_count).map(|i| Field::new(i.to_string(), DataType::Null, true));
                UnionFields::try_new(ids.iter().map(|id| id as i8), placeholders)
                    .map_err(|_| bad("union type ids do not match its children"))?;
            }
        }
        _ => return Err(bad("unknown type")),
    }
    for child in children.into_iter().flatten() {
        check_field(child, depth + 1)?;
    }
    Ok(())
}

fn check_time_unit(unit: ipc::TimeUnit) -> std::result::Result<(), ()> {
    use ipc::TimeUnit as U;
    if matches!(unit, U::SECOND | U::MILLISECOND | U::MICROSECOND | U::NANOSECOND) { Ok(()) } else { Err(()) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Schema;
    use arrow::ipc::writer::{IpcDataGenerator, IpcWriteOptions};

    use super::*;

    fn schema_message(schema: &Schema) -> Vec<u8> {
        let data = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut arrow::ipc::writer::DictionaryTracker::new(false),
            &IpcWriteOptions::default(),
        );
        data.ipc_message
    }

    #[test]
    fn accepts_what_arrow_writes() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new_list("l", Field::new("item", DataType::Utf8View, true), true),
            Field::new("d", DataType::Decimal128(38, 10), true),
            Field::new(
                "m",
                DataType::Map(
                    Arc::new(Field::new_struct(
                        "entries",
                        vec![Field::new("k", DataType::Utf8, false), Field::new("v", DataType::Float64, true)],
                        false,
                    )),
                    false,
                ),
                true,
            ),
        ]);
        let message = schema_message(&schema);
        assert_eq!(check_message(&message, &[]).unwrap(), 0);
    }

    #[test]
    fn refuses_a_type_arrow_would_panic_on() {
        let mut message = schema_message(&Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        // The Int type's bit width (64) as a little-endian i32 inside the flatbuffer: make it 7.
        let at = message.windows(4).rposition(|w| w == 64i32.to_le_bytes()).expect("bit width");
        message[at] = 7;
        let err = check_message(&message, &[]).unwrap_err();
        assert!(err.to_string().contains("unsupported width"), "{err}");
        assert!(
            check_stream(&[&[0xff; 4][..], &(message.len() as i32).to_le_bytes(), &message].concat(), 1 << 20).is_err()
        );
    }
}

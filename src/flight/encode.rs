//! Record batches encoded as Flight messages without copying their buffers.
//!
//! arrow-flight's encoder writes every buffer of a batch into one contiguous message body: one
//! more pass over every byte of a result, into freshly allocated memory, before the body reaches
//! the socket. arrow-ipc's [`StreamEncoder`] instead returns the IPC stream as a list of the
//! batch's own buffers with the headers and padding between them. [`BatchEncoder`] cuts that list
//! into messages, each an [`OutgoingData`] whose body is the list of buffers it spans, shared with
//! the batch, and `wire` writes them to HTTP/2 one after another.
//!
//! Dictionary columns are the exception: Flight clients expect them hydrated to their value type,
//! as arrow-flight's encoder does, so a schema with a dictionary anywhere in it is left to that
//! encoder (see [`BatchEncoder::supports`]).

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::{IpcWriteOptions, StreamEncoder};
use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::Bytes;
use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::flight::inflight::Grant;

/// A Flight message on its way out: the fields of a `FlightData` but its body, and the body as a
/// list of parts that are sent as they are, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutgoingData {
    /// The message without its body.
    pub data: FlightData,
    /// The body's parts; together they are `data_body`.
    pub body: Vec<Bytes>,
    /// The response budget the message holds until it is written ([`crate::flight::inflight`]); the
    /// framing attaches it to the bytes it writes.
    pub grant: Option<Grant>,
}

impl OutgoingData {
    /// The body's length in bytes.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    /// The message as one `FlightData`, its body joined (a copy when it has several parts): for
    /// the paths that hand messages to tonic's codec.
    pub fn into_flight_data(self) -> FlightData {
        let OutgoingData { mut data, body, grant: _ } = self;
        data.data_body = match body.len() {
            0 => Bytes::new(),
            1 => body.into_iter().next().expect("one part"),
            _ => body.concat().into(),
        };
        data
    }
}

impl From<FlightData> for OutgoingData {
    fn from(mut data: FlightData) -> Self {
        let body = std::mem::take(&mut data.data_body);
        OutgoingData { data, body: if body.is_empty() { Vec::new() } else { vec![body] }, grant: None }
    }
}

/// Encodes a stream of record batches of one schema, one message per batch, each body sharing
/// the batch's buffers. The schema's message is made apart ([`BatchEncoder::schema_message`]), so
/// that it can go out before the first batch is read.
pub(crate) struct BatchEncoder {
    encoder: StreamEncoder,
    started: bool,
}

impl BatchEncoder {
    /// Whether batches of `schema` can be encoded here: not when it holds a dictionary.
    pub fn supports(schema: &Schema) -> bool {
        fn plain(field: &Field) -> bool {
            match field.data_type() {
                DataType::Dictionary(..) => false,
                DataType::List(f)
                | DataType::LargeList(f)
                | DataType::ListView(f)
                | DataType::LargeListView(f)
                | DataType::FixedSizeList(f, _)
                | DataType::Map(f, _) => plain(f),
                DataType::Struct(fields) => fields.iter().all(|f| plain(f)),
                DataType::Union(fields, _) => fields.iter().all(|(_, f)| plain(f)),
                DataType::RunEndEncoded(ends, values) => plain(ends) && plain(values),
                _ => true,
            }
        }
        schema.fields().iter().all(|f| plain(f))
    }

    /// An encoder for batches of `schema`, which [`BatchEncoder::supports`].
    pub fn try_new(schema: &Schema) -> Result<Self> {
        debug_assert!(Self::supports(schema));
        Ok(BatchEncoder { encoder: StreamEncoder::try_new(schema)?, started: false })
    }

    /// The message that opens the stream: the schema.
    pub fn schema_message(schema: &Schema) -> OutgoingData {
        FlightData::from(SchemaAsIpc::new(schema, &IpcWriteOptions::default())).into()
    }

    /// The messages for `batch`: its dictionaries' (none, for a supported schema) and its own.
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<OutgoingData>> {
        let mut messages = split_messages(self.encoder.encode(batch)?)?;
        if !std::mem::replace(&mut self.started, true) && !messages.is_empty() {
            messages.remove(0); // the schema, sent apart
        }
        Ok(messages)
    }
}

/// The IPC stream continuation marker that opens every message's length prefix.
const CONTINUATION: [u8; 4] = [0xff; 4];

/// Cuts an IPC stream, given as a list of buffers, into Flight messages: for each, the
/// flatbuffer header (small, copied) and the body as the buffers it spans (shared). The
/// end-of-stream marker ends it.
fn split_messages(buffers: Vec<Buffer>) -> Result<Vec<OutgoingData>> {
    let mut stream = Pieces::new(buffers);
    let mut messages = Vec::new();
    while stream.remaining() > 0 {
        let prefix = stream.take_joined(8)?;
        if prefix[..4] != CONTINUATION {
            return Err(Error::Internal("the IPC encoder wrote a message without a continuation marker".into()));
        }
        let header_len = i32::from_le_bytes(prefix[4..8].try_into().expect("4 bytes"));
        if header_len == 0 {
            break;
        }
        let header = stream.take_joined(usize::try_from(header_len).unwrap_or(usize::MAX))?;
        let message = arrow::ipc::root_as_message(&header)
            .map_err(|e| Error::Internal(format!("the IPC encoder wrote an unreadable header: {e}")))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| Error::Internal("the IPC encoder wrote a negative body length".into()))?;
        let body = coalesce(stream.take_parts(body_len)?);
        messages.push(OutgoingData {
            data: FlightData { data_header: header, ..Default::default() },
            body,
            grant: None,
        });
    }
    Ok(messages)
}

/// Parts below this size are joined with their small neighbours: copying a few kilobytes costs
/// less than sending each as an HTTP/2 frame of its own, and a small result's body (its buffers,
/// their padding) then goes out as one part.
const SMALL_PART: usize = 32 << 10;

/// `parts` with each run of consecutive small parts joined into one.
fn coalesce(parts: Vec<Bytes>) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(parts.len());
    let mut run: Vec<Bytes> = Vec::new();
    let flush = |run: &mut Vec<Bytes>, out: &mut Vec<Bytes>| match run.len() {
        0 => {}
        1 => out.push(run.pop().expect("one part")),
        _ => out.push(std::mem::take(run).concat().into()),
    };
    for part in parts {
        if part.len() < SMALL_PART {
            run.push(part);
        } else {
            flush(&mut run, &mut out);
            out.push(part);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A byte sequence held as a list of buffers, read from the front.
struct Pieces {
    pieces: VecDeque<Buffer>,
    remaining: usize,
}

impl Pieces {
    fn new(buffers: Vec<Buffer>) -> Self {
        let remaining = buffers.iter().map(Buffer::len).sum();
        Pieces { pieces: buffers.into_iter().filter(|b| !b.is_empty()).collect(), remaining }
    }

    fn remaining(&self) -> usize {
        self.remaining
    }

    /// The next `n` bytes as the buffers (or parts of buffers) that hold them, not copied.
    fn take_parts(&mut self, mut n: usize) -> Result<Vec<Bytes>> {
        if n > self.remaining {
            return Err(Error::Internal("the IPC encoder wrote a message past the end of its stream".into()));
        }
        self.remaining -= n;
        let mut parts = Vec::new();
        while n > 0 {
            let front = self.pieces.pop_front().expect("counted");
            if front.len() > n {
                self.pieces.push_front(front.slice(n));
                parts.push(shared(front.slice_with_length(0, n)));
                n = 0;
            } else {
                n -= front.len();
                parts.push(shared(front));
            }
        }
        Ok(parts)
    }

    /// The next `n` bytes in one piece: shared when one buffer holds them, else copied.
    fn take_joined(&mut self, n: usize) -> Result<Bytes> {
        let mut parts = self.take_parts(n)?;
        Ok(if parts.len() == 1 { parts.pop().expect("one part") } else { parts.concat().into() })
    }
}

/// An Arrow buffer as `Bytes`, sharing its memory: the `Bytes` keeps the buffer alive.
fn shared(buffer: Buffer) -> Bytes {
    struct Owner(Buffer);
    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            self.0.as_slice()
        }
    }
    Bytes::from_owner(Owner(buffer))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, StringArray, StringViewArray,
        StructArray,
    };
    use arrow::datatypes::Int32Type;
    use arrow_flight::utils::flight_data_to_arrow_batch;

    use super::*;

    fn decode(schema: &Arc<Schema>, messages: Vec<OutgoingData>) -> Vec<RecordBatch> {
        let mut messages = messages.into_iter().map(OutgoingData::into_flight_data);
        let first = messages.next().expect("a schema message");
        let sent = Schema::try_from(&first).expect("a schema");
        assert_eq!(&sent, schema.as_ref());
        let dictionaries = Default::default();
        messages.map(|m| flight_data_to_arrow_batch(&m, schema.clone(), &dictionaries).expect("a batch")).collect()
    }

    fn sample() -> RecordBatch {
        let n = 10_000i32;
        let strings: Vec<Option<String>> =
            (0..n).map(|i| (i % 7 != 0).then(|| format!("value number {i} of the sample"))).collect();
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>((0..n).map(|i| Some(vec![Some(i), None])));
        let point = StructArray::from(vec![
            (
                Arc::new(Field::new("x", DataType::Float64, true)),
                Arc::new(Float64Array::from_iter((0..n).map(|i| Some(f64::from(i))))) as ArrayRef,
            ),
            (
                Arc::new(Field::new("ok", DataType::Boolean, true)),
                Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 3 == 0)))) as ArrayRef,
            ),
        ]);
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from_iter_values(0..i64::from(n))) as ArrayRef),
            ("q", Arc::new(Int32Array::from_iter((0..n).map(|i| (i % 5 != 0).then_some(i)))) as ArrayRef),
            ("s", Arc::new(StringArray::from_iter(strings.iter().map(|s| s.as_deref()))) as ArrayRef),
            ("v", Arc::new(StringViewArray::from_iter(strings.iter().map(|s| s.as_deref()))) as ArrayRef),
            (
                "flag",
                Arc::new(BooleanArray::from_iter((0..n).map(|i| (i % 11 != 0).then_some(i % 2 == 0)))) as ArrayRef,
            ),
            ("l", Arc::new(list) as ArrayRef),
            ("p", Arc::new(point) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn batches_decode_to_what_was_encoded_sliced_or_not() {
        let batch = sample();
        let schema = batch.schema();
        // Slices at odd offsets: validity and boolean bitmaps that do not start on a byte.
        let batches =
            vec![batch.clone(), batch.slice(3, 4_000), batch.slice(4_003, 1), batch.slice(9_999, 1), batch.slice(0, 0)];
        let mut encoder = BatchEncoder::try_new(&schema).unwrap();
        let mut messages = vec![BatchEncoder::schema_message(&schema)];
        for b in &batches {
            messages.extend(encoder.encode(b).unwrap());
        }
        assert_eq!(messages.len(), 1 + batches.len(), "the schema, then one message per batch");
        assert_eq!(decode(&schema, messages), batches);
    }

    #[test]
    fn bodies_share_the_batch_buffers() {
        let values = Int64Array::from_iter_values(0..1_000_000);
        let start = values.values().inner().as_ptr() as usize;
        let end = start + values.values().inner().len();
        let batch = RecordBatch::try_from_iter([("a", Arc::new(values) as ArrayRef)]).unwrap();
        let mut encoder = BatchEncoder::try_new(&batch.schema()).unwrap();
        let messages = encoder.encode(&batch).unwrap();
        let parts = &messages.last().unwrap().body;
        assert!(
            parts.iter().any(|p| p.len() == 8_000_000 && (start..end).contains(&(p.as_ptr() as usize))),
            "the values go out from the array's own memory"
        );
    }

    #[test]
    fn small_parts_are_joined_and_large_ones_shared() {
        let big = Bytes::from(vec![1u8; SMALL_PART]);
        let small = |b: u8| Bytes::from(vec![b; 10]);
        let parts = vec![small(2), small(3), big.clone(), small(4), big.clone(), small(5)];
        let joined = coalesce(parts.clone());
        assert_eq!(joined.len(), 5);
        assert_eq!(joined[0], Bytes::from([vec![2u8; 10], vec![3u8; 10]].concat()));
        assert_eq!(joined[1].as_ptr(), big.as_ptr(), "a large part is not copied");
        assert_eq!(joined.concat(), parts.concat());

        // A small batch's body goes out in one part (its fixed-width columns: a slice of a view
        // array still carries its whole data buffers, which are large here).
        let batch = sample().project(&[0, 1, 2, 4]).unwrap().slice(0, 10);
        let mut encoder = BatchEncoder::try_new(&batch.schema()).unwrap();
        assert_eq!(encoder.encode(&batch).unwrap().last().unwrap().body.len(), 1);
    }

    #[test]
    fn dictionaries_anywhere_are_left_to_arrow_flight() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let nested = DataType::List(Arc::new(Field::new("item", dict.clone(), true)));
        assert!(!BatchEncoder::supports(&Schema::new(vec![Field::new("d", dict, true)])));
        assert!(!BatchEncoder::supports(&Schema::new(vec![Field::new("l", nested, true)])));
        assert!(BatchEncoder::supports(&sample().schema()));
    }

    #[test]
    fn joined_bodies_are_the_parts_in_order() {
        let parts = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c"), Bytes::from_static(b"def")];
        let out = OutgoingData { data: FlightData::default(), body: parts, grant: None };
        assert_eq!(out.body_len(), 6);
        assert_eq!(out.into_flight_data().data_body, Bytes::from_static(b"abcdef"));
        let one = FlightData { data_body: Bytes::from_static(b"xyz"), ..Default::default() };
        assert_eq!(OutgoingData::from(one.clone()).into_flight_data(), one);
    }
}

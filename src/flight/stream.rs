//! Tables in and out of the Flight layer: a client's FlightData read into batches within the
//! upload limit, and a result streamed out, batch by batch from the blocking pool through a
//! bounded channel, so a large result is never whole in memory.
//!
//! A result leaves by one path per store kind:
//! - **A store of files** (a directory, an object store): the stored file's IPC messages, checked
//!   but not decoded ([`stream_messages`]). Decoding and encoding them again would cost a copy of
//!   every body and the CPU to do it, which is what this path exists to avoid.
//! - **The memory store**, and whatever is not a stored file (a Flight SQL metadata table): batches
//!   encoded with their buffers shared ([`stream_batches`], [`super::encode`]). There is no file
//!   to pass through.
//!
//! A stored file also goes the second way when the client asked for other string types than the
//! file holds: the conversion needs the decoded columns. Both paths produce the same
//! `OutgoingData`; `wire` frames it onto HTTP/2 itself, or hands it to tonic when the operator
//! chose `POLARWAY_WIRE_FRAMING=tonic` (the fallback, and the baseline the benchmarks compare
//! the direct framing with). A panic while reading ends the stream with INTERNAL: a stream that
//! just stopped would look complete to the client.
//!
//! Responses are pulled: the next message is read only when the transport asks for it, on one of
//! a bounded number of blocking reads ([`Producer`]), and only with budget for its bytes
//! ([`crate::flight::inflight`]). A client that stops reading therefore holds no thread, and no more
//! memory than it was granted; operations and DoGets never wait for each other's threads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::FlightData;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use tokio::sync::Semaphore;
use tonic::Status;

use super::BoxStream;
use super::encode::{BatchEncoder, OutgoingData};
use crate::convert::{self, ViewTypes};
use crate::error::{Error, Result};
use crate::flight::inflight::{Flow, Grant};
use crate::limits::Limits;
use crate::store::IpcStream;
use crate::store::ipc;

/// The status for a failure of arrow-flight's encoder or decoder.
pub(super) fn flight_error(err: FlightError) -> Status {
    match err {
        FlightError::Tonic(status) => *status,
        FlightError::Arrow(e) => Error::from(e).into(),
        FlightError::DecodeError(m) | FlightError::ProtocolError(m) => {
            Error::invalid(format!("malformed Flight data: {m}")).into()
        }
        FlightError::NotYetImplemented(m) => Error::invalid(format!("unsupported: {m}")).into(),
        FlightError::ExternalError(e) => Error::Internal(e.to_string()).into(),
    }
}

/// Reads a client's FlightData stream into batches, counting bytes against the upload limit.
pub(crate) async fn read_table(
    first: FlightData,
    rest: impl Stream<Item = std::result::Result<FlightData, Status>> + Send + Unpin + 'static,
    limits: Limits,
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), Status> {
    let received = Arc::new(AtomicU64::new(0));
    let counted = stream::once(async { Ok(first) }).chain(rest).map(move |item| {
        let data = item.map_err(|s| FlightError::Tonic(Box::new(s)))?;
        // Compressed bodies count at the size they claim to decompress to, checked before the
        // decoder allocates it: a small body cannot ask for terabytes.
        // Its schema is checked too: arrow-rs panics on some malformed ones.
        let body = if data.data_header.is_empty() {
            data.data_body.len() as u64
        } else {
            ipc::check_message(&data.data_header, &data.data_body)
                .map_err(|e| FlightError::Tonic(Box::new(e.into())))?
        };
        let size = (data.data_header.len() as u64).saturating_add(body);
        let total = received.fetch_add(size, Ordering::Relaxed).saturating_add(size);
        limits.check_put_bytes(total).map_err(|e| FlightError::Tonic(Box::new(e.into())))?;
        Ok(data)
    });
    // A message with no IPC header carries only the descriptor or app metadata (pyarrow's
    // DoExchange opens that way): nothing to decode.
    let counted = counted.filter(|item| {
        let keep = !matches!(item, Ok(data) if data.data_header.is_empty());
        async move { keep }
    });
    let mut decoder = crate::contain::Guarded::new(FlightDataDecoder::new(counted), |panic| {
        FlightError::Tonic(Box::new(Error::invalid(format!("malformed Arrow IPC: {panic}")).into()))
    });
    let mut schema = None;
    let mut batches = Vec::new();
    while let Some(decoded) = decoder.next().await {
        match decoded.map_err(flight_error)?.payload {
            DecodedPayload::Schema(s) => {
                if schema.as_ref().is_some_and(|first| first != &s) {
                    return Err(Error::invalid("the stream changed its schema part way").into());
                }
                schema = Some(s)
            }
            DecodedPayload::RecordBatch(b) => batches.push(b),
            DecodedPayload::None => {}
        }
    }
    let schema = schema.ok_or_else(|| Error::invalid("the stream carried no schema"))?;
    Ok((schema, batches))
}

/// How a response stream gets its messages: each read waits for one of the worker's bounded
/// readers and runs on the blocking pool, and each message waits for budget ([`Flow`]) before it
/// is read, or, when its size is only known once read, before it is handed on.
#[derive(Clone)]
pub(super) struct Producer {
    flow: Flow,
    readers: Arc<Semaphore>,
}

impl Producer {
    pub(super) fn new(flow: Flow, readers: Arc<Semaphore>) -> Producer {
        Producer { flow, readers }
    }

    /// Waits for one of the worker's readers, held until the permit is dropped.
    pub(super) async fn reader(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.readers.clone().acquire_owned().await.expect("the readers' semaphore is never closed")
    }

    /// Runs `f` on the blocking pool once a reader is free; a panic becomes INTERNAL.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let _reader = self.reader().await;
        crate::engine::exec::blocking(f).await
    }
}

/// `message` with its body in pieces that hold `grant`, and the grant for its prefix.
fn granted(message: OutgoingData, grant: &Grant) -> OutgoingData {
    let OutgoingData { data, body, grant: _ } = message;
    let mut pieces = Vec::with_capacity(body.len());
    for part in body {
        grant.attach(part, &mut pieces);
    }
    OutgoingData { data, body: pieces, grant: Some(grant.clone()) }
}

/// The schema message, once granted: it is in flight like the batches after it, so a stream
/// whose client never opens its window is seen to stall.
fn schema_first(schema_message: OutgoingData, producer: &Producer) -> BoxStream<OutgoingData> {
    let flow = producer.flow.clone();
    Box::pin(stream::once(async move {
        let grant = flow.grant(message_bytes(&schema_message)).await;
        Ok(granted(schema_message, &grant))
    }))
}

/// Bytes a message holds.
fn message_bytes(message: &OutgoingData) -> usize {
    message.data.data_header.len() + message.data.app_metadata.len() + message.body_len()
}

/// Streams batches to the client, reading and encoding them on the blocking pool as the client
/// takes them. Their buffers go out as they are ([`BatchEncoder`]), unless the schema holds a
/// dictionary: arrow-flight's encoder hydrates those.
pub(super) fn stream_batches(
    schema: SchemaRef,
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    views: ViewTypes,
    producer: Producer,
) -> BoxStream<OutgoingData> {
    let schema_out = views.schema(&schema);
    if !BatchEncoder::supports(&schema_out) {
        return hydrated(schema_out, batches, views, producer);
    }
    // The schema goes out at once, while the first batch is read.
    let schema_message = BatchEncoder::schema_message(&schema_out);
    let encoder = match BatchEncoder::try_new(&schema_out) {
        Ok(encoder) => encoder,
        Err(e) => {
            return Box::pin(schema_first(schema_message, &producer).chain(stream::once(async { Err(e.into()) })));
        }
    };
    let schema_message = schema_first(schema_message, &producer);
    let encoding = Encoding { batches, encoder, schema_out, views };
    let state = (encoding, producer, VecDeque::new());
    let encoded = stream::unfold(Some(state), |state| async move {
        let (mut encoding, producer, mut ready) = state?;
        loop {
            if let Some(message) = ready.pop_front() {
                return Some((Ok(message), Some((encoding, producer, ready))));
            }
            let next;
            (next, encoding) = match producer.read(move || Ok((encoding.next_messages(), encoding))).await {
                Ok(read) => read,
                Err(e) => return Some((Err(e.into()), None)),
            };
            let messages = match next? {
                Ok(messages) => messages,
                Err(e) => return Some((Err(e.into()), None)),
            };
            // The batch is in memory already (a stored frame's, or decoded); the encoded
            // messages share its buffers. They leave once granted.
            let grant = producer.flow.grant(messages.iter().map(message_bytes).sum()).await;
            ready.extend(messages.into_iter().map(|m| granted(m, &grant)));
        }
    });
    Box::pin(schema_message.chain(encoded))
}

/// The batches of a result on their way to being encoded.
struct Encoding {
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    encoder: BatchEncoder,
    schema_out: SchemaRef,
    views: ViewTypes,
}

impl Encoding {
    /// The messages of the next batch; `None` after the last.
    fn next_messages(&mut self) -> Option<Result<Vec<OutgoingData>>> {
        let batch = match self.batches.next()? {
            Ok(batch) => batch,
            Err(e) => return Some(Err(e)),
        };
        let encode = || {
            let batch = self.views.batch(batch, &self.schema_out)?;
            let mut messages = Vec::new();
            for part in convert::split_batch(&batch, convert::BATCH_TARGET_BYTES) {
                messages.extend(self.encoder.encode(&part)?);
            }
            Ok(messages)
        };
        Some(encode())
    }
}

/// Streams batches through arrow-flight's encoder, which hydrates dictionaries to their values.
/// Each message is granted once encoded: its size is only known then.
fn hydrated(
    schema_out: SchemaRef,
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    views: ViewTypes,
    producer: Producer,
) -> BoxStream<OutgoingData> {
    let target = schema_out.clone();
    let reader = producer.clone();
    let parts = stream::unfold(Some(batches), move |state| {
        let (reader, target) = (reader.clone(), target.clone());
        async move {
            let mut batches = state?;
            let read = reader
                .read(move || {
                    let next = batches.next().map(|batch| {
                        let batch = views.batch(batch?, &target)?;
                        Ok(convert::split_batch(&batch, convert::BATCH_TARGET_BYTES))
                    });
                    Ok((next, batches))
                })
                .await;
            match read {
                Ok((None, _)) => None,
                Ok((Some(Ok(parts)), batches)) => Some((Ok(parts), Some(batches))),
                Ok((Some(Err(e)), _)) | Err(e) => Some((Err(Status::from(e)), None)),
            }
        }
    })
    .map_ok(|parts| stream::iter(parts.into_iter().map(Ok)))
    .try_flatten();
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema_out)
        .with_max_flight_data_size(convert::BATCH_TARGET_BYTES)
        .build(parts.map_err(|status| FlightError::Tonic(Box::new(status))))
        .map_err(flight_error)
        .and_then(move |data| {
            let flow = producer.flow.clone();
            async move {
                let message = OutgoingData::from(data);
                let grant = flow.grant(message_bytes(&message)).await;
                Ok(granted(message, &grant))
            }
        });
    Box::pin(encoded)
}

/// Streams stored IPC messages to the client as FlightData: the schema first, then each record
/// batch's header and body as read (and checked) from the store, each read only once budget for
/// its size (known from the file's footer) is granted.
pub(super) fn stream_messages(stored: IpcStream, producer: Producer) -> BoxStream<OutgoingData> {
    let IpcStream { schema, messages } = stored;
    let schema_message = schema_first(BatchEncoder::schema_message(&schema), &producer);
    let read = stream::unfold(Some((messages, producer)), |state| async move {
        let (mut messages, producer) = state?;
        let grant = producer.flow.grant(messages.next_size()?).await;
        let (next, messages) = match producer.read(move || Ok((messages.next(), messages))).await {
            Ok(read) => read,
            Err(e) => return Some((Err(e.into()), None)),
        };
        match next? {
            Ok(m) => {
                let message =
                    OutgoingData::from(FlightData { data_header: m.header, data_body: m.body, ..Default::default() });
                Some((Ok(granted(message, &grant)), Some((messages, producer))))
            }
            Err(e) => Some((Err(e.into()), None)),
        }
    });
    Box::pin(schema_message.chain(read))
}

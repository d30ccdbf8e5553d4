//! Tables in and out of the Flight layer: a client's FlightData read into batches within the
//! upload limit, and a result streamed out, batch by batch from the blocking pool through a
//! bounded channel, so a large result is never whole in memory.
//!
//! A result leaves in one of two ways: as the stored file's IPC messages, checked but not decoded
//! ([`stream_messages`]), or as batches encoded with their buffers shared ([`super::encode`]) when
//! the client asked for other string types or the store keeps frames ([`stream_batches`]). `wire`
//! then frames the messages onto HTTP/2. A panic while reading ends the stream with INTERNAL: a stream
//! that just stopped would look complete to the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use tonic::Status;

use super::BoxStream;
use super::encode::{BatchEncoder, OutgoingData};
use crate::convert::{self, ViewTypes};
use crate::error::{Error, Result};
use crate::ipc;
use crate::limits::Limits;
use crate::store::IpcStream;

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
            ipc::check_message(&data.data_header, &data.data_body).map_err(|e| FlightError::Tonic(Box::new(e.into())))?
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
    let schema = schema.ok_or_else(|| Status::from(Error::invalid("the stream carried no schema")))?;
    Ok((schema, batches))
}

/// Streams batches to the client, reading and encoding them on the blocking pool. Their buffers
/// go out as they are ([`BatchEncoder`]), unless the schema holds a dictionary: arrow-flight's
/// encoder hydrates those.
pub(super) fn stream_batches(
    schema: SchemaRef,
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    views: ViewTypes,
) -> BoxStream<OutgoingData> {
    let schema_out = views.schema(&schema);
    if !BatchEncoder::supports(&schema_out) {
        return hydrated(schema_out, batches, views);
    }
    // The schema goes out at once, while the first batch is read.
    let schema_message = BatchEncoder::schema_message(&schema_out);
    let encoded = produced(move |send| {
        let mut encoder = BatchEncoder::try_new(&schema_out)?;
        for batch in batches {
            let batch = views.batch(batch?, &schema_out)?;
            for part in convert::split_batch(&batch, convert::BATCH_TARGET_BYTES) {
                for message in encoder.encode(&part)? {
                    if !send(message) {
                        return Ok(()); // the client went away
                    }
                }
            }
        }
        Ok(())
    });
    Box::pin(stream::once(async { Ok(schema_message) }).chain(encoded))
}

/// Streams batches through arrow-flight's encoder, which hydrates dictionaries to their values.
fn hydrated(
    schema_out: SchemaRef,
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    views: ViewTypes,
) -> BoxStream<OutgoingData> {
    let target = schema_out.clone();
    let batches = produced(move |send| {
        for batch in batches {
            let batch = views.batch(batch?, &target)?;
            for part in convert::split_batch(&batch, convert::BATCH_TARGET_BYTES) {
                if !send(part) {
                    return Ok(()); // the client went away
                }
            }
        }
        Ok(())
    });
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema_out)
        .with_max_flight_data_size(convert::BATCH_TARGET_BYTES)
        .build(batches.map_err(|status| FlightError::Tonic(Box::new(status))))
        .map_ok(OutgoingData::from)
        .map_err(flight_error);
    Box::pin(encoded)
}

/// Streams stored IPC messages to the client as FlightData, reading them on the blocking pool:
/// the schema first, then each record batch's header and body as read (and checked) from the
/// store.
pub(super) fn stream_messages(stored: IpcStream) -> BoxStream<OutgoingData> {
    let IpcStream { schema, messages } = stored;
    let schema_message = BatchEncoder::schema_message(&schema);
    let read = produced(move |send| {
        for message in messages {
            let m = message?;
            if !send(FlightData { data_header: m.header, data_body: m.body, ..Default::default() }.into()) {
                return Ok(()); // the client went away
            }
        }
        Ok(())
    });
    Box::pin(stream::once(async { Ok(schema_message) }).chain(read))
}

/// What `produce` sends, produced on the blocking pool through a 2-deep channel. `send` answers
/// false once the client has gone away. An error from `produce` ends the stream with its status,
/// and so does a panic, with INTERNAL: a stream that just stopped would look complete to the
/// client.
fn produced<T: Send + 'static>(
    produce: impl FnOnce(&dyn Fn(T) -> bool) -> Result<()> + Send + 'static,
) -> BoxStream<T> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<T, Status>>(2);
    tokio::task::spawn_blocking(move || {
        let sent = crate::contain::catch(|| produce(&|item| tx.blocking_send(Ok(item)).is_ok()));
        let failure: Option<Status> = match sent {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.into()),
            Err(_) => Some(Error::Internal("reading the result failed unexpectedly".into()).into()),
        };
        if let Some(status) = failure {
            let _ = tx.blocking_send(Err(status));
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

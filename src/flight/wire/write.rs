//! DoGet's side: each response message as a small prefix (the gRPC message header and the
//! protobuf fields before the body), then the body's parts as they are, without copying them.

use std::collections::VecDeque;

use arrow_flight::{FlightData, PutResult};
use bytes::{BufMut, Bytes, BytesMut};
use tonic::Status;

use super::super::encode::OutgoingData;
use super::*;

/// A response message as gRPC frames: a prefix, and a body sent as it is, in parts (none if
/// empty).
pub(super) trait WireMessage {
    /// The message's prefix and body.
    fn frame(self, max: usize) -> crate::error::Result<(Bytes, Vec<Bytes>)>;
}

impl WireMessage for OutgoingData {
    fn frame(self, max: usize) -> crate::error::Result<(Bytes, Vec<Bytes>)> {
        frame(self, max)
    }
}

impl WireMessage for PutResult {
    fn frame(self, max: usize) -> crate::error::Result<(Bytes, Vec<Bytes>)> {
        let mut prefix = grpc_prefix(self.encoded_len(), self.encoded_len(), max)?;
        self.encode(&mut prefix).expect("capacity reserved");
        Ok((prefix.freeze(), Vec::new()))
    }
}

/// A buffer holding the gRPC header of a response message of `len` bytes (within the message
/// limit), with room for `more` bytes after it.
pub(super) fn grpc_prefix(len: usize, more: usize, max: usize) -> crate::error::Result<BytesMut> {
    if len > max {
        return Err(Limit::MessageBytes
            .exceeded(format!("a response message of {len} bytes is over the message limit of {max} bytes")));
    }
    let length = u32::try_from(len).map_err(|_| Limit::MessageBytes.exceeded("a response message is over 4 GiB"))?;
    let mut prefix = BytesMut::with_capacity(GRPC_HEADER + more);
    prefix.put_u8(0);
    prefix.put_u32(length);
    Ok(prefix)
}

/// The protobuf length of `data` with a body of `body` bytes, as prost would encode it.
pub(super) fn flight_data_len(data: &FlightData, body: usize) -> usize {
    let field = |tag: u32, len: usize| if len == 0 { 0 } else { key_len(tag) + encoded_len_varint(len as u64) + len };
    let descriptor = data.flight_descriptor.as_ref().map(Message::encoded_len);
    descriptor.map_or(0, |n| key_len(DESCRIPTOR) + encoded_len_varint(n as u64) + n)
        + field(DATA_HEADER, data.data_header.len())
        + field(APP_METADATA, data.app_metadata.len())
        + field(DATA_BODY, body)
}

/// The gRPC framing of one message as a prefix (message header and every field but the body) and
/// the body's parts, unchanged. The two together are what prost would encode of the message with
/// its body joined.
pub(super) fn frame(message: OutgoingData, max: usize) -> crate::error::Result<(Bytes, Vec<Bytes>)> {
    let body = message.body_len();
    let OutgoingData { data, body: parts, grant } = message;
    let len = flight_data_len(&data, body);
    let mut prefix = grpc_prefix(len, len - body, max)?;
    if let Some(descriptor) = &data.flight_descriptor {
        encode_key(DESCRIPTOR, WireType::LengthDelimited, &mut prefix);
        descriptor.encode_length_delimited(&mut prefix).expect("capacity reserved");
    }
    for (tag, bytes) in [(DATA_HEADER, &data.data_header), (APP_METADATA, &data.app_metadata)] {
        if !bytes.is_empty() {
            encode_key(tag, WireType::LengthDelimited, &mut prefix);
            encode_varint(bytes.len() as u64, &mut prefix);
            prefix.put_slice(bytes);
        }
    }
    if body > 0 {
        encode_key(DATA_BODY, WireType::LengthDelimited, &mut prefix);
        encode_varint(body as u64, &mut prefix);
    }
    // The prefix holds the message's grant too: a message without a body (a schema) is in
    // flight until it is written like any other.
    let prefix = match grant {
        Some(grant) => grant.wrap(prefix.freeze()),
        None => prefix.freeze(),
    };
    Ok((prefix, parts.into_iter().filter(|p| !p.is_empty()).collect()))
}

/// A streamed response body: each message's prefix, then its body's parts, then the status as
/// trailers.
pub(super) struct MessageBody<M> {
    messages: BoxStream<M>,
    /// What is left to send of the body of the message whose prefix went out last.
    body: VecDeque<Bytes>,
    done: bool,
    max_message: usize,
}

impl<M> MessageBody<M> {
    /// A body sending `messages`, each at most `max_message` bytes.
    pub(super) fn new(messages: BoxStream<M>, max_message: usize) -> Self {
        MessageBody { messages, body: VecDeque::new(), done: false, max_message }
    }

    fn trailers(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        match status.add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Err(status) => Poll::Ready(Some(Err(status))),
        }
    }
}

impl<M: WireMessage> http_body::Body for MessageBody<M> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(part) = self.body.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(self.messages.poll_next_unpin(cx)) {
            Some(Ok(message)) => match message.frame(self.max_message) {
                Ok((prefix, body)) => {
                    self.body = body.into();
                    Poll::Ready(Some(Ok(Frame::data(prefix))))
                }
                Err(err) => self.trailers(err.into()),
            },
            Some(Err(status)) => self.trailers(status),
            None => self.trailers(crate::flight::status::ok()),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.body.is_empty()
    }
}

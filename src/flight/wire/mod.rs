//! DoGet and DoPut on the wire: FlightData framed for gRPC without extra copies of record batch
//! bodies.
//!
//! tonic's codec encodes every response message into its send buffer, which copies each record
//! batch body once more on its way to the socket, and assembles every request message in its
//! receive buffer, from which Arrow's decoder copies again each buffer that is not aligned for its
//! type (tonic's never are). [`FlightRoutes`] frames these two methods itself:
//! - DoGet's bodies are already `Bytes` (read and checked from the store, or the buffers of a
//!   batch, shared by `encode`): each message goes out as a small prefix (the gRPC message header
//!   and the protobuf fields before the body), then the body's parts as they are.
//! - DoPut's messages are copied once from the transport's frames into a buffer of their own,
//!   placed so that the body starts 64-byte aligned: Arrow then decodes it where it lies.
//!
//! Every other method goes to tonic's generated service unchanged.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightData, Ticket};
use bytes::BytesMut;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;

use crate::config::WireFraming;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::NamedService;
use tonic::{Request, Status};

use super::{BoxStream, PolarwayFlight};

mod read;
mod write;

pub(crate) use read::{Assembler, read_flight_data};
use write::*;

/// The gRPC paths framed here.
const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";
const DO_PUT: &str = "/arrow.flight.protocol.FlightService/DoPut";
/// Where an upload's bodies start, as a multiple of bytes.
pub(super) const BODY_ALIGNMENT: usize = 64;
/// gRPC's message header: a compression flag and a big-endian length.
pub(super) const GRPC_HEADER: usize = 5;
/// Protobuf field numbers of `FlightData`.
pub(super) const DESCRIPTOR: u32 = 1;
pub(super) const DATA_HEADER: u32 = 2;
pub(super) const APP_METADATA: u32 = 3;
pub(super) const DATA_BODY: u32 = 1000;

/// The Flight service as routed on the server: DoGet and DoPut framed here, the rest by tonic.
#[derive(Clone)]
pub struct FlightRoutes {
    flight: Arc<PolarwayFlight>,
    generated: FlightServiceServer<PolarwayFlight>,
    max_message: usize,
    framing: WireFraming,
}

impl FlightRoutes {
    /// Routes for `flight`, with its engine's message size limit on requests and responses;
    /// `framing` says whether DoGet and DoPut are framed here or by tonic like the rest.
    pub fn new(flight: PolarwayFlight, framing: WireFraming) -> FlightRoutes {
        let max_message = flight.engine.limits().max_message_bytes;
        let flight = Arc::new(flight);
        let generated = FlightServiceServer::from_arc(flight.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        FlightRoutes { flight, generated, max_message, framing }
    }

    async fn do_get(self, request: http::Request<Body>) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let ticket = match read_unary::<Ticket>(body, self.max_message).await {
            Ok(ticket) => ticket,
            Err(status) => return status.into_http(),
        };
        let request = Request::from_http(http::Request::from_parts(parts, ticket));
        respond(self.flight.get(request).await, self.max_message)
    }

    async fn do_put(self, request: http::Request<Body>) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let messages: BoxStream<FlightData> = Box::pin(read_flight_data(body, self.max_message));
        let request = Request::from_http(http::Request::from_parts(parts, messages));
        respond(self.flight.put(request).await, self.max_message)
    }
}

/// A streamed answer as a gRPC response: the metadata as headers, each message framed, the status
/// as trailers.
fn respond<M: WireMessage + Send + 'static>(
    response: Result<tonic::Response<BoxStream<M>>, Status>,
    max_message: usize,
) -> http::Response<Body> {
    match response {
        Ok(response) => {
            let (metadata, messages, extensions) = response.into_parts();
            let body = MessageBody::new(messages, max_message);
            let mut response = http::Response::new(Body::new(body));
            *response.headers_mut() = metadata.into_headers();
            response.headers_mut().insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
            *response.extensions_mut() = extensions;
            response
        }
        Err(status) => status.into_http(),
    }
}

impl NamedService for FlightRoutes {
    const NAME: &'static str = <FlightServiceServer<PolarwayFlight> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for FlightRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if self.framing == WireFraming::Tonic {
            return self.generated.call(request);
        }
        match request.uri().path() {
            DO_GET => {
                let routes = self.clone();
                Box::pin(async move { Ok(routes.do_get(request).await) })
            }
            DO_PUT => {
                let routes = self.clone();
                Box::pin(async move { Ok(routes.do_put(request).await) })
            }
            _ => self.generated.call(request),
        }
    }
}

/// Reads the one message of a unary request, refusing more than `max` bytes.
async fn read_unary<M: Message + Default>(body: Body, max: usize) -> Result<M, Status> {
    let bytes = http_body_util::Limited::new(body, max.saturating_add(GRPC_HEADER))
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Status::resource_exhausted(format!(
                    "the request is larger than the message limit of {max} bytes (POLARWAY_MAX_MESSAGE_BYTES)"
                ))
            } else {
                Status::cancelled(format!("reading the request failed: {e}"))
            }
        })?
        .to_bytes();
    let message = unary_message(&bytes)?;
    M::decode(message).map_err(|e| Status::invalid_argument(format!("the request message is malformed: {e}")))
}

/// The message in one gRPC-framed request body.
fn unary_message(bytes: &[u8]) -> Result<&[u8], Status> {
    let Some((header, rest)) = bytes.split_first_chunk::<GRPC_HEADER>() else {
        return Err(Status::invalid_argument("missing request message"));
    };
    let len = message_length(header)?;
    if rest.len() != len {
        return Err(Status::invalid_argument("the request body is not exactly one gRPC message"));
    }
    Ok(rest)
}

/// The message length in a gRPC message header. A set compressed flag is answered UNIMPLEMENTED,
/// as gRPC's compression spec requires of a server given an encoding it does not support: this
/// service offers none (tonic's own decoder answers the same on the other methods). Any other
/// flag value is a client's malformed framing: INVALID_ARGUMENT.
pub(super) fn message_length(header: &[u8; GRPC_HEADER]) -> Result<usize, Status> {
    match header[0] {
        0 => Ok(u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize),
        1 => Err(Status::unimplemented("compressed messages are not supported: no grpc-encoding is offered")),
        flag => Err(Status::invalid_argument(format!("invalid gRPC compression flag {flag}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode::OutgoingData;
    use super::read::*;
    use super::*;
    use arrow_flight::FlightDescriptor;
    use bytes::Bytes;

    #[test]
    fn varints_are_read_whole_or_not_at_all() {
        let mut encoded = Vec::new();
        encode_varint(300, &mut encoded);
        encoded.push(0xff);
        assert_eq!(varint(&encoded), Some((300, 2)), "the rest is left alone");
        assert_eq!(varint(&[0x80, 0x80]), None, "incomplete");
        assert_eq!(varint(&[0xff; 11]), None, "longer than 64 bits");
        assert_eq!(varint(&[]), None);
    }

    fn prost_framed(data: &FlightData) -> Vec<u8> {
        let encoded = data.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        out.extend_from_slice(&encoded);
        out
    }

    #[test]
    fn frames_are_what_prost_encodes() {
        let body = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let cases = [
            FlightData::default(),
            FlightData { data_header: Bytes::from_static(b"header"), ..Default::default() },
            FlightData { data_header: Bytes::from(vec![7; 200]), data_body: body.clone(), ..Default::default() },
            FlightData {
                flight_descriptor: Some(FlightDescriptor::new_path(vec!["a".into(), "b".into()])),
                data_header: Bytes::from_static(b"h"),
                app_metadata: Bytes::from(vec![1; 130]),
                data_body: body.clone(),
            },
            FlightData { app_metadata: Bytes::from_static(b"only metadata"), ..Default::default() },
        ];
        for data in cases {
            let (prefix, sent_body) = frame(data.clone().into(), usize::MAX).unwrap();
            let mut wire = prefix.to_vec();
            sent_body.iter().for_each(|part| wire.extend_from_slice(part));
            assert_eq!(wire, prost_framed(&data), "{data:?}");
            if !data.data_body.is_empty() {
                assert_eq!(sent_body[0].as_ptr(), data.data_body.as_ptr(), "the body is not copied");
            }
        }
    }

    #[test]
    fn bodies_in_parts_frame_as_the_joined_message() {
        let part = |n: usize, b: u8| Bytes::from(vec![b; n]);
        let parts = vec![part(100_000, 1), Bytes::new(), part(7, 2), part(200, 3)];
        let message = OutgoingData {
            data: FlightData { data_header: Bytes::from_static(b"header"), ..Default::default() },
            body: parts.clone(),
        };
        let (prefix, sent) = frame(message.clone(), usize::MAX).unwrap();
        assert_eq!(sent.len(), 3, "empty parts are not sent");
        assert!(sent.iter().zip(parts.iter().filter(|p| !p.is_empty())).all(|(s, p)| s.as_ptr() == p.as_ptr()));
        let mut wire = prefix.to_vec();
        sent.iter().for_each(|part| wire.extend_from_slice(part));
        assert_eq!(wire, prost_framed(&message.into_flight_data()));
    }

    #[test]
    fn a_message_over_the_limit_is_refused() {
        let data = FlightData { data_body: Bytes::from(vec![0; 2000]), ..Default::default() };
        let status = frame(data.into(), 1000).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("POLARWAY_MAX_MESSAGE_BYTES"), "{}", status.message());
    }

    #[test]
    fn unary_requests_are_read_whole_or_refused() {
        let ticket = Ticket { ticket: Bytes::from_static(b"pw1_abc") };
        let encoded = ticket.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        framed.extend_from_slice(&encoded);
        assert_eq!(Ticket::decode(unary_message(&framed).unwrap()).unwrap(), ticket);

        let code = |bytes: &[u8]| unary_message(bytes).unwrap_err().code();
        // Malformed framing is the client's: INVALID_ARGUMENT.
        assert_eq!(code(&[]), tonic::Code::InvalidArgument);
        assert_eq!(code(&framed[..framed.len() - 1]), tonic::Code::InvalidArgument);
        let mut compressed = framed.clone();
        compressed[0] = 1;
        assert_eq!(code(&compressed), tonic::Code::Unimplemented);
        let mut two = framed.clone();
        two.extend_from_slice(&framed);
        assert_eq!(code(&two), tonic::Code::InvalidArgument);
        let mut bad_flag = framed.clone();
        bad_flag[0] = 7;
        assert_eq!(code(&bad_flag), tonic::Code::InvalidArgument);
    }

    fn sample_messages() -> Vec<FlightData> {
        let body = |n: usize| Bytes::from((0..n).map(|i| (i * 7) as u8).collect::<Vec<_>>());
        vec![
            FlightData {
                flight_descriptor: Some(FlightDescriptor::new_path(vec!["upload".into()])),
                data_header: Bytes::from(vec![3; 180]),
                ..Default::default()
            },
            FlightData { data_header: Bytes::from(vec![4; 300]), data_body: body(1_000_000), ..Default::default() },
            FlightData { data_header: Bytes::from(vec![5; 20]), data_body: body(17), ..Default::default() },
            FlightData::default(),
            FlightData { app_metadata: Bytes::from(vec![6; 70_000]), data_body: body(300_000), ..Default::default() },
            FlightData { data_header: Bytes::from(vec![7; 90]), data_body: body(65_536), ..Default::default() },
        ]
    }

    fn grpc_stream(messages: &[FlightData]) -> Vec<u8> {
        messages.iter().flat_map(prost_framed).collect()
    }

    #[test]
    fn uploads_are_assembled_in_any_chunking_with_bodies_aligned() {
        let messages = sample_messages();
        let stream = grpc_stream(&messages);
        for chunk in [1, 2, 5, 6, 97, 4096, 16_384, 65_535, 1 << 20, stream.len()] {
            let assembled = Assembler::assemble(&stream, chunk, 4 << 20).unwrap();
            assert_eq!(assembled, messages, "chunks of {chunk}");
            for data in &assembled {
                if !data.data_body.is_empty() {
                    assert_eq!(data.data_body.as_ptr() as usize % BODY_ALIGNMENT, 0, "chunks of {chunk}");
                }
            }
        }
    }

    #[test]
    fn broken_uploads_get_client_errors() {
        let messages = sample_messages();
        let stream = grpc_stream(&messages);
        let code = |result: Result<Vec<FlightData>, Status>| result.unwrap_err().code();
        // Cut in the middle of a message, or of a gRPC header.
        assert_eq!(code(Assembler::assemble(&stream[..stream.len() - 10], 4096, 4 << 20)), tonic::Code::InvalidArgument);
        assert_eq!(code(Assembler::assemble(&stream[..3], 4096, 4 << 20)), tonic::Code::InvalidArgument);
        // Over the message limit, said before the message is read.
        assert_eq!(code(Assembler::assemble(&stream, 4096, 500_000)), tonic::Code::ResourceExhausted);
        // Compressed, or an unknown flag.
        let mut compressed = stream.clone();
        compressed[0] = 1;
        assert_eq!(code(Assembler::assemble(&compressed, 4096, 4 << 20)), tonic::Code::Unimplemented);
        compressed[0] = 9;
        assert_eq!(code(Assembler::assemble(&compressed, 4096, 4 << 20)), tonic::Code::InvalidArgument);
        // Not a protobuf: a length-delimited field running past the message, and a bad wire type.
        for garbage in [vec![0x12, 0x7f, 1, 2], vec![0x0f, 1, 2, 3]] {
            let mut framed = vec![0];
            framed.extend_from_slice(&(garbage.len() as u32).to_be_bytes());
            framed.extend_from_slice(&garbage);
            for chunk in [1, 3, framed.len()] {
                assert_eq!(code(Assembler::assemble(&framed, chunk, 4 << 20)), tonic::Code::InvalidArgument);
            }
        }
    }

    #[tokio::test]
    async fn messages_before_a_transport_failure_are_delivered_then_the_failure() {
        let messages = sample_messages();
        let stream = grpc_stream(&messages[..3]);
        let mut chunks: Vec<Result<Frame<Bytes>, Status>> =
            stream.chunks(10_000).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        chunks.push(Err(Status::unavailable("connection reset")));
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let read: Vec<_> = read_flight_data(body, 4 << 20).collect().await;
        assert_eq!(read.len(), 4);
        for (got, want) in read.iter().zip(&messages[..3]) {
            assert_eq!(got.as_ref().unwrap(), want);
        }
        assert_eq!(read[3].as_ref().unwrap_err().code(), tonic::Code::Cancelled);
    }

    #[tokio::test]
    async fn an_oversize_request_is_refused_before_it_is_read_whole() {
        let body = Body::new(http_body_util::Full::new(Bytes::from(vec![0u8; 10_000])));
        let status = read_unary::<Ticket>(body, 1000).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }
}

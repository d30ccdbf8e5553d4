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
//! Every other method goes to tonic's generated service unchanged, after the same checks on its
//! request: a unary request (a ticket, an action, a descriptor) is read here header first, refused
//! from its length prefix when it is over `POLARWAY_MAX_REQUEST_BYTES` and when it does not arrive
//! whole within `POLARWAY_REQUEST_READ_TIMEOUT_SECS`, with the same statuses and metrics on both
//! framings; a streamed request fails once nothing arrives for `POLARWAY_IDLE_TIMEOUT_SECS`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightData, Ticket};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;

use crate::config::{Transport, WireFraming};
use crate::error::Error;
use crate::limits::Limit;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
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
/// The methods whose request is one message, read here header first on either framing, by path
/// and by the name the metrics give them.
const UNARY: [(&str, &str); 7] = [
    (DO_GET, "DoGet"),
    ("/arrow.flight.protocol.FlightService/DoAction", "DoAction"),
    ("/arrow.flight.protocol.FlightService/GetFlightInfo", "GetFlightInfo"),
    ("/arrow.flight.protocol.FlightService/PollFlightInfo", "PollFlightInfo"),
    ("/arrow.flight.protocol.FlightService/GetSchema", "GetSchema"),
    ("/arrow.flight.protocol.FlightService/ListFlights", "ListFlights"),
    ("/arrow.flight.protocol.FlightService/ListActions", "ListActions"),
];
/// The methods whose request is a stream: each ends when it idles ([`Stalling`]).
const STREAMED: [&str; 3] =
    [DO_PUT, "/arrow.flight.protocol.FlightService/DoExchange", "/arrow.flight.protocol.FlightService/Handshake"];
/// Where an upload's bodies start, as a multiple of bytes.
pub(super) const BODY_ALIGNMENT: usize = 64;
/// gRPC's message header: a compression flag and a big-endian length.
pub(super) const GRPC_HEADER: usize = 5;
/// Protobuf field numbers of `FlightData`.
pub(super) const DESCRIPTOR: u32 = 1;
pub(super) const DATA_HEADER: u32 = 2;
pub(super) const APP_METADATA: u32 = 3;
pub(super) const DATA_BODY: u32 = 1000;

/// The Flight service as routed on the server: DoGet and DoPut framed here, the rest by tonic;
/// every unary request read here, header first, and every streamed one watched for stalls.
#[derive(Clone)]
pub struct FlightRoutes {
    flight: Arc<PolarwayFlight>,
    generated: FlightServiceServer<PolarwayFlight>,
    max_message: usize,
    max_request: usize,
    read_timeout: Duration,
    upload_idle: Duration,
    framing: WireFraming,
}

impl FlightRoutes {
    /// Routes for `flight`, with its engine's message size limit on streamed requests and on
    /// responses, and `transport`'s limits on unary requests and idle uploads; `framing` says whether
    /// DoGet and DoPut are framed here or by tonic like the rest.
    pub fn new(flight: PolarwayFlight, framing: WireFraming, transport: &Transport) -> FlightRoutes {
        let max_message = flight.engine.limits().max_message_bytes;
        let flight = Arc::new(flight);
        let generated = FlightServiceServer::from_arc(flight.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        FlightRoutes {
            flight,
            generated,
            max_message,
            max_request: transport.max_request_bytes,
            read_timeout: transport.request_read_timeout,
            upload_idle: transport.idle_timeout,
            framing,
        }
    }

    /// A unary call: its request read here (refused, and counted, when it is too large, malformed
    /// or too slow), then served.
    async fn unary(mut self, method: &'static str, request: http::Request<Body>) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let message = match read_unary(body, self.max_request, self.read_timeout).await {
            Ok(message) => message,
            Err(err) => {
                let id = super::call::request_id(&tonic::metadata::MetadataMap::from_headers(parts.headers.clone()));
                let status =
                    tracing::info_span!("rpc", method, request_id = id.as_str()).in_scope(|| Status::from(err));
                crate::metrics::RequestTimer::start(method).finish(super::status::code_name(status.code()));
                return with_request_id(status.into_http(), &id);
            }
        };
        if method == "DoGet" && self.framing == WireFraming::Direct {
            let ticket = match Ticket::decode(message) {
                Ok(ticket) => ticket,
                Err(e) => {
                    return Status::from(Error::invalid(format!("the request message is malformed: {e}"))).into_http();
                }
            };
            let request = Request::from_http(http::Request::from_parts(parts, ticket));
            return respond(self.flight.get(request).await, self.max_message);
        }
        // tonic decodes it again, from the bytes already read.
        let mut framed = BytesMut::with_capacity(GRPC_HEADER + message.len());
        framed.extend_from_slice(&[0]);
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let body = Body::new(http_body_util::Full::new(framed.freeze()));
        match self.generated.call(http::Request::from_parts(parts, body)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
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
        let path = request.uri().path();
        if let Some(&(_, method)) = UNARY.iter().find(|(p, _)| *p == path) {
            let routes = self.clone();
            return Box::pin(async move { Ok(routes.unary(method, request).await) });
        }
        let request = if STREAMED.contains(&path) {
            let idle = self.upload_idle;
            request.map(|body| Body::new(Stalling::new(body, idle)))
        } else {
            request
        };
        if self.framing == WireFraming::Direct && request.uri().path() == DO_PUT {
            let routes = self.clone();
            return Box::pin(async move { Ok(routes.do_put(request).await) });
        }
        self.generated.call(request)
    }
}

/// `response` with the call's request id in its headers, as every other answer carries it.
fn with_request_id(mut response: http::Response<Body>, id: &str) -> http::Response<Body> {
    if let Ok(value) = http::HeaderValue::from_str(id) {
        response.headers_mut().insert(crate::protocol::REQUEST_ID_HEADER, value);
    }
    response
}

/// Reads the one message of a unary request: the 5-byte prefix first, so that a length over
/// `max` is refused before the body is read, then exactly that message, all within `timeout`.
async fn read_unary(body: Body, max: usize, timeout: Duration) -> crate::error::Result<Bytes> {
    match tokio::time::timeout(timeout, read_prefixed(body, max)).await {
        Ok(read) => read,
        Err(_) => Err(Error::DeadlineExceeded(format!(
            "the request did not arrive whole within {} s (POLARWAY_REQUEST_READ_TIMEOUT_SECS)",
            timeout.as_secs_f64()
        ))),
    }
}

async fn read_prefixed(mut body: Body, max: usize) -> crate::error::Result<Bytes> {
    let mut read = BytesMut::new();
    let mut length = None;
    loop {
        if length.is_none() && read.len() >= GRPC_HEADER {
            let header = read[..GRPC_HEADER].try_into().expect("a whole header is read");
            let len = message_length(header)?;
            if len > max {
                return Err(Limit::RequestBytes
                    .exceeded(format!("a request message of {len} bytes is over the limit of {max} bytes")));
            }
            length = Some(len);
        }
        if length.is_some_and(|len| read.len() > GRPC_HEADER + len) {
            return Err(Error::invalid("the request body is not exactly one gRPC message"));
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(Error::Cancelled(format!("reading the request failed: {e}"))),
            None => break,
        }
    }
    unary_message(&read)?;
    Ok(read.freeze().slice(GRPC_HEADER..))
}

/// A streamed request body that fails once nothing has arrived for `stall`, so a client that
/// stops sending cannot hold its call (and what it has sent so far) open.
struct Stalling {
    body: Body,
    stall: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Stalling {
    fn new(body: Body, stall: Duration) -> Stalling {
        Stalling { body, stall, timer: Box::pin(tokio::time::sleep(stall)) }
    }
}

impl http_body::Body for Stalling {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                let next = tokio::time::Instant::now() + self.stall;
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(frame))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.timer.as_mut().poll(cx));
                crate::metrics::metrics().streams_stalled.with_label_values(&["upload"]).inc();
                tracing::info!("request stream cancelled: nothing arrived for POLARWAY_IDLE_TIMEOUT_SECS");
                Poll::Ready(Some(Err(Error::DeadlineExceeded(format!(
                    "nothing arrived for {} s (POLARWAY_IDLE_TIMEOUT_SECS)",
                    self.stall.as_secs_f64()
                ))
                .into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The message in one gRPC-framed request body.
fn unary_message(bytes: &[u8]) -> crate::error::Result<&[u8]> {
    let Some((header, rest)) = bytes.split_first_chunk::<GRPC_HEADER>() else {
        return Err(Error::invalid("missing request message"));
    };
    let len = message_length(header)?;
    if rest.len() != len {
        return Err(Error::invalid("the request body is not exactly one gRPC message"));
    }
    Ok(rest)
}

/// The message length in a gRPC message header. A set compressed flag is answered UNIMPLEMENTED,
/// as gRPC's compression spec requires of a server given an encoding it does not support: this
/// service offers none (tonic's own decoder answers the same on the other methods). Any other
/// flag value is a client's malformed framing: INVALID_ARGUMENT.
pub(super) fn message_length(header: &[u8; GRPC_HEADER]) -> crate::error::Result<usize> {
    match header[0] {
        0 => Ok(u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize),
        1 => Err(Error::Unimplemented("compressed messages are not supported: no grpc-encoding is offered".into())),
        flag => Err(Error::invalid(format!("invalid gRPC compression flag {flag}"))),
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
            grant: None,
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
        let status = Status::from(frame(data.into(), 1000).unwrap_err());
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

        let code = |bytes: &[u8]| Status::from(unary_message(bytes).unwrap_err()).code();
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
        let code = |result: crate::error::Result<Vec<FlightData>>| Status::from(result.unwrap_err()).code();
        // Cut in the middle of a message, or of a gRPC header.
        assert_eq!(
            code(Assembler::assemble(&stream[..stream.len() - 10], 4096, 4 << 20)),
            tonic::Code::InvalidArgument
        );
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
        chunks.push(Err(Status::from(Error::Unavailable("connection reset".into()))));
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let read: Vec<_> = read_flight_data(body, 4 << 20).collect().await;
        assert_eq!(read.len(), 4);
        for (got, want) in read.iter().zip(&messages[..3]) {
            assert_eq!(got.as_ref().unwrap(), want);
        }
        assert_eq!(read[3].as_ref().unwrap_err().code(), tonic::Code::Cancelled);
    }

    /// A request body fed by the test, a chunk at a time.
    fn channel_body() -> (futures::channel::mpsc::Sender<Result<Frame<Bytes>, Status>>, Body) {
        let (tx, rx) = futures::channel::mpsc::channel(4);
        (tx, Body::new(http_body_util::StreamBody::new(rx)))
    }

    async fn send(tx: &mut futures::channel::mpsc::Sender<Result<Frame<Bytes>, Status>>, bytes: &'static [u8]) {
        futures::SinkExt::send(tx, Ok(Frame::data(Bytes::from_static(bytes)))).await.unwrap();
    }

    #[tokio::test]
    async fn an_oversize_request_is_refused_from_its_prefix() {
        // A prefix claiming 4 GiB, and a body that never comes: refused at once.
        let (mut tx, body) = channel_body();
        send(&mut tx, &[0, 0xff, 0xff, 0xff, 0xff]).await;
        let status = tokio::time::timeout(Duration::from_secs(5), read_unary(body, 1000, Duration::from_secs(60)))
            .await
            .expect("refused without waiting for the body")
            .unwrap_err();
        let status = Status::from(status);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("POLARWAY_MAX_REQUEST_BYTES"), "{}", status.message());
        drop(tx);
    }

    #[tokio::test]
    async fn a_request_that_does_not_arrive_in_time_is_refused() {
        let (mut tx, body) = channel_body();
        send(&mut tx, &[0, 0, 0, 0, 10, 1, 2]).await;
        let status = Status::from(read_unary(body, 1000, Duration::from_millis(100)).await.unwrap_err());
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        drop(tx);
    }

    #[tokio::test]
    async fn an_upload_that_sends_nothing_is_cancelled() {
        let (mut tx, body) = channel_body();
        let mut stalling = Stalling::new(body, Duration::from_millis(100));
        send(&mut tx, b"abc").await;
        assert!(stalling.frame().await.unwrap().is_ok(), "data that arrives goes through");
        let status = stalling.frame().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        drop(tx);
    }
}

//! DoGet on the wire: FlightData framed for gRPC without copying record batch bodies.
//!
//! tonic's codec encodes every response message into its send buffer, which copies each record
//! batch body once more on its way to the socket. DoGet's bodies are already `Bytes` (read and
//! checked from the store, or encoded by arrow-flight), so [`FlightRoutes`] frames DoGet itself:
//! a small prefix (the gRPC message header and the protobuf fields before the body), then the body
//! as it is. Every other method goes to tonic's generated service unchanged.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{FlightData, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::NamedService;
use tonic::{Request, Status};

use super::{BoxStream, PolarwayFlight};

/// The gRPC path of DoGet.
const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";
/// gRPC's message header: a compression flag and a big-endian length.
const GRPC_HEADER: usize = 5;
/// Protobuf field numbers of `FlightData`.
const DESCRIPTOR: u32 = 1;
const DATA_HEADER: u32 = 2;
const APP_METADATA: u32 = 3;
const DATA_BODY: u32 = 1000;

/// The Flight service as routed on the server: DoGet framed here, the rest by tonic.
#[derive(Clone)]
pub struct FlightRoutes {
    flight: Arc<PolarwayFlight>,
    generated: FlightServiceServer<PolarwayFlight>,
    max_message: usize,
}

impl FlightRoutes {
    /// Routes for `flight`, with its engine's message size limit on requests and responses.
    pub fn new(flight: PolarwayFlight) -> FlightRoutes {
        let max_message = flight.engine.limits().max_message_bytes;
        let flight = Arc::new(flight);
        let generated = FlightServiceServer::from_arc(flight.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        FlightRoutes { flight, generated, max_message }
    }

    async fn do_get(self, request: http::Request<Body>) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let ticket = match read_unary::<Ticket>(body, self.max_message).await {
            Ok(ticket) => ticket,
            Err(status) => return status.into_http(),
        };
        let request = Request::from_http(http::Request::from_parts(parts, ticket));
        match self.flight.do_get(request).await {
            Ok(response) => {
                let (metadata, messages, extensions) = response.into_parts();
                let body = FlightDataBody { messages, body: None, done: false, max_message: self.max_message };
                let mut response = http::Response::new(Body::new(body));
                *response.headers_mut() = metadata.into_headers();
                response.headers_mut().insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
                *response.extensions_mut() = extensions;
                response
            }
            Err(status) => status.into_http(),
        }
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
        if request.uri().path() == DO_GET {
            let routes = self.clone();
            Box::pin(async move { Ok(routes.do_get(request).await) })
        } else {
            self.generated.call(request)
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
        return Err(Status::internal("missing request message"));
    };
    match header[0] {
        0 => {}
        1 => return Err(Status::unimplemented("compressed requests are not supported")),
        flag => return Err(Status::internal(format!("invalid gRPC compression flag {flag}"))),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if rest.len() != len {
        return Err(Status::internal("the request body is not exactly one gRPC message"));
    }
    Ok(rest)
}

/// The gRPC framing of one `FlightData` as a prefix (message header and every field but the body)
/// and the body, unchanged. The two together are what prost would encode.
fn frame(data: FlightData, max: usize) -> Result<(Bytes, Bytes), Status> {
    let field = |tag: u32, len: usize| if len == 0 { 0 } else { key_len(tag) + encoded_len_varint(len as u64) + len };
    let descriptor = data.flight_descriptor.as_ref().map(Message::encoded_len);
    let len = descriptor.map_or(0, |n| key_len(DESCRIPTOR) + encoded_len_varint(n as u64) + n)
        + field(DATA_HEADER, data.data_header.len())
        + field(APP_METADATA, data.app_metadata.len())
        + field(DATA_BODY, data.data_body.len());
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "a response message of {len} bytes is over the message limit of {max} bytes (POLARWAY_MAX_MESSAGE_BYTES)"
        )));
    }
    let length = u32::try_from(len).map_err(|_| Status::resource_exhausted("a response message is over 4 GiB"))?;
    let mut prefix = BytesMut::with_capacity(GRPC_HEADER + len - data.data_body.len());
    prefix.put_u8(0);
    prefix.put_u32(length);
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
    if !data.data_body.is_empty() {
        encode_key(DATA_BODY, WireType::LengthDelimited, &mut prefix);
        encode_varint(data.data_body.len() as u64, &mut prefix);
    }
    Ok((prefix.freeze(), data.data_body))
}

/// DoGet's response body: each message's prefix, then its body, then the status as trailers.
struct FlightDataBody {
    messages: BoxStream<FlightData>,
    /// The body of the message whose prefix went out last.
    body: Option<Bytes>,
    done: bool,
    max_message: usize,
}

impl FlightDataBody {
    fn trailers(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        match status.add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Err(status) => Poll::Ready(Some(Err(status))),
        }
    }
}

impl http_body::Body for FlightDataBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(body) = self.body.take() {
            return Poll::Ready(Some(Ok(Frame::data(body))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(self.messages.poll_next_unpin(cx)) {
            Some(Ok(data)) => match frame(data, self.max_message) {
                Ok((prefix, body)) => {
                    self.body = Some(body).filter(|b| !b.is_empty());
                    Poll::Ready(Some(Ok(Frame::data(prefix))))
                }
                Err(status) => self.trailers(status),
            },
            Some(Err(status)) => self.trailers(status),
            None => self.trailers(Status::ok("")),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.body.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::FlightDescriptor;

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
            let (prefix, sent_body) = frame(data.clone(), usize::MAX).unwrap();
            let mut wire = prefix.to_vec();
            wire.extend_from_slice(&sent_body);
            assert_eq!(wire, prost_framed(&data), "{data:?}");
            assert_eq!(sent_body.as_ptr(), data.data_body.as_ptr(), "the body is not copied");
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused() {
        let data = FlightData { data_body: Bytes::from(vec![0; 2000]), ..Default::default() };
        let status = frame(data, 1000).unwrap_err();
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
        assert_eq!(code(&[]), tonic::Code::Internal);
        assert_eq!(code(&framed[..framed.len() - 1]), tonic::Code::Internal);
        let mut compressed = framed.clone();
        compressed[0] = 1;
        assert_eq!(code(&compressed), tonic::Code::Unimplemented);
        let mut two = framed.clone();
        two.extend_from_slice(&framed);
        assert_eq!(code(&two), tonic::Code::Internal);
    }

    #[tokio::test]
    async fn an_oversize_request_is_refused_before_it_is_read_whole() {
        let body = Body::new(http_body_util::Full::new(Bytes::from(vec![0u8; 10_000])));
        let status = read_unary::<Ticket>(body, 1000).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }
}

//! DoPut's side: request frames assembled into messages, each copied once into a buffer of its
//! own where its body starts aligned, so Arrow decodes the body where it lies.

use arrow_flight::FlightData;
use bytes::{Buf, Bytes};
use futures::Stream;
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;

use super::*;

/// The FlightData messages of a streamed request body, as [`Assembler`] puts them together.
/// Messages completed before a failure are delivered, then the failure.
pub(crate) fn read_flight_data<B>(
    body: B,
    max: usize,
) -> impl Stream<Item = Result<FlightData, Status>> + Send + 'static
where
    B: http_body::Body<Data = Bytes, Error = Status> + Send + Unpin + 'static,
{
    struct Reading<B> {
        body: B,
        assembler: Assembler,
        ready: std::collections::VecDeque<FlightData>,
        failure: Option<Status>,
        ended: bool,
    }
    let reading =
        Reading { body, assembler: Assembler::new(max), ready: Default::default(), failure: None, ended: false };
    futures::stream::unfold(reading, |mut r| async move {
        loop {
            if let Some(message) = r.ready.pop_front() {
                return Some((Ok(message), r));
            }
            if let Some(status) = r.failure.take() {
                return Some((Err(status), r));
            }
            if r.ended {
                return None;
            }
            let failure = match r.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => r.assembler.feed(chunk, &mut r.ready).err().map(Status::from),
                    Err(_) => None, // trailers: nothing to read
                },
                Some(Err(status)) => Some(upload_failed(status)),
                None => {
                    r.ended = true;
                    r.assembler.finish().err().map(Status::from)
                }
            };
            if failure.is_some() {
                r.failure = failure;
                r.ended = true;
            }
        }
    })
}

/// The status an upload ends with when its body fails: an idle upload ([`super::Stalling`]) keeps
/// its own DEADLINE_EXCEEDED; a transport failure is the client's connection going away, CANCELLED.
fn upload_failed(status: Status) -> Status {
    if status.code() == tonic::Code::DeadlineExceeded {
        return status;
    }
    Error::Cancelled(format!("the upload stream failed: {}", status.message())).into()
}

/// Puts gRPC-framed FlightData messages back together from a stream's chunks, copying each byte
/// once: a message with a body goes into a buffer of its own, sized for it and placed so that the
/// body starts [`BODY_ALIGNMENT`]-aligned.
pub(crate) struct Assembler {
    max: usize,
    state: Assembly,
    /// The bytes of the current gRPC header, or of a message's start while its body is located.
    pending: BytesMut,
}

pub(super) enum Assembly {
    /// Reading a message's 5-byte gRPC header.
    Header,
    /// Reading the start of a message of `len` bytes until its body's offset is known.
    Locating { len: usize },
    /// Copying a message into `buf` from `start`, with `need` bytes still to come.
    Filling { buf: Vec<u8>, start: usize, need: usize },
}

/// Where a FlightData message's body starts, from the message's first bytes.
pub(super) enum BodyAt {
    Offset(usize),
    /// The bytes seen so far do not tell.
    Unknown,
}

impl Assembler {
    pub(crate) fn new(max: usize) -> Assembler {
        Assembler { max, state: Assembly::Header, pending: BytesMut::new() }
    }

    /// Takes the next chunk of the stream, appending every message it completes to `out`.
    pub(crate) fn feed(
        &mut self,
        mut chunk: Bytes,
        out: &mut std::collections::VecDeque<FlightData>,
    ) -> crate::error::Result<()> {
        while !chunk.is_empty() {
            match &mut self.state {
                Assembly::Header => {
                    let n = (GRPC_HEADER - self.pending.len()).min(chunk.len());
                    self.pending.extend_from_slice(&chunk[..n]);
                    chunk.advance(n);
                    if self.pending.len() == GRPC_HEADER {
                        let len = self.header()?;
                        self.pending.clear();
                        self.state = Assembly::Locating { len };
                        if len == 0 {
                            out.push_back(decode(Bytes::new())?);
                            self.state = Assembly::Header;
                        }
                    }
                }
                Assembly::Locating { len } => {
                    let len = *len;
                    if self.pending.is_empty() && chunk.len() >= len {
                        // The whole message is in this chunk: decode it where it lies, unless its
                        // body would not be aligned.
                        let whole = chunk.split_to(len);
                        match body_offset(&whole) {
                            BodyAt::Offset(at) if !(whole.as_ptr() as usize + at).is_multiple_of(BODY_ALIGNMENT) => {
                                out.push_back(decode(aligned(&whole, at))?)
                            }
                            _ => out.push_back(decode(whole)?),
                        }
                        self.state = Assembly::Header;
                        continue;
                    }
                    // Look at the message's start without copying the chunk where possible.
                    let take = (len - self.pending.len()).min(chunk.len());
                    let seen = if self.pending.is_empty() { body_offset(&chunk[..take]) } else { BodyAt::Unknown };
                    match seen {
                        BodyAt::Offset(at) => {
                            let (buf, start) = aligned_buffer(len, at);
                            self.state = Assembly::Filling { buf, start, need: len };
                        }
                        BodyAt::Unknown => {
                            let n = take.min(64 << 10);
                            self.pending.extend_from_slice(&chunk[..n]);
                            chunk.advance(n);
                            if self.pending.len() == len {
                                out.push_back(decode(self.pending.split().freeze())?);
                                self.state = Assembly::Header;
                            } else if let BodyAt::Offset(at) = body_offset(&self.pending) {
                                let (mut buf, start) = aligned_buffer(len, at);
                                buf.extend_from_slice(&self.pending);
                                let need = len - self.pending.len();
                                self.pending.clear();
                                self.state = Assembly::Filling { buf, start, need };
                            }
                        }
                    }
                }
                Assembly::Filling { buf, start, need } => {
                    let n = (*need).min(chunk.len());
                    buf.extend_from_slice(&chunk[..n]);
                    chunk.advance(n);
                    *need -= n;
                    if *need == 0 {
                        let start = *start;
                        let buf = std::mem::take(buf);
                        out.push_back(decode(Bytes::from(buf).slice(start..))?);
                        self.state = Assembly::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// The messages of a whole gRPC byte stream, fed in chunks of `chunk` bytes (tests and the
    /// fuzz target drive it this way).
    pub(crate) fn assemble(stream: &[u8], chunk: usize, max: usize) -> crate::error::Result<Vec<FlightData>> {
        let mut assembler = Assembler::new(max);
        let mut out = std::collections::VecDeque::new();
        for piece in stream.chunks(chunk.max(1)) {
            assembler.feed(Bytes::copy_from_slice(piece), &mut out)?;
        }
        assembler.finish()?;
        Ok(out.into())
    }

    /// Whether the stream ended between messages, as it must.
    pub(crate) fn finish(&self) -> crate::error::Result<()> {
        match self.state {
            Assembly::Header if self.pending.is_empty() => Ok(()),
            _ => Err(Error::invalid("the stream ended in the middle of a message")),
        }
    }

    /// The message length in the gRPC header in `pending`.
    fn header(&self) -> crate::error::Result<usize> {
        let header = self.pending[..GRPC_HEADER].try_into().expect("a whole header is pending");
        let len = message_length(header)?;
        if len > self.max {
            return Err(Limit::MessageBytes
                .exceeded(format!("a message of {len} bytes is over the message limit of {} bytes", self.max)));
        }
        Ok(len)
    }
}

/// An empty buffer for a message of `len` bytes whose body starts at `at`, and where in it the
/// message goes so that the body is aligned (the bytes before are padding).
pub(super) fn aligned_buffer(len: usize, at: usize) -> (Vec<u8>, usize) {
    let mut buf = Vec::with_capacity(len + BODY_ALIGNMENT);
    let start = (BODY_ALIGNMENT - (buf.as_ptr() as usize + at) % BODY_ALIGNMENT) % BODY_ALIGNMENT;
    buf.resize(start, 0);
    (buf, start)
}

/// `message` copied so that the body at `at` is aligned.
pub(super) fn aligned(message: &[u8], at: usize) -> Bytes {
    let (mut buf, start) = aligned_buffer(message.len(), at);
    buf.extend_from_slice(message);
    Bytes::from(buf).slice(start..)
}

pub(super) fn decode(message: Bytes) -> crate::error::Result<FlightData> {
    FlightData::decode(message).map_err(|e| Error::invalid(format!("a FlightData message is malformed: {e}")))
}

/// Where the body field starts in the first bytes of a FlightData message, if they tell: the
/// fields before it are walked by their keys and lengths. Whatever does not parse is left for the
/// decoder to refuse.
pub(super) fn body_offset(start: &[u8]) -> BodyAt {
    let mut at = 0;
    while at < start.len() {
        let Some((key, n)) = varint(&start[at..]) else { return BodyAt::Unknown };
        at += n;
        let skip = match key & 7 {
            0 => match varint(&start[at..]) {
                Some((_, n)) => n as u64,
                None => return BodyAt::Unknown,
            },
            1 => 8,
            2 => {
                let Some((len, n)) = varint(&start[at..]) else { return BodyAt::Unknown };
                at += n;
                if key >> 3 == u64::from(DATA_BODY) {
                    return BodyAt::Offset(at);
                }
                len
            }
            5 => 4,
            _ => return BodyAt::Unknown,
        };
        at = match usize::try_from(skip).ok().and_then(|s| at.checked_add(s)) {
            Some(next) => next,
            None => return BodyAt::Unknown,
        };
    }
    BodyAt::Unknown
}

/// A protobuf varint at the start of `bytes` and its length, if it is complete and fits 64 bits.
pub(super) fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut rest = bytes;
    let value = prost::encoding::decode_varint(&mut rest).ok()?;
    Some((value, bytes.len() - rest.len()))
}

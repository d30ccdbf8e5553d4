//! What every RPC does around its own work: name it (request id, span), authenticate it, give
//! it a request context (tenant, deadline, id), count it, and echo the request id.

use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::BoxStream;
use crate::context::RequestContext;
use crate::error::Result;
use crate::metrics::RequestTimer;
use crate::protocol::REQUEST_ID_HEADER;
use crate::tenant::auth::{Authenticator, Principal};

/// The header carrying credentials.
pub(super) const AUTHORIZATION: &str = "authorization";

fn rpc_span(method: &'static str, request_id: &str) -> tracing::Span {
    tracing::info_span!("rpc", method, request_id, action = tracing::field::Empty, handle = tracing::field::Empty)
}

/// What every RPC does around its own work: name it (request id, span), authenticate it, run it
/// as the caller's tenant, count it, and echo the request id.
pub(super) struct Call {
    id: String,
    authorized: Result<Option<Principal>>,
    /// The RPC's span; handlers record the action and handle on it.
    pub span: tracing::Span,
    timer: RequestTimer,
    timeout: Duration,
}

impl Call {
    /// Names, times and authenticates a call of `method`; its work will have `timeout`, or the
    /// client's deadline (`grpc-timeout`) when that is sooner.
    pub fn begin<T>(
        method: &'static str,
        request: &Request<T>,
        auth: Option<&Authenticator>,
        timeout: Duration,
    ) -> Call {
        let id = request_id(request.metadata());
        let timeout = client_timeout(request.metadata()).map_or(timeout, |client| client.min(timeout));
        Call {
            authorized: authorize(auth, request),
            span: rpc_span(method, &id),
            timer: RequestTimer::start(method),
            id,
            timeout,
        }
    }

    /// Runs `work` with the caller's request context, unless the caller failed to authenticate.
    pub async fn run<T, F, W>(self, work: W) -> std::result::Result<Response<T>, Status>
    where
        W: FnOnce(RequestContext) -> F,
        F: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        self.answer(work, |result, timer| {
            timer.finish(super::status::code_name(result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok)));
            result
        })
        .await
    }

    /// Like [`Call::run`], for an answer that is a stream: the call is counted when its stream
    /// ends, with the code it ends with: OK, the status of a failure part-way (a stored file found
    /// damaged, a message over the limit), or CANCELLED when the client goes away first.
    pub async fn run_streaming<T, F, W>(self, work: W) -> std::result::Result<Response<BoxStream<T>>, Status>
    where
        T: Send + 'static,
        W: FnOnce(RequestContext) -> F,
        F: Future<Output = std::result::Result<Response<BoxStream<T>>, Status>>,
    {
        self.answer(work, |result, timer| match result {
            Ok(response) => Ok(response.map(|stream| Box::pin(Counted { stream, timer: Some(timer) }) as BoxStream<T>)),
            Err(status) => {
                timer.finish(super::status::code_name(status.code()));
                Err(status)
            }
        })
        .await
    }

    /// Runs `work` as the caller, unless they failed to authenticate; maps what tonic's codec
    /// refused; has `count` count the outcome with the call's timer; echoes the request id.
    async fn answer<T, F, W>(
        self,
        work: W,
        count: impl FnOnce(
            std::result::Result<Response<T>, Status>,
            RequestTimer,
        ) -> std::result::Result<Response<T>, Status>,
    ) -> std::result::Result<Response<T>, Status>
    where
        W: FnOnce(RequestContext) -> F,
        F: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let Call { id, authorized, span, timer, timeout } = self;
        let result = match authorized {
            Err(e) => Err(e.into()),
            Ok(principal) => {
                let ctx = RequestContext::new(principal.map(|p| p.tenant), timeout, id.clone());
                work(ctx).instrument(span).await
            }
        };
        with_request_id(count(result.map_err(super::status::from_codec), timer), &id)
    }
}

/// A streamed answer that counts its call when it ends.
struct Counted<T> {
    stream: BoxStream<T>,
    timer: Option<RequestTimer>,
}

impl<T> futures::Stream for Counted<T> {
    type Item = std::result::Result<T, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.stream.as_mut().poll_next(cx));
        let code = match &item {
            Some(Ok(_)) => None,
            Some(Err(status)) => Some(super::status::code_name(status.code())),
            None => Some(super::status::code_name(tonic::Code::Ok)),
        };
        if let Some(code) = code
            && let Some(timer) = self.timer.take()
        {
            timer.finish(code);
        }
        std::task::Poll::Ready(item)
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.finish(super::status::code_name(tonic::Code::Cancelled));
        }
    }
}

/// The caller, when authentication is on: a client certificate the tokens file names, else the
/// bearer token; UNAUTHENTICATED without valid credentials.
pub(super) fn authorize<T>(auth: Option<&Authenticator>, request: &Request<T>) -> Result<Option<Principal>> {
    let Some(auth) = auth else { return Ok(None) };
    let certificate = request.peer_certs().and_then(|certs| certs.first().map(|c| c.to_vec()));
    if let Some(principal) = certificate.and_then(|der| auth.certificate(&der)) {
        return Ok(Some(principal));
    }
    let header = request.metadata().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    auth.authenticate(header).map(Some)
}

/// The time the client gives the call (`grpc-timeout`: at most 8 digits and a unit, hours down
/// to nanoseconds); `None` when it sends none or one that does not parse.
fn client_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The client's `x-request-id`, or a new one: it names the call in logs and comes back in the
/// response metadata.
pub(super) fn request_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Echoes the request id on the answer, success or error.
fn with_request_id<T>(
    result: std::result::Result<Response<T>, Status>,
    id: &str,
) -> std::result::Result<Response<T>, Status> {
    let Ok(value) = tonic::metadata::MetadataValue::try_from(id) else { return result };
    match result {
        Ok(mut response) => {
            response.metadata_mut().insert(REQUEST_ID_HEADER, value);
            Ok(response)
        }
        Err(mut status) => {
            status.metadata_mut().insert(REQUEST_ID_HEADER, value);
            Err(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_stream_that_fails_part_way_is_counted_with_its_code() {
        let count = |code: &str| crate::metrics::metrics().requests.with_label_values(&["StreamTest", code]).get();
        let (ok, lost, cancelled) = (count("OK"), count("DATA_LOSS"), count("CANCELLED"));
        let call = || Call::begin("StreamTest", &Request::new(()), None, Duration::from_secs(5));

        let failing = call()
            .run_streaming(|_| async {
                let items = vec![Ok(1), Err(Status::from(crate::error::Error::DataLoss("damaged".into())))];
                Ok(Response::new(Box::pin(futures::stream::iter(items)) as BoxStream<i32>))
            })
            .await
            .unwrap();
        assert_eq!((count("OK"), count("DATA_LOSS")), (ok, lost), "not counted before the stream ends");
        let items: Vec<_> = failing.into_inner().collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!((count("OK"), count("DATA_LOSS")), (ok, lost + 1));

        let whole = call()
            .run_streaming(|_| async {
                Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(1)])) as BoxStream<i32>))
            })
            .await
            .unwrap();
        let _: Vec<_> = whole.into_inner().collect().await;
        assert_eq!(count("OK"), ok + 1);

        let mut abandoned = call()
            .run_streaming(|_| async {
                Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(1), Ok(2)])) as BoxStream<i32>))
            })
            .await
            .unwrap()
            .into_inner();
        let _ = abandoned.next().await;
        drop(abandoned);
        assert_eq!((count("OK"), count("CANCELLED")), (ok + 1, cancelled + 1));
    }

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().unwrap());
        client_timeout(&metadata)
    }

    #[test]
    fn client_timeout_reads_every_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(timeout_of("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(client_timeout(&tonic::metadata::MetadataMap::new()), None);
    }

    #[tokio::test]
    async fn the_work_gets_the_sooner_of_the_two_deadlines() {
        for (header, limit, want) in [
            (Some("250m"), Duration::from_secs(60), Duration::from_millis(250)),
            (Some("5M"), Duration::from_secs(60), Duration::from_secs(60)),
            (Some("soon"), Duration::from_secs(60), Duration::from_secs(60)),
            (None, Duration::from_secs(60), Duration::from_secs(60)),
        ] {
            let mut request = Request::new(());
            if let Some(value) = header {
                request.metadata_mut().insert("grpc-timeout", value.parse().unwrap());
            }
            let seen = Call::begin("DoAction", &request, None, limit)
                .run(|ctx| async move { Ok(Response::new(ctx.timeout())) })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(seen, want, "{header:?}");
        }
    }

    #[test]
    fn client_timeout_ignores_what_does_not_parse() {
        for bad in ["", "S", "123456789S", "1.5S", "-1S", "10s", "10", "ten S", "1 S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
    }
}

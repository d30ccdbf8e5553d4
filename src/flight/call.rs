//! What every RPC does around its own work: name it (request id, span), authenticate it, give
//! it a request context (tenant, deadline, id), count it, and echo the request id.

use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::Instrument;

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
        let Call { id, authorized, span, timer, timeout } = self;
        let result = match authorized {
            Err(e) => Err(e.into()),
            Ok(principal) => {
                let ctx = RequestContext::new(principal.map(|p| p.tenant), timeout, id.clone());
                work(ctx).instrument(span).await
            }
        };
        let result = result.map_err(message_limit_as_exhausted);
        timer.finish(super::status::code_name(result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok)));
        with_request_id(result, &id)
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

/// tonic refuses a streamed message over the size limit with OUT_OF_RANGE; to a client that is a
/// limit like the others, so it is RESOURCE_EXHAUSTED naming the setting.
fn message_limit_as_exhausted(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("message length too large") {
        crate::limits::Limit::MessageBytes.exceeded(status.message()).into()
    } else {
        status
    }
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
fn request_id(metadata: &tonic::metadata::MetadataMap) -> String {
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

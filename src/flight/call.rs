//! What every RPC does around its own work: name it (request id, span), authenticate it, give
//! it a request context (tenant, deadline, id), count it, and echo the request id.

use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::{Authenticator, Principal};
use crate::context::RequestContext;
use crate::error::Result;
use crate::metrics::RequestTimer;
use crate::protocol::REQUEST_ID_HEADER;

/// The header carrying credentials.
pub(super) const AUTHORIZATION: &str = "authorization";

fn rpc_span(method: &'static str, request_id: &str) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        method,
        request_id,
        action = tracing::field::Empty,
        handle = tracing::field::Empty
    )
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
    /// Names, times and authenticates a call of `method`; its work will have `timeout`.
    pub fn begin<T>(method: &'static str, request: &Request<T>, auth: Option<&Authenticator>, timeout: Duration) -> Call {
        let id = request_id(request.metadata());
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
        timer.finish(result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
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

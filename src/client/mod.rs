//! A Rust client for Polarway: retries, deadlines, affinity and endpoint hashing.
//!
//! Calls are retried with exponential backoff and full jitter when the service is UNAVAILABLE
//! (a worker restarting, a refused connection) and only when repeating them is safe: operations
//! are keyed by their request, so a repeat names the same result; uploads always carry an
//! idempotency key; reads repeat freely. RESOURCE_EXHAUSTED is retried only when the server sends
//! a `retry-after` hint. Each call has a deadline (30 s for actions, 120 s for streams by
//! default) and carries the affinity key of the chain it continues. With several endpoints and no
//! load balancer, the endpoint is chosen per affinity key by rendezvous hashing, moving to the
//! next one when a worker is down. [`frame`] chains operations over Polars' own expressions.
//! This module never touches the server's internals.

pub mod frame;

pub use frame::{GroupBy, RemoteFrame};

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::protocol::{AFFINITY_HEADER, IDEMPOTENCY_KEY_HEADER, RETRY_AFTER};

/// Backoff between attempts.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Upper bound of the first delay.
    pub initial: Duration,
    /// Largest delay.
    pub maximum: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 6, initial: Duration::from_millis(50), maximum: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// The delay before retry number `n` (0-based): uniform in [0, min(maximum, initial * 2^n)].
    pub fn delay(&self, n: u32) -> Duration {
        let cap = self.initial.saturating_mul(1u32 << n.min(20)).min(self.maximum);
        cap.mul_f64(rand::random::<f64>())
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Deadline of a DoAction.
    pub action_timeout: Duration,
    /// Deadline of a DoGet or DoPut.
    pub stream_timeout: Duration,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// TLS settings for `https://` endpoints.
    pub tls: Option<TlsOptions>,
    /// Bearer token sent on every call (`authorization: Bearer <token>`).
    pub token: Option<String>,
}

/// How the client checks the service and proves who it is over TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM CA certificates that the server's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// PEM client certificate chain and key, for services that require mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify in the server's certificate, when it differs from the endpoint's host.
    pub domain: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            action_timeout: Duration::from_secs(30),
            stream_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            tls: None,
            token: None,
        }
    }
}

/// A result as the service describes it.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The handle (also the Flight ticket).
    pub handle: String,
    /// The chain's affinity key.
    pub affinity: String,
    /// The whole JSON answer.
    pub json: Value,
}

impl Handle {
    fn from_json(json: Value) -> Result<Handle, Status> {
        let handle = json["handle"].as_str().ok_or_else(|| Status::internal("answer without a handle"))?.to_string();
        let affinity = json["affinity"].as_str().unwrap_or(&handle).to_string();
        Ok(Handle { handle, affinity, json })
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type FlightClient = FlightServiceClient<InterceptedService<Channel, Credentials>>;

/// A client over one or more endpoints.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<(String, Channel)>,
    credentials: Credentials,
    config: ClientConfig,
}

fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::ResourceExhausted => status.metadata().get(RETRY_AFTER).is_some(),
        // The call died in transport (a worker killed mid-call, a proxy resetting the stream):
        // nobody answered it, and every call this client makes is safe to repeat.
        Code::Unknown | Code::Internal => {
            let msg = status.message().to_ascii_lowercase();
            ["h2 protocol error", "transport error", "stream closed", "connection reset", "broken pipe"]
                .iter()
                .any(|sign| msg.contains(sign))
        }
        _ => false,
    }
}

impl Client {
    /// A client for `endpoints` (`http://host:port`, or `https://host:port` with
    /// [`ClientConfig::tls`]); connections open on first use.
    pub fn new(endpoints: &[&str], config: ClientConfig) -> Result<Client, Status> {
        if endpoints.is_empty() {
            return Err(Status::invalid_argument("at least one endpoint"));
        }
        let tls = config.tls.as_ref().map(|options| {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&options.ca_pem));
            if let Some((cert, key)) = &options.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &options.domain {
                tls = tls.domain_name(domain.clone());
            }
            tls
        });
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let invalid = |err: &dyn std::fmt::Display| Status::invalid_argument(format!("endpoint {e}: {err}"));
                let mut endpoint = Endpoint::from_shared(e.to_string())
                    .map_err(|err| invalid(&err))?
                    .connect_timeout(Duration::from_secs(5));
                if let Some(tls) = &tls {
                    endpoint = endpoint.tls_config(tls.clone()).map_err(|err| invalid(&err))?;
                }
                Ok((e.to_string(), endpoint.connect_lazy()))
            })
            .collect::<Result<_, Status>>()?;
        let token = match &config.token {
            None => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?,
            ),
        };
        Ok(Client { endpoints, credentials: Credentials(token), config })
    }

    /// Endpoint indexes in the order to try them for `affinity`.
    pub fn order(&self, affinity: Option<&str>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.endpoints.len()).collect();
        match affinity {
            Some(key) if self.endpoints.len() > 1 => {
                let score = |i: &usize| Sha256::digest(format!("{key}|{}", self.endpoints[*i].0));
                order.sort_by_key(|i| std::cmp::Reverse(score(i)));
            }
            _ => order.rotate_left(rand::random_range(0..self.endpoints.len())),
        }
        order
    }

    async fn with_retries<T, F, Fut>(&self, affinity: Option<&str>, call: F) -> Result<T, Status>
    where
        F: Fn(FlightClient) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let order = self.order(affinity);
        let mut attempt = 0u32;
        loop {
            let (_, channel) = &self.endpoints[order[attempt as usize % order.len()]];
            let client = FlightServiceClient::with_interceptor(channel.clone(), self.credentials.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            match call(client).await {
                Ok(value) => return Ok(value),
                Err(status) if retryable(&status) && attempt + 1 < self.config.retry.attempts => {
                    tokio::time::sleep(self.config.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(status) => return Err(status),
            }
        }
    }

    fn request<T>(message: T, timeout: Duration, affinity: Option<&str>) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        if let Some(key) = affinity.and_then(|a| a.parse().ok()) {
            request.metadata_mut().insert(AFFINITY_HEADER, key);
        }
        request
    }

    /// Runs an operation; `affinity` is the chain's key (from the input's [`Handle`]).
    pub async fn action(&self, op: &str, body: &Value, affinity: Option<&str>) -> Result<Value, Status> {
        let payload = body.to_string();
        let timeout = self.config.action_timeout;
        self.with_retries(affinity, |mut client| {
            let action = Action::new(op, payload.clone());
            async move {
                let mut results = client.do_action(Self::request(action, timeout, affinity)).await?.into_inner();
                let first = results.message().await?.ok_or_else(|| Status::internal("action answered nothing"))?;
                serde_json::from_slice(&first.body).map_err(|e| Status::internal(format!("answer is not JSON: {e}")))
            }
        })
        .await
    }

    /// Runs an operation that makes a result.
    pub async fn run(&self, op: &str, body: &Value, affinity: Option<&str>) -> Result<Handle, Status> {
        Handle::from_json(self.action(op, body, affinity).await?)
    }

    /// Uploads batches under `name`; `idempotency_key` (generated when `None`) makes a retry safe.
    pub async fn upload(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        idempotency_key: Option<&str>,
    ) -> Result<Handle, Status> {
        let key = idempotency_key.map(str::to_string).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let timeout = self.config.stream_timeout;
        let json: Value = self
            .with_retries(None, |mut client| {
                let stream = FlightDataEncoderBuilder::new()
                    .with_schema(schema.clone())
                    .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![name.to_string()])))
                    .build(futures::stream::iter(batches.clone().into_iter().map(Ok)))
                    .map(|d| d.expect("encoding in-memory batches"));
                let mut request = Self::request(stream, timeout, None);
                let key = key.parse().expect("hex key is a valid header");
                request.metadata_mut().insert(IDEMPOTENCY_KEY_HEADER, key);
                async move {
                    let mut results = client.do_put(request).await?.into_inner();
                    let first = results.message().await?.ok_or_else(|| Status::internal("upload answered nothing"))?;
                    serde_json::from_slice(&first.app_metadata)
                        .map_err(|e| Status::internal(format!("answer is not JSON: {e}")))
                }
            })
            .await?;
        Handle::from_json(json)
    }

    /// Streams a result's batches.
    pub async fn fetch(&self, handle: &str, affinity: Option<&str>) -> Result<Vec<RecordBatch>, Status> {
        let timeout = self.config.stream_timeout;
        self.with_retries(affinity, |mut client| {
            let ticket = Ticket::new(handle.to_string());
            async move {
                let stream = client.do_get(Self::request(ticket, timeout, affinity)).await?.into_inner();
                FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into)).try_collect().await.map_err(
                    |e| match e {
                        arrow_flight::error::FlightError::Tonic(status) => *status,
                        other => Status::internal(other.to_string()),
                    },
                )
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_its_cap() {
        let policy = RetryPolicy::default();
        for n in 0..30 {
            assert!(policy.delay(n) <= policy.maximum);
        }
        assert!(policy.delay(0) <= policy.initial);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn affinity_picks_the_same_endpoint_every_time() {
        let client =
            Client::new(&["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"], ClientConfig::default())
                .unwrap();
        let first = client.order(Some("pw1_abc"));
        assert_eq!(client.order(Some("pw1_abc")), first);
        assert_eq!(first.len(), 3);
        let spread: std::collections::HashSet<usize> =
            (0..50).map(|i| client.order(Some(&format!("key{i}")))[0]).collect();
        assert_eq!(spread.len(), 3, "keys spread over every endpoint");
    }
}

//! Token authentication: none, wrong and right tokens on every method; Handshake with basic
//! credentials returns a bearer token that any worker with the same tokens file accepts.

use std::sync::Arc;

use arrow_flight::{Action, Criteria, FlightDescriptor, Ticket};
use base64::Engine as _;
use futures::TryStreamExt;
use polars::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::fixture::*;

fn hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn authenticator(dir: &std::path::Path) -> Arc<polarway::auth::Authenticator> {
    let path = dir.join("tokens.json");
    let file = json!({
        "signing_key": "a-long-shared-signing-key-for-tests",
        "tokens": [{"tenant": "acme", "sha256": hex(b"right-token")}],
        "users": [{"username": "alice", "password_sha256": hex(b"alice-pw"), "tenant": "acme"}],
    });
    std::fs::write(&path, file.to_string()).unwrap();
    Arc::new(polarway::auth::Authenticator::from_file(&path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_needs_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authenticator(dir.path());
    let server = TestServer::start_with(Mode::Memory, |c| c.auth = Some(auth.clone())).await;

    // With the right token everything works; keep a handle to probe with.
    let mut good = server.client().await;
    good.inner.add_header("authorization", "Bearer right-token").unwrap();
    let h = handle_of(&good.upload("t", &df!("x" => [1i64, 2]).unwrap()).await);
    good.action("head", json!({"input": h, "n": 1})).await.unwrap();

    for header in [None, Some("Bearer wrong-token"), Some("right-token"), Some("Basic cmlnaHQtdG9rZW4=")] {
        let mut c = server.client().await;
        if let Some(value) = header {
            c.inner.add_header("authorization", value).unwrap();
        }
        let codes = vec![
            c.inner.list_actions().await.err().map(to_status),
            c.inner.list_flights(Criteria::default().expression).await.err().map(to_status),
            c.inner.do_get(Ticket::new(h.clone())).await.err().map(to_status),
            c.inner.get_flight_info(FlightDescriptor::new_path(vec![h.clone()])).await.err().map(to_status),
            c.inner.get_schema(FlightDescriptor::new_path(vec![h.clone()])).await.err().map(to_status),
            c.inner.poll_flight_info(FlightDescriptor::new_path(vec![h.clone()])).await.err().map(to_status),
            c.inner.do_action(Action::new("shape", json!({"input": h}).to_string())).await.err().map(to_status),
            c.try_upload(FlightDescriptor::new_path(vec!["x".into()]), &df!("x" => [1i64]).unwrap()).await.err(),
        ];
        for (i, status) in codes.into_iter().enumerate() {
            let status = status.unwrap_or_else(|| panic!("call {i} with {header:?} was accepted"));
            assert_eq!(status.code(), Code::Unauthenticated, "call {i} with {header:?}: {status}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_tokens_work_on_every_worker_sharing_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start_with(Mode::Memory, |c| c.auth = Some(authenticator(dir.path()))).await;
    let b = TestServer::start_with(Mode::Memory, |c| c.auth = Some(authenticator(dir.path()))).await;

    let mut c = a.client().await;
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:alice-pw");
    c.inner.add_header("authorization", &format!("Basic {basic}")).unwrap();
    let token = c.inner.handshake(vec![]).await.unwrap();
    let token = String::from_utf8(token.to_vec()).unwrap();
    assert!(token.starts_with("pwt1.acme."), "{token}");

    let mut other = b.client().await;
    other.inner.add_header("authorization", &format!("Bearer {token}")).unwrap();
    let actions: Vec<_> = other.inner.list_actions().await.unwrap().try_collect().await.unwrap();
    assert!(!actions.is_empty(), "a token issued by one worker is accepted by another");

    let mut wrong = a.client().await;
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:not-her-password");
    wrong.inner.add_header("authorization", &format!("Basic {basic}")).unwrap();
    assert_eq!(to_status(wrong.inner.handshake(vec![]).await.unwrap_err()).code(), Code::Unauthenticated);
    a.stop().await;
    b.stop().await;
}

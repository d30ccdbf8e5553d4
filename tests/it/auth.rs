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

fn authenticator(dir: &std::path::Path) -> Arc<polarway::tenant::auth::Authenticator> {
    let path = dir.join("tokens.json");
    let file = json!({
        "signing_key": "a-long-shared-signing-key-for-tests",
        "tokens": [{"tenant": "acme", "sha256": hex(b"right-token")}],
        "users": [{"username": "alice", "password_sha256": hex(b"alice-pw"), "tenant": "acme"}],
    });
    std::fs::write(&path, file.to_string()).unwrap();
    Arc::new(polarway::tenant::auth::Authenticator::from_file(&path).unwrap())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_another_tenants_results() {
    use arrow_flight::{CancelFlightInfoRequest, RenewFlightEndpointRequest};
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let file = json!({
        "signing_key": "a-long-shared-signing-key-for-tests",
        "tokens": [
            {"tenant": "acme", "sha256": hex(b"acme-token")},
            {"tenant": "globex", "sha256": hex(b"globex-token")}
        ],
    });
    std::fs::write(&path, file.to_string()).unwrap();
    for mode in MODES {
        let auth = Arc::new(polarway::tenant::auth::Authenticator::from_file(&path).unwrap());
        let server = TestServer::start_with(mode, |c| {
            c.auth = Some(auth.clone());
            c.job_poll = std::time::Duration::from_millis(20);
        })
        .await;
        let mut a = server.client().await;
        a.inner.add_header("authorization", "Bearer acme-token").unwrap();
        let mut b = server.client().await;
        b.inner.add_header("authorization", "Bearer globex-token").unwrap();

        let df = df!("x" => [1i64, 2, 3]).unwrap();
        let h = handle_of(&a.upload("secret", &df).await);
        let info = a.inner.get_flight_info(FlightDescriptor::new_path(vec![h.clone()])).await.unwrap();
        let job = a
            .inner
            .poll_flight_info(FlightDescriptor::new_cmd(json!({"op": "head", "input": h, "n": 1}).to_string()))
            .await
            .unwrap();
        let job_descriptor = job.flight_descriptor.clone().unwrap();
        let mine = handle_of(&b.upload("mine", &df).await);

        let not_found = |status: tonic::Status, what: &str| {
            assert_eq!(status.code(), Code::NotFound, "{mode:?} {what}: {status}");
        };
        not_found(b.get(&h).await.unwrap_err(), "DoGet");
        not_found(
            to_status(b.inner.get_flight_info(FlightDescriptor::new_path(vec![h.clone()])).await.unwrap_err()),
            "GetFlightInfo",
        );
        not_found(
            to_status(b.inner.get_schema(FlightDescriptor::new_path(vec![h.clone()])).await.unwrap_err()),
            "GetSchema",
        );
        not_found(
            to_status(b.inner.poll_flight_info(FlightDescriptor::new_path(vec![h.clone()])).await.unwrap_err()),
            "PollFlightInfo",
        );
        not_found(to_status(b.inner.poll_flight_info(job_descriptor.clone()).await.unwrap_err()), "poll A's job");
        for (op, body) in [
            ("filter", json!({"input": h, "predicate": "x > 1"})),
            ("join", json!({"left": mine, "right": h, "on": ["x"]})),
            ("concat", json!({"inputs": [mine, h]})),
            ("schema", json!({"input": h})),
            ("shape", json!({"input": h})),
            ("explain", json!({"input": h, "steps": []})),
            ("pin", json!({"handle": h})),
            ("unpin", json!({"handle": h})),
            ("drop_handle", json!({"handle": h})),
            ("write_csv", json!({"input": h, "path": "stolen.csv"})),
        ] {
            not_found(b.action(op, body).await.unwrap_err(), op);
        }
        let renew = RenewFlightEndpointRequest { endpoint: Some(info.endpoint[0].clone()) };
        not_found(
            to_status(
                b.inner.do_action(Action::new("RenewFlightEndpoint", renew.encode_to_vec())).await.err().unwrap(),
            ),
            "RenewFlightEndpoint",
        );
        let cancel = CancelFlightInfoRequest { info: Some(info.clone()) };
        not_found(
            to_status(b.inner.do_action(Action::new("CancelFlightInfo", cancel.encode_to_vec())).await.err().unwrap()),
            "CancelFlightInfo",
        );
        let listed: Vec<_> = b.inner.list_flights(vec![]).await.unwrap().try_collect().await.unwrap();
        assert_eq!(listed.len(), 1, "{mode:?}: B lists only its own result");

        // The same request by each tenant names two different results.
        let fa = handle_of(&a.action("filter", json!({"input": h, "predicate": "x > 1"})).await.unwrap());
        let fb = handle_of(&b.action("filter", json!({"input": mine, "predicate": "x > 1"})).await.unwrap());
        assert_ne!(fa, fb);
        // A still has everything.
        assert_same(&a.get(&h).await.unwrap(), &df, "owner still reads it");
        poll_until_done(&mut a, job_descriptor).await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_quotas_refuse_creations_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let file = json!({
        "signing_key": "a-long-shared-signing-key-for-tests",
        "tokens": [
            {"tenant": "acme", "sha256": hex(b"acme-token")},
            {"tenant": "globex", "sha256": hex(b"globex-token")}
        ],
        "quotas": {"acme": {"max_handles": 3}},
    });
    std::fs::write(&path, file.to_string()).unwrap();
    for mode in MODES {
        let auth = Arc::new(polarway::tenant::auth::Authenticator::from_file(&path).unwrap());
        // Every other tenant: at most 1 MB.
        let server = TestServer::start_with(mode, |c| {
            c.auth = Some(auth.clone());
            c.tenant_quota.max_bytes = Some(1 << 20);
        })
        .await;
        let mut a = server.client().await;
        a.inner.add_header("authorization", "Bearer acme-token").unwrap();
        let mut b = server.client().await;
        b.inner.add_header("authorization", "Bearer globex-token").unwrap();

        let df = df!("x" => [1i64, 2, 3]).unwrap();
        let first = handle_of(&a.upload("t", &df).await);
        a.action("filter", json!({"input": first, "predicate": "x > 1"})).await.unwrap();
        a.action("filter", json!({"input": first, "predicate": "x > 2"})).await.unwrap();
        let refused = a.action("filter", json!({"input": first, "predicate": "x > 0"})).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{mode:?}: {refused}");
        assert!(refused.message().contains("quota is 3"), "{}", refused.message());
        // Repeating a request that names an existing result is not a new result.
        a.action("filter", json!({"input": first, "predicate": "x > 1"})).await.unwrap();
        // Dropping one makes room.
        let second = handle_of(&a.action("filter", json!({"input": first, "predicate": "x > 2"})).await.unwrap());
        a.action("drop_handle", json!({"handle": second})).await.unwrap();
        a.action("filter", json!({"input": first, "predicate": "x > 0"})).await.unwrap();

        // The other tenant is limited by bytes, not by acme's count.
        for i in 0..5 {
            b.upload(&format!("small{i}"), &df).await;
        }
        let big = df!("x" => (0..400_000i64).collect::<Vec<_>>()).unwrap();
        let refused = b.try_upload(FlightDescriptor::new_path(vec!["big".into()]), &big).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{mode:?}: {refused}");
        assert!(refused.message().contains("bytes"), "{}", refused.message());
        server.stop().await;
    }
}

//! Two real `polarway-grpc` processes on one state directory: a handle made on one is served
//! and used as input by the other, and results survive a worker restart.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use polars::prelude::*;
use serde_json::json;

use crate::fixture::*;

struct Worker {
    child: Child,
    addr: SocketAddr,
}

impl Worker {
    /// Starts the binary on 127.0.0.1:0 and waits for its "listening" line to learn the port.
    fn start(state_dir: &Path) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_polarway-grpc"))
            .env_clear()
            .env("POLARWAY_BIND_ADDRESS", "127.0.0.1:0")
            .env("POLARWAY_HANDLE_STORE", "external")
            .env("POLARWAY_STATE_DIR", state_dir)
            .env("POLARWAY_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start polarway-grpc");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("worker exited before listening").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["fields"]["message"] == "polarway-grpc listening" {
                break v["fields"]["address"].as_str().unwrap().parse().unwrap();
            }
        };
        // Keep draining the log so the worker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Worker { child, addr }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "graceful exit on SIGTERM: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_worker_serves_any_handle_and_results_survive_restarts() {
    let state = tempfile::tempdir().unwrap();
    let a = Worker::start(state.path());
    let b = Worker::start(state.path());
    let df = df!("sym" => ["a", "b", "a"], "qty" => [1i64, 2, 3]).unwrap();

    let mut ca = Client::connect(a.addr).await;
    let mut cb = Client::connect(b.addr).await;
    let h = handle_of(&ca.upload("t", &df).await);
    assert_same(&cb.get(&h).await.unwrap(), &df, "served by the other worker");
    let agg = cb
        .action("group_by", json!({"input": h, "by": ["sym"], "aggs": ["sum(qty) AS total"]}))
        .await
        .unwrap();
    let want = df!("sym" => ["a", "b"], "total" => [4i64, 2]).unwrap();
    assert_same_rows(&ca.get(&handle_of(&agg)).await.unwrap(), &want, "input on the other worker");
    // The same request on either worker names the same result.
    let again = ca
        .action("group_by", json!({"input": h, "by": ["sym"], "aggs": ["sum(qty) AS total"]}))
        .await
        .unwrap();
    assert_eq!(handle_of(&again), handle_of(&agg));

    a.stop();
    b.stop();
    let c = Worker::start(state.path());
    let mut cc = Client::connect(c.addr).await;
    assert_same(&cc.get(&h).await.unwrap(), &df, "after restart");
    assert_same_rows(&cc.get(&handle_of(&agg)).await.unwrap(), &want, "after restart");
    c.stop();
}

#[test]
fn missing_state_dir_fails_at_start_naming_the_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_polarway-grpc"))
        .env_clear()
        .env("POLARWAY_HANDLE_STORE", "external")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("POLARWAY_STATE_DIR"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

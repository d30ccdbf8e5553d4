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
        Self::start_with(state_dir, &[])
    }

    fn start_with(state_dir: &Path, env: &[(&str, &str)]) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_polarway-grpc"))
            .env_clear()
            .envs(env.iter().copied())
            .env("POLARWAY_BIND_ADDRESS", "127.0.0.1:0")
            .env("POLARWAY_METRICS_ADDRESS", "127.0.0.1:0")
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

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
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
    let agg = cb.action("group_by", json!({"input": h, "by": ["sym"], "aggs": ["sum(qty) AS total"]})).await.unwrap();
    let want = df!("sym" => ["a", "b"], "total" => [4i64, 2]).unwrap();
    assert_same_rows(&ca.get(&handle_of(&agg)).await.unwrap(), &want, "input on the other worker");
    // The same request on either worker names the same result.
    let again = ca.action("group_by", json!({"input": h, "by": ["sym"], "aggs": ["sum(qty) AS total"]})).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_is_killed_is_finished_by_another() {
    let state = tempfile::tempdir().unwrap();
    let env = [("POLARWAY_JOB_LEASE_SECS", "1"), ("POLARWAY_JOB_POLL_MS", "20")];
    let a = Worker::start_with(state.path(), &env);
    let mut ca = Client::connect(a.addr).await;
    let df = df!("x" => (0..4000i64).collect::<Vec<_>>()).unwrap();
    let h = handle_of(&ca.upload("x", &df).await);
    // Slow enough (a 16M-row cross join, then a group-by) to be killed while running.
    let cmd = json!({"op": "pipeline", "input": h, "steps": [
        {"op": "join", "right": h, "how": "cross"},
        {"op": "group_by", "by": ["x"], "aggs": ["sum(x_right) AS s"]},
        {"op": "sort", "by": ["x"]}
    ]});
    let first = ca.inner.poll_flight_info(arrow_flight::FlightDescriptor::new_cmd(cmd.to_string())).await.unwrap();
    let job = first.flight_descriptor.expect("queued");
    let leases = state.path().join("leases");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&leases).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "worker a never claimed the job");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    a.kill9();

    let b = Worker::start_with(state.path(), &env);
    let mut cb = Client::connect(b.addr).await;
    let done = poll_until_done(&mut cb, job).await;
    let info = done.info.unwrap();
    assert_eq!(info.total_records, 4000);
    // The job record (not a staging file of a write in progress).
    let record = std::fs::read_dir(state.path().join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a job record");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(record["state"], "done");
    assert!(record["worker"].as_str().unwrap().ends_with(&b.addr.to_string()), "{record}");
    let got = cb
        .get(&handle_of(
            &json!({"handle": String::from_utf8(info.endpoint[0].ticket.clone().unwrap().ticket.to_vec()).unwrap()}),
        ))
        .await
        .unwrap();
    let n: i64 = 4000;
    let want = df!("x" => (0..n).collect::<Vec<_>>(), "s" => vec![n * (n - 1) / 2; n as usize]).unwrap();
    assert_same(&got, &want, "finished by the other worker");
    b.stop();
}

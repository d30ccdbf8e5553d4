//! Stored results carry checksums: over many mutations of real artifacts (bit flips, zeroed
//! runs, truncation, appended bytes), a read never returns different data. A recomputable
//! result is recomputed from lineage and served intact; an upload answers DATA_LOSS; the worker
//! keeps serving throughout.

use polars::prelude::*;
use serde_json::json;
use tonic::Code;

use crate::fixture::*;

/// A small deterministic generator, so a failure names a reproducible mutation.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn mutate(original: &[u8], rng: &mut Lcg) -> (Vec<u8>, String) {
    let mut bytes = original.to_vec();
    let len = bytes.len() as u64;
    let what = match rng.below(4) {
        0 => {
            let at = rng.below(len) as usize;
            let bit = 1u8 << rng.below(8);
            bytes[at] ^= bit;
            format!("flip bit {bit:#x} at {at}")
        }
        1 => {
            let at = rng.below(len) as usize;
            let n = (1 + rng.below(64) as usize).min(bytes.len() - at);
            let before = bytes[at..at + n].to_vec();
            bytes[at..at + n].fill(0);
            if before == bytes[at..at + n] {
                bytes[at] = 0xA5;
            }
            format!("zero {n} bytes at {at}")
        }
        2 => {
            let keep = rng.below(len) as usize;
            bytes.truncate(keep);
            format!("truncate to {keep}")
        }
        _ => {
            let n = 1 + rng.below(100) as usize;
            bytes.extend((0..n).map(|i| i as u8));
            format!("append {n} bytes")
        }
    };
    (bytes, what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_artifacts_are_never_served() {
    // No decoded cache: every read goes to the stored file.
    let server = TestServer::start_with(Mode::External, |c| c.cache_bytes = 0).await;
    let mut c = server.client().await;
    let rows = 5_000i64;
    let df = df!(
        "id" => (0..rows).collect::<Vec<_>>(),
        "sym" => (0..rows).map(|i| ["alpha", "beta", "a much longer string than twelve bytes"][(i % 3) as usize]).collect::<Vec<_>>(),
        "px" => (0..rows).map(|i| i as f64 * 0.5).collect::<Vec<_>>(),
    )
    .unwrap();
    let upload = handle_of(&c.upload("t", &df).await);
    let derived = handle_of(&c.action("filter", json!({"input": upload, "predicate": "id % 2 = 0"})).await.unwrap());
    let expected_derived = c.get(&derived).await.unwrap();
    let results = server.state_dir.path().join("results");
    let path = |h: &str| results.join(format!("{h}.arrow"));
    let upload_bytes = std::fs::read(path(&upload)).unwrap();
    let derived_bytes = std::fs::read(path(&derived)).unwrap();
    let derived_meta = std::fs::read(results.join(format!("{derived}.json"))).unwrap();

    let mut rng = Lcg(0x5eed);
    let (mut recomputed, mut lost) = (0, 0);
    for round in 0..250 {
        // A damaged recomputable result: recomputed and served intact.
        let (bad, what) = mutate(&derived_bytes, &mut rng);
        std::fs::write(path(&derived), &bad).unwrap();
        // Damage found mid-stream fails that stream (DATA_LOSS) and moves the data aside; the
        // next read recomputes it.
        let got = match c.get(&derived).await {
            Ok(got) => got,
            Err(e) if e.code() == Code::DataLoss => {
                c.get(&derived).await.unwrap_or_else(|e| panic!("round {round}, derived retry, {what}: {e}"))
            }
            Err(e) => panic!("round {round}, derived, {what}: {e}"),
        };
        assert_same(&got, &expected_derived, &format!("round {round}, derived, {what}"));
        recomputed += 1;
        let _ = std::fs::remove_file(results.join(format!("{derived}.arrow.damaged")));
        std::fs::write(path(&derived), &derived_bytes).unwrap();
        std::fs::write(results.join(format!("{derived}.json")), &derived_meta).unwrap();

        // A damaged upload: DATA_LOSS, on DoGet and as an operation's input.
        let (bad, what) = mutate(&upload_bytes, &mut rng);
        std::fs::write(path(&upload), &bad).unwrap();
        let err = c.get(&upload).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "round {round}, upload, {what}: {err}");
        let err = c.action("head", json!({"input": upload, "n": round + 1})).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "round {round}, upload as input, {what}: {err}");
        lost += 1;
        let _ = std::fs::remove_file(results.join(format!("{upload}.arrow.damaged")));
        std::fs::write(path(&upload), &upload_bytes).unwrap();
        assert_same(&c.get(&upload).await.unwrap(), &df, &format!("round {round}: restored upload"));
    }
    assert_eq!((recomputed, lost), (250, 250));
    server.stop().await;
}

//! The Rust client over TLS to a worker that requires client certificates, with certificates
//! generated here: CA, certificate and key options work; without a client certificate, or over
//! plaintext, the worker refuses.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use polarway::client::{Client, ClientConfig, RetryPolicy, TlsOptions};
use polarway::server::tls::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::fixture::*;

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client: (String, String),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "polarway test ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    std::fs::write(dir.path().join("server.crt"), server_cert).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).unwrap();
    Pki { client: leaf(vec!["client".into()]), ca_pem: ca_cert.pem(), dir }
}

fn batch() -> (Arc<Schema>, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
    (schema, batch)
}

fn client(endpoint: &str, tls: Option<TlsOptions>) -> Client {
    let config = ClientConfig { tls, retry: RetryPolicy { attempts: 1, ..Default::default() }, ..Default::default() };
    Client::new(&[endpoint], config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_speaks_mutual_tls() {
    let pki = pki();
    let files = TlsFiles {
        cert: pki.dir.path().join("server.crt"),
        key: pki.dir.path().join("server.key"),
        client_ca: Some(pki.dir.path().join("ca.crt")),
        reload_interval: std::time::Duration::from_secs(1),
    };
    let server = TestServer::start_with(Mode::Memory, |c| c.tls = Some(files)).await;
    let https = format!("https://localhost:{}", server.addr.port());
    let (schema, batch) = batch();

    let identity = TlsOptions {
        ca_pem: pki.ca_pem.clone().into_bytes(),
        identity: Some((pki.client.0.clone().into_bytes(), pki.client.1.clone().into_bytes())),
        domain: None,
    };
    let good = client(&https, Some(identity));
    let handle = good.upload("t", schema.clone(), vec![batch.clone()], None).await.unwrap();
    let got = good.fetch(&handle.handle, None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].columns(), batch.columns(), "the data came back over mTLS");

    let anonymous = TlsOptions { ca_pem: pki.ca_pem.clone().into_bytes(), ..Default::default() };
    assert!(client(&https, Some(anonymous)).fetch(&handle.handle, None).await.is_err());
    let plaintext = client(&format!("http://{}", server.addr), None);
    assert!(plaintext.fetch(&handle.handle, None).await.is_err());
    server.stop().await;
}

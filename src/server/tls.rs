//! TLS and mutual TLS for the Flight port, with certificates reloaded from disk.
//!
//! With `POLARWAY_TLS_CERT` and `POLARWAY_TLS_KEY` the worker speaks only TLS (1.2 and 1.3, rustls
//! defaults, ALPN `h2`). With `POLARWAY_TLS_CLIENT_CA` too, every client must present a
//! certificate issued by that CA. The three files are read again whenever their contents change:
//! the next handshake uses the new configuration and live connections carry on with the one they
//! started with. A file that does not load keeps the previous configuration and logs why.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

pub use crate::config::TlsFiles;

impl TlsFiles {
    /// A digest of the files' contents, to notice a change.
    fn digest(&self) -> Result<[u8; 32], String> {
        let mut digest = Sha256::new();
        for path in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()].into_iter().flatten() {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(&bytes);
        }
        Ok(digest.finalize().into())
    }

    /// Builds a rustls configuration from the files as they are now.
    pub fn load(&self) -> Result<ServerConfig, String> {
        let certs = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: no usable private key: {e}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            format!("{} and {} do not make a certificate: {e}", self.cert.display(), self.key.display())
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The configuration handshakes use now, swapped when the files change.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<(Arc<ServerConfig>, [u8; 32])>,
}

impl Tls {
    /// Loads the files; an error here stops the worker from starting.
    pub fn new(files: TlsFiles) -> Result<Arc<Tls>, String> {
        let digest = files.digest()?;
        let config = files.load()?;
        Ok(Arc::new(Tls { files, current: RwLock::new((Arc::new(config), digest)) }))
    }

    /// An acceptor with the certificate in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("tls lock").0.clone())
    }

    /// Reloads when the files changed; returns whether a new configuration is in use.
    pub fn reload(&self) -> bool {
        let digest = match self.files.digest() {
            Ok(digest) => digest,
            Err(e) => {
                tracing::warn!(error = %e, "TLS files unreadable; keeping the current certificate");
                return false;
            }
        };
        if digest == self.current.read().expect("tls lock").1 {
            return false;
        }
        match self.files.load() {
            Ok(config) => {
                *self.current.write().expect("tls lock") = (Arc::new(config), digest);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Remember the bad contents so the warning is logged once per change.
                self.current.write().expect("tls lock").1 = digest;
                tracing::warn!(error = %e, "new TLS files do not load; keeping the current certificate");
                false
            }
        }
    }

    /// Reloads the files every reload interval until the returned task is aborted. The server
    /// accepts connections and runs handshakes itself (`server::http2`), each with the
    /// certificate in use when it began.
    pub fn keep_reloading(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.files.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let tls = self.clone();
                let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
            }
        })
    }
}

/// SHA-256 of a certificate's DER bytes, as lowercase hex: how a client certificate is named in
/// the tokens file.
pub fn fingerprint(cert: &[u8]) -> String {
    Sha256::digest(cert).iter().map(|b| format!("{b:02x}")).collect()
}

/// Certificates for tests: a CA, a server certificate for `localhost` and `127.0.0.1`, and a
/// client certificate, written as PEM files.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::TlsFiles;

    /// A CA and what it signed, as PEM.
    pub struct Pki {
        /// The CA certificate.
        pub ca: String,
        /// The server's certificate and key.
        pub server: (String, String),
        /// A client's certificate and key.
        pub client: (String, String),
    }

    /// A new CA and the certificates it signs.
    pub fn pki() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "polarway unit test ca");
        let ca = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        Pki { ca, server: leaf(vec!["localhost".into(), "127.0.0.1".into()]), client: leaf(vec!["client".into()]) }
    }

    /// Writes `pki`'s server files (and its CA, for client certificates) under `dir`.
    pub fn write(dir: &Path, pki: &Pki, client_ca: bool) -> TlsFiles {
        std::fs::write(dir.join("server.crt"), &pki.server.0).unwrap();
        std::fs::write(dir.join("server.key"), &pki.server.1).unwrap();
        std::fs::write(dir.join("ca.crt"), &pki.ca).unwrap();
        TlsFiles {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: client_ca.then(|| dir.join("ca.crt")),
            reload_interval: Duration::from_secs(3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    use super::testing::*;
    use super::*;

    fn in_use(tls: &Tls) -> Arc<ServerConfig> {
        tls.current.read().unwrap().0.clone()
    }

    /// A client handshake against `tls`, with `client` as its certificate when given; whether a
    /// byte made it through both ways.
    async fn handshake(tls: &Tls, ca: &str, client: Option<&(String, String)>) -> bool {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        let (near, far) = tokio::io::duplex(1 << 16);
        let acceptor = tls.acceptor();
        let server = tokio::spawn(async move {
            let mut stream = acceptor.accept(far).await.ok()?;
            let mut byte = [0u8];
            stream.read_exact(&mut byte).await.ok()?;
            stream.write_all(&byte).await.ok()?;
            stream.flush().await.ok()
        });
        let connector = TlsConnector::from(Arc::new(config));
        let Ok(mut stream) = connector.connect(ServerName::try_from("localhost").unwrap(), near).await else {
            return false;
        };
        let mut echoed = [0u8];
        let ok = stream.write_all(&[7]).await.is_ok() && stream.read_exact(&mut echoed).await.is_ok();
        ok && server.await.unwrap().is_some() && echoed == [7]
    }

    #[tokio::test]
    async fn client_certificates_are_required_when_a_client_ca_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki();
        let plain = Tls::new(write(dir.path(), &pki, false)).unwrap();
        assert!(handshake(&plain, &pki.ca, None).await, "no client CA: any client");
        let mutual = Tls::new(write(dir.path(), &pki, true)).unwrap();
        assert!(handshake(&mutual, &pki.ca, Some(&pki.client)).await, "a certificate the CA signed");
        assert!(!handshake(&mutual, &pki.ca, None).await, "no certificate");
        let stranger = super::testing::pki();
        assert!(!handshake(&mutual, &pki.ca, Some(&stranger.client)).await, "a certificate another CA signed");
    }

    #[test]
    fn files_that_do_not_load_are_named_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &pki(), true);
        let missing = TlsFiles { key: dir.path().join("nope.key"), ..files.clone() };
        let err = Tls::new(missing).err().unwrap();
        assert!(err.contains("nope.key"), "{err}");
        std::fs::write(dir.path().join("empty.crt"), "").unwrap();
        let err = Tls::new(TlsFiles { cert: dir.path().join("empty.crt"), ..files.clone() }).err().unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
        std::fs::write(dir.path().join("cert-as-key.key"), pki().server.0).unwrap();
        let err = Tls::new(TlsFiles { key: dir.path().join("cert-as-key.key"), ..files }).err().unwrap();
        assert!(err.contains("no usable private key"), "{err}");
    }

    #[tokio::test]
    async fn a_changed_certificate_is_used_for_new_handshakes_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let first = pki();
        let tls = Tls::new(write(dir.path(), &first, false)).unwrap();
        let before = in_use(&tls);
        assert!(!tls.reload(), "unchanged files");
        assert!(Arc::ptr_eq(&before, &in_use(&tls)));

        let second = pki();
        write(dir.path(), &second, false);
        assert!(tls.reload(), "new files");
        assert!(handshake(&tls, &second.ca, None).await, "the new certificate");
        assert!(!handshake(&tls, &first.ca, None).await, "not the old one");

        let working = in_use(&tls);
        std::fs::write(dir.path().join("server.crt"), "not a certificate").unwrap();
        assert!(!tls.reload(), "a broken file is not used");
        assert!(Arc::ptr_eq(&working, &in_use(&tls)));
        assert!(handshake(&tls, &second.ca, None).await, "the last good certificate still serves");
    }

    #[test]
    fn fingerprints_are_lowercase_sha256_hex() {
        assert_eq!(fingerprint(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

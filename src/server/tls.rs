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

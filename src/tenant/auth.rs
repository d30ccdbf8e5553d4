//! Token authentication.
//!
//! With `POLARWAY_AUTH_TOKENS_FILE`, every call carries `authorization: Bearer <token>`. Tokens
//! are stored as SHA-256 digests and compared in constant time. Flight `Handshake` with basic
//! credentials (pyarrow's `authenticate_basic_token`) answers with a bearer token signed with the
//! file's key: any worker holding the same file accepts it, so no worker keeps session state.
//!
//! ```json
//! {
//!   "signing_key": "a long random string, the same on every worker",
//!   "tokens": [{"tenant": "acme", "sha256": "<hex of sha256(token)>"}],
//!   "users": [{"username": "alice", "password_sha256": "<hex>", "tenant": "acme"}],
//!   "certificates": [{"tenant": "acme", "sha256": "<hex of sha256(client certificate DER)>"}],
//!   "quotas": {"acme": {"max_bytes": 10000000000, "max_handles": 5000}}
//! }
//! ```
//!
//! A client certificate listed under `certificates` (verified by mTLS first) names its tenant
//! without a token.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::tenant::quota::Quota;

/// Lifetime of a bearer token issued by `Handshake`.
const ISSUED_TOKEN_SECS: i64 = 12 * 3600;
const SIGNED_PREFIX: &str = "pwt1";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    signing_key: String,
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    certificates: Vec<TokenEntry>,
    #[serde(default)]
    quotas: HashMap<String, QuotaEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaEntry {
    max_bytes: Option<u64>,
    max_handles: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    tenant: String,
    sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: String,
    password_sha256: String,
    tenant: String,
}

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller's tenant.
    pub tenant: String,
}

/// Checks credentials against the tokens file.
pub struct Authenticator {
    tokens: Vec<([u8; 32], String)>,
    certificates: HashMap<[u8; 32], String>,
    quotas: HashMap<String, Quota>,
    users: HashMap<String, ([u8; 32], String)>,
    key: Vec<u8>,
    clock: crate::clock::SharedClock,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print digests or the signing key.
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

fn digest_hex(param: &str, text: &str) -> std::result::Result<[u8; 32], String> {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("POLARWAY_AUTH_TOKENS_FILE: `{param}` is not hex"))?;
    bytes.try_into().map_err(|_| format!("POLARWAY_AUTH_TOKENS_FILE: `{param}` is not a SHA-256 digest"))
}

fn valid_tenant(tenant: &str) -> bool {
    tenant.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && tenant.len() <= 64
        && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Authenticator {
    /// Reads a tokens file; the error is one line naming the option.
    pub fn from_file(path: &Path) -> std::result::Result<Authenticator, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("POLARWAY_AUTH_TOKENS_FILE: cannot read {}: {e}", path.display()))?;
        let file: TokensFile = serde_json::from_slice(&text).map_err(|e| format!("POLARWAY_AUTH_TOKENS_FILE: {e}"))?;
        if file.signing_key.len() < 16 {
            return Err("POLARWAY_AUTH_TOKENS_FILE: `signing_key` must be at least 16 characters".into());
        }
        let mut tokens = Vec::new();
        for t in file.tokens {
            if !valid_tenant(&t.tenant) {
                return Err(format!("POLARWAY_AUTH_TOKENS_FILE: bad tenant name `{}`", t.tenant));
            }
            tokens.push((digest_hex("sha256", &t.sha256)?, t.tenant));
        }
        let mut users = HashMap::new();
        for u in file.users {
            if !valid_tenant(&u.tenant) {
                return Err(format!("POLARWAY_AUTH_TOKENS_FILE: bad tenant name `{}`", u.tenant));
            }
            users.insert(u.username, (digest_hex("password_sha256", &u.password_sha256)?, u.tenant));
        }
        let mut certificates = HashMap::new();
        for c in file.certificates {
            if !valid_tenant(&c.tenant) {
                return Err(format!("POLARWAY_AUTH_TOKENS_FILE: bad tenant name `{}`", c.tenant));
            }
            certificates.insert(digest_hex("certificates.sha256", &c.sha256.to_ascii_lowercase())?, c.tenant);
        }
        let quotas = file
            .quotas
            .into_iter()
            .map(|(tenant, q)| (tenant, Quota { max_bytes: q.max_bytes, max_handles: q.max_handles }))
            .collect();
        Ok(Authenticator {
            tokens,
            certificates,
            quotas,
            users,
            key: file.signing_key.into_bytes(),
            clock: crate::clock::system(),
        })
    }

    /// Issues and checks token expiry by `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: crate::clock::SharedClock) -> Self {
        self.clock = clock;
        self
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }

    /// The caller behind an `authorization` header value, or UNAUTHENTICATED.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal> {
        let refused = || Error::Unauthenticated("missing or invalid credentials".into());
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).ok_or_else(refused)?.trim();
        // A token issued by Handshake: pwt1.<tenant>.<expiry>.<hex mac>
        if let Some(rest) = token.strip_prefix(SIGNED_PREFIX).and_then(|r| r.strip_prefix('.')) {
            let mut parts = rest.rsplitn(2, '.');
            let (Some(mac_hex), Some(claims)) = (parts.next(), parts.next()) else { return Err(refused()) };
            let mac = digest_hex("token", mac_hex).map_err(|_| refused())?;
            self.mac(&format!("{SIGNED_PREFIX}.{claims}")).verify_slice(&mac).map_err(|_| refused())?;
            let (tenant, expiry) = claims.rsplit_once('.').ok_or_else(refused)?;
            let expiry: i64 = expiry.parse().map_err(|_| refused())?;
            if expiry < self.clock.now().timestamp() {
                return Err(Error::Unauthenticated("the token has expired; authenticate again".into()));
            }
            return Ok(Principal { tenant: tenant.to_string() });
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Look at every entry whatever matches, so timing says nothing about which one did.
        let mut found = None;
        for (stored, tenant) in &self.tokens {
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(tenant.clone());
            }
        }
        found.map(|tenant| Principal { tenant }).ok_or_else(refused)
    }

    /// Quotas the file sets for particular tenants.
    pub fn quotas(&self) -> &HashMap<String, Quota> {
        &self.quotas
    }

    /// The tenant of a client certificate (DER) that the TLS layer has already verified.
    pub fn certificate(&self, der: &[u8]) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(der).into();
        self.certificates.get(&digest).map(|tenant| Principal { tenant: tenant.clone() })
    }

    /// Checks `authorization: Basic ...` and issues a signed bearer token.
    pub fn handshake(&self, header: Option<&str>) -> Result<(Principal, String)> {
        let refused = || Error::Unauthenticated("invalid username or password".into());
        let encoded = header.and_then(|h| h.strip_prefix("Basic ")).ok_or_else(refused)?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| refused())?;
        let decoded = String::from_utf8(decoded).map_err(|_| refused())?;
        let (user, password) = decoded.split_once(':').ok_or_else(refused)?;
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let (stored, tenant) = self.users.get(user).ok_or_else(refused)?;
        if !bool::from(stored.ct_eq(&digest)) {
            return Err(refused());
        }
        let claims = format!("{tenant}.{}", self.clock.now().timestamp() + ISSUED_TOKEN_SECS);
        let mac = self.mac(&format!("{SIGNED_PREFIX}.{claims}")).finalize().into_bytes();
        let mac_hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        Ok((Principal { tenant: tenant.clone() }, format!("{SIGNED_PREFIX}.{claims}.{mac_hex}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(data: &[u8]) -> String {
        Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn authenticator() -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let file = serde_json::json!({
            "signing_key": "0123456789abcdef-test-key",
            "tokens": [{"tenant": "acme", "sha256": hex(b"s3cret")}],
            "users": [{"username": "alice", "password_sha256": hex(b"pw"), "tenant": "acme"}],
        });
        std::fs::write(&path, file.to_string()).unwrap();
        Authenticator::from_file(&path).unwrap()
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(Some("Bearer s3cret")).unwrap().tenant, "acme");
        for bad in [None, Some("Bearer wrong"), Some("s3cret"), Some("Basic s3cret"), Some("Bearer ")] {
            assert!(matches!(auth.authenticate(bad), Err(Error::Unauthenticated(_))), "{bad:?}");
        }
    }

    #[test]
    fn handshake_tokens_are_signed_and_checked() {
        let auth = authenticator();
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:pw"));
        let (who, token) = auth.handshake(Some(&basic)).unwrap();
        assert_eq!(who.tenant, "acme");
        assert_eq!(auth.authenticate(Some(&format!("Bearer {token}"))).unwrap().tenant, "acme");
        let forged = token.replacen("acme", "evil", 1);
        assert!(auth.authenticate(Some(&format!("Bearer {forged}"))).is_err());
        let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:nope"));
        assert!(auth.handshake(Some(&wrong)).is_err());
    }

    #[test]
    fn handshake_tokens_expire() {
        let clock = crate::clock::ManualClock::shared();
        let auth = authenticator().with_clock(clock.clone());
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:pw"));
        let bearer = format!("Bearer {}", auth.handshake(Some(&basic)).unwrap().1);
        clock.advance(std::time::Duration::from_secs(ISSUED_TOKEN_SECS as u64 - 60));
        assert!(auth.authenticate(Some(&bearer)).is_ok(), "a minute before expiry");
        clock.advance(std::time::Duration::from_secs(120));
        let err = auth.authenticate(Some(&bearer)).unwrap_err();
        assert!(matches!(&err, Error::Unauthenticated(m) if m.contains("expired")), "{err:?}");
    }
}

//! Result handles, which are also Flight tickets, and the names results and datasets may take.
//!
//! A handle is `pw1_` followed by 32 lowercase hex digits: a version tag and 128 bits that are
//! either a digest of the request that produced the result (so a repeated request names the same
//! result) or random (uploads without an idempotency key). The Flight ticket bytes are exactly the
//! handle's UTF-8 bytes. [`Handle::parse`] accepts nothing else, so a handle is always safe to use
//! as a file name.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const PREFIX: &str = "pw1_";
const HEX_LEN: usize = 32;

/// A validated result handle. Deserialising validates like [`Handle::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Handle(String);

impl TryFrom<String> for Handle {
    type Error = Error;

    fn try_from(text: String) -> Result<Handle> {
        Handle::parse(&text)
    }
}

impl From<Handle> for String {
    fn from(handle: Handle) -> String {
        handle.0
    }
}

impl Handle {
    /// Parses and validates a handle sent by a client.
    pub fn parse(text: &str) -> Result<Handle> {
        let valid = text.len() == PREFIX.len() + HEX_LEN
            && text.starts_with(PREFIX)
            && text[PREFIX.len()..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Handle(text.to_string()))
        } else {
            let shown: String = text.chars().take(48).collect();
            Err(Error::invalid(format!(
                "`{shown}` is not a Polarway handle (expected `{PREFIX}` and {HEX_LEN} hex digits)"
            )))
        }
    }

    /// Whether ticket bytes are meant as a handle (they carry its version tag), valid or not.
    pub fn is_handle_ticket(ticket: &[u8]) -> bool {
        ticket.starts_with(PREFIX.as_bytes())
    }

    /// Parses a Flight ticket, whose bytes are the handle's UTF-8 text.
    pub fn from_ticket(ticket: &[u8]) -> Result<Handle> {
        let text =
            std::str::from_utf8(ticket).map_err(|_| Error::invalid("ticket is not a Polarway handle (not UTF-8)"))?;
        Handle::parse(text)
    }

    /// The handle naming the result of a request with this canonical key.
    pub fn derive(key: &[u8]) -> Handle {
        let digest = Sha256::digest(key);
        Handle(format!("{PREFIX}{}", hex(&digest[..HEX_LEN / 2])))
    }

    /// A fresh handle that names nothing yet.
    pub fn random() -> Handle {
        Handle(format!("{PREFIX}{}", uuid::Uuid::new_v4().simple()))
    }

    /// The handle text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` can name a dataset: an SQL identifier that needs no quoting in lower case,
/// `[a-z_][a-z0-9_]*`, up to 128 characters. (DataFusion folds unquoted identifiers to lower case.)
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 128
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Refuses a name that cannot be a table name.
pub fn check_name(name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "`{name}` cannot name a dataset: use lower-case letters, digits and `_`, starting with a letter or `_`, at most 128"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_and_random_handles_round_trip() {
        for h in [Handle::derive(b"filter{}"), Handle::random()] {
            assert_eq!(Handle::parse(h.as_str()).unwrap(), h);
            assert_eq!(Handle::from_ticket(h.as_str().as_bytes()).unwrap(), h);
        }
        assert_eq!(Handle::derive(b"x"), Handle::derive(b"x"));
        assert_ne!(Handle::derive(b"x"), Handle::derive(b"y"));
    }

    #[test]
    fn rejects_anything_else() {
        let good = Handle::random().to_string();
        for bad in [
            "",
            "pw1_",
            "../../etc/passwd",
            &good.to_uppercase(),
            &format!("{good}0"),
            &good[..good.len() - 1],
            &format!("pw2_{}", &good[4..]),
            &format!("{}/", &good[..good.len() - 1]),
        ] {
            assert!(Handle::parse(bad).is_err(), "{bad}");
        }
        assert!(Handle::from_ticket(&[0xff, 0xfe]).is_err());
    }
}

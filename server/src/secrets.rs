//! Secret environment values of jobs (`task.secret_env`): sealed with the
//! cluster's key (`[secrets] key_file`, the same file on every server) by the
//! server that receives the spec, before it is proposed, so the Raft log,
//! the state, snapshots, backups and every API answer hold only
//! `sealed:v1:…`. The leader opens them when it hands an attempt to a
//! worker (over the worker's TLS session), and nowhere else.
//!
//! AES-256-GCM with a synthetic nonce: the nonce is an HMAC of the
//! variable's name and value, so sealing the same value twice gives the same
//! text and applying an unchanged spec changes nothing. The cost is that
//! equal values are visibly equal; the value itself is not.
//!
//! A value given already sealed (copied from `rotactl job get`) is kept
//! as it is if it opens with this cluster's key, so get → edit → apply
//! round-trips.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;

/// Prefix of a sealed value.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// Associated data bound to every sealed value.
const AAD: &[u8] = b"rota secret_env v1";

/// The cluster's secrets key.
pub struct Keyring {
    key: LessSafeKey,
    nonce_key: hmac::Key,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(..)")
    }
}

/// A value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);

impl Keyring {
    /// A keyring from 32 bytes of key material.
    pub fn from_bytes(material: &[u8; 32]) -> Keyring {
        // Separate keys for encryption and nonces, both derived from the file.
        let derive = |label: &[u8]| {
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, material), label);
            let mut out = [0u8; 32];
            out.copy_from_slice(&tag.as_ref()[..32]);
            out
        };
        let enc = derive(b"rota secrets: encryption");
        let nonce = derive(b"rota secrets: nonce");
        let key = match UnboundKey::new(&AES_256_GCM, &enc) {
            Ok(key) => LessSafeKey::new(key),
            // A 32-byte key always fits AES-256.
            Err(_) => unreachable!("AES-256 takes a 32-byte key"),
        };
        Keyring {
            key,
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &nonce),
        }
    }

    /// Reads a key file: 32 bytes written as 64 hex digits or base64
    /// (`rotactl tls init` writes `secrets.key`).
    pub fn load(path: &Path) -> Result<Keyring, SecretError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SecretError(format!("secrets.key_file {}: {e}", path.display())))?;
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
        } else {
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        };
        let material: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
            SecretError(format!(
                "secrets.key_file {}: expected 32 bytes as 64 hex digits or base64 (e.g. `head -c 32 /dev/urandom | base64`)",
                path.display()
            ))
        })?;
        Ok(Keyring::from_bytes(&material))
    }

    /// Seals `value` of variable `name`.
    pub fn seal(&self, name: &str, value: &str) -> String {
        let tag = hmac::sign(&self.nonce_key, &[name.as_bytes(), b"\0", value.as_bytes()].concat());
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        let mut data = value.as_bytes().to_vec();
        if self
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut data)
            .is_err()
        {
            // Only for inputs beyond GCM's limit (64 GiB); values are bounded far below.
            unreachable!("a secret value within the spec size limit always seals");
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED_PREFIX}{}", B64.encode(out))
    }

    /// Opens a sealed value.
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| SecretError("not a sealed value".into()))?;
        let bytes = B64
            .decode(body)
            .map_err(|_| SecretError("a sealed value that is not valid base64".into()))?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError("a sealed value too short to be one".into()));
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let mut data = data.to_vec();
        let clear = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(AAD), &mut data)
            .map_err(|_| SecretError("sealed with another key (or altered)".into()))?;
        String::from_utf8(clear.to_vec()).map_err(|_| SecretError("a sealed value that is not UTF-8".into()))
    }

    /// Seals every clear value of `secret_env`; keeps values already sealed
    /// with this key; refuses values sealed with another.
    pub fn seal_all(&self, secret_env: &mut BTreeMap<String, String>) -> Result<(), (String, SecretError)> {
        for (name, value) in secret_env.iter_mut() {
            if value.starts_with(SEALED_PREFIX) {
                self.open(value).map_err(|e| (name.clone(), e))?;
            } else {
                *value = self.seal(name, value);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_is_deterministic_opens_back_and_hides_the_value() {
        let keyring = Keyring::from_bytes(&[7; 32]);
        let sealed = keyring.seal("DB_PASSWORD", "hunter2-canary");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(keyring.seal("DB_PASSWORD", "hunter2-canary"), sealed);
        assert_ne!(keyring.seal("OTHER", "hunter2-canary"), sealed);
        assert_eq!(keyring.open(&sealed).expect("opens"), "hunter2-canary");
        let other = Keyring::from_bytes(&[8; 32]);
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(keyring.open(&tampered).is_err());
    }

    #[test]
    fn seal_all_keeps_own_sealed_values_and_refuses_foreign_ones() {
        let keyring = Keyring::from_bytes(&[1; 32]);
        let mut env = BTreeMap::from([("A".to_owned(), "clear".to_owned())]);
        keyring.seal_all(&mut env).expect("seals");
        let once = env.clone();
        keyring.seal_all(&mut env).expect("kept");
        assert_eq!(env, once);
        let mut foreign = BTreeMap::from([("B".to_owned(), Keyring::from_bytes(&[2; 32]).seal("B", "x"))]);
        let (name, _) = keyring.seal_all(&mut foreign).expect_err("foreign");
        assert_eq!(name, "B");
    }

    #[test]
    fn key_files_are_hex_or_base64_of_32_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hex = dir.path().join("hex");
        std::fs::write(&hex, format!("{}\n", "ab".repeat(32))).expect("write");
        let b64 = dir.path().join("b64");
        std::fs::write(&b64, base64::engine::general_purpose::STANDARD.encode([0xab; 32])).expect("write");
        let a = Keyring::load(&hex).expect("hex");
        let b = Keyring::load(&b64).expect("base64");
        assert_eq!(a.open(&b.seal("K", "v")).expect("same key"), "v");
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").expect("write");
        assert!(
            Keyring::load(&short)
                .expect_err("short")
                .to_string()
                .contains("32 bytes")
        );
    }
}

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
//! A value is bound to its job and variable (both are the associated data
//! of the seal): copied into another job or variable it no longer opens, so
//! an operator of one job cannot read another job's secret through a job of
//! their own. A value given already sealed (copied from `rotactl job get`)
//! is kept as it is if it opens as this job's variable with this cluster's
//! key, so get → edit → apply round-trips.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;

/// Prefix of a sealed value.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// The associated data of a sealed value: a version, the job and the
/// variable (names hold no NUL: the spec refuses it).
fn aad(job: &str, name: &str) -> Vec<u8> {
    [
        b"rota secret_env v1\0".as_slice(),
        job.as_bytes(),
        b"\0",
        name.as_bytes(),
    ]
    .concat()
}

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

    /// Seals `value` of variable `name` of job `job`.
    pub fn seal(&self, job: &str, name: &str, value: &str) -> String {
        let aad = aad(job, name);
        let tag = hmac::sign(&self.nonce_key, &[aad.as_slice(), b"\0", value.as_bytes()].concat());
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        let mut data = value.as_bytes().to_vec();
        if self
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut data)
            .is_err()
        {
            // Only for inputs beyond GCM's limit (64 GiB); values are bounded far below.
            unreachable!("a secret value within the spec size limit always seals");
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED_PREFIX}{}", B64.encode(out))
    }

    /// Opens the sealed value of variable `name` of job `job`.
    pub fn open(&self, job: &str, name: &str, sealed: &str) -> Result<String, SecretError> {
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
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad(job, name)),
                &mut data,
            )
            .map_err(|_| SecretError("sealed with another key, for another job or variable, or altered".into()))?;
        String::from_utf8(clear.to_vec()).map_err(|_| SecretError("a sealed value that is not UTF-8".into()))
    }

    /// Seals every clear value of job `job`'s `secret_env`; keeps values
    /// already sealed for it with this key; refuses any other sealed value.
    pub fn seal_all(&self, job: &str, secret_env: &mut BTreeMap<String, String>) -> Result<(), (String, SecretError)> {
        for (name, value) in secret_env.iter_mut() {
            if value.starts_with(SEALED_PREFIX) {
                self.open(job, name, value).map_err(|e| (name.clone(), e))?;
            } else {
                *value = self.seal(job, name, value);
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
        let sealed = keyring.seal("prod", "DB_PASSWORD", "hunter2-canary");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(keyring.seal("prod", "DB_PASSWORD", "hunter2-canary"), sealed);
        assert_ne!(keyring.seal("prod", "OTHER", "hunter2-canary"), sealed);
        assert_eq!(
            keyring.open("prod", "DB_PASSWORD", &sealed).expect("opens"),
            "hunter2-canary"
        );
        // Bound to its job and variable: copied elsewhere it does not open.
        assert!(keyring.open("mine", "DB_PASSWORD", &sealed).is_err());
        assert!(keyring.open("prod", "X", &sealed).is_err());
        let other = Keyring::from_bytes(&[8; 32]);
        assert!(other.open("prod", "DB_PASSWORD", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(keyring.open("prod", "DB_PASSWORD", &tampered).is_err());
    }

    #[test]
    fn seal_all_keeps_own_sealed_values_and_refuses_foreign_ones() {
        let keyring = Keyring::from_bytes(&[1; 32]);
        let mut env = BTreeMap::from([("A".to_owned(), "clear".to_owned())]);
        keyring.seal_all("job", &mut env).expect("seals");
        let once = env.clone();
        keyring.seal_all("job", &mut env).expect("kept");
        assert_eq!(env, once);
        let mut foreign = BTreeMap::from([("B".to_owned(), Keyring::from_bytes(&[2; 32]).seal("job", "B", "x"))]);
        let (name, _) = keyring.seal_all("job", &mut foreign).expect_err("foreign");
        assert_eq!(name, "B");
        let mut copied = once.clone();
        assert!(
            keyring.seal_all("another-job", &mut copied).is_err(),
            "copied from another job"
        );
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
        assert_eq!(a.open("j", "K", &b.seal("j", "K", "v")).expect("same key"), "v");
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

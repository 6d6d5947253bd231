//! Keyed pseudonyms: identifiers reach the store only as HMAC-SHA256 under the server secret.
//!
//! Domain-separation labels keep an insured ID, a regional ID and a provider reference with the
//! same text from ever sharing a key.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::ids::{InsuredId, ProviderPersonRef, RegionalId};
use crate::qualification::Sex;

type HmacSha256 = Hmac<Sha256>;

/// Length of the server secret in bytes.
pub const SECRET_LEN: usize = 32;

/// The server's identifier-hashing secret. Never logged, never sent.
#[derive(Clone)]
pub struct ServerSecret([u8; SECRET_LEN]);

impl ServerSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_LEN];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// From stored bytes; `None` unless exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The bytes, for writing to the secret file.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(..)")
    }
}

/// A 32-byte keyed hash of an identifier: the only form in which identifiers are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentifierKey(pub [u8; 32]);

/// A 16-byte keyed hash of (birth date, sex), for telling household members apart without
/// storing either in plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DemographicTag(pub [u8; 16]);

/// The internal random key of a person. Never derived from an identifier, never returned to
/// clinicians or networks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonKey(pub [u8; 16]);

impl PersonKey {
    /// A fresh random person key.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Lowercase hex, the pseudonymous form used in audit events.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

macro_rules! short_debug {
    ($($ty:ident),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({}..)"), hex(&self.0[..4]))
            }
        }
    )*};
}
short_debug!(IdentifierKey, DemographicTag, PersonKey);

/// Computes the keyed pseudonyms under one server secret, and seals the values that must be
/// returned later (regional local IDs) with AES-256-GCM under a key derived from it.
#[derive(Clone)]
pub struct Keyer {
    /// The MAC keyed once; cloning it skips re-deriving the HMAC pads for every identifier.
    prototype: HmacSha256,
    /// The sealing key, derived from the secret with its own label.
    sealing: std::sync::Arc<ring::aead::LessSafeKey>,
}

/// Sealed bytes do not open: wrong secret, wrong key they were bound to, or changed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open")]
pub struct OpenError;

/// Layout version of sealed values.
const SEALED_VERSION: u8 = 1;

impl Keyer {
    /// A keyer for the given secret.
    pub fn new(secret: &ServerSecret) -> Self {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte secret; the
        // fallback keeps the code free of panics all the same.
        let prototype = HmacSha256::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        let mut keyer = Self {
            prototype,
            sealing: std::sync::Arc::new(sealing_key(&[0; 32])),
        };
        keyer.sealing =
            std::sync::Arc::new(sealing_key(&keyer.mac(b"kouiki-mpi/sealing-key/v1", &[])));
        keyer
    }

    /// Seals `plaintext`, bound to `bound_to` (the key it is stored under): version, random
    /// 96-bit nonce, ciphertext and tag.
    pub fn seal(&self, bound_to: &IdentifierKey, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = plaintext.to_vec();
        // Sealing fails only for inputs beyond the GCM limit of about 64 GiB; the values sealed
        // here are at most a few hundred bytes.
        let _ = self.sealing.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(&bound_to.0),
            &mut sealed,
        );
        let mut out = Vec::with_capacity(1 + nonce.len() + sealed.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`Keyer::seal`] sealed for `bound_to`.
    pub fn open(&self, bound_to: &IdentifierKey, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let header = 1 + ring::aead::NONCE_LEN;
        if sealed.len() < header + ring::aead::AES_256_GCM.tag_len() || sealed[0] != SEALED_VERSION
        {
            return Err(OpenError);
        }
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..header]);
        let mut buffer = sealed[header..].to_vec();
        let plain = self
            .sealing
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&bound_to.0),
                &mut buffer,
            )
            .map_err(|_| OpenError)?;
        Ok(plain.to_vec())
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.prototype.clone();
        mac.update(label);
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The key of an insured ID's canonical form.
    pub fn insured(&self, id: &InsuredId) -> IdentifierKey {
        IdentifierKey(self.mac(b"kouiki-mpi/insured-id/v1", &[id.canonical().as_bytes()]))
    }

    /// The key of a regional ID.
    pub fn regional(&self, id: &RegionalId) -> IdentifierKey {
        IdentifierKey(self.mac(b"kouiki-mpi/regional-id/v1", &[id.canonical().as_bytes()]))
    }

    /// The key of a history provider's person reference.
    pub fn provider_ref(&self, reference: &ProviderPersonRef) -> IdentifierKey {
        IdentifierKey(self.mac(
            b"kouiki-mpi/provider-ref/v1",
            &[reference.as_str().as_bytes()],
        ))
    }

    /// The tag of a birth date and sex.
    pub fn demographic(&self, birth_date: NaiveDate, sex: Sex) -> DemographicTag {
        let date = [
            (birth_date.year() as u32).to_be_bytes(),
            birth_date.month().to_be_bytes(),
            birth_date.day().to_be_bytes(),
        ]
        .concat();
        let full = self.mac(b"kouiki-mpi/demographic/v1", &[&date, &[sex.code()]]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full[..16]);
        DemographicTag(tag)
    }
}

fn sealing_key(bytes: &[u8; 32]) -> ring::aead::LessSafeKey {
    // AES-256-GCM takes exactly a 32-byte key, and `bytes` is one by its type: `new` fails only
    // on a key of another length, so this cannot fail.
    #[allow(clippy::expect_used)]
    let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, bytes)
        .expect("a 32-byte key is an AES-256 key");
    ring::aead::LessSafeKey::new(key)
}

impl fmt::Debug for Keyer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keyer(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_the_secret_and_the_domain() {
        let id = InsuredId::from_parts("06130488", "12", "187", "05").unwrap();
        let a = Keyer::new(&ServerSecret::from_bytes(&[1; 32]).unwrap());
        let b = Keyer::new(&ServerSecret::from_bytes(&[2; 32]).unwrap());
        assert_eq!(a.insured(&id), a.insured(&id));
        assert_ne!(a.insured(&id), b.insured(&id));
        let reference = ProviderPersonRef::parse("x").unwrap();
        assert_ne!(a.provider_ref(&reference).0, a.insured(&id).0);
        let full = InsuredId::from_parts("06130488", "１２", "１８７", "05").unwrap();
        assert_eq!(a.insured(&id), a.insured(&full));
        let date = NaiveDate::from_ymd_opt(1980, 1, 2).unwrap();
        assert_ne!(
            a.demographic(date, Sex::Male),
            a.demographic(date, Sex::Female)
        );
    }

    #[test]
    fn sealed_values_open_only_where_they_were_bound() {
        let a = Keyer::new(&ServerSecret::from_bytes(&[1; 32]).unwrap());
        let b = Keyer::new(&ServerSecret::from_bytes(&[2; 32]).unwrap());
        let here = IdentifierKey([7; 32]);
        let there = IdentifierKey([8; 32]);
        let sealed = a.seal(&here, b"P-0001");
        assert_eq!(a.open(&here, &sealed).unwrap(), b"P-0001");
        assert_ne!(a.seal(&here, b"P-0001"), sealed, "nonces are fresh");
        assert!(!sealed.windows(6).any(|w| w == b"P-0001"));
        assert_eq!(a.open(&there, &sealed), Err(OpenError));
        assert_eq!(b.open(&here, &sealed), Err(OpenError));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(a.open(&here, &flipped), Err(OpenError));
        for cut in 0..sealed.len() {
            assert!(a.open(&here, &sealed[..cut]).is_err());
        }
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn secret_length_is_enforced() {
        assert!(ServerSecret::from_bytes(&[0; 31]).is_none());
        assert!(!format!("{:?}", ServerSecret::generate()).contains('0'));
    }
}

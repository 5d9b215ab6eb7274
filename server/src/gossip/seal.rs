//! The gossip packet envelope: every UDP packet is
//! `magic "AG" | version 1 | kind | body`, where kind 0 carries the foca payload in clear
//! (no cluster key configured) and kind 1 carries `nonce (24 bytes) | ciphertext + tag` of
//! XChaCha20-Poly1305 under the cluster key, with the 4-byte header as associated data. The
//! 24-byte nonce is random per packet, which is safe for XChaCha at any packet rate.
//!
//! A process with a key accepts only sealed packets that authenticate; one without a key
//! accepts only clear ones. Everything else is dropped with a reason (and counted).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use ampstore_common::limits::GOSSIP_PACKET_BYTES_MAX;

const MAGIC: [u8; 2] = *b"AG";
const VERSION: u8 = 1;
const KIND_CLEAR: u8 = 0;
const KIND_SEALED: u8 = 1;
const HEADER_BYTES: usize = 4;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// Bytes the envelope adds to a foca payload (the most, sealed).
pub const OVERHEAD_BYTES: usize = HEADER_BYTES + NONCE_BYTES + TAG_BYTES;

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Over `GOSSIP_PACKET_BYTES_MAX`.
    Oversize,
    /// Not an Ampstore gossip packet, or a version this build does not speak.
    Malformed,
    /// Does not authenticate under our key, or clear while we require a key (or sealed
    /// while we have none).
    Auth,
}

impl Drop {
    pub fn reason(self) -> &'static str {
        match self {
            Drop::Oversize => "oversize",
            Drop::Malformed => "malformed",
            Drop::Auth => "auth",
        }
    }
}

pub struct Sealer {
    cipher: Option<XChaCha20Poly1305>,
}

impl Sealer {
    pub fn new(key: Option<[u8; 32]>) -> Sealer {
        Sealer { cipher: key.map(|k| XChaCha20Poly1305::new(&k.into())) }
    }

    pub fn is_keyed(&self) -> bool {
        self.cipher.is_some()
    }

    /// Wraps a foca payload into `out` (cleared first).
    pub fn seal(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        match &self.cipher {
            None => {
                out.push(KIND_CLEAR);
                out.extend_from_slice(payload);
            }
            Some(cipher) => {
                out.push(KIND_SEALED);
                let nonce_bytes: [u8; NONCE_BYTES] = rand::random();
                let aad: [u8; HEADER_BYTES] = [MAGIC[0], MAGIC[1], VERSION, KIND_SEALED];
                // Encryption only fails for plaintexts beyond what the cipher can count
                // (gigabytes); gossip payloads are bounded far below that.
                let sealed = cipher
                    .encrypt(XNonce::from_slice(&nonce_bytes), Payload { msg: payload, aad: &aad })
                    .unwrap_or_default();
                out.extend_from_slice(&nonce_bytes);
                out.extend_from_slice(&sealed);
            }
        }
        debug_assert!(out.len() <= payload.len() + OVERHEAD_BYTES);
    }

    /// Unwraps a received packet into the foca payload.
    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, Drop> {
        if packet.len() > GOSSIP_PACKET_BYTES_MAX {
            return Err(Drop::Oversize);
        }
        if packet.len() < HEADER_BYTES || packet[..2] != MAGIC || packet[2] != VERSION {
            return Err(Drop::Malformed);
        }
        let body = &packet[HEADER_BYTES..];
        match (packet[3], &self.cipher) {
            (KIND_CLEAR, None) => Ok(body.to_vec()),
            (KIND_SEALED, Some(cipher)) => {
                if body.len() < NONCE_BYTES + TAG_BYTES {
                    return Err(Drop::Malformed);
                }
                let (nonce, sealed) = body.split_at(NONCE_BYTES);
                cipher
                    .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: &packet[..HEADER_BYTES] })
                    .map_err(|_| Drop::Auth)
            }
            (KIND_CLEAR | KIND_SEALED, _) => Err(Drop::Auth),
            _ => Err(Drop::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_round_trip_and_every_tamper_is_refused() {
        let s = Sealer::new(Some([7; 32]));
        let mut out = Vec::new();
        s.seal(b"hello foca", &mut out);
        assert_eq!(s.open(&out).unwrap(), b"hello foca");
        // Nonces are fresh: the same payload seals differently.
        let mut again = Vec::new();
        s.seal(b"hello foca", &mut again);
        assert_ne!(out, again);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x01;
            assert!(s.open(&bad).is_err(), "flip at byte {i} accepted");
        }
        assert_eq!(Sealer::new(Some([8; 32])).open(&out), Err(Drop::Auth), "wrong key");
        assert_eq!(Sealer::new(None).open(&out), Err(Drop::Auth), "keyless process refuses sealed packets");
    }

    #[test]
    fn clear_packets_only_between_keyless_processes() {
        let clear = Sealer::new(None);
        let mut out = Vec::new();
        clear.seal(b"x", &mut out);
        assert_eq!(clear.open(&out).unwrap(), b"x");
        assert_eq!(Sealer::new(Some([1; 32])).open(&out), Err(Drop::Auth));
    }

    #[test]
    fn garbage_and_oversize_packets_are_dropped() {
        let s = Sealer::new(Some([7; 32]));
        assert_eq!(s.open(b""), Err(Drop::Malformed));
        assert_eq!(s.open(b"AG"), Err(Drop::Malformed));
        assert_eq!(s.open(b"XX\x01\x01aaaa"), Err(Drop::Malformed));
        assert_eq!(s.open(b"AG\x02\x01aaaa"), Err(Drop::Malformed));
        assert_eq!(s.open(b"AG\x01\x09aaaa"), Err(Drop::Malformed));
        assert_eq!(s.open(b"AG\x01\x01short"), Err(Drop::Malformed));
        let mut big = b"AG\x01\x01".to_vec();
        big.resize(GOSSIP_PACKET_BYTES_MAX, 0);
        assert_eq!(s.open(&big), Err(Drop::Auth), "at the limit: read, and refused on auth");
        big.push(0);
        assert_eq!(s.open(&big), Err(Drop::Oversize));
    }
}

//! What a store keeps for one session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::SessionKey;
use crate::time::Timestamp;

/// A session's data: data key → encoded value (see [`crate::codec`]).
pub type Data = BTreeMap<String, Vec<u8>>;

/// One stored session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The session's values, each encoded on its own.
    pub data: Data,
    /// When the session was created. The absolute lifetime counts from here.
    pub created_at: Timestamp,
    /// When the session expires: the earlier of its idle deadline and its absolute deadline.
    /// A record whose `expires_at` is not after "now" is expired, and stores treat it as absent.
    pub expires_at: Timestamp,
    /// Who the session belongs to, if anyone (a user id).
    pub owner: Option<String>,
    /// Bumped by the store on every applied change; starts at 1.
    pub version: u64,
    /// Set on the short-lived record `cycle` leaves under the old key during a grace period: the
    /// key the session moved to. Such a record has no data and no owner, and is never listed.
    pub moved_to: Option<SessionKey>,
}

impl Record {
    /// A fresh record with no data, version 1.
    pub fn new(created_at: Timestamp, expires_at: Timestamp) -> Self {
        Self {
            data: Data::new(),
            created_at,
            expires_at,
            owner: None,
            version: 1,
            moved_to: None,
        }
    }

    /// The record `cycle` leaves under the old key: it points at `to` until `until`.
    pub fn moved(to: SessionKey, now: Timestamp, until: Timestamp) -> Self {
        Self {
            moved_to: Some(to),
            ..Self::new(now, until)
        }
    }

    /// Whether the record is expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    /// Total bytes of keys and encoded values: what listings report as the session's size.
    pub fn size_bytes(&self) -> usize {
        self.data.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Encodes the whole record as one blob, for stores that keep a session in one value (files,
    /// Memcached items). The first byte is a format version.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) only if MessagePack fails to write to memory.
    pub fn to_blob(&self) -> Result<Vec<u8>> {
        let wire = WireRecord {
            data: self
                .data
                .iter()
                .map(|(k, v)| (k.as_str(), serde_bytes_ref(v)))
                .collect(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            owner: self.owner.as_deref(),
            version: self.version,
            moved_to: self.moved_to.map(|k| *k.as_bytes()),
        };
        let mut out = vec![BLOB_FORMAT];
        rmp_serde::encode::write(&mut out, &wire)
            .map_err(|e| Error::codec(None, "encoding a session record", e))?;
        Ok(out)
    }

    /// Decodes a blob written by [`Record::to_blob`].
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) for a truncated, corrupt or unknown-version blob.
    pub fn from_blob(blob: &[u8]) -> Result<Self> {
        let Some((&format, body)) = blob.split_first() else {
            return Err(Error::corrupt("an empty session record"));
        };
        if format != BLOB_FORMAT {
            return Err(Error::corrupt(format!(
                "unknown session record format {format}"
            )));
        }
        let wire: OwnedWireRecord = rmp_serde::from_slice(body)
            .map_err(|e| Error::codec(None, "a stored session record does not decode", e))?;
        Ok(Self {
            data: wire
                .data
                .into_iter()
                .map(|(k, v)| (k, v.into_vec()))
                .collect(),
            created_at: wire.created_at,
            expires_at: wire.expires_at,
            owner: wire.owner,
            version: wire.version,
            moved_to: wire.moved_to.map(SessionKey::from_bytes),
        })
    }
}

const BLOB_FORMAT: u8 = 1;

#[derive(Serialize)]
struct WireRecord<'a> {
    data: BTreeMap<&'a str, BytesRef<'a>>,
    created_at: Timestamp,
    expires_at: Timestamp,
    owner: Option<&'a str>,
    version: u64,
    moved_to: Option<[u8; 32]>,
}

#[derive(Deserialize)]
struct OwnedWireRecord {
    data: BTreeMap<String, ByteBuf>,
    created_at: Timestamp,
    expires_at: Timestamp,
    owner: Option<String>,
    version: u64,
    moved_to: Option<[u8; 32]>,
}

/// Serializes as a MessagePack byte string rather than an array of numbers.
struct BytesRef<'a>(&'a [u8]);

fn serde_bytes_ref(bytes: &[u8]) -> BytesRef<'_> {
    BytesRef(bytes)
}

impl Serialize for BytesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl ByteBuf {
    fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// A session as listed by a store: its key and its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSession {
    /// The session's key.
    pub key: SessionKey,
    /// The session's record.
    pub record: Record,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        let mut record = Record::new(Timestamp::from_millis(1), Timestamp::from_millis(99));
        record.data.insert("a".into(), vec![1, 2, 3]);
        record.data.insert("b".into(), vec![]);
        record.owner = Some("alice".into());
        record.version = 7;
        record
    }

    #[test]
    fn blobs_round_trip() {
        let record = sample();
        assert_eq!(
            Record::from_blob(&record.to_blob().expect("encode")).expect("decode"),
            record
        );
        let moved = Record::moved(
            SessionKey::from_bytes([9; 32]),
            Timestamp::from_millis(1),
            Timestamp::from_millis(2),
        );
        assert_eq!(
            Record::from_blob(&moved.to_blob().expect("encode")).expect("decode"),
            moved
        );
    }

    #[test]
    fn corrupt_blobs_are_typed_errors() {
        let blob = sample().to_blob().expect("encode");
        for cut in 0..blob.len() {
            let err = Record::from_blob(&blob[..cut]).expect_err("truncated");
            assert_eq!(err.kind(), crate::ErrorKind::Codec);
        }
        let mut wrong_version = blob.clone();
        wrong_version[0] = 200;
        assert!(Record::from_blob(&wrong_version).is_err());
        let mut flipped = blob;
        for byte in flipped.iter_mut().skip(1) {
            *byte ^= 0xff;
        }
        assert!(Record::from_blob(&flipped).is_err());
    }
}

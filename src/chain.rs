//! A SHA-256 hash chain (SPEC M7, D1, D5) and the canonical encoding its records are hashed in.
//!
//! Owns linking (`hash = SHA-256(domain || prev_hash || len || canonical bytes)`, genesis = 32
//! zero bytes), verifying a stored chain, and [`Canonical`], a length-prefixed encoding in which
//! no field can bleed into another. Used by the ledger and the decision log; it must not know
//! what their records mean, nor read or write any store.
//!
//! What verification can and cannot see: an altered record (its hash no longer matches), a
//! missing record (a gap in the sequence numbers), a record inserted, deleted-and-renumbered or
//! moved (its stored previous hash no longer matches its predecessor). Records cut off the end
//! leave a valid shorter chain: compare [`ChainHead`] with a head kept elsewhere to catch that.

use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The previous hash of the first record.
pub const GENESIS: Hash = [0; 32];

/// The sequence number of the first record of a chain verified from genesis.
pub const FIRST_SEQ: u64 = 1;

/// Domain separation, so a chain hash can never be confused with another SHA-256 use.
const LINK_DOMAIN: &[u8] = b"tollgate-chain-v1\0";

/// The first thing wrong with a stored chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record {expected} is missing (the next record is {found})")]
    Missing { expected: u64, found: u64 },
    #[error("record {seq} appears out of order or twice (expected record {expected})")]
    OutOfOrder { seq: u64, expected: u64 },
    #[error(
        "record {seq} does not follow record {previous}: a record was inserted, removed or moved before it"
    )]
    Inserted { seq: u64, previous: u64 },
    #[error("record {seq} was altered: its content does not match its hash")]
    Altered { seq: u64 },
}

/// Why a hex string is not a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hash `{value}`: expected 64 hex digits")]
pub struct InvalidHash {
    pub value: String,
}

/// Where a verified chain ends: keep it (or publish it) to detect truncation later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Number of records verified.
    pub count: u64,
    /// Sequence number of the last record, `None` for an empty chain.
    pub last_seq: Option<u64>,
    /// Hash of the last record (the starting hash for an empty chain).
    pub hash: Hash,
}

/// Builder of a canonical byte encoding: a version tag, then fields in a fixed order, each as
/// `name length (u32 BE) | name | value length (u64 BE) | value`. Optional values carry a
/// presence byte, so `None` and `Some("")` differ; numbers are fixed-width big-endian.
#[derive(Debug, Clone, Default)]
pub struct Canonical {
    bytes: Vec<u8>,
}

// === impl free functions ===

/// The hash of a record whose predecessor's hash is `prev` and whose canonical encoding is
/// `canonical`.
pub fn link(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(LINK_DOMAIN);
    hasher.update(prev);
    hasher.update((canonical.len() as u64).to_be_bytes());
    hasher.update(canonical);
    hasher.finalize().into()
}

/// [`link`] with the previous hash as hex (as stores often keep it); returns hex.
pub fn link_hex(prev_hex: &str, canonical: &[u8]) -> Result<String, InvalidHash> {
    Ok(to_hex(&link(&parse_hash(prev_hex)?, canonical)))
}

pub fn to_hex(hash: &Hash) -> String {
    hex::encode(hash)
}

/// Parses 64 hex digits (either case).
pub fn parse_hash(hex_str: &str) -> Result<Hash, InvalidHash> {
    let mut hash = [0u8; 32];
    match hex::decode_to_slice(hex_str, &mut hash) {
        Ok(()) => Ok(hash),
        Err(_) => Err(InvalidHash {
            value: hex_str.chars().take(80).collect(),
        }),
    }
}

/// Verifies a whole chain from genesis: records must be numbered from [`FIRST_SEQ`] without
/// gaps, in order. Each item is `(seq, canonical bytes, stored prev hash, stored hash)`.
/// Reports the first break.
pub fn verify<I, B>(records: I) -> Result<ChainHead, ChainBreak>
where
    I: IntoIterator<Item = (u64, B, Hash, Hash)>,
    B: AsRef<[u8]>,
{
    verify_from(FIRST_SEQ, GENESIS, records)
}

/// Verifies a chain that continues from a trusted checkpoint: the first record must be
/// `first_seq` and follow `prev_hash`.
///
/// The running hash is recomputed from content, never taken from storage, so a record whose
/// content changed is reported as altered even if its successors were left alone; a record
/// whose content *and* stored hash were rewritten is reported at its successor (whose stored
/// previous hash no longer matches), unless the whole rest of the chain was rewritten too,
/// which only an external head ([`ChainHead`]) can reveal.
pub fn verify_from<I, B>(
    first_seq: u64,
    prev_hash: Hash,
    records: I,
) -> Result<ChainHead, ChainBreak>
where
    I: IntoIterator<Item = (u64, B, Hash, Hash)>,
    B: AsRef<[u8]>,
{
    let mut expected = first_seq;
    let mut running = prev_hash;
    let mut count = 0u64;
    let mut last_seq = None;
    for (seq, canonical, stored_prev, stored_hash) in records {
        if seq > expected {
            return Err(ChainBreak::Missing {
                expected,
                found: seq,
            });
        }
        if seq < expected {
            return Err(ChainBreak::OutOfOrder { seq, expected });
        }
        if stored_prev != running {
            return Err(ChainBreak::Inserted {
                seq,
                previous: seq.saturating_sub(1),
            });
        }
        let computed = link(&running, canonical.as_ref());
        if computed != stored_hash {
            return Err(ChainBreak::Altered { seq });
        }
        running = computed;
        count += 1;
        last_seq = Some(seq);
        expected = seq.saturating_add(1);
    }
    Ok(ChainHead {
        count,
        last_seq,
        hash: running,
    })
}

// === impl Canonical ===

impl Canonical {
    /// Starts an encoding with a record-type and version tag, e.g. `"ledger/v1"`.
    pub fn new(tag: &str) -> Self {
        let mut c = Self { bytes: Vec::new() };
        c.raw_field("", tag.as_bytes());
        c
    }

    pub fn bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.raw_field(name, value);
        self
    }

    pub fn str(self, name: &str, value: &str) -> Self {
        self.bytes(name, value.as_bytes())
    }

    pub fn opt_str(self, name: &str, value: Option<&str>) -> Self {
        match value {
            None => self.bytes(name, &[0]),
            Some(v) => {
                let mut buf = Vec::with_capacity(v.len() + 1);
                buf.push(1);
                buf.extend_from_slice(v.as_bytes());
                self.bytes(name, &buf)
            }
        }
    }

    pub fn u64(self, name: &str, value: u64) -> Self {
        self.bytes(name, &value.to_be_bytes())
    }

    pub fn i64(self, name: &str, value: i64) -> Self {
        self.bytes(name, &value.to_be_bytes())
    }

    pub fn bool(self, name: &str, value: bool) -> Self {
        self.bytes(name, &[u8::from(value)])
    }

    /// Any value through its `Display` (e.g. `Money`, whose display is canonical; an id).
    pub fn display(self, name: &str, value: &impl fmt::Display) -> Self {
        let text = value.to_string();
        self.str(name, &text)
    }

    /// A nested encoding (e.g. one line of a bill), itself length-prefixed.
    pub fn nested(self, name: &str, value: Canonical) -> Self {
        self.bytes(name, &value.bytes)
    }

    /// A count, to be followed by that many fields or nested values, so lists of different
    /// lengths can never encode the same.
    pub fn count(self, name: &str, len: usize) -> Self {
        self.u64(name, len as u64)
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    fn raw_field(&mut self, name: &str, value: &[u8]) {
        // Names are short literals; saturating keeps this total without a panic path.
        let name_len = u32::try_from(name.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&name_len.to_be_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes
            .extend_from_slice(&(value.len() as u64).to_be_bytes());
        self.bytes.extend_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (u64, Vec<u8>, Hash, Hash);

    fn build(n: u64) -> Vec<Row> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let body = Canonical::new("test/v1")
                    .u64("seq", seq)
                    .str("what", &format!("record {seq}"))
                    .finish();
                let hash = link(&prev, &body);
                let row = (seq, body, prev, hash);
                prev = hash;
                row
            })
            .collect()
    }

    fn row(rows: &mut [Row], seq: u64) -> &mut Row {
        rows.iter_mut()
            .find(|r| r.0 == seq)
            .unwrap_or_else(|| panic!("no record {seq}"))
    }

    #[test]
    fn an_intact_chain_verifies() {
        let rows = build(5);
        let head = verify(rows.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.count, 5);
        assert_eq!(head.last_seq, Some(5));
        assert_eq!(Some(head.hash), rows.last().map(|r| r.3));
        let empty = verify(Vec::<Row>::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (empty.count, empty.last_seq, empty.hash),
            (0, None, GENESIS)
        );
    }

    #[test]
    fn link_depends_on_prev_and_content_and_genesis_is_zero() {
        let a = link(&GENESIS, b"x");
        assert_ne!(a, link(&GENESIS, b"y"));
        assert_ne!(a, link(&a, b"x"));
        assert_eq!(a, link(&[0; 32], b"x"));
        let hex_a = to_hex(&a);
        assert_eq!(hex_a.len(), 64);
        assert_eq!(parse_hash(&hex_a), Ok(a));
        assert_eq!(parse_hash(&hex_a.to_uppercase()), Ok(a));
        assert_eq!(link_hex(&"0".repeat(64), b"x"), Ok(hex_a));
        assert!(parse_hash("abc").is_err());
        assert!(parse_hash(&"g".repeat(64)).is_err());
        assert!(link_hex("zz", b"x").is_err());
    }

    #[test]
    fn an_altered_record_is_reported() {
        let mut rows = build(5);
        row(&mut rows, 3).1.push(b'!');
        assert_eq!(verify(rows), Err(ChainBreak::Altered { seq: 3 }));
    }

    #[test]
    fn an_altered_and_rehashed_record_is_reported_at_its_successor() {
        let mut rows = build(5);
        let r = row(&mut rows, 3);
        r.1.push(b'!');
        r.3 = link(&r.2, &r.1);
        assert_eq!(
            verify(rows),
            Err(ChainBreak::Inserted {
                seq: 4,
                previous: 3
            })
        );
    }

    #[test]
    fn a_missing_record_is_reported() {
        let mut rows = build(5);
        rows.retain(|r| r.0 != 2);
        assert_eq!(
            verify(rows),
            Err(ChainBreak::Missing {
                expected: 2,
                found: 3
            })
        );
        let mut rows = build(5);
        rows.retain(|r| r.0 != 1);
        assert_eq!(
            verify(rows),
            Err(ChainBreak::Missing {
                expected: 1,
                found: 2
            })
        );
    }

    #[test]
    fn an_inserted_record_is_reported() {
        // A forged record slipped in as number 3, later records renumbered.
        let rows = build(5);
        let mut forged: Vec<Row> = Vec::new();
        for (seq, body, prev, hash) in rows {
            if seq == 3 {
                let body3 = b"forged".to_vec();
                let h = link(&prev, &body3);
                forged.push((3, body3, prev, h));
            }
            let seq = if seq >= 3 { seq + 1 } else { seq };
            forged.push((seq, body, prev, hash));
        }
        assert_eq!(
            verify(forged),
            Err(ChainBreak::Inserted {
                seq: 4,
                previous: 3
            })
        );
    }

    #[test]
    fn a_deleted_and_renumbered_or_swapped_record_is_reported() {
        let mut rows = build(5);
        rows.retain(|r| r.0 != 3);
        for r in rows.iter_mut().filter(|r| r.0 > 3) {
            r.0 -= 1;
        }
        assert_eq!(
            verify(rows),
            Err(ChainBreak::Inserted {
                seq: 3,
                previous: 2
            })
        );

        let mut rows = build(5);
        rows.swap(1, 2);
        assert_eq!(
            verify(rows),
            Err(ChainBreak::Missing {
                expected: 2,
                found: 3
            })
        );
        // Two records swapped and renumbered so the sequence numbers look fine.
        let mut rows = build(5);
        rows.swap(1, 2);
        row(&mut rows, 3).0 = 0;
        row(&mut rows, 2).0 = 3;
        row(&mut rows, 0).0 = 2;
        assert_eq!(
            verify(rows),
            Err(ChainBreak::Inserted {
                seq: 2,
                previous: 1
            })
        );
    }

    #[test]
    fn duplicates_are_out_of_order() {
        let mut rows = build(3);
        let dup = rows.get(1).cloned().unwrap_or_else(|| panic!("row"));
        rows.insert(2, dup);
        assert_eq!(
            verify(rows),
            Err(ChainBreak::OutOfOrder {
                seq: 2,
                expected: 3
            })
        );
    }

    #[test]
    fn verification_can_continue_from_a_checkpoint() {
        let rows = build(6);
        let checkpoint = rows.get(2).map(|r| r.3).unwrap_or(GENESIS);
        let tail: Vec<Row> = rows.into_iter().filter(|r| r.0 > 3).collect();
        let head = verify_from(4, checkpoint, tail.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((head.count, head.last_seq), (3, Some(6)));
        assert_eq!(
            verify(tail),
            Err(ChainBreak::Missing {
                expected: 1,
                found: 4
            })
        );
    }

    #[test]
    fn canonical_fields_cannot_bleed_into_each_other() {
        let a = Canonical::new("t").str("a", "xy").str("b", "z").finish();
        let b = Canonical::new("t").str("a", "x").str("b", "yz").finish();
        assert_ne!(a, b);
        let none = Canonical::new("t").opt_str("o", None).finish();
        let empty = Canonical::new("t").opt_str("o", Some("")).finish();
        assert_ne!(none, empty);
        assert_ne!(
            Canonical::new("t").str("ab", "").finish(),
            Canonical::new("t").str("a", "b").finish()
        );
        assert_ne!(Canonical::new("t1").finish(), Canonical::new("t2").finish());
        // Stable layout: tag, then name len, name, value len, value.
        let enc = Canonical::new("t").u64("n", 1).finish();
        let mut expect = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, b't'];
        expect.extend_from_slice(&[0, 0, 0, 1, b'n', 0, 0, 0, 0, 0, 0, 0, 8]);
        expect.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(enc, expect);
        assert_eq!(
            Canonical::new("t")
                .bool("f", true)
                .i64("i", -1)
                .display("m", &7)
                .as_slice()
                .len(),
            (4 + 8 + 1) + (4 + 1 + 8 + 1) + (4 + 1 + 8 + 8) + (4 + 1 + 8 + 1)
        );
    }
}

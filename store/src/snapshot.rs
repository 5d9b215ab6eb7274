//! The snapshot file: the whole content of one range at one log seq, as stored in a blob.
//!
//! ```text
//! header  "AMPSNAP\x01" | body_len u32 | body | crc32c(magic..body) u32
//!         body = format u16 | range_id u64 | seq u64 | created_unix_ms u64
//!                | start (len u32, bytes) | has_end u8 | [end (len u32, bytes)]
//! blocks  block 0 .. block n-1, each lz4-compressed or raw (whichever is smaller); a raw
//!         block is a run of entries: key_len varint, key, value_len varint, value,
//!         version seq varint, version index varint, (format 3) expires_at_ms varint (0: the
//!         key never expires); keys strictly ascending in the file
//! write ids  (format 2) the range's remembered writes (`ampstore_common::write_ids`), lz4-compressed
//!         or raw like a block
//! index   per block: offset u64 | stored_len u32 | raw_len u32 | codec u8 | entries u32
//!         | crc32c(stored bytes) u32 | first_key (len u32, bytes)
//! footer  index_offset u64 | index_len u32 | blocks u32 | entries u64 | merkle_root [32]
//!         | crc32c(index) u32
//!         | (format 2) write_ids_offset u64 | stored_len u32 | raw_len u32 | codec u8
//!         | crc32c(write ids) u32
//!         | crc32c(footer fields) u32 | "AMPSEND\x01" (format 1) or "AMPSEND\x02" (format 2)
//! ```
//!
//! Format 3 (this build writes it) adds each entry's expiry (its footer is format 2's);
//! format 2 added the write-id section; files of formats 1 and 2 still load. In format 2 the Merkle root has one more leaf after the blocks: the stored
//! write-id section.
//!
//! Every byte of the file is covered by a checksum and the blocks must tile the space
//! between header and index exactly, so a flipped or missing byte anywhere is reported as
//! an error naming the damaged part, never returned as data. The Merkle root (BLAKE3 over
//! the stored blocks) identifies the content; a checkpoint can record it to verify a load.

use ampstore_common::error::Error;
use ampstore_common::ids::{RangeId, Seq};
use ampstore_common::key::{Key, KeyRange, Version};
use ampstore_common::limits::{
    KEY_BYTES_MAX, SNAPSHOT_BLOCK_BYTES_TARGET, SNAPSHOT_BLOCK_RAW_BYTES_MAX, SNAPSHOT_BLOCKS_MAX,
    SNAPSHOT_ENTRIES_MAX, SNAPSHOT_WRITE_IDS_MAX, SNAPSHOT_WRITE_IDS_RAW_BYTES_MAX, VALUE_BYTES_MAX,
};
use ampstore_common::write_ids::{ClientFloor, WriteRecord};

const HEADER_MAGIC: &[u8; 8] = b"AMPSNAP\x01";
const FOOTER_MAGIC_V1: &[u8; 8] = b"AMPSEND\x01";
const FOOTER_MAGIC_V2: &[u8; 8] = b"AMPSEND\x02";
/// The format this build writes.
const FORMAT_VERSION: u16 = 3;
/// Format 1: index_offset + index_len + blocks + entries + merkle_root + index_crc +
/// footer_crc + magic.
const FOOTER_BYTES_V1: usize = 8 + 4 + 4 + 8 + 32 + 4 + 4 + 8;
/// Format 2 adds the write-id section's offset, stored and raw length, codec and crc.
const FOOTER_BYTES_V2: usize = FOOTER_BYTES_V1 + 8 + 4 + 4 + 1 + 4;
/// Most bytes one stored byte of an lz4 block decompresses to: a sequence of k+3 stored
/// bytes (token, offset, k length bytes) yields a match of at most 19 + 255k bytes, and
/// literals are one to one. A footer claiming more is damage, refused before allocating.
const LZ4_EXPANSION_MAX: u64 = 255;
/// Fewest bytes one entry takes in a raw block: four one-byte varints (key length, value
/// length, version seq and index) around an empty key and value.
const RAW_ENTRY_BYTES_MIN: u64 = 4;
const HEADER_BODY_BYTES_MAX: usize = 2 + 8 + 8 + 8 + 4 + KEY_BYTES_MAX + 1 + 4 + KEY_BYTES_MAX;
const INDEX_ENTRY_FIXED_BYTES: usize = 8 + 4 + 4 + 1 + 4 + 4 + 4;
const CODEC_RAW: u8 = 0;
const CODEC_LZ4: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The file is damaged; `part` names where (header, block 3, block index, footer, ...).
    #[error("snapshot is corrupt: {part}: {detail}")]
    Corrupt { part: String, detail: String },
    /// The writer was used wrongly (keys out of order, outside the range, over a limit).
    #[error("snapshot writer: {0}")]
    Invalid(String),
}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Error {
        match e {
            SnapshotError::Corrupt { .. } => Error::internal(e.to_string()),
            SnapshotError::Invalid(m) => Error::invalid(m),
        }
    }
}

fn corrupt(part: impl Into<String>, detail: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt { part: part.into(), detail: detail.into() }
}

/// What a snapshot is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub range_id: RangeId,
    pub range: KeyRange,
    /// The log seq this snapshot includes everything up to (the checkpoint).
    pub seq: Seq,
    pub created_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub key: Key,
    pub value: Vec<u8>,
    pub version: Version,
    /// When the key expires (Unix ms), if it does (always `None` before format 3).
    pub expires_at_ms: Option<u64>,
}

/// A decoded and fully verified snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub header: SnapshotHeader,
    pub entries: Vec<SnapshotEntry>,
    /// The range's remembered writes (none in a format 1 file).
    pub write_ids: Vec<WriteRecord>,
    /// Its clients' floors (none in files written before floors).
    pub write_id_floors: Vec<ClientFloor>,
    pub merkle_root: [u8; 32],
}

struct IndexEntry {
    offset: u64,
    stored_len: u32,
    raw_len: u32,
    codec: u8,
    entries: u32,
    crc: u32,
    first_key: Vec<u8>,
}

/// Builds a snapshot in memory, one entry at a time, keys in ascending order.
///
/// ```
/// use ampstore_store::snapshot::{Snapshot, SnapshotHeader, SnapshotWriter};
/// use ampstore_common::{KeyRange, RangeId, Seq, Version};
/// let header = SnapshotHeader { range_id: RangeId(1), range: KeyRange::full(), seq: Seq(9), created_unix_ms: 0 };
/// let mut w = SnapshotWriter::new(header.clone()).unwrap();
/// w.push(b"a", b"1", Version { seq: Seq(3), index: 0 }).unwrap();
/// w.push(b"b", b"2", Version { seq: Seq(9), index: 1 }).unwrap();
/// let bytes = w.finish();
/// let snap = Snapshot::decode(&bytes).unwrap();
/// assert_eq!(snap.header, header);
/// assert_eq!(snap.entries.len(), 2);
/// ```
pub struct SnapshotWriter {
    header: SnapshotHeader,
    out: Vec<u8>,
    block: Vec<u8>,
    block_entries: u32,
    block_first_key: Vec<u8>,
    block_bytes_target: usize,
    last_key: Option<Vec<u8>>,
    index: Vec<IndexEntry>,
    leaf_hashes: Vec<[u8; 32]>,
    entries: u64,
    write_ids: Vec<WriteRecord>,
    write_id_floors: Vec<ClientFloor>,
    format: u16,
}

impl SnapshotWriter {
    pub fn new(header: SnapshotHeader) -> Result<SnapshotWriter, SnapshotError> {
        Self::with_block_bytes(header, SNAPSHOT_BLOCK_BYTES_TARGET)
    }

    /// A writer with another block size target (tests use small blocks to get many).
    pub fn with_block_bytes(
        header: SnapshotHeader,
        block_bytes_target: usize,
    ) -> Result<SnapshotWriter, SnapshotError> {
        if block_bytes_target == 0 || block_bytes_target > SNAPSHOT_BLOCK_BYTES_TARGET {
            return Err(SnapshotError::Invalid(format!(
                "block size target must be 1 to {SNAPSHOT_BLOCK_BYTES_TARGET} bytes"
            )));
        }
        let mut out = Vec::with_capacity(64 * 1024);
        encode_header(&header, &mut out).map_err(SnapshotError::Invalid)?;
        Ok(SnapshotWriter {
            header,
            out,
            block: Vec::with_capacity(block_bytes_target + 1024),
            block_entries: 0,
            block_first_key: Vec::new(),
            block_bytes_target,
            last_key: None,
            index: Vec::new(),
            leaf_hashes: Vec::new(),
            entries: 0,
            write_ids: Vec::new(),
            write_id_floors: Vec::new(),
            format: FORMAT_VERSION,
        })
    }

    /// The range's remembered writes and its clients' floors, stored in the write-id
    /// section.
    pub fn set_write_ids(&mut self, records: Vec<WriteRecord>, floors: Vec<ClientFloor>) -> Result<(), SnapshotError> {
        if records.len() > SNAPSHOT_WRITE_IDS_MAX || floors.len() > SNAPSHOT_WRITE_IDS_MAX {
            return Err(SnapshotError::Invalid(format!(
                "{} write ids and {} floors, over the limit of {SNAPSHOT_WRITE_IDS_MAX}",
                records.len(),
                floors.len()
            )));
        }
        self.write_ids = records;
        self.write_id_floors = floors;
        Ok(())
    }

    /// A writer of the first format (1: no write-id section), to test that such files
    /// still load.
    #[cfg(test)]
    fn new_format_1(header: SnapshotHeader, block_bytes_target: usize) -> SnapshotWriter {
        Self::new_format(header, block_bytes_target, 1)
    }

    /// A writer of an earlier format (1 or 2), to test that such files still load.
    #[cfg(test)]
    fn new_format(header: SnapshotHeader, block_bytes_target: usize, format: u16) -> SnapshotWriter {
        let mut w = Self::with_block_bytes(header.clone(), block_bytes_target).expect("valid header");
        w.format = format;
        w.out.clear();
        encode_header_format(&header, format, &mut w.out).expect("valid header");
        w
    }

    pub fn push(&mut self, key: &[u8], value: &[u8], version: Version) -> Result<(), SnapshotError> {
        self.push_expiring(key, value, version, None)
    }

    /// [`SnapshotWriter::push`] of a key that expires at `expires_at_ms` (Unix ms, above 0).
    pub fn push_expiring(
        &mut self,
        key: &[u8],
        value: &[u8],
        version: Version,
        expires_at_ms: Option<u64>,
    ) -> Result<(), SnapshotError> {
        if expires_at_ms == Some(0) {
            return Err(SnapshotError::Invalid("an expiry of 0 ms (0 means none in the file)".into()));
        }
        if expires_at_ms.is_some() && self.format < 3 {
            return Err(SnapshotError::Invalid(format!("format {} files cannot hold expiries", self.format)));
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(SnapshotError::Invalid(format!("key of {} bytes is over {KEY_BYTES_MAX}", key.len())));
        }
        if value.len() > VALUE_BYTES_MAX {
            return Err(SnapshotError::Invalid(format!("value of {} bytes is over {VALUE_BYTES_MAX}", value.len())));
        }
        if !self.header.range.contains(key) {
            return Err(SnapshotError::Invalid(format!("key {} is outside {}", Key::from(key), self.header.range)));
        }
        if let Some(last) = &self.last_key
            && key <= last.as_slice()
        {
            return Err(SnapshotError::Invalid(format!(
                "keys must be strictly ascending: {} after {}",
                Key::from(key),
                Key::from(last.as_slice())
            )));
        }
        if self.entries >= SNAPSHOT_ENTRIES_MAX {
            return Err(SnapshotError::Invalid(format!("more than {SNAPSHOT_ENTRIES_MAX} entries")));
        }
        if self.block_entries == 0 {
            self.block_first_key.clear();
            self.block_first_key.extend_from_slice(key);
        }
        put_varint(&mut self.block, key.len() as u64);
        self.block.extend_from_slice(key);
        put_varint(&mut self.block, value.len() as u64);
        self.block.extend_from_slice(value);
        put_varint(&mut self.block, version.seq.0);
        put_varint(&mut self.block, u64::from(version.index));
        if self.format >= 3 {
            put_varint(&mut self.block, expires_at_ms.unwrap_or(0));
        }
        self.block_entries += 1;
        self.entries += 1;
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        if self.block.len() >= self.block_bytes_target {
            self.close_block()?;
        }
        Ok(())
    }

    fn close_block(&mut self) -> Result<(), SnapshotError> {
        if self.block_entries == 0 {
            return Ok(());
        }
        if self.index.len() as u32 >= SNAPSHOT_BLOCKS_MAX {
            return Err(SnapshotError::Invalid(format!("more than {SNAPSHOT_BLOCKS_MAX} blocks")));
        }
        debug_assert!(self.block.len() <= SNAPSHOT_BLOCK_RAW_BYTES_MAX);
        let compressed = lz4_flex::block::compress(&self.block);
        let (codec, stored): (u8, &[u8]) =
            if compressed.len() < self.block.len() { (CODEC_LZ4, &compressed) } else { (CODEC_RAW, &self.block) };
        let offset = self.out.len() as u64;
        self.out.extend_from_slice(stored);
        self.leaf_hashes.push(leaf_hash(stored));
        self.index.push(IndexEntry {
            offset,
            stored_len: stored.len() as u32,
            raw_len: self.block.len() as u32,
            codec,
            entries: self.block_entries,
            crc: crc32c::crc32c(stored),
            first_key: std::mem::take(&mut self.block_first_key),
        });
        self.block.clear();
        self.block_entries = 0;
        Ok(())
    }

    /// Closes the last block and writes index and footer. Returns the file's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.finish_with_root().0
    }

    /// Like [`finish`](Self::finish), also returning the Merkle root written in the footer.
    pub fn finish_with_root(mut self) -> (Vec<u8>, [u8; 32]) {
        // Cannot fail: the block count was checked on every earlier close and this adds one.
        if let Err(e) = self.close_block() {
            tracing::error!(error = %e, "snapshot block limit reached at finish");
        }
        let mut write_ids = None;
        if self.format >= 2 {
            let mut raw = Vec::new();
            ampstore_common::write_ids::encode(&self.write_ids, &self.write_id_floors, &mut raw);
            let compressed = lz4_flex::block::compress(&raw);
            let (codec, stored): (u8, &[u8]) =
                if compressed.len() < raw.len() { (CODEC_LZ4, &compressed) } else { (CODEC_RAW, &raw) };
            let offset = self.out.len() as u64;
            self.out.extend_from_slice(stored);
            self.leaf_hashes.push(leaf_hash(stored));
            write_ids = Some((offset, stored.len() as u32, raw.len() as u32, codec, crc32c::crc32c(stored)));
        }
        let index_offset = self.out.len() as u64;
        for e in &self.index {
            self.out.extend_from_slice(&e.offset.to_be_bytes());
            self.out.extend_from_slice(&e.stored_len.to_be_bytes());
            self.out.extend_from_slice(&e.raw_len.to_be_bytes());
            self.out.push(e.codec);
            self.out.extend_from_slice(&e.entries.to_be_bytes());
            self.out.extend_from_slice(&e.crc.to_be_bytes());
            self.out.extend_from_slice(&(e.first_key.len() as u32).to_be_bytes());
            self.out.extend_from_slice(&e.first_key);
        }
        let index_len = self.out.len() as u64 - index_offset;
        let index_crc = crc32c::crc32c(&self.out[index_offset as usize..]);
        let root = merkle_root(&self.leaf_hashes);
        let footer_start = self.out.len();
        self.out.extend_from_slice(&index_offset.to_be_bytes());
        self.out.extend_from_slice(&(index_len as u32).to_be_bytes());
        self.out.extend_from_slice(&(self.index.len() as u32).to_be_bytes());
        self.out.extend_from_slice(&self.entries.to_be_bytes());
        self.out.extend_from_slice(&root);
        self.out.extend_from_slice(&index_crc.to_be_bytes());
        if let Some((offset, stored_len, raw_len, codec, crc)) = write_ids {
            self.out.extend_from_slice(&offset.to_be_bytes());
            self.out.extend_from_slice(&stored_len.to_be_bytes());
            self.out.extend_from_slice(&raw_len.to_be_bytes());
            self.out.push(codec);
            self.out.extend_from_slice(&crc.to_be_bytes());
        }
        let footer_crc = crc32c::crc32c(&self.out[footer_start..]);
        self.out.extend_from_slice(&footer_crc.to_be_bytes());
        self.out.extend_from_slice(if self.format >= 2 { FOOTER_MAGIC_V2 } else { FOOTER_MAGIC_V1 });
        (self.out, root)
    }
}

fn encode_header(h: &SnapshotHeader, out: &mut Vec<u8>) -> Result<(), String> {
    encode_header_format(h, FORMAT_VERSION, out)
}

fn encode_header_format(h: &SnapshotHeader, format: u16, out: &mut Vec<u8>) -> Result<(), String> {
    if h.range.start.len() > KEY_BYTES_MAX || h.range.end.as_ref().is_some_and(|e| e.len() > KEY_BYTES_MAX) {
        return Err("range bound over the key limit".into());
    }
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&format.to_be_bytes());
    body.extend_from_slice(&h.range_id.0.to_be_bytes());
    body.extend_from_slice(&h.seq.0.to_be_bytes());
    body.extend_from_slice(&h.created_unix_ms.to_be_bytes());
    body.extend_from_slice(&(h.range.start.len() as u32).to_be_bytes());
    body.extend_from_slice(h.range.start.as_bytes());
    match &h.range.end {
        Some(end) => {
            body.push(1);
            body.extend_from_slice(&(end.len() as u32).to_be_bytes());
            body.extend_from_slice(end.as_bytes());
        }
        None => body.push(0),
    }
    out.extend_from_slice(HEADER_MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// A bounds-checked cursor; every read names the part being read for error messages.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    part: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], part: &'a str) -> Self {
        Cursor { buf, pos: 0, part }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            corrupt(self.part, format!("needs {n} bytes at offset {}, has {}", self.pos, self.buf.len() - self.pos))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap_or_default()))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }

    fn varint(&mut self) -> Result<u64, SnapshotError> {
        ampstore_common::varint::read(self.buf, &mut self.pos)
            .ok_or_else(|| corrupt(self.part, format!("bad varint before offset {}", self.pos)))
    }

    fn key(&mut self, what: &str, len: u64) -> Result<&'a [u8], SnapshotError> {
        if len > KEY_BYTES_MAX as u64 {
            return Err(corrupt(self.part, format!("{what} length {len} is over {KEY_BYTES_MAX}")));
        }
        self.take(len as usize)
    }

    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

impl Snapshot {
    /// Decodes and verifies a whole snapshot file.
    pub fn decode(file: &[u8]) -> Result<Snapshot, SnapshotError> {
        // Footer: its end marker says the format, and so the footer's length.
        if file.len() < HEADER_MAGIC.len() + 4 + 4 + FOOTER_BYTES_V1 {
            return Err(corrupt("file", format!("{} bytes is too short to be a snapshot", file.len())));
        }
        let (format, footer_bytes) = match &file[file.len() - 8..] {
            m if m == FOOTER_MAGIC_V1 => (1u16, FOOTER_BYTES_V1),
            m if m == FOOTER_MAGIC_V2 && file.len() >= HEADER_MAGIC.len() + 4 + 4 + FOOTER_BYTES_V2 => {
                (2u16, FOOTER_BYTES_V2)
            }
            _ => return Err(corrupt("footer", "end marker missing (truncated or not a snapshot)")),
        };
        let footer_start = file.len() - footer_bytes;
        let footer = &file[footer_start..];
        let stored_footer_crc =
            u32::from_be_bytes(footer[footer_bytes - 12..footer_bytes - 8].try_into().unwrap_or_default());
        if crc32c::crc32c(&footer[..footer_bytes - 12]) != stored_footer_crc {
            return Err(corrupt("footer", "checksum mismatch"));
        }
        let mut f = Cursor::new(&footer[..footer_bytes - 12], "footer");
        let index_offset = f.u64()?;
        let index_len = f.u32()? as u64;
        let block_count = f.u32()?;
        let entry_count = f.u64()?;
        let mut merkle = [0u8; 32];
        merkle.copy_from_slice(f.take(32)?);
        let index_crc = f.u32()?;
        // Format 2: the write-id section, which ends where the index starts.
        let write_ids = if format >= 2 {
            let offset = f.u64()?;
            let stored_len = f.u32()?;
            let raw_len = f.u32()?;
            let codec = f.u8()?;
            let crc = f.u32()?;
            if offset.checked_add(u64::from(stored_len)) != Some(index_offset)
                || codec > CODEC_LZ4
                || (codec == CODEC_RAW && stored_len != raw_len)
            {
                return Err(corrupt("footer", "write-id section has impossible sizes or codec"));
            }
            // Both bound the buffer the section decompresses into, allocated below.
            if raw_len as usize > SNAPSHOT_WRITE_IDS_RAW_BYTES_MAX {
                return Err(corrupt(
                    "footer",
                    format!("write-id section of {raw_len} raw bytes is over {SNAPSHOT_WRITE_IDS_RAW_BYTES_MAX}"),
                ));
            }
            if u64::from(raw_len) > u64::from(stored_len) * LZ4_EXPANSION_MAX {
                return Err(corrupt(
                    "footer",
                    format!("write-id section of {stored_len} bytes cannot decompress to {raw_len}"),
                ));
            }
            Some((offset, stored_len, raw_len, codec, crc))
        } else {
            None
        };
        if index_offset.checked_add(index_len) != Some(footer_start as u64) {
            return Err(corrupt("footer", "index position does not match the file length"));
        }
        if block_count > SNAPSHOT_BLOCKS_MAX || entry_count > SNAPSHOT_ENTRIES_MAX {
            return Err(corrupt("footer", format!("{block_count} blocks / {entry_count} entries is over the limits")));
        }

        // Index.
        let index_bytes = &file[index_offset as usize..footer_start];
        if crc32c::crc32c(index_bytes) != index_crc {
            return Err(corrupt("block index", "checksum mismatch"));
        }

        // Header.
        if &file[..8] != HEADER_MAGIC {
            return Err(corrupt("header", "magic missing (not a snapshot, or an unknown format)"));
        }
        let body_len = u32::from_be_bytes(file[8..12].try_into().unwrap_or_default()) as usize;
        if body_len > HEADER_BODY_BYTES_MAX || 12 + body_len + 4 > index_offset as usize {
            return Err(corrupt("header", format!("length {body_len} is impossible")));
        }
        let header_end = 12 + body_len + 4;
        let stored_header_crc = u32::from_be_bytes(file[12 + body_len..header_end].try_into().unwrap_or_default());
        if crc32c::crc32c(&file[..12 + body_len]) != stored_header_crc {
            return Err(corrupt("header", "checksum mismatch"));
        }
        let (header, header_format) = decode_header_body(&file[12..12 + body_len])?;
        // Format 3 keeps format 2's footer.
        let entry_format = header_format;
        if header_format != format && !(format == 2 && header_format == 3) {
            return Err(corrupt("header", format!("format {header_format} but the footer is of format {format}")));
        }
        let blocks_end = write_ids.map_or(index_offset, |(offset, ..)| offset);
        if header_end as u64 > blocks_end {
            return Err(corrupt("footer", "write-id section starts inside the header"));
        }

        if u64::from(block_count) * INDEX_ENTRY_FIXED_BYTES as u64 > index_len {
            return Err(corrupt("block index", format!("too short for {block_count} blocks")));
        }
        let mut ix = Cursor::new(index_bytes, "block index");
        let mut index = Vec::with_capacity(block_count.min(1024) as usize);
        let mut expected_offset = header_end as u64;
        let mut index_entry_count = 0u64;
        for b in 0..block_count {
            let offset = ix.u64()?;
            let stored_len = ix.u32()?;
            let raw_len = ix.u32()?;
            let codec = ix.u8()?;
            let entries = ix.u32()?;
            let crc = ix.u32()?;
            let first_key_len = ix.u32()?;
            let first_key = ix.key("first key", u64::from(first_key_len))?.to_vec();
            if offset != expected_offset {
                return Err(corrupt(
                    "block index",
                    format!("block {b} starts at {offset}, expected {expected_offset}"),
                ));
            }
            if raw_len as usize > SNAPSHOT_BLOCK_RAW_BYTES_MAX
                || entries == 0
                || codec > CODEC_LZ4
                || u64::from(entries) * RAW_ENTRY_BYTES_MIN > u64::from(raw_len)
                || u64::from(raw_len) > u64::from(stored_len) * LZ4_EXPANSION_MAX
            {
                return Err(corrupt("block index", format!("block {b} has impossible sizes or codec")));
            }
            index_entry_count += u64::from(entries);
            expected_offset += u64::from(stored_len);
            index.push(IndexEntry { offset, stored_len, raw_len, codec, entries, crc, first_key });
        }
        if !ix.done() {
            return Err(corrupt("block index", "unexpected bytes after the last entry"));
        }
        if expected_offset != blocks_end {
            return Err(corrupt("block index", "blocks do not end where the write ids or the index start"));
        }

        // Each block's entry count is bounded by its raw bytes above, and so the total: the
        // footer's count must agree before it sizes anything.
        if index_entry_count != entry_count {
            return Err(corrupt(
                "footer",
                format!("entry count {entry_count} but the block index counts {index_entry_count}"),
            ));
        }

        // Blocks. The capacity is a hint: at most one entry per RAW_ENTRY_BYTES_MIN bytes of
        // the file, so a small file never reserves much (compressed blocks may hold more
        // entries; the vector then grows with the entries actually decoded).
        let capacity = entry_count.min(file.len() as u64 / RAW_ENTRY_BYTES_MIN);
        let mut entries = Vec::with_capacity(capacity as usize);
        let mut leaf_hashes = Vec::with_capacity(index.len());
        let mut raw = Vec::new();
        for (b, e) in index.iter().enumerate() {
            let part = format!("block {b}");
            let stored = &file[e.offset as usize..(e.offset + u64::from(e.stored_len)) as usize];
            if crc32c::crc32c(stored) != e.crc {
                return Err(corrupt(part.as_str(), "checksum mismatch"));
            }
            leaf_hashes.push(leaf_hash(stored));
            let body: &[u8] = if e.codec == CODEC_LZ4 {
                raw.clear();
                raw.resize(e.raw_len as usize, 0);
                let n = lz4_flex::block::decompress_into(stored, &mut raw)
                    .map_err(|err| corrupt(part.as_str(), format!("does not decompress: {err}")))?;
                if n != e.raw_len as usize {
                    return Err(corrupt(part.as_str(), format!("decompressed to {n} bytes, index says {}", e.raw_len)));
                }
                &raw
            } else {
                if e.stored_len != e.raw_len {
                    return Err(corrupt(part.as_str(), "raw block length mismatch"));
                }
                stored
            };
            let mut c = Cursor::new(body, part.as_str());
            let mut n = 0u32;
            while !c.done() {
                let key_len = c.varint()?;
                let key = c.key("key", key_len)?;
                let value_len = c.varint()?;
                if value_len > VALUE_BYTES_MAX as u64 {
                    return Err(corrupt(part.as_str(), format!("value length {value_len} is over {VALUE_BYTES_MAX}")));
                }
                let value = c.take(value_len as usize)?;
                let seq = c.varint()?;
                let index_in_batch =
                    u32::try_from(c.varint()?).map_err(|_| corrupt(part.as_str(), "version index over u32"))?;
                let expires_at_ms = if entry_format >= 3 { Some(c.varint()?).filter(|&at| at != 0) } else { None };
                if n == 0 && key != e.first_key.as_slice() {
                    return Err(corrupt(part.as_str(), "first key differs from the index"));
                }
                if let Some(prev) = entries.last().map(|p: &SnapshotEntry| p.key.as_bytes())
                    && key <= prev
                {
                    return Err(corrupt(part.as_str(), "keys are not in ascending order"));
                }
                if !header.range.contains(key) {
                    return Err(corrupt(part.as_str(), format!("key {} is outside {}", Key::from(key), header.range)));
                }
                if seq > header.seq.0 {
                    return Err(corrupt(
                        part.as_str(),
                        format!("version seq {seq} is after the snapshot seq {}", header.seq),
                    ));
                }
                entries.push(SnapshotEntry {
                    key: Key::from(key),
                    value: value.to_vec(),
                    version: Version { seq: Seq(seq), index: index_in_batch },
                    expires_at_ms,
                });
                n += 1;
            }
            if n != e.entries {
                return Err(corrupt(part.as_str(), format!("holds {n} entries, index says {}", e.entries)));
            }
        }
        if entries.len() as u64 != entry_count {
            return Err(corrupt("footer", format!("entry count {entry_count} but blocks hold {}", entries.len())));
        }
        let mut section = ampstore_common::write_ids::WriteIdSection::default();
        if let Some((offset, stored_len, raw_len, codec, crc)) = write_ids {
            let part = "write ids";
            let stored = &file[offset as usize..index_offset as usize];
            debug_assert_eq!(stored.len(), stored_len as usize);
            if crc32c::crc32c(stored) != crc {
                return Err(corrupt(part, "checksum mismatch"));
            }
            leaf_hashes.push(leaf_hash(stored));
            let body: Vec<u8> = if codec == CODEC_LZ4 {
                let mut raw = vec![0u8; raw_len as usize];
                let n = lz4_flex::block::decompress_into(stored, &mut raw)
                    .map_err(|err| corrupt(part, format!("does not decompress: {err}")))?;
                if n != raw_len as usize {
                    return Err(corrupt(part, format!("decompressed to {n} bytes, footer says {raw_len}")));
                }
                raw
            } else {
                stored.to_vec()
            };
            section =
                ampstore_common::write_ids::decode(&body, SNAPSHOT_WRITE_IDS_MAX).map_err(|e| corrupt(part, e.0))?;
        }
        if merkle_root(&leaf_hashes) != merkle {
            return Err(corrupt("footer", "merkle root does not match the blocks"));
        }
        Ok(Snapshot {
            header,
            entries,
            write_ids: section.records,
            write_id_floors: section.floors,
            merkle_root: merkle,
        })
    }
}

/// The header and its format version (1 or 2).
fn decode_header_body(body: &[u8]) -> Result<(SnapshotHeader, u16), SnapshotError> {
    let mut c = Cursor::new(body, "header");
    let format = c.u16()?;
    if !(1..=FORMAT_VERSION).contains(&format) {
        return Err(corrupt("header", format!("format version {format} is not supported")));
    }
    let range_id = RangeId(c.u64()?);
    let seq = Seq(c.u64()?);
    let created_unix_ms = c.u64()?;
    let start_len = c.u32()?;
    let start = Key::from(c.key("range start", u64::from(start_len))?);
    let end = match c.u8()? {
        0 => None,
        1 => {
            let end_len = c.u32()?;
            Some(Key::from(c.key("range end", u64::from(end_len))?))
        }
        other => return Err(corrupt("header", format!("bad end marker {other}"))),
    };
    if !c.done() {
        return Err(corrupt("header", "unexpected bytes after the range"));
    }
    let range = KeyRange::new(start, end).map_err(|e| corrupt("header", e.to_string()))?;
    Ok((SnapshotHeader { range_id, range, seq, created_unix_ms }, format))
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    ampstore_common::varint::put(out, v);
}

fn leaf_hash(stored_block: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(stored_block);
    *h.finalize().as_bytes()
}

/// Merkle root over block hashes: pairs hash with a 1 prefix, an odd last node is carried
/// up unchanged; no blocks gives the hash of the single byte 2.
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.is_empty() {
        return *blake3::hash(&[2]).as_bytes();
    }
    let mut level: Vec<[u8; 32]> = leaves.to_vec();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            if let [l, r] = pair {
                let mut h = blake3::Hasher::new();
                h.update(&[1]);
                h.update(l);
                h.update(r);
                next.push(*h.finalize().as_bytes());
            } else {
                next.push(pair[0]);
            }
        }
        level = next;
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(range: KeyRange) -> SnapshotHeader {
        SnapshotHeader { range_id: RangeId(42), range, seq: Seq(1000), created_unix_ms: 1_700_000_000_000 }
    }

    fn build(entries: &[(Vec<u8>, Vec<u8>, Version)], range: KeyRange, block_bytes: usize) -> Vec<u8> {
        build_with(entries, range, block_bytes, sample_write_ids(40))
    }

    fn build_with(
        entries: &[(Vec<u8>, Vec<u8>, Version)],
        range: KeyRange,
        block_bytes: usize,
        write_ids: Vec<WriteRecord>,
    ) -> Vec<u8> {
        let mut w = SnapshotWriter::with_block_bytes(header(range), block_bytes).unwrap();
        for (k, v, ver) in entries {
            w.push(k, v, *ver).unwrap();
        }
        w.set_write_ids(write_ids, Vec::new()).unwrap();
        w.finish()
    }

    fn sample_write_ids(n: u64) -> Vec<WriteRecord> {
        use ampstore_common::write_ids::{WriteKey, WriteOutcome};
        (0..n)
            .map(|i| WriteRecord {
                key: WriteKey::Write(ampstore_common::protocol::WriteId::new(77, i)),
                outcome: if i % 5 == 4 {
                    WriteOutcome::Conflict { reason: format!("condition {i} failed"), key: None }
                } else {
                    WriteOutcome::Written { version: Version { seq: Seq(i + 1), index: 0 } }
                },
                at_unix_ms: 1_700_000_000_000 + i,
                data_key: (i % 2 == 0).then(|| ampstore_common::Key::from(format!("key{i}"))),
            })
            .collect()
    }

    #[test]
    fn client_floors_travel_in_the_snapshot() {
        let floors = vec![ClientFloor { client: 77, floor: 500, at_unix_ms: 1_700_000_000_000 }];
        let mut w = SnapshotWriter::new(header(KeyRange::full())).unwrap();
        w.set_write_ids(sample_write_ids(3), floors.clone()).unwrap();
        let snap = Snapshot::decode(&w.finish()).unwrap();
        assert_eq!((snap.write_ids, snap.write_id_floors), (sample_write_ids(3), floors));
    }

    #[test]
    fn write_ids_travel_in_the_snapshot() {
        let ids = sample_write_ids(1000);
        let bytes = build_with(&sample_entries(20), KeyRange::full(), 512, ids.clone());
        let snap = Snapshot::decode(&bytes).unwrap();
        assert_eq!(snap.write_ids, ids);
        assert_eq!(snap.entries.len(), 20);
        let none = build_with(&sample_entries(20), KeyRange::full(), 512, Vec::new());
        assert!(Snapshot::decode(&none).unwrap().write_ids.is_empty());
        // The root covers the write ids too.
        let other = build_with(&sample_entries(20), KeyRange::full(), 512, sample_write_ids(999));
        assert_ne!(Snapshot::decode(&other).unwrap().merkle_root, snap.merkle_root);
    }

    #[test]
    fn the_write_id_limit_is_checked_by_the_writer() {
        let mut w = SnapshotWriter::new(header(KeyRange::full())).unwrap();
        let one = sample_write_ids(1).remove(0);
        assert!(w.set_write_ids(vec![one.clone(); SNAPSHOT_WRITE_IDS_MAX + 1], Vec::new()).is_err());
        w.set_write_ids(vec![one; SNAPSHOT_WRITE_IDS_MAX], Vec::new()).unwrap();
    }

    /// Files of format 1 (before write ids travelled in snapshots) still load, with no write
    /// ids, and keep their root.
    #[test]
    fn format_1_files_still_load() {
        let entries = sample_entries(100);
        let mut w = SnapshotWriter::new_format_1(header(KeyRange::full()), 512);
        for (k, v, ver) in &entries {
            w.push(k, v, *ver).unwrap();
        }
        let (bytes, root) = w.finish_with_root();
        assert_eq!(&bytes[bytes.len() - 8..], FOOTER_MAGIC_V1);
        let snap = Snapshot::decode(&bytes).unwrap();
        assert_eq!(snap.entries.len(), 100);
        assert!(snap.write_ids.is_empty());
        assert_eq!(snap.merkle_root, root);
        // A format 1 header with a format 2 footer (or the reverse) is damage.
        let mut mixed = bytes.clone();
        let n = mixed.len();
        mixed[n - 1] = 2;
        assert!(Snapshot::decode(&mixed).is_err());
        // A format 1 file's every flipped byte is caught as well.
        for i in (0..bytes.len()).step_by(3) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Snapshot::decode(&bad).is_err(), "flip at {i} of a format 1 file went unnoticed");
        }
    }

    #[test]
    fn expiries_travel_in_format_3_and_format_2_files_still_load() {
        let entries = sample_entries(300);
        let mut w = SnapshotWriter::with_block_bytes(header(KeyRange::full()), 512).unwrap();
        for (i, (k, v, ver)) in entries.iter().enumerate() {
            let at = (i % 3 == 0).then_some(1_700_000_000_000 + i as u64);
            w.push_expiring(k, v, *ver, at).unwrap();
        }
        assert!(w.push_expiring(b"\xff\xff", b"", Version { seq: Seq(1), index: 0 }, Some(0)).is_err());
        let snap = Snapshot::decode(&w.finish()).unwrap();
        for (i, e) in snap.entries.iter().enumerate() {
            assert_eq!(e.expires_at_ms, (i % 3 == 0).then_some(1_700_000_000_000 + i as u64));
            assert_eq!((e.key.as_bytes(), &e.value[..]), (&entries[i].0[..], &entries[i].1[..]));
        }
        // A format 2 file (written before expiries) loads with none, and cannot take one.
        let mut w = SnapshotWriter::new_format(header(KeyRange::full()), 512, 2);
        for (k, v, ver) in &entries {
            w.push(k, v, *ver).unwrap();
        }
        assert!(w.push_expiring(b"\xff\xff", b"", Version { seq: Seq(1), index: 0 }, Some(5)).is_err());
        let bytes = w.finish();
        assert_eq!(&bytes[bytes.len() - 8..], FOOTER_MAGIC_V2);
        let snap = Snapshot::decode(&bytes).unwrap();
        assert_eq!(snap.entries.len(), 300);
        assert!(snap.entries.iter().all(|e| e.expires_at_ms.is_none()));
    }

    fn sample_entries(n: usize) -> Vec<(Vec<u8>, Vec<u8>, Version)> {
        (0..n)
            .map(|i| {
                let k = format!("key-{i:05}").into_bytes();
                // Half compressible, half not, so both codecs appear.
                let v: Vec<u8> = if i % 2 == 0 {
                    vec![b'x'; 40]
                } else {
                    (0..40).map(|j| ((i * 31 + j * 17) % 251) as u8).collect()
                };
                (k, v, Version { seq: Seq((i % 1000) as u64 + 1), index: (i % 7) as u32 })
            })
            .collect()
    }

    #[test]
    fn empty_snapshot_round_trips() {
        let bytes = build(&[], KeyRange::full(), 4096);
        let snap = Snapshot::decode(&bytes).unwrap();
        assert!(snap.entries.is_empty());
        assert_eq!(snap.header.range, KeyRange::full());
    }

    #[test]
    fn writer_rejects_bad_input() {
        let range = KeyRange::new(Key::from("b"), Some(Key::from("m"))).unwrap();
        let mut w = SnapshotWriter::new(header(range)).unwrap();
        let v = Version { seq: Seq(1), index: 0 };
        assert!(w.push(b"a", b"", v).is_err(), "below the range");
        assert!(w.push(b"m", b"", v).is_err(), "at the exclusive end");
        w.push(b"c", b"", v).unwrap();
        assert!(w.push(b"c", b"", v).is_err(), "duplicate");
        assert!(w.push(b"bb", b"", v).is_err(), "descending");
        assert!(w.push(b"d", &vec![0; VALUE_BYTES_MAX + 1], v).is_err());
        w.push(b"d", &vec![0; VALUE_BYTES_MAX], v).unwrap();
        assert!(w.push(&vec![b'e'; KEY_BYTES_MAX + 1], b"", v).is_err());
    }

    #[test]
    fn several_blocks_and_both_codecs() {
        let entries = sample_entries(500);
        let bytes = build(&entries, KeyRange::full(), 1024);
        let snap = Snapshot::decode(&bytes).unwrap();
        assert_eq!(snap.entries.len(), 500);
        for (got, (k, v, ver)) in snap.entries.iter().zip(&entries) {
            assert_eq!(got.key.as_bytes(), k.as_slice());
            assert_eq!(&got.value, v);
            assert_eq!(&got.version, ver);
        }
    }

    /// Flips one bit at every byte offset of a multi-block file: every flip must be an error
    /// naming a part, never a successful decode.
    #[test]
    fn every_flipped_byte_is_detected() {
        let entries = sample_entries(60);
        let range = KeyRange::new(Key::from("key-"), Some(Key::from("key-99999"))).unwrap();
        let bytes = build(&entries, range, 512);
        let snap = Snapshot::decode(&bytes).unwrap();
        assert!(bytes.len() > 2000, "want several blocks, got {} bytes", bytes.len());
        let mut parts = std::collections::BTreeSet::new();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                match Snapshot::decode(&bad) {
                    Ok(s) => panic!("flip at byte {i} went unnoticed (same content: {})", s == snap),
                    Err(SnapshotError::Corrupt { part, .. }) => {
                        parts.insert(part.split(' ').next().unwrap_or("").to_string());
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
        }
        for expected in ["header", "block", "footer", "write"] {
            assert!(parts.contains(expected), "no corruption reported in {expected}: {parts:?}");
        }
    }

    #[test]
    fn truncation_and_extension_are_detected() {
        let bytes = build(&sample_entries(50), KeyRange::full(), 512);
        for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(Snapshot::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Snapshot::decode(&longer).is_err());
        let mut prefixed = vec![0u8];
        prefixed.extend_from_slice(&bytes);
        assert!(Snapshot::decode(&prefixed).is_err());
    }

    #[test]
    fn finish_with_root_matches_the_decoded_root() {
        let mut w = SnapshotWriter::with_block_bytes(header(KeyRange::full()), 512).unwrap();
        for (k, v, ver) in sample_entries(100) {
            w.push(&k, &v, ver).unwrap();
        }
        let (bytes, root) = w.finish_with_root();
        assert_eq!(Snapshot::decode(&bytes).unwrap().merkle_root, root);
    }

    #[test]
    fn merkle_root_identifies_content() {
        let a = build(&sample_entries(50), KeyRange::full(), 512);
        let mut other = sample_entries(50);
        other[10].1[0] ^= 1;
        let b = build(&other, KeyRange::full(), 512);
        assert_ne!(Snapshot::decode(&a).unwrap().merkle_root, Snapshot::decode(&b).unwrap().merkle_root);
        assert_eq!(merkle_root(&[[7; 32]]), [7; 32]);
    }

    fn arb_entries() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>, Version)>> {
        proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 0..40),
            (proptest::collection::vec(any::<u8>(), 0..300), 1u64..=1000, any::<u32>()),
            0..200,
        )
        .prop_map(|m| m.into_iter().map(|(k, (v, s, i))| (k, v, Version { seq: Seq(s), index: i })).collect())
    }

    proptest! {
        #[test]
        fn round_trip(entries in arb_entries(), block_bytes in 1usize..4096) {
            let bytes = build(&entries, KeyRange::full(), block_bytes);
            let snap = Snapshot::decode(&bytes).unwrap();
            prop_assert_eq!(snap.entries.len(), entries.len());
            for (got, (k, v, ver)) in snap.entries.iter().zip(&entries) {
                prop_assert_eq!(got.key.as_bytes(), k.as_slice());
                prop_assert_eq!(&got.value, v);
                prop_assert_eq!(&got.version, ver);
            }
        }

        /// A valid file with bytes of its middle (blocks, write ids, block index) replaced,
        /// and, half the time, every checksum recomputed so the damage gets past them into
        /// the block and write-id decoders: the decode is an error or exactly the original
        /// content, never a panic. (Random bytes, tried before, never got past the footer's
        /// end marker.)
        #[test]
        fn damage_inside_a_valid_file_is_an_error_or_the_original(
            entries in arb_entries(),
            write_ids in 0u64..50,
            block_bytes in 64usize..2048,
            edits in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..5),
            refresh in any::<bool>(),
        ) {
            let bytes = build_with(&entries, KeyRange::full(), block_bytes, sample_write_ids(write_ids));
            let original = Snapshot::decode(&bytes).unwrap();
            let (middle_start, middle_end) = middle(&bytes);
            prop_assume!(middle_start < middle_end);
            let mut bad = bytes.clone();
            for (at, flip) in edits {
                bad[middle_start + at % (middle_end - middle_start)] ^= flip;
            }
            if refresh {
                refresh_checksums(&mut bad);
            }
            match Snapshot::decode(&bad) {
                Ok(got) => prop_assert_eq!(got, original),
                Err(SnapshotError::Corrupt { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
        }
    }

    /// Where the header ends and the footer starts (format 2).
    fn middle(file: &[u8]) -> (usize, usize) {
        let body_len = u32::from_be_bytes(file[8..12].try_into().unwrap()) as usize;
        (12 + body_len + 4, file.len() - FOOTER_BYTES_V2)
    }

    fn be_u32(b: &[u8], at: usize) -> u64 {
        u64::from(u32::from_be_bytes(b[at..at + 4].try_into().unwrap()))
    }

    fn be_u64(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Rewrites every checksum of a format 2 file (blocks, write ids, index, footer) to match
    /// its bytes, as far as its index can still be walked: what damage that a checksum
    /// happens to miss looks like to the decoders behind the checksums.
    fn refresh_checksums(file: &mut [u8]) {
        let footer = file.len() - FOOTER_BYTES_V2;
        let index_offset = be_u64(file, footer) as usize;
        let blocks = be_u32(file, footer + 12);
        let mut pos = index_offset;
        for _ in 0..blocks {
            if pos + INDEX_ENTRY_FIXED_BYTES > footer {
                break;
            }
            let (offset, stored_len) = (be_u64(file, pos) as usize, be_u32(file, pos + 8) as usize);
            if offset.checked_add(stored_len).is_some_and(|end| end <= footer) {
                let crc = crc32c::crc32c(&file[offset..offset + stored_len]);
                file[pos + 21..pos + 25].copy_from_slice(&crc.to_be_bytes());
            }
            pos += INDEX_ENTRY_FIXED_BYTES + be_u32(file, pos + 25) as usize;
        }
        let (ids_offset, ids_stored) = (be_u64(file, footer + 60) as usize, be_u32(file, footer + 68) as usize);
        if ids_offset.checked_add(ids_stored).is_some_and(|end| end <= footer) {
            let crc = crc32c::crc32c(&file[ids_offset..ids_offset + ids_stored]);
            file[footer + 77..footer + 81].copy_from_slice(&crc.to_be_bytes());
        }
        if index_offset <= footer {
            let crc = crc32c::crc32c(&file[index_offset..footer]);
            file[footer + 56..footer + 60].copy_from_slice(&crc.to_be_bytes());
        }
        refresh_footer_crc(file);
    }

    fn refresh_footer_crc(file: &mut [u8]) {
        let footer = file.len() - FOOTER_BYTES_V2;
        let crc = crc32c::crc32c(&file[footer..footer + FOOTER_BYTES_V2 - 12]);
        file[footer + FOOTER_BYTES_V2 - 12..footer + FOOTER_BYTES_V2 - 8].copy_from_slice(&crc.to_be_bytes());
    }

    /// A file whose footer (with a valid checksum) gives the write-id section `raw_len` raw
    /// bytes, lz4-compressed; and the section's stored length.
    fn with_write_ids_raw_len(raw_len: u32) -> (Vec<u8>, u64) {
        let mut bytes = build(&sample_entries(20), KeyRange::full(), 512);
        let footer = bytes.len() - FOOTER_BYTES_V2;
        bytes[footer + 72..footer + 76].copy_from_slice(&raw_len.to_be_bytes());
        bytes[footer + 76] = CODEC_LZ4;
        refresh_footer_crc(&mut bytes);
        let stored = be_u32(&bytes, footer + 68);
        (bytes, stored)
    }

    fn footer_detail(bytes: &[u8]) -> String {
        match Snapshot::decode(bytes) {
            Err(SnapshotError::Corrupt { part, detail }) => format!("{part}: {detail}"),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    /// The write-id section's raw length is bounded before its buffer is allocated: by
    /// `SNAPSHOT_WRITE_IDS_RAW_BYTES_MAX`, and by what its stored bytes can decompress to.
    #[test]
    fn write_id_section_sizes_are_bounded_before_allocating() {
        let max = SNAPSHOT_WRITE_IDS_RAW_BYTES_MAX as u32;
        let over = footer_detail(&with_write_ids_raw_len(max + 1).0);
        assert!(over.contains(&format!("{} raw bytes is over", max + 1)), "{over}");
        let at = footer_detail(&with_write_ids_raw_len(max).0);
        assert!(!at.contains("is over"), "{at}");
        // The stored section is far smaller, so the limit itself is not what refuses it.
        assert!(at.contains("cannot decompress to"), "{at}");

        let (_, stored) = with_write_ids_raw_len(0);
        let most = (stored * LZ4_EXPANSION_MAX) as u32;
        let at = footer_detail(&with_write_ids_raw_len(most).0);
        assert!(at.starts_with("write ids: "), "allowed, then found damaged when decompressed: {at}");
        let over = footer_detail(&with_write_ids_raw_len(most + 1).0);
        assert!(over.contains("cannot decompress to"), "{over}");

        // The expansion bound holds for the most compressible input there is.
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let packed = lz4_flex::block::compress(&zeros);
        assert!(zeros.len() as u64 <= packed.len() as u64 * LZ4_EXPANSION_MAX, "{} from {}", zeros.len(), packed.len());
    }

    /// The footer's entry count must match the block index before it sizes the entries.
    #[test]
    fn entry_count_is_checked_against_the_index_before_allocating() {
        let bytes = build(&sample_entries(30), KeyRange::full(), 512);
        let footer = bytes.len() - FOOTER_BYTES_V2;
        for claimed in [31, SNAPSHOT_ENTRIES_MAX, 29] {
            let mut bad = bytes.clone();
            bad[footer + 16..footer + 24].copy_from_slice(&claimed.to_be_bytes());
            refresh_footer_crc(&mut bad);
            let detail = footer_detail(&bad);
            assert!(detail.contains("but the block index counts 30"), "{claimed}: {detail}");
        }
        // A block claiming more entries than its raw bytes can hold is damage in the index.
        let mut bad = bytes.clone();
        let index_offset = be_u64(&bad, footer) as usize;
        bad[index_offset + 17..index_offset + 21].copy_from_slice(&u32::MAX.to_be_bytes());
        refresh_checksums(&mut bad);
        let detail = footer_detail(&bad);
        assert!(detail.starts_with("block index: block 0 has impossible sizes"), "{detail}");
    }
}

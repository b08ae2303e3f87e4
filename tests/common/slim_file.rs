//! A compressed model file (`docs/format.md`) taken apart into its directory and
//! sections, and put back together with fresh offsets and checksums, so that a test can
//! change a record and still reach its decoder.

#![allow(dead_code)]

/// A raw tensor's directory entry and bytes.
#[derive(Clone, Debug)]
pub struct Raw {
    pub name: Vec<u8>,
    pub dtype: Vec<u8>,
    pub shape: Vec<u64>,
    pub bytes: Vec<u8>,
}

/// The parts of a `.slim` file.
#[derive(Clone, Debug)]
pub struct SlimFile {
    pub version: u32,
    pub metadata: Vec<(Vec<u8>, Vec<u8>)>,
    /// Each parameter's name and record.
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    pub raw: Vec<Raw>,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn str(&mut self) -> Vec<u8> {
        let n = self.u64() as usize;
        self.take(n).to_vec()
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

impl SlimFile {
    /// Takes apart a valid file (panics on an invalid one).
    pub fn parse(bytes: &[u8]) -> SlimFile {
        let mut c = Cursor(bytes);
        assert_eq!(c.take(8), b"SLIMNNCM");
        let version = c.u32();
        let header_len = c.u64() as usize;
        let mut h = Cursor(c.take(header_len));
        c.u32();
        let body = c.0;
        let metadata = (0..h.u64()).map(|_| (h.str(), h.str())).collect();
        let params = (0..h.u64())
            .map(|_| {
                let name = h.str();
                let (offset, len) = (h.u64() as usize, h.u64() as usize);
                h.u32();
                (name, body[offset..offset + len].to_vec())
            })
            .collect();
        let raw = (0..h.u64())
            .map(|_| {
                let (name, dtype) = (h.str(), h.str());
                let rank = h.take(1)[0];
                let shape = (0..rank).map(|_| h.u64()).collect();
                let (offset, len) = (h.u64() as usize, h.u64() as usize);
                h.u32();
                Raw {
                    name,
                    dtype,
                    shape,
                    bytes: body[offset..offset + len].to_vec(),
                }
            })
            .collect();
        SlimFile {
            version,
            metadata,
            params,
            raw,
        }
    }

    /// The file's bytes, every offset, length and checksum computed afresh.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut h, k);
            put_str(&mut h, v);
        }
        let mut offset = 0u64;
        h.extend_from_slice(&(self.params.len() as u64).to_le_bytes());
        for (name, record) in &self.params {
            put_str(&mut h, name);
            h.extend_from_slice(&offset.to_le_bytes());
            h.extend_from_slice(&(record.len() as u64).to_le_bytes());
            h.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
            offset += record.len() as u64;
        }
        h.extend_from_slice(&(self.raw.len() as u64).to_le_bytes());
        for r in &self.raw {
            put_str(&mut h, &r.name);
            put_str(&mut h, &r.dtype);
            h.push(r.shape.len() as u8);
            for d in &r.shape {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&offset.to_le_bytes());
            h.extend_from_slice(&(r.bytes.len() as u64).to_le_bytes());
            h.extend_from_slice(&crc32fast::hash(&r.bytes).to_le_bytes());
            offset += r.bytes.len() as u64;
        }
        let mut out = b"SLIMNNCM".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        for (_, record) in &self.params {
            out.extend_from_slice(record);
        }
        for r in &self.raw {
            out.extend_from_slice(&r.bytes);
        }
        out
    }
}

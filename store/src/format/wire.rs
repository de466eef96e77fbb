//! Little-endian binary encoding with bounds checks.
//!
//! Every decoder of repository objects reads through [`Reader`], which refuses to read
//! past the end and refuses element counts that the remaining bytes cannot hold — so a
//! hostile or damaged length field yields an error, never a panic or a huge allocation.

/// Why a byte string is not a valid object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("bad magic: not a Lifeboat {expected} object")]
    BadMagic { expected: &'static str },
    #[error(
        "unsupported {what} version {found} (this build reads up to {supported}); upgrade Lifeboat"
    )]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{0} trailing bytes after the end of the object")]
    TrailingBytes(usize),
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.bytes(N)?.try_into().expect("length checked"))
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads an element count and checks that `count * min_element_size` bytes remain,
    /// so callers can `Vec::with_capacity(count)` safely.
    pub fn count(&mut self, min_element_size: usize) -> Result<usize, DecodeError> {
        let count = self.u64()?;
        let needed = count.saturating_mul(min_element_size as u64);
        if needed > self.remaining() as u64 {
            return Err(DecodeError::Invalid {
                what: "element count",
                detail: format!(
                    "{count} elements cannot fit in the {} bytes left",
                    self.remaining()
                ),
            });
        }
        Ok(count as usize)
    }

    /// Reads a u32-length-prefixed byte string.
    pub fn var_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.bytes(len)
    }

    pub fn magic(&mut self, magic: &[u8; 4], what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() < 4 || &self.array::<4>()? != magic {
            return Err(DecodeError::BadMagic { expected: what });
        }
        Ok(())
    }

    pub fn version(&mut self, what: &'static str, supported: u32) -> Result<u32, DecodeError> {
        let found = self.u32()?;
        if found == 0 || found > supported {
            return Err(DecodeError::UnsupportedVersion {
                what,
                found,
                supported,
            });
        }
        Ok(found)
    }

    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn var_bytes(&mut self, b: &[u8]) -> &mut Self {
        let len = u32::try_from(b.len()).expect("variable-length fields are far below 4 GiB");
        self.u32(len).bytes(b)
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_counts_are_rejected_before_allocation() {
        let mut w = Writer::default();
        w.u64(u64::MAX).u32(7);
        let bytes = w.into_inner();
        let mut r = Reader::new(&bytes);
        assert!(matches!(r.count(48), Err(DecodeError::Invalid { .. })));
    }

    #[test]
    fn reads_past_the_end_are_errors() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u8().unwrap(), 1);
        assert!(matches!(
            r.u32(),
            Err(DecodeError::Truncated {
                offset: 1,
                needed: 2
            })
        ));
        let mut r = Reader::new(&[9, 0, 0, 0, 1]);
        assert!(matches!(r.var_bytes(), Err(DecodeError::Truncated { .. })));
    }
}

//! Raw disks: (possibly sparse) image files and block devices, read directly.
//!
//! Holes are found with `SEEK_DATA`/`SEEK_HOLE` and never read. The reads are
//! synchronous: the pipeline's reader thread calls them on one reused buffer (see
//! `DiskSource::as_raw`), and the async `DiskSource` methods wrap them in blocking tasks.

use std::fs::File;
use std::io::{ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::BackupError;

/// A raw disk: a (possibly sparse) image file or a block device.
#[derive(Debug, Clone)]
pub struct RawSource {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    /// Whether SEEK_DATA/SEEK_HOLE work here (not on block devices, some filesystems).
    sparse_aware: bool,
}

impl RawSource {
    pub fn open(path: &Path) -> Result<Self, BackupError> {
        let io_err = |source: std::io::Error| BackupError::Source {
            path: path.display().to_string(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(io_err(std::io::Error::new(
                ErrorKind::InvalidInput,
                "is a directory, not a disk image or block device",
            )));
        }
        // Block devices report length 0 in metadata; seeking to the end gives the size.
        let size = file.seek(SeekFrom::End(0)).map_err(io_err)?;
        let sparse_aware = rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(0)).is_ok()
            || size == 0
            || meta.len() == size;
        Ok(Self {
            file: Arc::new(file),
            path: path.to_path_buf(),
            size,
            sparse_aware,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next range `[start, end)` holding data at or after `from`, or `None` if only
    /// holes remain. Without SEEK_DATA support everything counts as data.
    pub fn next_data(&self, from: u64) -> Result<Option<(u64, u64)>, BackupError> {
        if from >= self.size {
            return Ok(None);
        }
        if !self.sparse_aware {
            return Ok(Some((from, self.size)));
        }
        let start = match rustix::fs::seek(&*self.file, rustix::fs::SeekFrom::Data(from)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => return Ok(None),
            // Filesystems without SEEK_DATA: treat the rest as data.
            Err(_) => return Ok(Some((from, self.size))),
        };
        let end = rustix::fs::seek(&*self.file, rustix::fs::SeekFrom::Hole(start))
            .unwrap_or(self.size)
            .min(self.size);
        Ok(Some((start.min(self.size), end)))
    }

    /// Fills `buf` from `offset`; returns bytes read (short only at the end of the disk).
    pub fn read_into(&self, buf: &mut [u8], offset: u64) -> Result<usize, BackupError> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(BackupError::Source {
                        path: self.path.display().to_string(),
                        source,
                    });
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finds_data_between_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut f = File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[7u8; 4096], 32 << 20).unwrap();
        f.flush().unwrap();
        let src = RawSource::open(&path).unwrap();
        assert_eq!(src.size(), 64 << 20);
        let (start, end) = src.next_data(0).unwrap().unwrap();
        assert!(
            start <= 32 << 20 && end >= (32 << 20) + 4096,
            "{start}..{end}"
        );
        if src.sparse_aware {
            assert!(end < 64 << 20, "tmpfs/ext4 report the trailing hole");
            assert_eq!(src.next_data(end).unwrap(), None);
        }
        let mut buf = [0u8; 8];
        assert_eq!(src.read_into(&mut buf, 32 << 20).unwrap(), 8);
        assert_eq!(buf, [7u8; 8]);
        assert!(RawSource::open(&dir.path().join("missing.img")).is_err());
        assert!(RawSource::open(dir.path()).is_err());
    }
}

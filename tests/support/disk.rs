//! Builds raw disk images with a known mix of content.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// A stretch of a test disk.
#[derive(Debug, Clone)]
pub enum Fill {
    /// Incompressible bytes from a seeded generator.
    Random { seed: u64, len: u64 },
    /// Compressible, text-like bytes.
    Text { len: u64 },
    /// Zeros actually written to the file.
    Zeros { len: u64 },
    /// A sparse hole (never written).
    Hole { len: u64 },
    /// Exactly these bytes.
    Bytes(Vec<u8>),
}

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill(&mut v[..]);
    v
}

/// Writes `fills` one after another into a new sparse file; returns its size.
pub fn make_disk(path: &Path, fills: &[Fill]) -> u64 {
    let file = File::create(path).unwrap();
    let mut at = 0u64;
    for fill in fills {
        let data: Option<Vec<u8>> = match fill {
            Fill::Random { seed, len } => Some(random_bytes(*seed, *len as usize)),
            Fill::Text { len } => {
                let line =
                    b"Nov 22 01:00:00 node1 kernel: lifeboat test line, nothing to see here\n";
                Some(line.iter().copied().cycle().take(*len as usize).collect())
            }
            Fill::Zeros { len } => Some(vec![0u8; *len as usize]),
            Fill::Hole { .. } => None,
            Fill::Bytes(b) => Some(b.clone()),
        };
        let len = match fill {
            Fill::Random { len, .. }
            | Fill::Text { len }
            | Fill::Zeros { len }
            | Fill::Hole { len } => *len,
            Fill::Bytes(b) => b.len() as u64,
        };
        if let Some(d) = data {
            file.write_all_at(&d, at).unwrap();
        }
        at += len;
    }
    file.set_len(at).unwrap();
    at
}

/// Overwrites `data` at `offset` in an existing image (a guest writing blocks).
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(data, offset).unwrap();
}

/// A disk with every kind of content: data, written zeros and holes, not 4 KiB aligned at the end.
pub fn mixed_disk(path: &Path, seed: u64) -> u64 {
    make_disk(
        path,
        &[
            Fill::Random { seed, len: 3 << 20 },
            Fill::Hole { len: 5 << 20 },
            Fill::Text { len: 2 << 20 },
            Fill::Zeros { len: 1 << 20 },
            Fill::Random {
                seed: seed + 1,
                len: 1 << 20,
            },
            Fill::Zeros { len: 10_000 },
            Fill::Text { len: 3_000 },
            Fill::Hole { len: 2 << 20 },
            Fill::Random {
                seed: seed + 2,
                len: 12_345,
            },
        ],
    )
}

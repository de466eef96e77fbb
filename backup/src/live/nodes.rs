//! What Lifeboat names in QEMU, and what it reads back about a block node.

use serde::Deserialize;

use crate::cbt::BITMAP_PREFIX;

/// What one backup of a drive creates in QEMU. The names derive from the drive's
/// node name (FNV-1a: stable across builds), so the next backup of the same drive
/// recognises what a killed run left behind. Node names must stay under 32 bytes.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub scratch: String,
    pub fleece: String,
    pub job: String,
    pub export: String,
}

impl Names {
    pub fn for_node(node: &str) -> Names {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in node.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let h = format!("{:012x}", h >> 16);
        Names {
            scratch: format!("lifeboat-scratch-{h}"),
            fleece: format!("lifeboat-fleece-{h}"),
            job: format!("lifeboat-backup-{h}"),
            export: format!("lifeboat-export-{h}"),
        }
    }
}

/// One entry of `query-named-block-nodes`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NodeInfo {
    #[serde(rename = "node-name")]
    pub node_name: String,
    pub drv: String,
    pub file: String,
    pub image: ImageInfo,
    #[serde(rename = "dirty-bitmaps", default)]
    pub dirty_bitmaps: Vec<BitmapInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ImageInfo {
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BitmapInfo {
    /// Anonymous bitmaps (a job's own) have none.
    pub name: Option<String>,
    pub recording: bool,
    pub busy: bool,
    #[serde(default)]
    pub inconsistent: bool,
    pub granularity: u64,
}

impl NodeInfo {
    pub fn virtual_size(&self) -> u64 {
        self.image.virtual_size
    }

    pub fn bitmap(&self, name: &str) -> Option<&BitmapInfo> {
        self.dirty_bitmaps
            .iter()
            .find(|b| b.name.as_deref() == Some(name))
    }

    pub fn lifeboat_bitmaps(&self) -> impl Iterator<Item = &BitmapInfo> {
        self.dirty_bitmaps.iter().filter(|b| {
            b.name
                .as_deref()
                .is_some_and(|n| n.starts_with(BITMAP_PREFIX))
        })
    }
}

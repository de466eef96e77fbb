//! How a live backup will read, decided from the previous snapshot and the drive's
//! bitmaps before anything changes in QEMU.

use crate::cbt::Previous;

use super::nodes::NodeInfo;

/// How the backup will read, decided before anything changes in QEMU.
pub(super) enum Plan {
    /// Read what `bitmap` marks dirty; `merge` are Lifeboat bitmaps of an
    /// interrupted backup that hold the writes since `bitmap` stopped recording.
    Incremental {
        prev: Box<Previous>,
        bitmap: String,
        granularity: u64,
        merge: Vec<String>,
    },
    Scan {
        reason: String,
    },
}

pub(super) fn short_id(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Incremental if the previous snapshot's bitmap is on the node, consistent, idle
/// and the disk kept its size; otherwise a scan, saying why.
pub(super) fn plan(previous: Option<Previous>, info: &NodeInfo) -> Plan {
    let scan = |reason: String| Plan::Scan { reason };
    let Some(prev) = previous else {
        return scan("first backup of this disk".into());
    };
    let id = short_id(&prev.id).to_string();
    let Some(b) = prev.manifest.meta.cbt_bitmap.clone() else {
        return scan(format!("previous snapshot {id} has no dirty bitmap"));
    };
    if prev.manifest.meta.size != info.virtual_size() {
        return scan(format!(
            "disk size changed since snapshot {id} (bitmap {b} not used)"
        ));
    }
    let Some(bm) = info.bitmap(&b) else {
        return scan(format!(
            "bitmap {b} of snapshot {id} is missing from drive {} (VM re-created, or a non-qcow2 disk restarted?)",
            info.node_name
        ));
    };
    if bm.inconsistent {
        return scan(format!(
            "existing bitmap {b} is inconsistent (QEMU did not shut down cleanly) and cannot be used"
        ));
    }
    if bm.busy {
        return scan(format!(
            "bitmap {b} is in use by another QEMU block job or export"
        ));
    }
    let mut merge = Vec::new();
    if !bm.recording {
        // A killed backup disabled it; its own bitmap recorded everything since.
        merge = info
            .lifeboat_bitmaps()
            .filter(|o| o.name.as_deref() != Some(&b) && o.recording && !o.busy && !o.inconsistent)
            .filter_map(|o| o.name.clone())
            .collect();
        if merge.is_empty() {
            return scan(format!(
                "bitmap {b} stopped recording and no later Lifeboat bitmap covers the writes since"
            ));
        }
    }
    Plan::Incremental {
        granularity: bm.granularity,
        prev: Box::new(prev),
        bitmap: b,
        merge,
    }
}

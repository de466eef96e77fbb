//! The hash chain of drill reports, kept in a directory of the state dir and in the
//! repository:
//!
//! ```text
//! <dir>/000001.json   report 1 (signed, `previous` = null)
//! <dir>/000001.html   the same as one self-contained page
//! <dir>/000001/       its evidence: <vm>.console.log, <vm>.png
//! <dir>/000002.json   report 2 (`previous` = BLAKE3 of report 1)
//! repository: reports/drill/000001-<blake3 of report 1>, …   (sealed copies)
//! ```
//! Each report is signed with a keyed BLAKE3 under [`Repository::evidence_key`], so
//! an edited report fails its signature; each names its predecessor's hash, so a
//! deleted one breaks the chain; the repository's copies (immutable under Object
//! Lock) show a report deleted from the end or the whole directory replaced. The
//! evidence files' hashes are in the signed report. `.lock` keeps two drills from
//! taking the same sequence number.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use lifeboat_store::Repository;

use super::model::DrillReport;
use crate::drill::error::DrillError;

/// Object key prefix of the sealed report copies in a repository.
pub const REPOSITORY_PREFIX: &str = "reports/drill/";
const LOCK_FILE: &str = ".lock";

/// The reports directory, locked for appending while the value lives.
pub struct ReportChain {
    dir: PathBuf,
    key: [u8; 32],
    _lock: Option<File>,
}

impl ReportChain {
    /// Opens `dir` (created if missing) to read the chain.
    pub fn open(dir: &Path, key: [u8; 32]) -> Result<ReportChain, DrillError> {
        fs::create_dir_all(dir).map_err(|e| DrillError::evidence(dir, e))?;
        Ok(ReportChain {
            dir: dir.to_path_buf(),
            key,
            _lock: None,
        })
    }

    /// Opens `dir` to append: waits for another drill's append to finish.
    pub fn open_for_append(dir: &Path, key: [u8; 32]) -> Result<ReportChain, DrillError> {
        let mut chain = ReportChain::open(dir, key)?;
        let path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| DrillError::evidence(&path, e))?;
        chain._lock = Some(lock);
        Ok(chain)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where report `seq`'s evidence files go.
    pub fn evidence_dir(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:06}"))
    }

    /// The next sequence number and the hash of the newest report.
    pub fn next(&self) -> Result<(u64, Option<String>), DrillError> {
        match self.load_all()?.last() {
            Some((_, report)) => Ok((report.seq + 1, Some(report_hash(report)))),
            None => Ok((1, None)),
        }
    }

    /// Every report, by sequence number. A file that does not parse is an error: the
    /// chain cannot be trusted past it.
    pub fn load_all(&self) -> Result<Vec<(PathBuf, DrillReport)>, DrillError> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(|e| DrillError::evidence(&self.dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let text = fs::read(&path).map_err(|e| DrillError::evidence(&path, e))?;
                let report = serde_json::from_slice(&text).map_err(|e| {
                    DrillError::evidence(&path, std::io::Error::other(e.to_string()))
                })?;
                Ok((path, report))
            })
            .collect()
    }

    /// Signs `report` (its `seq` and `previous` already set) and writes its JSON
    /// atomically; returns its path.
    pub fn append(&self, report: &mut DrillReport) -> Result<PathBuf, DrillError> {
        report.signature = sign(report, &self.key);
        let json = serde_json::to_vec_pretty(report).expect("a report serialises");
        let base = self.dir.join(format!("{:06}", report.seq));
        let json_path = base.with_extension("json");
        write_atomically(&json_path, &json)?;
        Ok(json_path)
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

/// The signature a report must carry: keyed BLAKE3 of its JSON with `signature`
/// empty.
pub fn sign(report: &DrillReport, key: &[u8; 32]) -> String {
    let mut unsigned = report.clone();
    unsigned.signature.clear();
    let bytes = serde_json::to_vec(&unsigned).expect("a report serialises");
    blake3::keyed_hash(key, &bytes).to_hex().to_string()
}

/// The hash the next report names as `previous`: BLAKE3 of the signed JSON.
pub fn report_hash(report: &DrillReport) -> String {
    let bytes = serde_json::to_vec(report).expect("a report serialises");
    blake3::hash(&bytes).to_hex().to_string()
}

/// Stores a sealed copy of `report` in the repository (never overwritten).
pub async fn store_in_repository(
    repo: &Repository,
    report: &DrillReport,
) -> Result<(), DrillError> {
    let key = repository_key(report);
    let bytes = serde_json::to_vec(report).expect("a report serialises");
    Ok(repo.put_sealed(&key, &bytes).await?)
}

pub fn repository_key(report: &DrillReport) -> String {
    format!(
        "{REPOSITORY_PREFIX}{:06}-{}",
        report.seq,
        report_hash(report)
    )
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DrillError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| DrillError::evidence(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::report::model::{DrillVerdict, REPORT_VERSION, VmResult, VmVerdict};

    fn report_with_times(secs: f64) -> DrillReport {
        DrillReport {
            version: REPORT_VERSION,
            seq: 1,
            plan: "erp".into(),
            repository: "/r".into(),
            repository_id: "id".into(),
            point: "latest".into(),
            host: "h".into(),
            started: "t0".into(),
            finished: "t1".into(),
            verdict: DrillVerdict::Passed,
            rto_secs: Some(secs),
            rto_target_secs: Some(60),
            prepare_secs: secs / 7.0,
            cleanup_secs: secs / 3.0,
            kept_running: false,
            vms: vec![VmResult {
                vm: "db".into(),
                group: 1,
                verdict: VmVerdict::Booted,
                reason: String::new(),
                disks: Vec::new(),
                point_age_secs: Some(5),
                checks: Vec::new(),
                started_secs: Some(secs / 11.0),
                first_output_secs: Some(secs / 5.0),
                healthy_secs: Some(secs),
                console_tail: String::new(),
                console: None,
                screenshot: None,
                warnings: Vec::new(),
            }],
            previous: None,
            signature: String::new(),
        }
    }

    /// A report read back from disk must sign the same as when it was written, for
    /// any measured duration: a float that does not survive the JSON round trip
    /// makes an untouched report look tampered with.
    #[test]
    fn a_written_report_verifies_after_reading_it_back_whatever_its_durations() {
        let key = [7u8; 32];
        let mut nanos: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            nanos = nanos
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let secs = std::time::Duration::from_nanos(nanos % 600_000_000_000).as_secs_f64();
            let mut report = report_with_times(secs);
            report.signature = sign(&report, &key);
            let json = serde_json::to_vec_pretty(&report).unwrap();
            let back: DrillReport = serde_json::from_slice(&json).unwrap();
            assert_eq!(sign(&back, &key), report.signature, "duration {secs}");
            assert_eq!(report_hash(&back), report_hash(&report), "duration {secs}");
        }
    }
}

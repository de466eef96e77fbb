//! `drill history --verify`: walks the chain of reports and says what does not hold
//! — a signature that fails (edited report), a gap or a broken link (deleted or
//! replaced report), an evidence file whose hash differs, and a report missing from
//! one side of state dir and repository.

use std::collections::BTreeMap;
use std::path::Path;

use lifeboat_store::Repository;
use serde::Serialize;

use super::chain::{REPOSITORY_PREFIX, ReportChain, report_hash, sign};
use super::model::{DrillReport, DrillVerdict, EvidenceFile};
use crate::drill::error::DrillError;

/// One report as `drill history` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub plan: String,
    pub started: String,
    pub verdict: DrillVerdict,
    pub rto_secs: Option<f64>,
    pub rto_target_secs: Option<u64>,
    pub point: String,
    pub report: String,
}

/// The chain and what is wrong with it (nothing, when `problems` is empty).
#[derive(Debug, Clone, Serialize)]
pub struct HistoryCheck {
    pub reports: Vec<HistoryEntry>,
    pub verified: bool,
    pub problems: Vec<String>,
}

/// Lists the chain; with `verify`, checks it against its signatures, its links, its
/// evidence files and (when given) the repository's copies.
pub async fn check_history(
    chain: &ReportChain,
    repo: Option<&Repository>,
    verify: bool,
) -> Result<HistoryCheck, DrillError> {
    let local = chain.load_all()?;
    let mut problems = Vec::new();
    if verify {
        check_links(chain, &local, &mut problems);
        if let Some(repo) = repo {
            check_repository(repo, chain, &local, &mut problems).await?;
        }
    }
    let reports = local
        .iter()
        .map(|(path, r)| HistoryEntry {
            seq: r.seq,
            plan: r.plan.clone(),
            started: r.started.clone(),
            verdict: r.verdict,
            rto_secs: r.rto_secs,
            rto_target_secs: r.rto_target_secs,
            point: r.point.clone(),
            report: path.display().to_string(),
        })
        .collect();
    Ok(HistoryCheck {
        reports,
        verified: verify,
        problems,
    })
}

fn check_links(
    chain: &ReportChain,
    local: &[(std::path::PathBuf, DrillReport)],
    problems: &mut Vec<String>,
) {
    let mut previous: Option<&DrillReport> = None;
    for (i, (path, report)) in local.iter().enumerate() {
        let name = path.display();
        let expected_seq = i as u64 + 1;
        if report.seq != expected_seq {
            problems.push(format!(
                "{name}: report {expected_seq} is missing (this one is number {}): a report was deleted",
                report.seq
            ));
        }
        if path.file_stem().and_then(|s| s.to_str()) != Some(&format!("{:06}", report.seq)) {
            problems.push(format!(
                "{name}: holds report {}, not the one its name says",
                report.seq
            ));
        }
        if sign(report, chain.key()) != report.signature {
            problems.push(format!(
                "{name}: the signature does not match: the report was edited after it was written"
            ));
        }
        let want_previous = previous.map(report_hash);
        if report.previous != want_previous {
            problems.push(format!(
                "{name}: does not follow the report before it: a report was removed or replaced"
            ));
        }
        for vm in &report.vms {
            for file in [&vm.console, &vm.screenshot].into_iter().flatten() {
                if let Some(p) = evidence_problem(chain.dir(), file) {
                    problems.push(format!("{name}: {}: {p}", vm.vm));
                }
            }
        }
        previous = Some(report);
    }
}

fn evidence_problem(dir: &Path, file: &EvidenceFile) -> Option<String> {
    let path = dir.join(&file.path);
    match std::fs::read(&path) {
        Ok(bytes) if blake3::hash(&bytes).to_hex().as_str() == file.blake3 => None,
        Ok(_) => Some(format!("evidence {} was changed", file.path)),
        Err(e) => Some(format!("evidence {} cannot be read: {e}", file.path)),
    }
}

/// Each side's reports must be the other's.
async fn check_repository(
    repo: &Repository,
    chain: &ReportChain,
    local: &[(std::path::PathBuf, DrillReport)],
    problems: &mut Vec<String>,
) -> Result<(), DrillError> {
    let mut remote: BTreeMap<u64, String> = BTreeMap::new();
    for object in repo
        .backend()
        .list(REPOSITORY_PREFIX)
        .await
        .map_err(lifeboat_store::StoreError::from)?
    {
        let name = object.key.trim_start_matches(REPOSITORY_PREFIX);
        let Some((seq, hash)) = name.split_once('-') else {
            continue;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            continue;
        };
        let copy: DrillReport = match repo.get_sealed(&object.key).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!(
                        "repository copy of report {seq} does not parse: {e}"
                    ));
                    continue;
                }
            },
            Err(e) => {
                problems.push(format!("repository copy of report {seq}: {e}"));
                continue;
            }
        };
        if report_hash(&copy) != hash || sign(&copy, chain.key()) != copy.signature {
            problems.push(format!(
                "repository copy of report {seq} does not match its name or signature"
            ));
        }
        remote.insert(seq, hash.to_string());
    }
    for (_, report) in local {
        match remote.remove(&report.seq) {
            Some(hash) if hash == report_hash(report) => {}
            Some(_) => problems.push(format!(
                "report {} differs from the repository's copy: it was edited or replaced here",
                report.seq
            )),
            None => problems.push(format!(
                "report {} is not in the repository (its upload failed, or it was removed there)",
                report.seq
            )),
        }
    }
    for seq in remote.keys() {
        problems.push(format!(
            "report {seq} is in the repository but missing from {}: it was deleted here",
            chain.dir().display()
        ));
    }
    Ok(())
}

//! Drill reports: the model (`model`), the signed hash chain in the state dir and the
//! repository (`chain`), its verification (`verify`) and the HTML page (`html`).

mod chain;
mod html;
mod model;
mod verify;

pub use chain::{
    REPOSITORY_PREFIX, ReportChain, report_hash, repository_key, sign, store_in_repository,
};
pub use html::render_html;
pub use model::{
    BootedDisk, DrillReport, DrillVerdict, EvidenceFile, REPORT_VERSION, VmResult, VmVerdict,
};
pub use verify::{HistoryCheck, HistoryEntry, check_history};

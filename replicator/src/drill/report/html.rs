//! A report as one self-contained HTML page an auditor can open anywhere: verdicts
//! with colour and text, timings against the RTO target, the recovery point and its
//! age, each VM's screenshot (inlined as a data URI) and console tail.

use std::fmt::Write;
use std::path::Path;

use base64::Engine;

use super::model::{DrillReport, DrillVerdict, VmResult, VmVerdict};

/// Renders `report`; screenshots are read from `dir` (the reports directory).
pub fn render_html(report: &DrillReport, dir: &Path) -> String {
    let mut page = String::with_capacity(16 << 10);
    let verdict = match report.verdict {
        DrillVerdict::Passed => ("PASSED", "ok"),
        DrillVerdict::Failed => ("FAILED", "bad"),
    };
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>\
         <title>Lifeboat drill {seq}: {plan} {v}</title><style>{STYLE}</style></head><body>\
         <h1>Drill of plan {plan}: <span class={c}>{v}</span></h1><table>\
         <tr><th>Report</th><td>#{seq}</td></tr>\
         <tr><th>Started / finished</th><td>{start} / {end}</td></tr>\
         <tr><th>Repository</th><td>{repo} ({repo_id})</td></tr>\
         <tr><th>Recovery point asked for</th><td>{point}</td></tr>\
         <tr><th>Measured RTO</th><td>{rto}</td></tr>\
         <tr><th>Lifeboat overhead</th><td>prepare {prep:.2} s, clean-up {clean:.2} s{kept}</td></tr>\
         <tr><th>Host</th><td>{host}</td></tr>\
         <tr><th>Previous report hash</th><td><code>{prev}</code></td></tr>\
         <tr><th>Signature</th><td><code>{sig}</code></td></tr></table>",
        seq = report.seq,
        plan = esc(&report.plan),
        v = verdict.0,
        c = verdict.1,
        start = esc(&report.started),
        end = esc(&report.finished),
        repo = esc(&report.repository),
        repo_id = esc(&report.repository_id),
        point = esc(&report.point),
        rto = rto_text(report),
        prep = report.prepare_secs,
        clean = report.cleanup_secs,
        kept = if report.kept_running {
            " (VMs left running with --keep)"
        } else {
            ""
        },
        host = esc(&report.host),
        prev = esc(report.previous.as_deref().unwrap_or("none (first report)")),
        sig = esc(&report.signature),
    );
    for vm in &report.vms {
        vm_section(&mut page, vm, dir);
    }
    page.push_str("</body></html>\n");
    page
}

fn rto_text(report: &DrillReport) -> String {
    let measured = report
        .rto_secs
        .map_or("not reached (not every VM booted)".to_string(), |s| {
            format!("{s:.1} s")
        });
    match (report.rto_target_secs, report.rto_met()) {
        (Some(t), Some(true)) => {
            format!("{measured} <span class=ok>within the {t} s target</span>")
        }
        (Some(t), _) => format!("{measured} <span class=bad>target {t} s missed</span>"),
        (None, _) => measured,
    }
}

fn vm_section(page: &mut String, vm: &VmResult, dir: &Path) {
    let (text, class) = match vm.verdict {
        VmVerdict::Booted => ("BOOTED", "ok"),
        VmVerdict::Failed => ("FAILED", "bad"),
        VmVerdict::NotStarted => ("NOT STARTED", "bad"),
    };
    let secs = |s: Option<f64>| s.map_or("—".to_string(), |s| format!("{s:.1} s"));
    let _ = write!(
        page,
        "<h2>{name} (group {group}): <span class={class}>{text}</span></h2>\
         <p>{reason}</p><table><tr><th>Started</th><td>{start}</td></tr>\
         <tr><th>First console output</th><td>{first}</td></tr>\
         <tr><th>Healthy</th><td>{healthy}</td></tr>\
         <tr><th>Health checks</th><td>{checks}</td></tr>\
         <tr><th>Recovery point age</th><td>{age}</td></tr>",
        name = esc(&vm.vm),
        group = vm.group,
        reason = esc(&vm.reason),
        start = secs(vm.started_secs),
        first = secs(vm.first_output_secs),
        healthy = secs(vm.healthy_secs),
        checks = esc(&vm.checks.join(", ")),
        age = vm.point_age_secs.map_or("—".into(), |a| format!("{a} s")),
    );
    for d in &vm.disks {
        let _ = write!(
            page,
            "<tr><th>Disk {}</th><td>snapshot {} of {} (from {})</td></tr>",
            esc(&d.disk),
            esc(&d.snapshot[..d.snapshot.len().min(12)]),
            esc(&d.time),
            esc(&d.from)
        );
    }
    for w in &vm.warnings {
        let _ = write!(
            page,
            "<tr><th>Warning</th><td class=bad>{}</td></tr>",
            esc(w)
        );
    }
    page.push_str("</table>");
    if let Some(shot) = &vm.screenshot
        && let Ok(png) = std::fs::read(dir.join(&shot.path))
    {
        let _ = write!(
            page,
            "<p><img alt=\"screenshot of {}\" src=\"data:image/png;base64,{}\"></p>",
            esc(&vm.vm),
            base64::engine::general_purpose::STANDARD.encode(png)
        );
    }
    let _ = write!(
        page,
        "<h3>Console (last lines)</h3><pre>{}</pre>",
        esc(&vm.console_tail)
    );
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}\
    th{text-align:left;padding-right:1em;vertical-align:top}\
    .ok{color:#fff;background:#2a7d2a;padding:0 .3em}.bad{color:#fff;background:#b22;padding:0 .3em}\
    pre{background:#111;color:#ddd;padding:1em;overflow-x:auto;font-size:85%}\
    img{max-width:100%;border:1px solid #999}";

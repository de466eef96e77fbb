//! `lifeboat recovery-key new` and `lifeboat metadata backup|list|verify`: a metadata
//! point is sealed once and stored at every target (flags, or the configuration's
//! `[metadata_backup]`), locked where the bucket has Object Lock, older points let go
//! by retention, and each target's outcome recorded for `status`
//! ([`crate::daemon::metadata`]). What goes into a point is [`contents`]; how
//! `recover` lays it out is [`super::recover`]; [`lifeboat_metadata`] seals, stores
//! and opens the points.

mod contents;
pub(crate) mod target;
mod verify;

use anyhow::{Context, Result, bail};
use lifeboat_metadata::keys::{Recipient, new_recovery_key, parse_recipient, write_key_file};
use lifeboat_metadata::target::expired;
use lifeboat_metadata::{Bundle, FileRole, MetadataTarget};
use lifeboat_policies::Config;
use lifeboat_policies::config::metadata_backup::{
    DEFAULT_METADATA_KEEP_LAST, DEFAULT_METADATA_KEEP_WITHIN,
};
use lifeboat_policies::config::{MetadataBackup, PointLock};
use lifeboat_store::backend::LockMode;

use self::contents::{named_files, read_file, state_files, summarise_repositories};
use self::target::target;
use crate::args::{
    GlobalArgs, MetadataBackupArgs, MetadataCommand, MetadataListArgs, PointLockArg,
    RecoveryKeyCommand,
};
use crate::config_file::load;
use crate::daemon::metadata::MetadataRecord;
use crate::output::{bytes, print_json};

pub fn recovery_key(g: &GlobalArgs, c: RecoveryKeyCommand) -> Result<()> {
    let RecoveryKeyCommand::New(a) = c;
    let (text, recipient) = new_recovery_key();
    write_key_file(&a.out, &text)?;
    if g.json {
        print_json(&serde_json::json!({ "recipient": recipient, "key_file": a.out }));
    } else {
        println!("{recipient}");
        if !g.quiet {
            eprintln!(
                "recovery key written to {} (0600): keep it offline (print it, escrow it) and \
                 delete it from this machine; give the recipient above to `metadata backup \
                 --recipient`",
                a.out.display()
            );
        }
    }
    Ok(())
}

pub async fn run(g: &GlobalArgs, c: MetadataCommand) -> Result<()> {
    match c {
        MetadataCommand::Backup(a) => backup(g, a).await,
        MetadataCommand::List(a) => list(g, a).await,
        MetadataCommand::Verify(a) => verify::run(g, a).await,
    }
}

/// The flags, with `[metadata_backup]` filling what they leave out.
struct BackupSettings {
    targets: Vec<String>,
    recipients: Vec<Recipient>,
    keep_within: u64,
    keep_last: usize,
    lock: Option<LockMode>,
}

impl BackupSettings {
    fn resolve(a: &MetadataBackupArgs, config: &Config) -> Result<BackupSettings> {
        let table = config.metadata_backup.as_ref();
        let or_table = |given: &[String], from: fn(&MetadataBackup) -> &Vec<String>| {
            if given.is_empty() {
                table.map(from).cloned().unwrap_or_default()
            } else {
                given.to_vec()
            }
        };
        let targets = or_table(&a.targets, |m| &m.targets);
        let recipients = or_table(&a.recipients, |m| &m.recipients);
        if targets.is_empty() || recipients.is_empty() {
            bail!(
                "no metadata {} given: pass --to TARGET and --recipient AGE1…, or add a \
                 [metadata_backup] table with targets and recipients to {}",
                if targets.is_empty() {
                    "target"
                } else {
                    "recipient"
                },
                a.config.display()
            );
        }
        let recipients = recipients
            .iter()
            .map(|r| parse_recipient(r))
            .collect::<Result<Vec<_>, _>>()?;
        let flag = a.lock.map(|l| match l {
            PointLockArg::Off => PointLock::Off,
            PointLockArg::Governance => PointLock::Governance,
            PointLockArg::Compliance => PointLock::Compliance,
        });
        let lock = match flag.unwrap_or(table.map_or(PointLock::Governance, |m| m.lock)) {
            PointLock::Off => None,
            PointLock::Governance => Some(LockMode::Governance),
            PointLock::Compliance => Some(LockMode::Compliance),
        };
        Ok(BackupSettings {
            targets,
            recipients,
            keep_within: a
                .keep_within
                .or(table.map(|m| m.keep_within))
                .unwrap_or(DEFAULT_METADATA_KEEP_WITHIN),
            keep_last: a
                .keep_last
                .or(table.map(|m| u64::from(m.keep_last)))
                .unwrap_or(u64::from(DEFAULT_METADATA_KEEP_LAST)) as usize,
            lock,
        })
    }
}

async fn backup(g: &GlobalArgs, a: MetadataBackupArgs) -> Result<()> {
    let config = load(&a.config)?;
    let settings = BackupSettings::resolve(&a, &config)?;
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| config.daemon.state_dir.clone());
    let started = chrono::Utc::now();
    let clock = std::time::Instant::now();
    let mut files = vec![read_file(&a.config, FileRole::Config)?];
    files.extend(named_files(&config)?);
    files.extend(state_files(&state_dir)?);
    let repositories = summarise_repositories(g, &config).await;
    let bundle = Bundle {
        version: lifeboat_metadata::bundle::BUNDLE_VERSION,
        created: lifeboat_store::repo::now_rfc3339(),
        host: lifeboat_store::repo::hostname(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        files,
        repositories,
    };
    let sealed = bundle.seal(&settings.recipients)?;
    let now = time::OffsetDateTime::now_utc();
    let mut record = MetadataRecord::read(&state_dir);
    let mut written = Vec::new();
    let mut failed = Vec::new();
    for address in &settings.targets {
        match store_point(g, address, &sealed, now, &settings).await {
            Ok((name, locked)) => {
                record.note(address, started, clock.elapsed().as_secs_f64(), Ok(&name));
                written.push((address.clone(), name, locked));
            }
            Err(e) => {
                let e = format!("{e:#}");
                record.note(address, started, clock.elapsed().as_secs_f64(), Err(&e));
                eprintln!("error: metadata target {address}: {e}");
                failed.push(address.clone());
            }
        }
    }
    if let Err(e) = record.write(&state_dir) {
        eprintln!("warning: {e:#}; `status` will not show this metadata backup");
    }
    report(g, &bundle, sealed.len(), &written);
    if !failed.is_empty() {
        bail!(
            "the metadata point was not stored at {} of {} targets ({}); the others have it",
            failed.len(),
            settings.targets.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Stores the point at one target, then lets go of what retention expires there.
async fn store_point(
    g: &GlobalArgs,
    address: &str,
    sealed: &[u8],
    now: time::OffsetDateTime,
    s: &BackupSettings,
) -> Result<(String, Option<std::time::SystemTime>)> {
    let t = target(g, address).await?;
    let lock = s
        .lock
        .map(|mode| (mode, std::time::Duration::from_secs(s.keep_within)));
    let (name, locked) = t
        .put(sealed.to_vec(), now, lock)
        .await
        .with_context(|| format!("storing the metadata point at {address}"))?;
    forget_expired(&t, now, s, g.quiet || g.json).await?;
    Ok((name, locked))
}

fn report(
    g: &GlobalArgs,
    bundle: &Bundle,
    sealed: usize,
    written: &[(String, String, Option<std::time::SystemTime>)],
) {
    let until = |l: &Option<std::time::SystemTime>| {
        l.map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339())
    };
    if g.json {
        print_json(&serde_json::json!({
            "points": written.iter().map(|(t, n, l)| serde_json::json!({
                "target": t, "point": n, "locked_until": until(l),
            })).collect::<Vec<_>>(),
            "files": bundle.files.iter().map(|f| serde_json::json!({"role": f.role, "path": f.path, "size": f.size})).collect::<Vec<_>>(),
            "bytes": sealed,
        }));
    } else if !g.quiet {
        for (target, name, locked) in written {
            println!(
                "metadata point {name} at {target}: {} files, {} sealed{}",
                bundle.files.len(),
                bytes(sealed as u64),
                until(locked)
                    .map(|u| format!(", Object Lock until {u}"))
                    .unwrap_or_default()
            );
        }
    }
}

/// Deletes the target's points retention lets go; an Object-Locked point stays.
async fn forget_expired(
    t: &MetadataTarget,
    now: time::OffsetDateTime,
    s: &BackupSettings,
    quiet: bool,
) -> Result<()> {
    let keep_within = time::Duration::seconds(i64::try_from(s.keep_within).unwrap_or(i64::MAX));
    for point in expired(&t.points().await?, now, keep_within, s.keep_last.max(1)) {
        match t.delete(&point).await {
            Ok(()) if !quiet => eprintln!("metadata point {point} expired and deleted"),
            Ok(()) => {}
            Err(e) => eprintln!("warning: metadata point {point} expired but stays: {e}"),
        }
    }
    Ok(())
}

async fn list(g: &GlobalArgs, a: MetadataListArgs) -> Result<()> {
    let t = target(g, &a.from).await?;
    let points = t.points().await?;
    if g.json {
        print_json(&points);
    } else if points.is_empty() {
        println!("no metadata points at {}", t.location());
    } else {
        for p in &points {
            println!("{p}");
        }
    }
    Ok(())
}

//! Where passphrases come from: a file, the environment, or a prompt — in that order.
//! Passphrases are never printed, logged, or put in error messages.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};

fn from_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the passphrase file {}", path.display()))?;
    let pass = text.trim_end_matches(['\n', '\r']).to_string();
    if pass.is_empty() {
        bail!("the passphrase file {} is empty", path.display());
    }
    Ok(pass)
}

fn prompt(label: &str, confirm: bool) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no passphrase given: set LIFEBOAT_PASSWORD or use --password-file (no terminal to prompt on)"
        );
    }
    let pass =
        rpassword::prompt_password(format!("{label}: ")).context("reading the passphrase")?;
    if pass.is_empty() {
        bail!("empty passphrase");
    }
    if confirm
        && rpassword::prompt_password("Repeat it: ").context("reading the passphrase")? != pass
    {
        bail!("the passphrases differ");
    }
    Ok(pass)
}

/// The passphrase that opens the repository.
pub fn current(file: Option<&Path>, creating: bool) -> Result<String> {
    if let Some(f) = file {
        return from_file(f);
    }
    match std::env::var("LIFEBOAT_PASSWORD") {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => prompt(
            if creating {
                "New repository passphrase"
            } else {
                "Repository passphrase"
            },
            creating,
        ),
    }
}

/// The passphrase of one side of a replication: `file`, else the environment
/// variable `env` (LIFEBOAT_FROM_PASSWORD / LIFEBOAT_TO_PASSWORD), else the usual
/// passphrase (--password-file, LIFEBOAT_PASSWORD, a prompt).
pub fn for_side(file: Option<&Path>, env: &str, usual: Option<&Path>) -> Result<String> {
    if let Some(f) = file {
        return from_file(f);
    }
    match std::env::var(env) {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => current(usual, false),
    }
}

/// A new passphrase for `key add`.
pub fn new(file: Option<&Path>) -> Result<String> {
    if let Some(f) = file {
        return from_file(f);
    }
    match std::env::var("LIFEBOAT_NEW_PASSWORD") {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => prompt("New passphrase", true),
    }
}

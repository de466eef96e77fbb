//! Reading the configuration file for `forget --group`, `daemon` and `status`, and the
//! repository settings a group's jobs run with.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use lifeboat_policies::Config;
use lifeboat_policies::config::{Group, Plan, RepositoryConfig};

use crate::args::GlobalArgs;

/// Reads and validates `path`. Every problem is listed as `file:line:column: key: …`.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the configuration {} (pass --config FILE or set LIFEBOAT_CONFIG; \
             deploy/lifeboat.example.toml is a starting point)",
            path.display()
        )
    })?;
    lifeboat_policies::parse_config(&text, &path.display().to_string())
        .map_err(|e| anyhow!("{e}\nfix the configuration and try again"))
}

/// The group called `name` and its repository.
pub fn group<'a>(config: &'a Config, name: &str) -> Result<(&'a Group, &'a RepositoryConfig)> {
    let group = config
        .group(name)
        .with_context(|| unknown("group", name, config.groups.iter().map(|g| g.name.as_str())))?;
    // Validation guarantees the repository exists.
    let repo = config
        .repository(&group.repository)
        .with_context(|| format!("group {name:?} names an unknown repository"))?;
    Ok((group, repo))
}

/// The recovery plan called `name` and the repository it recovers from.
pub fn plan<'a>(config: &'a Config, name: &str) -> Result<(&'a Plan, &'a RepositoryConfig)> {
    let plan = config
        .plan(name)
        .with_context(|| unknown("plan", name, config.plans.iter().map(|p| p.name.as_str())))?;
    // Validation guarantees the repository exists.
    let repo = config
        .repository(&plan.repository)
        .with_context(|| format!("plan {name:?} names an unknown repository"))?;
    Ok((plan, repo))
}

/// "no KIND NAME in the configuration; KINDs: the known ones".
fn unknown<'a>(kind: &str, name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.collect();
    format!(
        "no {kind} {name:?} in the configuration; {kind}s: {}",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

/// Global arguments pointed at a configured repository: its URL, and its passphrase
/// file when it has one (else the usual LIFEBOAT_PASSWORD_FILE / LIFEBOAT_PASSWORD).
pub fn global_for(g: &GlobalArgs, repo: &RepositoryConfig) -> GlobalArgs {
    let mut out = g.clone();
    out.repo = Some(repo.url.clone());
    if let Some(f) = &repo.password_file {
        out.password_file = Some(f.clone());
    }
    out
}

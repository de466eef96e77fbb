//! `lifeboat metadata verify`: opens points with the offline recovery key(s) and
//! checks every file against the manifest, so a damaged or unreadable point is found
//! at a quarterly test rather than on the day the site is lost.

use anyhow::{Result, bail};
use lifeboat_metadata::Bundle;
use lifeboat_metadata::keys::read_identity;

use super::target::target;
use crate::args::{GlobalArgs, MetadataVerifyArgs};
use crate::output::print_json;

pub async fn run(g: &GlobalArgs, a: MetadataVerifyArgs) -> Result<()> {
    let identities = a
        .identity
        .iter()
        .map(|p| read_identity(p))
        .collect::<Result<Vec<_>, _>>()?;
    let t = target(g, &a.from).await?;
    let names = match &a.point {
        Some(p) => vec![t.get(p).await?.0],
        None => t.points().await?,
    };
    if names.is_empty() {
        bail!(
            "no metadata points at {}: check the address, or run `lifeboat metadata backup`",
            t.location()
        );
    }
    let mut results = Vec::new();
    for name in &names {
        let verdict = match t.get(name).await {
            Ok((_, sealed)) => match Bundle::open(&sealed, &identities, name) {
                Ok(b) => Ok(format!(
                    "ok: {} files, written {} on {}",
                    b.files.len(),
                    b.created,
                    b.host
                )),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        results.push((name.clone(), verdict));
    }
    let bad = results.iter().filter(|(_, v)| v.is_err()).count();
    if g.json {
        print_json(&serde_json::json!({
            "target": t.location(),
            "points": results.iter().map(|(n, v)| match v {
                Ok(_) => serde_json::json!({"point": n, "ok": true}),
                Err(e) => serde_json::json!({"point": n, "ok": false, "error": e}),
            }).collect::<Vec<_>>(),
        }));
    } else if !g.quiet {
        for (name, verdict) in &results {
            match verdict {
                Ok(text) => println!("{name}: {text}"),
                Err(e) => println!("{name}: DAMAGED OR UNREADABLE: {e}"),
            }
        }
    }
    if bad > 0 {
        bail!(
            "{bad} of {} metadata points at {} do not open; recover from one that does \
             (`lifeboat recover --point NAME`) and write a new point soon",
            results.len(),
            t.location()
        );
    }
    Ok(())
}

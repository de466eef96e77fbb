//! `lifeboat key add|list|remove`: the passphrases (key slots) that open the repository.

use anyhow::Result;
use lifeboat_store::keys::slot::DEFAULT_KDF;

use crate::args::{GlobalArgs, KeyCommand};
use crate::output::print_json;
use crate::password;
use crate::repository::open;

pub async fn run(g: &GlobalArgs, k: KeyCommand) -> Result<()> {
    let repo = open(g).await?;
    match k {
        KeyCommand::Add { new_password_file } => {
            let pass = password::new(new_password_file.as_deref())?;
            let id = repo.add_key(&pass, DEFAULT_KDF).await?;
            if g.json {
                print_json(&serde_json::json!({ "added": id }));
            } else {
                println!("added key slot {id}");
            }
        }
        KeyCommand::List => {
            let keys = repo.list_keys().await?;
            if g.json {
                print_json(&keys);
            } else {
                println!("  {:<17} {:<24} HOST", "ID", "CREATED");
                for k in keys {
                    println!(
                        "{} {:<17} {:<24} {}",
                        if k.current { "*" } else { " " },
                        k.id,
                        k.created,
                        k.host
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            repo.remove_key(&id).await?;
            if g.json {
                print_json(&serde_json::json!({ "removed": id }));
            } else {
                println!("removed key slot {id}");
            }
        }
    }
    Ok(())
}

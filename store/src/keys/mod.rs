//! Creating and unlocking repositories, and managing their key slots (`init`,
//! opening with a passphrase, `key add|list|remove`, the slot check `verify` runs).
//!
//! | file        | holds                                                              |
//! |-------------|--------------------------------------------------------------------|
//! | `slot.rs`   | one key slot: the master key wrapped under a passphrase (argon2id) |
//! | `stored.rs` | a slot as stored: the wrapped key plus its label sealed with the repository key |
//! | `init.rs`   | `init`: checks the options, writes slot, config and marker         |
//! | `open.rs`   | opening a repository: tries the passphrase on every slot           |
//! | `manage.rs` | `key add`, `key list`, `key remove`                                |
//! | `check.rs`  | checks every slot is intact without knowing its passphrase         |

pub mod check;
pub mod init;
pub mod manage;
pub mod open;
pub mod slot;
mod stored;

pub use check::SlotProblem;
pub use init::{InitOptions, init_repository};
pub use manage::KeyListing;
pub use open::open_repository;

//! Test support: helpers that start real servers (PostgreSQL, PocketBase) on loopback, each on a
//! free port with its own temp dir, and stop them and remove the dir on drop.
//!
//! Not a mock layer: nothing here fakes a server. A missing dependency is an error that names the
//! command that installs it (`scripts/install-test-deps.sh` installs all of them); nothing is
//! skipped quietly.

pub mod pocketbase;
pub mod postgres;
mod process;

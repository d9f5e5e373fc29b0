//! The `kombiform` command: arguments, files, printing and exit codes over the pipeline
//! crates (`kombiform_spec` → `kombiform_model` → `kombiform_emit`) and the deploy engine
//! (`kombiform_engine`).
//!
//! The only crate (with the service binaries) that prints, and only through [`output`] (a
//! closed pipe is a quiet end of output, never a panic). A library as well as a binary so
//! that integration tests and benchmarks can call [`cli::read_specs`] and friends.
//!
//! Not here: any compiling, planning or applying of its own; it never depends on the
//! services (no web server or JWT crate in the `kombiform` build).

pub mod cli;
mod help;
mod offline;
pub mod output;
mod paint;
mod progress;
pub mod signals;

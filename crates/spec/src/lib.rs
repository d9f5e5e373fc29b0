//! Specs: YAML files → span-carrying documents → schema and semantic diagnostics.
//!
//! This stage reads text handed to it (the CLI does the file IO), never panics and never
//! stops at the first problem: every diagnostic of every file comes back in one run.
//! It is not the model: typed, validated data lives in [`kombiform_model`].

pub mod diag;
pub mod load;
pub mod migrate;
pub mod schema;
pub mod semantic;
pub mod yaml;

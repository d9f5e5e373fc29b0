//! The CLI's integration test binary: golden cases, `plan`/`apply` end to end against real
//! servers, robustness of the loader, and the tidy checks over the source tree. One binary,
//! so the crate and its dependencies are linked once (the ripgrep/cargo layout).

mod deploy;
mod golden;
mod robustness;
mod tidy;

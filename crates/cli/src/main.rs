//! The `kombiform` binary: a thin wrapper over [`kombiform::cli`].

fn main() -> std::process::ExitCode {
    kombiform::cli::main()
}

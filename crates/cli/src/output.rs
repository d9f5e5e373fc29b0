//! Standard output and standard error for the CLI, the Unix way: writing to a closed pipe
//! (`kombiform graph --format dot | head -1`) is not an error and never a panic. The first
//! broken-pipe write marks the stream closed; later writes are dropped quietly and the
//! command carries on (an apply keeps journaling), so its exit code says what happened to
//! the work, not to the reader. Colour is for terminals only, and never with `NO_COLOR`.
//!
//! Every line the CLI prints goes through [`out!`], [`outln!`], [`err!`] and [`errln!`]: the
//! `print!` family is denied by lint in this crate. Not here: what is printed.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to standard output; a closed pipe stops output, quietly.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    write_to(&mut std::io::stdout().lock(), &STDOUT_CLOSED, args);
}

/// Writes to standard error; a closed pipe stops output, quietly.
pub fn write_err(args: std::fmt::Arguments<'_>) {
    write_to(&mut std::io::stderr().lock(), &STDERR_CLOSED, args);
}

fn write_to(w: &mut impl Write, closed: &AtomicBool, args: std::fmt::Arguments<'_>) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    // Any write error (a closed pipe, a full disk behind a redirect) ends output on that
    // stream: there is no one left to tell, and the work must not stop for it.
    if w.write_fmt(args).and_then(|()| w.flush()).is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

/// Whether colour is wanted on standard output: a terminal, and `NO_COLOR` unset or empty
/// (<https://no-color.org>).
pub fn colour_stdout() -> bool {
    std::io::stdout().is_terminal() && no_color_unset()
}

/// Whether colour is wanted on standard error (same rule).
pub fn colour_stderr() -> bool {
    std::io::stderr().is_terminal() && no_color_unset()
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `print!` that survives a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_out(format_args!($($arg)*)) };
}

/// `println!` that survives a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that survives a closed pipe.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::write_err(format_args!($($arg)*)) };
}

/// `eprintln!` that survives a closed pipe.
#[macro_export]
macro_rules! errln {
    () => { $crate::output::write_err(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_err(format_args!("{}\n", format_args!($($arg)*))) };
}

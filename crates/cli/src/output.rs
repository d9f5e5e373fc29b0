//! Standard output and standard error for the CLI, the Unix way: writing to a closed pipe
//! (`kombiform graph --format dot | head -1`) is not an error and never a panic. The first
//! broken-pipe write marks the stream closed; later writes are dropped quietly and the
//! command carries on (an apply keeps journaling), so its exit code says what happened to
//! the work, not to the reader. Colour is for terminals only, and never with `NO_COLOR`.
//!
//! `--color auto|always|never` ([`set_color`]) decides over the terminal test; `--quiet`
//! ([`set_quiet`]) silences progress.
//!
//! A live status line (an apply's progress, a spinner) is drawn on standard error, on a
//! terminal only ([`status`]): every other line written to standard error clears it first
//! and draws it again after, so lines never mix with it.
//!
//! Every line the CLI prints goes through [`out!`], [`outln!`], [`err!`] and [`errln!`]: the
//! `print!` family is denied by lint in this crate. Not here: what is printed.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
static COLOR: AtomicU8 = AtomicU8::new(AUTO);
static QUIET: AtomicBool = AtomicBool::new(false);
/// The live status line shown at the bottom of a terminal, if any.
static STATUS: Mutex<Option<String>> = Mutex::new(None);

const AUTO: u8 = 0;
const ALWAYS: u8 = 1;
const NEVER: u8 = 2;

/// When to colour (`--color`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set and not empty.
    Auto,
    /// Always, even on a pipe or with `NO_COLOR`.
    Always,
    /// Never.
    Never,
}

/// Sets the colour choice for the rest of the run.
pub fn set_color(choice: ColorChoice) {
    let v = match choice {
        ColorChoice::Auto => AUTO,
        ColorChoice::Always => ALWAYS,
        ColorChoice::Never => NEVER,
    };
    COLOR.store(v, Ordering::Relaxed);
}

/// Silences progress (status lines, spinners, heartbeats) for the rest of the run.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether progress is silenced (`--quiet`).
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Whether standard error is a terminal (live status lines and spinners are drawn there).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Writes to standard output; a closed pipe stops output, quietly.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    write_to(&mut std::io::stdout().lock(), &STDOUT_CLOSED, args);
}

/// Writes to standard error; a closed pipe stops output, quietly. A live status line is
/// cleared first and drawn again after.
pub fn write_err(args: std::fmt::Arguments<'_>) {
    let status = STATUS.lock().unwrap_or_else(|p| p.into_inner());
    let mut w = std::io::stderr().lock();
    match status.as_deref() {
        Some(line) => write_to(
            &mut w,
            &STDERR_CLOSED,
            format_args!("\r\x1b[2K{args}{line}"),
        ),
        None => write_to(&mut w, &STDERR_CLOSED, args),
    }
}

/// Shows `line` as the live status line (replacing the one shown), or with `None` clears it.
/// Drawn only on a terminal and without `--quiet`; elsewhere it does nothing.
pub fn status(line: Option<&str>) {
    if quiet() || !stderr_is_terminal() {
        return;
    }
    let mut status = STATUS.lock().unwrap_or_else(|p| p.into_inner());
    let mut w = std::io::stderr().lock();
    match line {
        Some(l) => {
            let l = fit(l);
            write_to(&mut w, &STDERR_CLOSED, format_args!("\r\x1b[2K{l}"));
            *status = Some(l);
        }
        None => {
            if status.take().is_some() {
                write_to(&mut w, &STDERR_CLOSED, format_args!("\r\x1b[2K"));
            }
        }
    }
}

/// A status line cut to one terminal row (no wrapping, or the clearing would miss a row).
fn fit(line: &str) -> String {
    const WIDTH: usize = 100;
    if line.chars().count() <= WIDTH {
        line.to_string()
    } else {
        let cut: String = line.chars().take(WIDTH - 1).collect();
        format!("{cut}…")
    }
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

/// Whether colour is wanted on standard output: `--color always`, or with `auto` a
/// terminal and `NO_COLOR` unset or empty (<https://no-color.org>).
pub fn colour_stdout() -> bool {
    colour(std::io::stdout().is_terminal())
}

/// Whether colour is wanted on standard error (same rule).
pub fn colour_stderr() -> bool {
    colour(stderr_is_terminal())
}

fn colour(terminal: bool) -> bool {
    match COLOR.load(Ordering::Relaxed) {
        ALWAYS => true,
        NEVER => false,
        _ => terminal && no_color_unset(),
    }
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

//! Standard output that a closed pipe does not turn into a panic.
//!
//! `println!` panics when the reader of a pipe has gone (`sessionkit list | head -1`: Rust
//! ignores `SIGPIPE`, so the write fails with `EPIPE`). The commands write through [`write`]
//! (and the `outln!` macro) instead: a closed pipe ends the command with an
//! error that [`crate::main`] turns into a quiet, successful exit, as `head` expects.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::CliError;

/// Set once a write found standard output closed.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to standard output and flushes it.
///
/// # Errors
/// A [`CliError`] if the write fails; if the reader closed the pipe, [`closed`] is true from
/// then on.
pub(crate) fn write(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Err(CliError("standard output was closed".into()))
        }
        Err(err) => Err(CliError(format!("writing to standard output: {err}"))),
    }
}

/// Whether a write found standard output closed (the reader of a pipe has gone).
pub(crate) fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `println!` through [`write`]: a `Result<(), CliError>` instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

//! What the code under test logs: a process-wide `tracing` subscriber that keeps every line, so
//! HTTP scenarios can check that a failure was logged, and that no log line holds a secret.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The log lines of this process since [`capture`] was first called.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Captured {
    /// Every line so far that contains each of `needles`.
    ///
    /// # Panics
    /// If a thread panicked while logging.
    pub fn matching(&self, needles: &[&str]) -> Vec<String> {
        let lines = self.lines.lock().expect("log lines");
        lines
            .iter()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .cloned()
            .collect()
    }

    /// Waits up to `timeout` for a line that contains each of `needles` (the server may log
    /// after the client has its response) and returns it.
    pub async fn wait_for(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self.matching(needles).pop() {
                return Some(line);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct LineWriter(Arc<Mutex<Vec<String>>>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if let Ok(mut lines) = self.0.lock() {
            lines.extend(text.lines().map(str::to_owned));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber as the process's global default (once; later calls
/// return the same capture) and returns it.
///
/// # Panics
/// If another global subscriber was installed first.
pub fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let lines = Arc::clone(&captured.lines);
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .with_writer(move || LineWriter(Arc::clone(&lines)))
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber");
            captured
        })
        .clone()
}

//! Where log lines go: a buffer in memory that a thread of its own writes to stderr every
//! few milliseconds, as many lines at a time as have come. A request appends its line (one
//! `memcpy` under a lock held for nothing else) and never waits for a write, nor wakes
//! anyone: the writer is woken by its clock, or early when the buffer fills. Past
//! [`BLOCK_AT`] bytes waiting (stderr stuck), requests wait for the writer rather than lose
//! lines or grow without bound. Dropping the [`Flusher`] writes what is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line waits at most before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(25);
/// Waiting bytes that wake the writer before its time.
const WAKE_AT: usize = 256 * 1024;
/// Waiting bytes past which requests wait for the writer.
const BLOCK_AT: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct State {
    waiting: Vec<u8>,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits on it; it is signalled when the buffer passes WAKE_AT, or at the end.
    wake: Condvar,
    /// Requests wait on it while the buffer is past BLOCK_AT.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` the log layer formats into.
#[derive(Clone)]
pub(super) struct Lines(Arc<Shared>);

/// Keeps the writer thread; dropping it writes the lines still waiting.
pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer to `out` (stderr in the service), and what flushes it.
pub(super) fn to(out: impl Write + Send + 'static) -> (Lines, Flusher) {
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new()
        .name("enc-logs".into())
        .spawn({
            let shared = shared.clone();
            move || write_until_stopped(&shared, out)
        })
        .expect("a thread for the log writer");
    (
        Lines(shared.clone()),
        Flusher {
            shared,
            thread: Some(thread),
        },
    )
}

fn write_until_stopped(shared: &Shared, mut out: impl Write) {
    let mut writing = Vec::new();
    loop {
        let stopping = {
            let state = shared.lock();
            let (mut state, _) = shared
                .wake
                .wait_timeout_while(state, FLUSH_EVERY, |s| {
                    !s.stopping && s.waiting.len() < WAKE_AT
                })
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut state.waiting, &mut writing);
            state.stopping
        };
        shared.drained.notify_all();
        if !writing.is_empty() {
            // Nowhere to report a failed log write: the lines are dropped, the service goes on.
            let _ = out.write_all(&writing).and_then(|()| out.flush());
            writing.clear();
            if writing.capacity() > WAKE_AT * 2 {
                writing.shrink_to(WAKE_AT);
            }
        }
        if stopping {
            return;
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One formatted event: the log layer writes each event whole, in one `write_all`.
pub(super) struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.0.lock();
        while state.waiting.len() >= BLOCK_AT && !state.stopping {
            state = self
                .0
                .drained
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        state.waiting.extend_from_slice(bytes);
        if state.waiting.len() >= WAKE_AT {
            self.0.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writer thread wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_it_is_dropped() {
        let sink = Sink::default();
        let (lines, flusher) = to(sink.clone());
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000 {
                        lines
                            .make_writer()
                            .write_all(format!("{t} {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        drop(flusher);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in written.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s lines in order, none lost");
            next[t] += 1;
        }
        assert_eq!(next, [50_000; 4]);
    }

    #[test]
    fn a_line_is_written_within_moments_without_a_flush() {
        let sink = Sink::default();
        let (lines, _flusher) = to(sink.clone());
        lines.make_writer().write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
    }
}

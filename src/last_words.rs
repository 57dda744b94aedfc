//! The line a process leaves when it dies of a signal (a crash in a
//! client library, an abort): the job, what the process was doing and
//! the last epoch it committed, so that the operator reading the log
//! knows where a restart resumes. Everything the handler reads is set
//! beforehand and read without a lock or an allocation, as a signal
//! handler must.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

/// What the process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Doing {
    Starting = 0,
    Running = 1,
    Committing = 2,
}

const DOING: [&str; 3] = [
    "starting (recovery, before its first epoch)",
    "running",
    "committing an epoch",
];

static JOB: OnceLock<Box<str>> = OnceLock::new();
static NOW: AtomicU8 = AtomicU8::new(Doing::Starting as u8);
/// The last epoch committed, plus one (0: none known).
static COMMITTED: AtomicU64 = AtomicU64::new(0);

/// Installs the handler, for job `job`.
pub fn install(job: &str) {
    if JOB.set(job.into()).is_err() {
        return;
    }
    for sig in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGABRT,
    ] {
        // SAFETY: the handler only reads atomics and writes to stderr,
        // then lets the signal take its default course.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_ONSTACK | libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

pub fn doing(now: Doing) {
    NOW.store(now as u8, Ordering::Relaxed);
}

pub fn committed(epoch: u64) {
    COMMITTED.store(epoch + 1, Ordering::Relaxed);
}

/// The line, written into `buf`; its length.
fn line(buf: &mut [u8], sig: i32) -> usize {
    let mut w = Writer { buf, len: 0 };
    w.put("jobctl: job ");
    w.put(JOB.get().map_or("?", |j| j));
    w.put(" died of signal ");
    w.num(sig as u64);
    w.put(match sig {
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGFPE => " (SIGFPE)",
        libc::SIGABRT => " (SIGABRT)",
        _ => "",
    });
    w.put(" while ");
    w.put(
        DOING
            .get(NOW.load(Ordering::Relaxed) as usize)
            .unwrap_or(&"?"),
    );
    match COMMITTED.load(Ordering::Relaxed) {
        0 => w.put("; it had committed no epoch in this start"),
        n => {
            w.put("; the last epoch it committed is ");
            w.num(n - 1);
        }
    }
    w.put("; a start resumes after the last committed epoch\n");
    w.len
}

extern "C" fn on_signal(sig: libc::c_int) {
    let mut buf = [0u8; 512];
    let len = line(&mut buf, sig);
    // SAFETY: write(2) and raise(3) are async-signal-safe; the handler was
    // reset to the default by SA_RESETHAND, so raising the signal again
    // ends the process as the signal would have.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
        libc::raise(sig);
    }
}

/// Text into a fixed buffer, cut at its end.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, s: &str) {
        for b in s.bytes() {
            self.push(b);
        }
    }

    fn push(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    fn num(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for d in &digits[i..] {
            self.push(*d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_the_job_the_signal_what_it_did_and_the_last_committed_epoch() {
        let mut buf = [0u8; 512];
        let len = line(&mut buf, libc::SIGSEGV);
        assert!(std::str::from_utf8(&buf[..len])
            .unwrap()
            .contains(" died of signal 11 (SIGSEGV) while "));
        let _ = JOB.set("bank".into());
        doing(Doing::Committing);
        committed(1234);
        let len = line(&mut buf, libc::SIGSEGV);
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "jobctl: job bank died of signal 11 (SIGSEGV) while committing an epoch; the last epoch it committed is 1234; a start resumes after the last committed epoch\n"
        );
        let mut short = [0u8; 16];
        assert_eq!(line(&mut short, libc::SIGBUS), 16);
    }
}

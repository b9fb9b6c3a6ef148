//! SIGINT and SIGTERM (issue 12): a signal never kills the tool mid-step. [`install`] routes both
//! to a thread (`signal-hook`) that records them; the tool looks at [`pending`] between steps and
//! finishes or undoes the current one to a safe state, releases the lock, closes the SSH master,
//! removes its private directory, and exits `128 + signal` (130 for SIGINT, 143 for SIGTERM; the
//! shell convention, POSIX 2.8.2). A second signal (GitHub Actions sends SIGINT, then SIGTERM 7.5 s
//! later, then SIGKILL) also cuts the remote command in flight short ([`generation`]).

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// The first signal received (0: none).
static FIRST: AtomicI32 = AtomicI32::new(0);
/// How many signals were received.
static COUNT: AtomicU32 = AtomicU32::new(0);

/// Routes SIGINT and SIGTERM to [`pending`] for the rest of the process (idempotent). Without it
/// (unit tests) both keep their default action.
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    ONCE.call_once(
        || match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
            Ok(mut signals) => {
                std::thread::spawn(move || {
                    for sig in signals.forever() {
                        let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
                        COUNT.fetch_add(1, Ordering::SeqCst);
                        eprintln!(
                            "\n!!! {} received: {}",
                            name(sig),
                            if COUNT.load(Ordering::SeqCst) == 1 {
                                "finishing or undoing the current step, then stopping"
                            } else {
                                "cutting the command in flight short"
                            }
                        );
                    }
                });
            }
            Err(e) => result = Err(e),
        },
    );
    result
}

/// The first signal received, if any (a `libc` signal number).
pub fn pending() -> Option<i32> {
    #[cfg(test)]
    let first = TEST.with(|t| t.get().0);
    #[cfg(not(test))]
    let first = FIRST.load(Ordering::SeqCst);
    match first {
        0 => None,
        s => Some(s),
    }
}

/// How many signals were received: a command started at generation `g` is cut short when it
/// changes (the second and later signals).
pub fn generation() -> u32 {
    #[cfg(test)]
    return TEST.with(|t| t.get().1);
    #[cfg(not(test))]
    COUNT.load(Ordering::SeqCst)
}

/// The exit code for `sig`: `128 + sig` (130 SIGINT, 143 SIGTERM).
pub fn exit_code(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(128)
}

/// `SIGINT`, `SIGTERM`, or `signal N`.
pub fn name(sig: i32) -> String {
    match sig {
        signal_hook::consts::SIGINT => "SIGINT".into(),
        signal_hook::consts::SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
thread_local! {
    /// Unit tests run in parallel threads: each sees only the signals it simulates.
    static TEST: std::cell::Cell<(i32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// For tests: as if `sig` had been received (by this thread only).
#[cfg(test)]
pub fn simulate(sig: i32) {
    TEST.with(|t| {
        let (first, n) = t.get();
        t.set((if first == 0 { sig } else { first }, n + 1));
    });
}

/// For tests: forget this thread's simulated signals.
#[cfg(test)]
pub fn reset() {
    TEST.with(|t| t.set((0, 0)));
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(super::exit_code(signal_hook::consts::SIGINT), 130);
        assert_eq!(super::exit_code(signal_hook::consts::SIGTERM), 143);
        assert_eq!(super::name(15), "SIGTERM");
    }
}

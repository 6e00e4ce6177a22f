//! The one panic guard every `extern "C"` entry point goes through, in the manner of PyO3's trampoline.
//!
//! A panic must never unwind into FreeSWITCH: the guard catches it, logs which entry point failed and why,
//! counts it, and hands back the failure value the caller chose (a failure status, or "fail only this
//! call"). A trap armed around the whole call aborts the process if anything still unwinds past the guard
//! (say, a panic while logging the first one): an abort with a message is better than undefined behaviour in
//! C frames. (Since Rust 1.81 an unwind out of an `extern "C"` function aborts too; the trap makes the
//! intent explicit and names the entry point.)

use std::any::Any;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

/// Panics caught since the library was loaded; shown by `rtc_core status`.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// How many panics the guard has contained.
pub fn panics_caught() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Runs `f` for the entry point `entry`; on a panic, logs it and returns `on_panic()`.
///
/// `f` is treated as unwind-safe: the module's shared state is atomics and poison-tolerant mutexes, which
/// stay consistent when a holder panics.
#[track_caller]
pub fn entry<R>(entry: &'static str, on_panic: impl FnOnce() -> R, f: impl FnOnce() -> R) -> R {
    let site = Location::caller();
    let trap = AbortIfUnwinding(entry);
    let result = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "panic in {entry} (entry point at {}:{}): {} — contained; this call failed, FreeSWITCH carries on. \
                 Please report it with the log lines above.",
                site.file(),
                site.line(),
                payload_text(payload.as_ref())
            );
            on_panic()
        }
    };
    std::mem::forget(trap);
    result
}

fn payload_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-text panic payload)"
    }
}

/// Armed for the duration of an entry point; defused with `mem::forget` on the normal path. Dropped only
/// while unwinding past the guard, where it aborts.
struct AbortIfUnwinding(&'static str);

impl Drop for AbortIfUnwinding {
    fn drop(&mut self) {
        eprintln!(
            "mod_rtc_core: a panic escaped the guard of {}; aborting",
            self.0
        );
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_or_the_failure_value() {
        assert_eq!(entry("ok", || 1, || 7), 7);
        let before = panics_caught();
        assert_eq!(entry("boom", || 1, || panic!("boom")), 1);
        assert_eq!(panics_caught(), before + 1);
        let owned = entry(
            "owned",
            || "failed".to_string(),
            || panic!("{}", String::from("x")),
        );
        assert_eq!(owned, "failed");
    }
}

//! The `log` crate, bridged to FreeSWITCH's log: `log::info!` in the module or the engine shows in fs_cli and
//! freeswitch.log with its Rust file and line.
//!
//! Like ngx-rust's logger, the text is formatted in Rust and handed to FreeSWITCH as the argument of a fixed
//! `"%s"` format (in the shim), so a `%` in a caller number or an error message is never read as a format.
//! `switch_log_printf` is thread-safe and queues the line, so any thread may log; nothing else of FreeSWITCH is
//! called from threads FreeSWITCH did not give us.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

use freeswitch_sys::{SWITCH_LOG_DEBUG, SWITCH_LOG_ERROR, SWITCH_LOG_INFO, SWITCH_LOG_WARNING};

use crate::shim;

/// The logger; stateless, so one static serves every load of the module.
struct FreeSwitchLogger;

static LOGGER: FreeSwitchLogger = FreeSwitchLogger;

/// Whether the bridge may call FreeSWITCH: true between load and the end of shutdown.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Routes `log` records to FreeSWITCH from now on, at `level` and below.
pub fn install(level: log::LevelFilter) {
    // A second load in the same process finds the logger already set (the library stayed mapped): fine, it is
    // this same static.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    ENABLED.store(true, Ordering::Release);
}

/// Stops calling FreeSWITCH; called last in shutdown, after every thread of ours has been joined.
pub fn uninstall() {
    log::set_max_level(log::LevelFilter::Off);
    ENABLED.store(false, Ordering::Release);
}

/// FreeSWITCH's level for a `log` level. Trace maps to DEBUG too: FreeSWITCH's finer debug levels are numbered
/// above DEBUG and hidden by default consoles.
fn fs_level(level: log::Level) -> freeswitch_sys::switch_log_level_t {
    match level {
        log::Level::Error => SWITCH_LOG_ERROR,
        log::Level::Warn => SWITCH_LOG_WARNING,
        log::Level::Info => SWITCH_LOG_INFO,
        log::Level::Debug | log::Level::Trace => SWITCH_LOG_DEBUG,
    }
}

/// A C string of `text`, with any NUL replaced so nothing is cut short.
pub fn c_text(text: impl Into<Vec<u8>>) -> CString {
    let mut bytes = text.into();
    for b in bytes.iter_mut().filter(|b| **b == 0) {
        *b = b' ';
    }
    // No NUL is left.
    CString::new(bytes).unwrap_or_default()
}

impl log::Log for FreeSwitchLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level() && ENABLED.load(Ordering::Acquire)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = c_text(format!("{}\n", record.args()));
        let file = c_text(record.file().unwrap_or("mod_rtc_core"));
        let func = c_text(record.module_path().unwrap_or(record.target()));
        let line = record.line().unwrap_or(0) as i32;
        // SAFETY: all three strings are NUL-terminated and live across the call; switch_log_printf copies what it
        // keeps and is safe to call from any thread while the module is loaded (ENABLED).
        unsafe {
            shim::rtc_log(
                fs_level(record.level()),
                file.as_ptr(),
                func.as_ptr(),
                line,
                text.as_ptr(),
            )
        };
    }

    fn flush(&self) {}
}

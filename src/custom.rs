//! The CUSTOM events the module raises (`rtc_core::low_balance`, `rtc_core::fraud`): their subclasses reserved at load and freed at
//! unload, as FreeSWITCH asks of a module that fires its own, and the firing itself.
//!
//! Header names and values are our own text (numbers, partner names) handed to FreeSWITCH as plain strings, which it
//! copies: nothing here is ever read as a format. Firing is for the engine thread (call control) or a thread
//! FreeSWITCH gave us; reserving and freeing happen in load and shutdown.

use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

use freeswitch_sys::{SWITCH_STATUS_INUSE, SWITCH_STATUS_SUCCESS, switch_status_t};

use crate::logging::c_text;
use crate::shim;
use crate::state::MODULE_NAME;

/// `rtc_core::low_balance` ([`rtc_engine::control::LowBalance::SUBCLASS`]).
pub const LOW_BALANCE: &CStr = c"rtc_core::low_balance";

/// `rtc_core::fraud` ([`rtc_engine::control::FraudAlert::SUBCLASS`]).
pub const FRAUD: &CStr = c"rtc_core::fraud";

/// Every subclass the module fires, reserved at load.
pub const SUBCLASSES: [&CStr; 2] = [LOW_BALANCE, FRAUD];

/// Whether this load reserved `SUBCLASSES[i]` (and so frees it at unload).
static RESERVED: [AtomicBool; SUBCLASSES.len()] =
    [const { AtomicBool::new(false) }; SUBCLASSES.len()];

/// Reserves every subclass in [`SUBCLASSES`] for the module. One held by another owner is not ours to free; the
/// module fires it all the same and says so.
pub fn reserve() {
    for (subclass, reserved) in SUBCLASSES.iter().zip(&RESERVED) {
        // SAFETY: both are static NUL-terminated strings (FreeSWITCH copies them); called from load.
        let status = unsafe { shim::rtc_reserve_subclass(MODULE_NAME.as_ptr(), subclass.as_ptr()) };
        reserved.store(status == SWITCH_STATUS_SUCCESS, Ordering::Relaxed);
        match status {
            SWITCH_STATUS_SUCCESS => {}
            SWITCH_STATUS_INUSE => log::warn!(
                "CUSTOM event subclass {} is reserved by another module; mod_rtc_core fires it all the same (look for \
                 a module that raises events by that name)",
                subclass.to_string_lossy()
            ),
            other => log::warn!(
                "FreeSWITCH could not reserve CUSTOM event subclass {} (status {other}); it is fired all the same",
                subclass.to_string_lossy()
            ),
        }
    }
}

/// Frees the subclasses [`reserve`] reserved, after the last event was fired (the engine has stopped).
pub fn release() {
    for (subclass, reserved) in SUBCLASSES.iter().zip(&RESERVED) {
        if !reserved.swap(false, Ordering::Relaxed) {
            continue;
        }
        // SAFETY: both are static NUL-terminated strings; called from shutdown or a failed load.
        let status = unsafe { shim::rtc_free_subclass(MODULE_NAME.as_ptr(), subclass.as_ptr()) };
        if status != SWITCH_STATUS_SUCCESS {
            // FreeSWITCH keeps a subclass an event-socket listener subscribed to, for that listener.
            log::debug!(
                "CUSTOM event subclass {} left to the listeners subscribed to it (status {status})",
                subclass.to_string_lossy()
            );
        }
    }
}

/// Fires a CUSTOM event of `subclass` with `headers` (after the Event-Subclass header FreeSWITCH adds), in order.
pub fn fire(subclass: &CStr, headers: &[(&str, String)]) -> Result<(), switch_status_t> {
    let names: Vec<CString> = headers.iter().map(|(n, _)| c_text(*n)).collect();
    let values: Vec<CString> = headers.iter().map(|(_, v)| c_text(v.as_str())).collect();
    let names_p: Vec<*const c_char> = names.iter().map(|s| s.as_ptr()).collect();
    let values_p: Vec<*const c_char> = values.iter().map(|s| s.as_ptr()).collect();
    let n = c_int::try_from(names_p.len()).map_err(|_| freeswitch_sys::SWITCH_STATUS_GENERR)?;
    // SAFETY: `subclass` is NUL-terminated; both arrays hold `n` NUL-terminated strings that outlive the call, and
    // FreeSWITCH copies every header before it returns.
    let status =
        unsafe { shim::rtc_fire_custom(subclass.as_ptr(), names_p.as_ptr(), values_p.as_ptr(), n) };
    if status == SWITCH_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subclass_is_the_engines() {
        assert_eq!(
            LOW_BALANCE.to_str(),
            Ok(rtc_engine::control::LowBalance::SUBCLASS)
        );
        assert_eq!(
            FRAUD.to_str(),
            Ok(rtc_engine::control::FraudAlert::SUBCLASS)
        );
    }
}

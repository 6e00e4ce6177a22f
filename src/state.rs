//! What lives while the module is loaded: the running engine and the event bindings, between `load` and
//! `shutdown` ([`crate::module`]), and the ways the API, the app and the metrics endpoint reach it
//! ([`handle`], [`reload`]).

use std::ffi::{CStr, c_char};
use std::ptr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use freeswitch_sys::SWITCH_STATUS_SUCCESS;

use crate::events::EventBindings;
use crate::host::{HostHandle, Running};
use crate::{conf, events, shim};

/// The module's name, as FreeSWITCH knows it (`load mod_rtc_core`).
pub const MODULE_NAME: &CStr = c"mod_rtc_core";

/// What exists between a successful load and shutdown.
pub(crate) struct Loaded {
    /// The engine, its services and runtime; its handle is cloned out for the API and the app (never used
    /// under the lock).
    pub(crate) running: Running,
    /// The event bindings to remove first at shutdown.
    pub(crate) bindings: EventBindings,
}

/// The loaded state. A mutex is fine here: only load, shutdown and each API/app call take it, briefly; the event
/// handler never does (it has its own lock-free slot, [`events::INTAKE`]).
static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

/// The loaded state, locked (briefly: never across a wait on the engine, except reload's bounded one).
pub(crate) fn loaded() -> MutexGuard<'static, Option<Loaded>> {
    // A panic while holding the lock leaves the Option itself consistent.
    LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A handle to the running engine, or `None` while not loaded.
pub fn handle() -> Option<HostHandle> {
    loaded().as_ref().map(|l| l.running.handle().clone())
}

/// Has FreeSWITCH re-read its XML files (as `reloadxml` does), re-reads the configuration and offers it to the
/// running engine (`rtc_core reload`).
pub fn reload(timeout: Duration) -> Result<String, String> {
    let mut err: *const c_char = ptr::null();
    // SAFETY: `err` receives a static string or stays null; called from an API thread FreeSWITCH gave us.
    let status = unsafe { shim::rtc_xml_reload(&mut err) };
    if status != SWITCH_STATUS_SUCCESS {
        let why = if err.is_null() {
            String::from("no reason given")
        } else {
            // SAFETY: FreeSWITCH's error messages are static NUL-terminated strings.
            unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!(
            "FreeSWITCH could not re-read its XML configuration ({why}); nothing changed"
        ));
    }
    let config = conf::read_config().map_err(|e| e.to_string())?;
    let mut state = loaded();
    let Some(l) = state.as_mut() else {
        return Err("mod_rtc_core is not running".into());
    };
    let before = l.running.handle().proxy.clone();
    let answer = l
        .running
        .reload(config, timeout)
        .map_err(|e| e.to_string())?;
    let h = l.running.handle();
    if h.proxy != before {
        // The event handler's copy: swapped in its slot, the old one freed once no handler uses it.
        events::INTAKE.install(h.engine.clone(), h.proxy.clone());
    }
    Ok(answer)
}

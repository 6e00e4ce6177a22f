//! The module's life: the exported function table, `load` and `shutdown`.
//!
//! Load: create the module interface, read `rtc_core.conf.xml` (as FreeSWITCH resolved it, relative table paths
//! under its conf directory), reserve the CUSTOM event subclasses the module fires, start the engine (runtime,
//! ledger — `rtc_core.db` in FreeSWITCH's db directory unless the configuration places it — services, engine
//! thread), install the event intake, bind the channel events (removable bindings), register the API and the app. A
//! configuration error, or a ledger that will not open, fails the load with the message (file, line or ledger file,
//! what to change) in FreeSWITCH's log.
//!
//! Shutdown undoes it in reverse: unbind (FreeSWITCH waits for deliveries in progress), remove the intake (we
//! wait for handlers still inside), stop the engine — it settles its live calls: those still in setup are hung up
//! with the `shutdown` cause, connected ones are billed up to now and left up — then the service layer, the ledger's
//! writer and the `rtc-io` runtime, joining every thread, free the event subclasses, stop logging, and only then
//! return, because FreeSWITCH may unmap the library right after.

use std::ffi::{CStr, c_char, c_void};
use std::path::PathBuf;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use freeswitch_sys as fs;
use fs::{SWITCH_STATUS_GENERR, SWITCH_STATUS_MEMERR, SWITCH_STATUS_SUCCESS, switch_status_t};
use rtc_host::HostError;
use rtc_services::local::LocalError;

use crate::control::FsCallControl;
use crate::events::{self, INTAKE};
use crate::host::{HostHandle, Running};
use crate::{api, app, custom, guard, logging, shim};

/// The module's name, as FreeSWITCH knows it (`load mod_rtc_core`).
pub const MODULE_NAME: &CStr = c"mod_rtc_core";
/// The configuration FreeSWITCH resolves to `autoload_configs/rtc_core.conf.xml`.
pub const CONFIG_FILE: &CStr = c"rtc_core.conf";
/// How long shutdown gives the service layer to deliver settlements in flight and the runtime to stop (the
/// engine's own bound is its `shutdown-grace` setting).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The table FreeSWITCH looks up by name (`<module>_module_interface`) right after dlopen.
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static mod_rtc_core_module_interface: fs::switch_loadable_module_function_table_t =
    fs::switch_loadable_module_function_table_t {
        switch_api_version: fs::API_VERSION,
        load: Some(load_entry),
        shutdown: Some(shutdown_entry),
        // No runtime thread: the engine runs its own, which shutdown joins.
        runtime: None,
        // SMODF_NONE: the module's symbols stay local to it.
        flags: 0,
    };

/// What exists between a successful load and shutdown.
struct Loaded {
    /// The engine, its services and runtime; its handle is cloned out for the API and the app (never used
    /// under the lock).
    running: Running,
    /// The event bindings to remove first at shutdown.
    bindings: EventBindings,
}

/// The loaded state. A mutex is fine here: only load, shutdown and each API/app call take it, briefly; the event
/// handler never does (it has its own lock-free slot, [`events::INTAKE`]).
static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

fn loaded() -> MutexGuard<'static, Option<Loaded>> {
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
    let config = read_config().map_err(|e| e.to_string())?;
    let mut state = loaded();
    let Some(l) = state.as_mut() else {
        return Err("mod_rtc_core is not running".into());
    };
    l.running.reload(config, timeout).map_err(|e| e.to_string())
}

/// FreeSWITCH's configuration directory (`SWITCH_GLOBAL_dirs.conf_dir`).
pub fn conf_dir() -> Option<PathBuf> {
    // SAFETY: FreeSWITCH sets the directories before loading any module and never frees them.
    directory(unsafe { shim::rtc_conf_dir() })
}

/// FreeSWITCH's database directory (`SWITCH_GLOBAL_dirs.db_dir`, its `-db` option): where the ledger goes.
pub fn db_dir() -> Option<PathBuf> {
    // SAFETY: as for conf_dir.
    directory(unsafe { shim::rtc_db_dir() })
}

/// One of `SWITCH_GLOBAL_dirs`' paths (null or empty: not set).
fn directory(dir: *const c_char) -> Option<PathBuf> {
    if dir.is_null() {
        return None;
    }
    // SAFETY: non-null: a NUL-terminated path string FreeSWITCH keeps for its life.
    let dir = unsafe { CStr::from_ptr(dir) }.to_string_lossy();
    (!dir.is_empty()).then(|| PathBuf::from(dir.into_owned()))
}

/// Where the ledger goes when the configuration does not place it: FreeSWITCH's db directory. Without one, a ledger
/// that would go there (the default, or a relative `ledger` path) is refused rather than kept in memory, where every
/// balance would be lost at unload.
fn ledger_dir(config: &rtc_config::RtcConfig) -> Result<Option<PathBuf>, String> {
    use rtc_config::local::LedgerPlace;
    let dir = db_dir();
    let needs_dir = match &config.local.ledger {
        LedgerPlace::HostDefault => true,
        LedgerPlace::File(path) => path.is_relative(),
        LedgerPlace::Memory => false,
    };
    if dir.is_none() && needs_dir && config.any_local() {
        return Err(
            "FreeSWITCH has no db directory (SWITCH_GLOBAL_dirs.db_dir is not set), where the ledger rtc_core.db \
             goes: start FreeSWITCH with one (-db <dir>), or set <local> param ledger to an absolute file path"
                .into(),
        );
    }
    Ok(dir)
}

/// Why `rtc_core.conf.xml` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot open rtc_core.conf (autoload_configs/rtc_core.conf.xml is missing or not well-formed XML; FreeSWITCH \
         logged the parse error above): install conf/autoload_configs/rtc_core.conf.xml with scripts/install.sh"
    )]
    Missing,
    #[error("FreeSWITCH could not print rtc_core.conf (out of memory)")]
    Memory,
    #[error("configuration rejected: {0}")]
    Invalid(String),
}

/// Reads `rtc_core.conf.xml` as FreeSWITCH resolved it and parses it, tables under FreeSWITCH's conf dir.
pub fn read_config() -> Result<rtc_config::RtcConfig, ConfigError> {
    let xml = read_config_xml()?;
    let dir = conf_dir().unwrap_or_else(|| PathBuf::from("."));
    crate::host::parse_config(&xml, &dir).map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// The text of the `<configuration>` element of `rtc_core.conf.xml` as FreeSWITCH resolved it.
pub fn read_config_xml() -> Result<String, ConfigError> {
    unsafe extern "C" fn sink(user: *mut c_void, text: *const c_char) {
        guard::entry(
            "configuration reader",
            || (),
            || {
                // SAFETY: `user` is the &mut Option<String> passed below, alive for the whole rtc_config_xml call.
                let out = unsafe { &mut *user.cast::<Option<String>>() };
                if !text.is_null() {
                    // SAFETY: the shim passes a NUL-terminated string valid during this call.
                    *out = Some(
                        unsafe { CStr::from_ptr(text) }
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            },
        )
    }
    let mut out: Option<String> = None;
    // SAFETY: CONFIG_FILE is NUL-terminated; `sink` only runs during the call and gets our `out`.
    let status = unsafe {
        shim::rtc_config_xml(
            CONFIG_FILE.as_ptr(),
            Some(sink),
            (&raw mut out).cast::<c_void>(),
        )
    };
    match (status, out) {
        (SWITCH_STATUS_SUCCESS, Some(xml)) => Ok(xml),
        (SWITCH_STATUS_MEMERR, _) => Err(ConfigError::Memory),
        _ => Err(ConfigError::Missing),
    }
}

/// The module's removable event bindings.
struct EventBindings {
    /// One node per bound event type, as `switch_event_bind_removable` filled them.
    nodes: Vec<NonNull<fs::switch_event_node_t>>,
}

// SAFETY: the nodes are tokens FreeSWITCH hands back to switch_event_unbind; they are only touched under the
// LOADED mutex, from load and shutdown.
unsafe impl Send for EventBindings {}

impl EventBindings {
    /// Binds every channel event the engine follows; on failure, unbinds what was bound.
    fn bind() -> Result<EventBindings, String> {
        let mut bindings = EventBindings {
            nodes: Vec::with_capacity(events::BOUND.len()),
        };
        for (event_type, kind) in events::BOUND {
            let mut node: *mut fs::switch_event_node_t = ptr::null_mut();
            // SAFETY: the id is a static C string (FreeSWITCH copies it), a null subclass means any, the
            // callback is our guarded handler, and `node` receives the binding token.
            let status = unsafe {
                fs::switch_event_bind_removable(
                    MODULE_NAME.as_ptr(),
                    event_type,
                    ptr::null(),
                    Some(events::on_event),
                    ptr::null_mut(),
                    &mut node,
                )
            };
            match NonNull::new(node) {
                Some(node) if status == SWITCH_STATUS_SUCCESS => bindings.nodes.push(node),
                _ => {
                    bindings.unbind();
                    return Err(format!("cannot bind {} (status {status})", kind.name()));
                }
            }
        }
        Ok(bindings)
    }

    /// Removes every binding. FreeSWITCH's unbind waits for deliveries in progress.
    fn unbind(&mut self) {
        for node in self.nodes.drain(..).rev() {
            let mut raw = node.as_ptr();
            // SAFETY: `raw` is a token from switch_event_bind_removable, unbound exactly once.
            let status = unsafe { fs::switch_event_unbind(&mut raw) };
            if status != SWITCH_STATUS_SUCCESS {
                log::warn!("switch_event_unbind returned status {status}");
            }
        }
    }
}

unsafe extern "C" fn load_entry(
    module_interface: *mut *mut fs::switch_loadable_module_interface_t,
    pool: *mut fs::switch_memory_pool_t,
) -> switch_status_t {
    guard::entry(
        "module load",
        || SWITCH_STATUS_GENERR,
        || load(module_interface, pool),
    )
}

unsafe extern "C" fn shutdown_entry() -> switch_status_t {
    guard::entry("module shutdown", || SWITCH_STATUS_GENERR, shutdown)
}

fn load(
    module_interface: *mut *mut fs::switch_loadable_module_interface_t,
    pool: *mut fs::switch_memory_pool_t,
) -> switch_status_t {
    logging::install(log::LevelFilter::Info);
    events::STATS.reset();
    if module_interface.is_null() {
        log::error!("mod_rtc_core load: FreeSWITCH passed no module interface slot");
        return SWITCH_STATUS_GENERR;
    }
    let mut state = loaded();
    if state.is_some() {
        log::error!("mod_rtc_core is already loaded; unload it first");
        return SWITCH_STATUS_GENERR;
    }

    // SAFETY: `pool` is the module's pool FreeSWITCH passes to load; the name is a static C string.
    let mi =
        unsafe { fs::switch_loadable_module_create_module_interface(pool, MODULE_NAME.as_ptr()) };
    if mi.is_null() {
        log::error!("mod_rtc_core load: FreeSWITCH could not allocate the module interface");
        return SWITCH_STATUS_MEMERR;
    }
    // SAFETY: checked non-null above; FreeSWITCH reads the interface back from this slot.
    unsafe { *module_interface = mi };

    let config = match read_config() {
        Ok(c) => c,
        Err(e) => {
            log::error!("mod_rtc_core not loaded: {e}");
            return SWITCH_STATUS_GENERR;
        }
    };
    log::set_max_level(config.log_level);
    let origin = config.origin.clone();
    let ledger_dir = match ledger_dir(&config) {
        Ok(dir) => dir,
        Err(e) => {
            log::error!("mod_rtc_core not loaded: {e}");
            return SWITCH_STATUS_GENERR;
        }
    };
    // Before the engine starts: it may raise them as soon as it runs.
    custom::reserve();
    let running = match Running::start(config, Box::new(FsCallControl), ledger_dir) {
        Ok(r) => r,
        Err(e) => {
            // A ledger that would not open names its file and what is wrong (locked, not a ledger, newer schema);
            // the operator also needs to know where that file comes from.
            let hint = match &e {
                HostError::Local(LocalError::Ledger(_)) => {
                    " (the ledger's file is <local> param ledger; empty: rtc_core.db in FreeSWITCH's db directory)"
                }
                _ => "",
            };
            log::error!("mod_rtc_core not loaded: {origin}: {e}{hint}");
            custom::release();
            return SWITCH_STATUS_GENERR;
        }
    };
    INTAKE.install(running.handle().engine.clone());
    events::init_reader();
    let bindings = match EventBindings::bind() {
        Ok(b) => b,
        Err(e) => {
            log::error!("mod_rtc_core not loaded: {e}");
            INTAKE.remove();
            running.shutdown(SHUTDOWN_GRACE);
            custom::release();
            return SWITCH_STATUS_GENERR;
        }
    };

    // SAFETY: `mi` is the interface created above; every string is static, as FreeSWITCH keeps the pointers.
    let api_status = unsafe {
        shim::rtc_add_api(
            mi,
            api::NAME.as_ptr(),
            api::DESCRIPTION.as_ptr(),
            Some(api::entry),
            api::SYNTAX.as_ptr(),
        )
    };
    // SAFETY: as above.
    let app_status = unsafe {
        shim::rtc_add_app(
            mi,
            app::NAME.as_ptr(),
            app::SHORT_DESC.as_ptr(),
            app::LONG_DESC.as_ptr(),
            Some(app::entry),
            app::SYNTAX.as_ptr(),
        )
    };
    *state = Some(Loaded { running, bindings });
    if api_status != SWITCH_STATUS_SUCCESS || app_status != SWITCH_STATUS_SUCCESS {
        log::error!(
            "mod_rtc_core not loaded: FreeSWITCH could not allocate the API or app interface"
        );
        drop(state);
        shutdown();
        return SWITCH_STATUS_MEMERR;
    }
    log::info!(
        "mod_rtc_core loaded: configuration {origin} ({} headers)",
        if fs::USING_STUB { "stub" } else { "FreeSWITCH" }
    );
    SWITCH_STATUS_SUCCESS
}

fn shutdown() -> switch_status_t {
    let Some(mut l) = loaded().take() else {
        return SWITCH_STATUS_SUCCESS;
    };
    l.bindings.unbind();
    drop(INTAKE.remove());
    let report = l.running.shutdown(SHUTDOWN_GRACE);
    // The engine has stopped: nothing fires our events any more.
    custom::release();
    log::info!(
        "mod_rtc_core unloaded in {} ms: {} queued events applied, {} live calls settled{}{}",
        report.took_ms,
        report.engine.drained_events,
        report.engine.settled_calls,
        if report.engine.abandoned {
            " (queue not drained within shutdown-grace)"
        } else {
            ""
        },
        if report.runtime_stopped {
            ""
        } else {
            "; a runtime thread did not stop in time"
        }
    );
    logging::uninstall();
    SWITCH_STATUS_SUCCESS
}

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
//!
//! What exists between the two is [`crate::state`]'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use freeswitch_sys as fs;
use fs::{SWITCH_STATUS_GENERR, SWITCH_STATUS_MEMERR, SWITCH_STATUS_SUCCESS, switch_status_t};
use rtc_host::HostError;
use rtc_services::local::LocalError;

use crate::conf::{db_dir, log_dir, read_config};
use crate::control::FsCallControl;
use crate::events::{self, EventBindings, INTAKE};
use crate::host::Running;
use crate::state::{Loaded, MODULE_NAME, loaded};
use crate::{api, app, custom, guard, logging, shim};

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

/// Where the ledger goes when the configuration does not place it: FreeSWITCH's db directory. Without one, a ledger
/// that would go there (the default, or a relative `ledger` path) is refused rather than kept in memory, where every
/// balance would be lost at unload.
fn ledger_dir(config: &rtc_config::RtcConfig) -> Result<Option<PathBuf>, String> {
    use rtc_config::local::LedgerPlace;
    let dir = db_dir();
    let needs_dir = match &config.local.ledger {
        LedgerPlace::HostDefault => true,
        LedgerPlace::File(path) => path.is_relative(),
        LedgerPlace::Memory | LedgerPlace::Postgres(_) => false,
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
    let running = match Running::start(
        config,
        Box::new(FsCallControl),
        ledger_dir,
        log_dir(),
        Arc::new(api::metrics_page),
    ) {
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
    INTAKE.install(
        running.handle().engine.clone(),
        running.handle().proxy.clone(),
    );
    events::init_reader(running.handle().proxy.as_ref().map(|p| &p.header));
    let bindings = match EventBindings::bind(MODULE_NAME) {
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

//! A fake FreeSWITCH core for testing `mod_rtc_core.so` without FreeSWITCH.
//!
//! # Layout
//! - `fakehost.c`: the switch_* functions the module imports, plus `fakehost_*` control functions.
//! - [`FakeHost`]: loads `libfakehost.so` RTLD_GLOBAL (as FreeSWITCH's core library is) and drives it.
//! - [`Module`]: dlopens the module, checks its function table, calls load and shutdown like FreeSWITCH.
//!
//! The fake core keeps global state (one "FreeSWITCH" per process), so tests that use it serialise on
//! [`FakeHost::lock`].

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW, Symbol};

/// Path of the fake core built by this crate's build script.
pub const FAKEHOST_SO: &str = env!("FAKEHOST_SO");

/// The fake core, loaded once per process.
pub struct FakeHost {
    /// Kept loaded for the life of the process: the module's imports resolve into it.
    lib: Library,
}

/// The module's exported table, as FreeSWITCH reads it.
#[repr(C)]
pub struct FunctionTable {
    /// `SWITCH_API_VERSION` the module was built with.
    pub api_version: c_int,
    /// `load(module_interface **, pool *)`.
    pub load: Option<unsafe extern "C" fn(*mut *mut c_void, *mut c_void) -> u32>,
    /// `shutdown(void)`.
    pub shutdown: Option<unsafe extern "C" fn() -> u32>,
    /// `runtime(void)`.
    pub runtime: Option<unsafe extern "C" fn() -> u32>,
    /// Module flags.
    pub flags: u32,
}

static HOST: OnceLock<FakeHost> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

fn c(s: &str) -> CString {
    CString::new(s).expect("test strings have no NUL")
}

impl FakeHost {
    /// The process's fake core, loading it on first use.
    pub fn get() -> &'static FakeHost {
        HOST.get_or_init(|| {
            // SAFETY: the fake core has no initialisers beyond static mutexes.
            let lib = unsafe { Library::open(Some(FAKEHOST_SO), RTLD_NOW | RTLD_GLOBAL) }
                .unwrap_or_else(|e| panic!("cannot load the fake host {FAKEHOST_SO}: {e}"));
            FakeHost { lib }
        })
    }

    /// Serialises tests that share the fake core.
    pub fn lock() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sym<T>(&self, name: &str) -> Symbol<T> {
        // SAFETY: each caller names a fakehost_* function with the type it has in fakehost.c.
        unsafe { self.lib.get(name.as_bytes()) }
            .unwrap_or_else(|e| panic!("fake host lacks {name}: {e}"))
    }

    fn take_string(&self, p: *mut c_char) -> Option<String> {
        if p.is_null() {
            return None;
        }
        // SAFETY: the fake core returns malloc'd NUL-terminated strings, freed here once.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        let free: Symbol<unsafe extern "C" fn(*mut c_void)> = self.sym("fakehost_free");
        // SAFETY: p came from the fake core's malloc.
        unsafe { free(p.cast()) };
        Some(s)
    }

    /// Sets configuration `name` (e.g. `rtc_core.conf`); `None` makes it missing.
    pub fn set_config(&self, name: &str, text: Option<&str>) {
        let f: Symbol<unsafe extern "C" fn(*const c_char, *const c_char)> =
            self.sym("fakehost_set_config");
        let text = text.map(c);
        // SAFETY: both strings are NUL-terminated; the fake copies them.
        unsafe {
            f(
                c(name).as_ptr(),
                text.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            )
        };
    }

    /// Live event bindings.
    pub fn bindings(&self) -> i32 {
        let f: Symbol<unsafe extern "C" fn() -> c_int> = self.sym("fakehost_bindings");
        // SAFETY: no arguments.
        unsafe { f() }
    }

    /// Delivers an event of `event_type` with these headers; returns the number of bindings that got it.
    pub fn fire(&self, event_type: u32, headers: &[(&str, &str)]) -> i32 {
        let f: Symbol<
            unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char, c_int) -> c_int,
        > = self.sym("fakehost_fire");
        let names: Vec<CString> = headers.iter().map(|(n, _)| c(n)).collect();
        let values: Vec<CString> = headers.iter().map(|(_, v)| c(v)).collect();
        let np: Vec<*const c_char> = names.iter().map(|s| s.as_ptr()).collect();
        let vp: Vec<*const c_char> = values.iter().map(|s| s.as_ptr()).collect();
        // SAFETY: the arrays hold `len` valid strings that outlive the call.
        unsafe {
            f(
                event_type as c_int,
                np.as_ptr(),
                vp.as_ptr(),
                np.len() as c_int,
            )
        }
    }

    /// Runs API `name` with `cmd`: `(status, output)`, or `None` when no such API is registered.
    pub fn api(&self, name: &str, cmd: &str) -> Option<(u32, String)> {
        let f: Symbol<
            unsafe extern "C" fn(*const c_char, *const c_char, *mut *mut c_char) -> c_int,
        > = self.sym("fakehost_api");
        let mut out = std::ptr::null_mut();
        // SAFETY: strings are NUL-terminated; `out` receives a malloc'd string.
        let status = unsafe { f(c(name).as_ptr(), c(cmd).as_ptr(), &mut out) };
        let text = self.take_string(out);
        u32::try_from(status)
            .ok()
            .map(|status| (status, text.unwrap_or_default()))
    }

    /// `"<description>|<syntax>"` of a registered API (`app = false`) or app (`app = true`).
    pub fn interface(&self, app: bool, name: &str) -> Option<String> {
        let f: Symbol<unsafe extern "C" fn(c_int, *const c_char) -> *mut c_char> =
            self.sym("fakehost_interface");
        // SAFETY: NUL-terminated name; the result is malloc'd or NULL.
        let p = unsafe { f(c_int::from(app), c(name).as_ptr()) };
        self.take_string(p)
    }

    /// Runs app `name` on session `uuid`; false when the app or session does not exist.
    pub fn app(&self, name: &str, uuid: &str, data: &str) -> bool {
        let f: Symbol<unsafe extern "C" fn(*const c_char, *const c_char, *const c_char) -> c_int> =
            self.sym("fakehost_app");
        // SAFETY: NUL-terminated strings.
        unsafe { f(c(name).as_ptr(), c(uuid).as_ptr(), c(data).as_ptr()) == 0 }
    }

    /// Creates a session.
    pub fn session_new(&self, uuid: &str) {
        let f: Symbol<unsafe extern "C" fn(*const c_char)> = self.sym("fakehost_session_new");
        // SAFETY: NUL-terminated string.
        unsafe { f(c(uuid).as_ptr()) }
    }

    /// Sets `SWITCH_GLOBAL_dirs.conf_dir` (`None`: unset).
    pub fn set_conf_dir(&self, dir: Option<&Path>) {
        let f: Symbol<unsafe extern "C" fn(*const c_char)> = self.sym("fakehost_set_conf_dir");
        let dir = dir.map(|d| c(&d.to_string_lossy()));
        // SAFETY: NUL-terminated string or NULL; the fake copies it.
        unsafe { f(dir.as_ref().map_or(std::ptr::null(), |d| d.as_ptr())) }
    }

    /// A fresh core for the next load: forgets sessions, the log and the events fired ([`FakeHost::reset`]), and
    /// sets `rtc_core.conf` to `config` (`None`: missing), the conf directory (where the tables are) and the db
    /// directory (where the ledger goes; `None`: unset).
    pub fn start_over(&self, config: Option<&str>, conf_dir: &Path, db_dir: Option<&Path>) {
        self.reset();
        self.set_config("rtc_core.conf", config);
        self.set_conf_dir(Some(conf_dir));
        self.set_db_dir(db_dir);
    }

    /// Sets `SWITCH_GLOBAL_dirs.db_dir` (`None`: unset), where the module keeps its ledger.
    pub fn set_db_dir(&self, dir: Option<&Path>) {
        let f: Symbol<unsafe extern "C" fn(*const c_char)> = self.sym("fakehost_set_db_dir");
        let dir = dir.map(|d| c(&d.to_string_lossy()));
        // SAFETY: NUL-terminated string or NULL; the fake copies it.
        unsafe { f(dir.as_ref().map_or(std::ptr::null(), |d| d.as_ptr())) }
    }

    /// Who reserved CUSTOM subclass `name`, or `None` when nobody holds it.
    pub fn subclass_owner(&self, name: &str) -> Option<String> {
        let f: Symbol<unsafe extern "C" fn(*const c_char) -> *mut c_char> =
            self.sym("fakehost_subclass_owner");
        // SAFETY: NUL-terminated string; malloc'd result or NULL.
        let p = unsafe { f(c(name).as_ptr()) };
        self.take_string(p)
    }

    /// The CUSTOM events of `subclass` fired since the last [`FakeHost::reset`], oldest first, each as its
    /// headers in order.
    pub fn fired(&self, subclass: &str) -> Vec<Vec<(String, String)>> {
        let f: Symbol<unsafe extern "C" fn(*const c_char) -> *mut c_char> =
            self.sym("fakehost_fired");
        // SAFETY: NUL-terminated string; malloc'd result.
        let p = unsafe { f(c(subclass).as_ptr()) };
        let text = self.take_string(p).unwrap_or_default();
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                e.lines()
                    .filter_map(|l| l.split_once(": "))
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }

    /// Sets session `uuid`'s caller profile (caller number, destination, network address; empty: none) and
    /// direction.
    pub fn session_profile(
        &self,
        uuid: &str,
        caller: &str,
        destination: &str,
        network_addr: &str,
        outbound: bool,
    ) {
        let f: Symbol<
            unsafe extern "C" fn(*const c_char, *const c_char, *const c_char, *const c_char, c_int),
        > = self.sym("fakehost_session_profile");
        // SAFETY: NUL-terminated strings; the fake copies them.
        unsafe {
            f(
                c(uuid).as_ptr(),
                c(caller).as_ptr(),
                c(destination).as_ptr(),
                c(network_addr).as_ptr(),
                c_int::from(outbound),
            )
        }
    }

    /// Makes the session's next bridges fail with `cause` (a FreeSWITCH cause name), or connect (`None`: the
    /// call then ends as after a completed bridge with `hangup_after_bridge`).
    pub fn bridge_fails(&self, uuid: &str, cause: Option<&str>) {
        let f: Symbol<unsafe extern "C" fn(*const c_char, *const c_char)> =
            self.sym("fakehost_session_bridge_fails");
        let cause = cause.map(c);
        // SAFETY: NUL-terminated strings or NULL.
        unsafe {
            f(
                c(uuid).as_ptr(),
                cause.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            )
        }
    }

    /// The applications executed on session `uuid`, one `app(arg)` per line.
    pub fn executed(&self, uuid: &str) -> String {
        let f: Symbol<unsafe extern "C" fn(*const c_char) -> *mut c_char> =
            self.sym("fakehost_session_executed");
        // SAFETY: NUL-terminated string; malloc'd result or NULL.
        let p = unsafe { f(c(uuid).as_ptr()) };
        self.take_string(p).unwrap_or_default()
    }

    /// Runs the applications queued on session `uuid` with `execute_application_async`, as a parked
    /// channel's loop would; returns how many ran.
    pub fn run_queued(&self, uuid: &str) -> i32 {
        let f: Symbol<unsafe extern "C" fn(*const c_char) -> c_int> =
            self.sym("fakehost_run_queued");
        // SAFETY: NUL-terminated string.
        unsafe { f(c(uuid).as_ptr()) }
    }

    /// Sets a channel variable of session `uuid`, as an endpoint would before the dialplan runs.
    pub fn set_var(&self, uuid: &str, name: &str, value: &str) {
        let f: Symbol<unsafe extern "C" fn(*const c_char, *const c_char, *const c_char)> =
            self.sym("fakehost_session_set_var");
        // SAFETY: NUL-terminated strings; the fake copies them.
        unsafe { f(c(uuid).as_ptr(), c(name).as_ptr(), c(value).as_ptr()) }
    }

    /// A channel variable of session `uuid`.
    pub fn var(&self, uuid: &str, name: &str) -> Option<String> {
        let f: Symbol<unsafe extern "C" fn(*const c_char, *const c_char) -> *mut c_char> =
            self.sym("fakehost_session_var");
        // SAFETY: NUL-terminated strings; malloc'd result or NULL.
        let p = unsafe { f(c(uuid).as_ptr(), c(name).as_ptr()) };
        self.take_string(p)
    }

    /// The session's hangup cause, `None` while it is up.
    pub fn hangup_cause(&self, uuid: &str) -> Option<i32> {
        let f: Symbol<unsafe extern "C" fn(*const c_char) -> c_int> =
            self.sym("fakehost_session_hangup_cause");
        // SAFETY: NUL-terminated string.
        let cause = unsafe { f(c(uuid).as_ptr()) };
        (cause >= 0).then_some(cause)
    }

    /// Read locks held on the session.
    pub fn session_locks(&self, uuid: &str) -> i32 {
        let f: Symbol<unsafe extern "C" fn(*const c_char) -> c_int> =
            self.sym("fakehost_session_locks");
        // SAFETY: NUL-terminated string.
        unsafe { f(c(uuid).as_ptr()) }
    }

    /// Log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> i32 {
        let f: Symbol<unsafe extern "C" fn(*const c_char) -> c_int> =
            self.sym("fakehost_log_count");
        // SAFETY: NUL-terminated string.
        unsafe { f(c(needle).as_ptr()) }
    }

    /// The whole log.
    pub fn log(&self) -> String {
        let f: Symbol<unsafe extern "C" fn() -> *mut c_char> = self.sym("fakehost_log_dump");
        // SAFETY: malloc'd result.
        let p = unsafe { f() };
        self.take_string(p).unwrap_or_default()
    }

    /// Frees the module's interfaces, as FreeSWITCH does once a module's shutdown returned.
    pub fn module_destroyed(&self) {
        let f: Symbol<unsafe extern "C" fn()> = self.sym("fakehost_module_destroyed");
        // SAFETY: no arguments.
        unsafe { f() }
    }

    /// Forgets sessions and log lines.
    pub fn reset(&self) {
        let f: Symbol<unsafe extern "C" fn()> = self.sym("fakehost_reset");
        // SAFETY: no arguments.
        unsafe { f() }
    }
}

/// Where cargo put `libmod_rtc_core.so` for this test run: `RTC_MODULE_SO`, else the test binary's own
/// `deps/` directory (where `cargo test` builds the cdylib with the features of this run), else its parent
/// (`cargo build` output).
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("RTC_MODULE_SO") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let beside = deps.join("libmod_rtc_core.so");
    if beside.is_file() {
        return beside;
    }
    deps.parent().unwrap_or(deps).join("libmod_rtc_core.so")
}

/// The module, dlopen'ed. Dropping it dlcloses it.
pub struct Module {
    /// The library; the table points into it.
    lib: Library,
}

impl Module {
    /// Loads the module library (not yet FreeSWITCH's `load`). The fake host must be loaded first.
    pub fn open(path: &Path) -> Module {
        FakeHost::get();
        // SAFETY: loading the module runs no code of ours beyond Rust's static initialisers (none).
        let lib = unsafe { Library::open(Some(path), RTLD_NOW) }
            .unwrap_or_else(|e| panic!("cannot dlopen {}: {e}", path.display()));
        Module { lib }
    }

    /// The exported `mod_rtc_core_module_interface` table.
    pub fn table(&self) -> &FunctionTable {
        // SAFETY: the symbol is a static switch_loadable_module_function_table_t, laid out as FunctionTable.
        let sym: Symbol<*const FunctionTable> =
            unsafe { self.lib.get(b"mod_rtc_core_module_interface") }.expect("table exported");
        // SAFETY: the static lives as long as the library, which `self` keeps loaded.
        unsafe { &**sym }
    }

    /// Calls the module's load like FreeSWITCH: returns the status and whether an interface was created.
    pub fn load(&self) -> (u32, bool) {
        let load = self.table().load.expect("load entry");
        let mut iface: *mut c_void = std::ptr::null_mut();
        let mut pool = [0u64; 4];
        // SAFETY: as FreeSWITCH calls it: a slot for the interface and a (fake) pool pointer.
        let status = unsafe { load(&mut iface, pool.as_mut_ptr().cast()) };
        (status, !iface.is_null())
    }

    /// Calls the module's shutdown, then frees its interfaces as FreeSWITCH does.
    pub fn shutdown(&self) -> u32 {
        let shutdown = self.table().shutdown.expect("shutdown entry");
        // SAFETY: called once after a load, as FreeSWITCH does.
        let status = unsafe { shutdown() };
        FakeHost::get().module_destroyed();
        status
    }
}

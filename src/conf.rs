//! `rtc_core.conf.xml` as FreeSWITCH resolved it (pre-processed, includes expanded), read through the C shim and
//! parsed with tables under FreeSWITCH's conf directory; and the directories FreeSWITCH was started with.

use std::ffi::{CStr, c_char, c_void};
use std::path::PathBuf;

use freeswitch_sys::{SWITCH_STATUS_MEMERR, SWITCH_STATUS_SUCCESS};

use crate::{guard, shim};

/// The configuration FreeSWITCH resolves to `autoload_configs/rtc_core.conf.xml`.
pub const CONFIG_FILE: &CStr = c"rtc_core.conf";

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

/// FreeSWITCH's log directory (`SWITCH_GLOBAL_dirs.log_dir`, its `-log` option): where a relative audit trail goes.
pub fn log_dir() -> Option<PathBuf> {
    // SAFETY: as for conf_dir.
    directory(unsafe { shim::rtc_log_dir() })
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

//! Where `bench setup` and `simulate` get their business services: the local backends on the engine thread,
//! or the same tables behind the loopback HTTP services (`rtc-loopback`), reached over 127.0.0.1 through the
//! real HTTP service layer.

use std::path::PathBuf;

use clap::ValueEnum;
use rtc_config::RtcConfig;
use rtc_engine::service::ServiceKind;
use rtc_loopback::{Loopback, LoopbackOptions};
use rtc_services::local::LocalServices;

/// Which services a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendArg {
    /// The embedded local backends, answered on the engine thread.
    Local,
    /// The loopback HTTP services on 127.0.0.1, through the HTTP service layer on `rtc-io`.
    Http,
}

impl BackendArg {
    pub fn name(self) -> &'static str {
        match self {
            BackendArg::Local => "local",
            BackendArg::Http => "http",
        }
    }
}

/// Reads `--config`, or the built-in defaults over the repository's `conf/`.
pub fn load_config(path: Option<&PathBuf>) -> Result<RtcConfig, String> {
    match path {
        Some(path) => RtcConfig::load_file(path).map_err(|e| e.to_string()),
        None => Ok(RtcConfig::default()),
    }
}

/// The loopback services of an HTTP run and the scratch directory its settlement spool lives in.
pub struct HttpRig {
    /// The services, answering from the configuration's local tables.
    pub loopback: Loopback,
    /// Holds the spool file; removed when the run ends.
    _spool_dir: tempfile::TempDir,
}

impl HttpRig {
    /// Starts the loopback services over `config`'s local tables and points every service of `config` at
    /// them; the spool goes to a scratch directory, never to the system's spool.
    pub fn start(config: &mut RtcConfig) -> Result<HttpRig, String> {
        let local = LocalServices::load(&config.local).map_err(|e| e.to_string())?;
        // Two threads: the services answer while the engine's two rtc-io workers send, as a service on
        // another box would, without taking every core of a small machine.
        let loopback =
            Loopback::start(local, LoopbackOptions { threads: 2 }).map_err(|e| e.to_string())?;
        loopback.configure(config, &ServiceKind::ALL);
        let spool_dir = tempfile::tempdir()
            .map_err(|e| format!("cannot create a scratch directory for the spool: {e}"))?;
        config.settlement.spool_path = spool_dir.path().join("settlements.jsonl");
        Ok(HttpRig {
            loopback,
            _spool_dir: spool_dir,
        })
    }
}

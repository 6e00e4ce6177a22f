//! mod_rtc_core: the FreeSWITCH module around the rtc call engine.
//!
//! # Layout
//! - [`module`]: the exported `mod_rtc_core_module_interface` table, load and shutdown.
//! - [`state`]: what lives while loaded (the running engine, the event bindings), and how the API, the app and
//!   the metrics endpoint reach it.
//! - [`conf`]: `rtc_core.conf.xml` as FreeSWITCH resolved it, and FreeSWITCH's directories.
//! - [`events`]: the channel-event handler on FreeSWITCH's dispatch threads → engine queue (never blocks), and its
//!   bindings.
//! - [`api`]: the fs_cli command `rtc_core <sub>`.
//! - [`app`]: the dialplan application `rtc_core`.
//! - [`control`]: the engine's call commands carried out through the C API (the park flow's bridges included).
//! - [`custom`]: the CUSTOM events the module raises (`rtc_core::low_balance`), their subclasses reserved while loaded.
//! - [`host`]: the one door to the engine (`rtc_host::Host`, its configuration and reload); everything
//!   above reaches the engine only through it.
//! - [`report`]: the text of the API's answers, Prometheus metrics included.
//! - [`session`]: safe session/channel handles (thread-bound borrows, lock guards).
//! - [`guard`]: the panic guard every `extern "C"` entry point goes through.
//! - [`logging`]: the `log` crate bridged to FreeSWITCH's log, always as `"%s"`.
//! - [`histogram`]: lock-free latency histogram for hot paths.
//! - [`process`]: the process's CPU time and memory from `/proc`, for the metrics page.
//! - [`shim`]: declarations of the C shim (`c_shim/`), for FreeSWITCH macros and struct fields.
//!
//! `unsafe` is confined to this crate's FFI edges and `freeswitch-sys`; every block says why it holds.

pub mod api;
pub mod app;
pub mod conf;
pub mod control;
pub mod custom;
pub mod events;
pub mod guard;
pub mod histogram;
pub mod host;
pub mod logging;
pub mod module;
pub mod process;
pub mod report;
pub mod session;
pub mod shim;
pub mod state;

// Unit tests link into an executable, where the switch_* imports the shim references must resolve: the fake
// host provides them (FreeSWITCH does for the cdylib).
#[cfg(test)]
use rtc_fakehost as _;

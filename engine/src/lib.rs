//! mod_rtc_core's call engine: pure Rust, no `unsafe`, no I/O on the engine thread.
//!
//! # Layout
//! - [`id`], [`cause`], [`event`]: what comes in — channel UUIDs, hangup causes, the small owned
//!   [`event::CallEvent`] both intakes (in-process handler, ESL) build.
//! - [`domain`], [`reason`]: business facts (partners, rates, routes, reservations, CDRs) and refusal
//!   reasons with their hangup causes.
//! - [`service`], [`control`]: what goes out — requests to the business services and commands to
//!   FreeSWITCH, each behind a trait so the same engine runs in the module, over ESL and in tests.
//! - [`config`]: engine settings; [`settings`]: the configuration file (`rtc_core.conf.xml`) that fills them.
#![forbid(unsafe_code)]

pub mod admission;
pub mod call;
pub mod cause;
pub mod clock;
pub mod config;
pub mod control;
pub mod core;
pub mod domain;
pub mod engine;
pub mod event;
pub mod fsm;
pub mod id;
pub mod reason;
pub mod registry;
pub mod results;
pub mod service;
pub mod settings;
pub mod sim;
pub mod stats;
pub mod testkit;

pub use cause::HangupCause;
pub use event::{CallEvent, Direction, EventKind};
pub use id::CallId;

//! mod_rtc_core's engine core: pure Rust, no `unsafe`, no tokio, no I/O. One engine thread applies channel
//! events and service answers to call state machines and says what FreeSWITCH and the services must do; both
//! hosts (the FreeSWITCH module, `rtc-core esl`) run this same core.
//!
//! It knows neither the configuration file nor how services are built: the configuration crate (`rtc-config`)
//! fills [`config`], the services crate (`rtc-services`) implements [`service::ServiceSink`], and the hosts
//! implement [`control::CallControl`].
//!
//! # Layout
//! - [`id`], [`cause`], [`event`]: what comes in — channel UUIDs, hangup causes, the small owned
//!   [`event::CallEvent`] both intakes (in-process handler, ESL) build.
//! - [`domain`], [`reason`]: business facts (partners, rates, routes, reservations, CDRs) and refusal
//!   reasons with their hangup causes.
//! - [`service`], [`control`]: what goes out — requests to the business services and commands to
//!   FreeSWITCH, each behind a trait so the same engine runs in the module, over ESL and in tests;
//!   [`results`]: answers on their way back.
//! - [`config`]: the engine's own settings, fail modes, and what a reload offers.
//! - [`fsm`], [`call`], [`registry`]: the table-driven call state machine and the live calls.
//! - [`admission`]: concurrent-call and calls-per-second limits, and shedding under overload.
//! - [`core`]: the logic on the engine thread; [`engine`]: the thread and its handle; [`clock`], [`stats`].
//! - [`testkit`], [`sim`]: stand-ins for FreeSWITCH and the services, and the simulator's traffic, for tests,
//!   benchmarks and `rtc-core simulate`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod audit;
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
pub mod sim;
pub mod stats;
pub mod testkit;

pub use cause::HangupCause;
pub use event::{CallEvent, Direction, EventKind};
pub use id::CallId;
/// The fraud rules the engine decides with (`rtc-guard`), for the configuration and the hosts.
pub use rtc_guard as fraud;

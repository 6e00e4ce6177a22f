//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use rtc_engine::call::CallState;
use rtc_engine::cause::HangupCause;
use rtc_engine::clock::{Clock, ManualClock};
use rtc_engine::config::EngineConfig;
use rtc_engine::config::FailModes;
use rtc_engine::core::Core;
use rtc_engine::event::{CallEvent, Direction, EventKind};
use rtc_engine::id::CallId;
use rtc_engine::service::{ServiceRequest, ServiceResult};
use rtc_engine::testkit::{RecordingControl, ScriptedServices, sample_ip};

pub struct Rig {
    pub core: Core,
    pub control: RecordingControl,
    pub services: ScriptedServices,
    pub clock: ManualClock,
    pub seq: u64,
}

pub fn config() -> EngineConfig {
    EngineConfig {
        setup_timeout: Duration::from_secs(60),
        park_timeout: Duration::from_secs(30),
        linger: Duration::from_secs(30),
        sweep_interval: Duration::from_secs(5),
        ..EngineConfig::default()
    }
}

pub fn rig(services: ScriptedServices) -> Rig {
    rig_with(services, config(), FailModes::default())
}

pub fn rig_with(services: ScriptedServices, cfg: EngineConfig, modes: FailModes) -> Rig {
    let (clock, manual) = Clock::manual();
    let control = RecordingControl::default();
    let core = Core::new(
        cfg,
        modes,
        Box::new(services.clone()),
        Box::new(control.clone()),
        clock,
    );
    Rig {
        core,
        control,
        services,
        clock: manual,
        seq: 0,
    }
}

pub fn id(n: u128) -> CallId {
    CallId::from_u128(n)
}

impl Rig {
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// An inbound (a-leg) event with the next sequence number.
    pub fn a(&mut self, call: u128, kind: EventKind) {
        let seq = self.next_seq();
        self.a_seq(call, kind, seq);
    }

    pub fn a_seq(&mut self, call: u128, kind: EventKind, seq: u64) {
        let ev = a_event(call, kind, seq, self.clock.now_us());
        self.core.on_event(ev);
    }

    pub fn hangup(&mut self, call: u128, cause: HangupCause) {
        let seq = self.next_seq();
        let mut ev = a_event(call, EventKind::ChannelHangup, seq, self.clock.now_us());
        ev.hangup_cause = Some(cause);
        self.core.on_event(ev);
    }

    /// An outbound (b-leg) event for the call's leg `leg`.
    pub fn b(&mut self, call: u128, leg: u128, kind: EventKind, cause: Option<HangupCause>) {
        let seq = self.next_seq();
        let mut ev = CallEvent::new(id(leg), kind, seq);
        ev.direction = Direction::Outbound;
        ev.other_leg = Some(id(call));
        ev.hangup_cause = cause;
        ev.timestamp_us = 1_700_000_000_000_000 + self.clock.now_us();
        self.core.on_event(ev);
    }

    pub fn deliver(&mut self, result: ServiceResult) {
        self.core.on_result(result);
    }

    pub fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.core.fire_timers();
        self.core.sweep_if_due();
    }

    pub fn state(&self, call: u128) -> Option<CallState> {
        self.core.call(&id(call)).and_then(|v| {
            rtc_engine::call::CallState::ALL
                .iter()
                .copied()
                .find(|s| s.to_string() == v.state)
        })
    }

    /// Whether the call is live (not finished).
    pub fn live(&self, call: u128) -> bool {
        self.core
            .calls(usize::MAX)
            .iter()
            .any(|c| c.uuid == id(call))
    }

    pub fn requests(&self) -> Vec<ServiceRequest> {
        self.services.requests()
    }
}

pub fn a_event(call: u128, kind: EventKind, seq: u64, now_us: u64) -> CallEvent {
    let mut ev = CallEvent::new(id(call), kind, seq);
    ev.caller = "441632960001".into();
    ev.destination = "442079460000".into();
    ev.source_ip = Some(sample_ip());
    ev.timestamp_us = 1_700_000_000_000_000 + now_us;
    ev
}

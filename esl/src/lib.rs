//! The ESL host: the engine run outside FreeSWITCH over its event socket (`rtc-core esl`), and the event
//! socket (ESL) protocol it speaks — framing the byte stream, parsing events and replies into the engine's
//! types, and writing frames the way FreeSWITCH does (for tests and the simulator).
//!
//! Built on the engine core (`rtc-engine`) alone: the business services reach it through the engine, never
//! from here.
//!
//! # Layout
//! - [`frame`]: the incremental [`Framer`] — bytes in, borrowed [`Frame`]s out, bounded memory, defined
//!   resync after bad input.
//! - [`event`]: [`EventParser`] — frames to [`EslMessage`]s: channel events as
//!   [`CallEvent`](rtc_engine::event::CallEvent), `BACKGROUND_JOB` results, command replies, api responses.
//! - [`percent`]: FreeSWITCH's percent-encoding of event header values.
//! - [`write`](mod@write): frames as FreeSWITCH writes them.
//! - [`bench`](mod@bench): the `esl-parse` benchmark.
//! - [`intake`]: frames to engine inputs with the rules of running over ESL (legs the engine placed,
//!   channels without an address, bridges failing without an outbound leg); shared by the client and replay.
//! - [`client`]: the inbound connection to `mod_event_socket` — auth, subscription, reader, writer,
//!   liveness, reconnect, reconciliation — and [`EslCallControl`](client::EslCallControl), the engine's
//!   call control, whose commands the connection's writer sends.
//! - [`control`]: the engine's call commands as ESL commands ([`encode`](control::encode)).
//! - [`replay`]: a recorded stream through a fresh engine on a manual clock, for call traces offline.
//! - [`server`]: an event socket server that plays a switch, for tests, benchmarks and `simulate --esl`.
//!
//! [`Decoder`] joins a framer and a parser for callers that just want messages.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod client;
pub mod control;
pub mod event;
pub mod frame;
pub mod intake;
pub mod percent;
pub mod replay;
pub mod server;
pub mod write;

pub use event::{BackgroundJob, EslMessage, EventError, EventParser, ParseStats, Reply};
pub use frame::{ContentType, Frame, FrameError, Framer, FramerConfig, FramerStats};

/// Why a message could not be read; either way the decoder has recovered and can be called again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EslError {
    /// The bytes could not be framed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame could not be understood.
    #[error(transparent)]
    Event(#[from] EventError),
}

/// A framer and an event parser together: bytes in, messages out. Events the engine does not follow are
/// skipped.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Splits the stream into frames.
    pub framer: Framer,
    /// Turns frames into messages.
    pub parser: EventParser,
}

impl Decoder {
    /// A decoder with `config`'s limits.
    pub fn new(config: FramerConfig) -> Self {
        Decoder {
            framer: Framer::new(config),
            parser: EventParser::new(),
        }
    }

    /// Appends received bytes (see [`Framer::push`]).
    pub fn push(&mut self, data: &[u8]) {
        self.framer.push(data);
    }

    /// The next message, an error already recovered from, or `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<EslMessage, EslError>> {
        loop {
            match self.framer.next_frame()? {
                Err(e) => return Some(Err(e.into())),
                Ok(frame) => match self.parser.parse_frame(&frame) {
                    Ok(Some(m)) => return Some(Ok(m)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e.into())),
                },
            }
        }
    }
}

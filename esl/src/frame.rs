//! Incremental framing of the event socket byte stream into frames.
//!
//! FreeSWITCH writes every message as a block of `Name: value\n` header lines ended by a blank line (a bare
//! `\n`), then, when a `Content-Length: N` header is present, exactly `N` bytes of body. The [`Framer`] takes
//! bytes as they arrive ([`Framer::push`]), in pieces split anywhere, and hands out whole frames
//! ([`Framer::next_frame`]) as views into its buffer: nothing is copied per frame.
//!
//! # Limits and resynchronisation
//! Memory is bounded: a frame (header block plus body) larger than [`FramerConfig::max_frame_size`] is never
//! buffered. Each failure returns one [`FrameError`] and then resumes at a defined place:
//! - a malformed header block (a line without `:`, a bad header name, control or non-UTF-8 bytes, a bad
//!   `Content-Length`, no `Content-Type`): the block is dropped up to and including its blank line, and framing
//!   resumes right after it ("skip to the next blank line"). Any body it announced is not trusted, so its
//!   bytes are read as the next header block and fail or resync the same way;
//! - a well-formed frame whose `Content-Length` makes it larger than `max_frame_size` (up to
//!   [`FramerConfig::max_skip`]): its body is discarded exactly, as it arrives, without being buffered, and
//!   framing resumes right after it — the stream stays in sync;
//! - no blank line within `max_frame_size` bytes: the buffer is dropped and incoming bytes are discarded up
//!   to and including the next blank line.
//!
//! FreeSWITCH ends lines with a bare LF. A CR before the LF of a header line is tolerated (stripped from the
//! value), but a blank line must be a bare LF.

use memchr::memmem;

/// Default for [`FramerConfig::max_frame_size`]: far above any channel event (2–4 KB) and above the
/// `api/response` of ordinary commands.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;

/// Default for [`FramerConfig::max_skip`].
pub const DEFAULT_MAX_SKIP: u64 = 256 << 20;

/// Bytes of a bad header line quoted in an error message.
const EXCERPT: usize = 80;

/// Framing limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramerConfig {
    /// Largest frame (header block, blank line and body) that is buffered and returned; bounds the
    /// framer's memory to about this plus one pushed chunk.
    pub max_frame_size: usize,
    /// Largest `Content-Length` believed: a larger frame's body is skipped exactly rather than buffered;
    /// above this the number is treated as corrupt and framing resyncs at the next blank line instead of
    /// discarding gigabytes on the word of one damaged header.
    pub max_skip: u64,
}

impl Default for FramerConfig {
    fn default() -> Self {
        FramerConfig {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_skip: DEFAULT_MAX_SKIP,
        }
    }
}

/// What a frame carries, from its `Content-Type` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType<'a> {
    /// `auth/request`: the server wants `auth <password>`.
    AuthRequest,
    /// `command/reply`: the answer to a command, in `Reply-Text`.
    CommandReply,
    /// `api/response`: the output of a blocking `api` command, in the body.
    ApiResponse,
    /// `text/event-plain`: an event in plain format, in the body.
    EventPlain,
    /// `text/event-json`.
    EventJson,
    /// `text/event-xml`.
    EventXml,
    /// `text/disconnect-notice`: the server is closing (or lingering on) the connection.
    DisconnectNotice,
    /// `text/rude-rejection`: the server refused the connection (ACL).
    RudeRejection,
    /// `log/data`: a log line, after `log <level>`.
    LogData,
    /// Any other value, kept for the caller to report.
    Other(&'a str),
}

impl<'a> ContentType<'a> {
    fn from_value(v: &'a str) -> Self {
        match v {
            "auth/request" => ContentType::AuthRequest,
            "command/reply" => ContentType::CommandReply,
            "api/response" => ContentType::ApiResponse,
            "text/event-plain" => ContentType::EventPlain,
            "text/event-json" => ContentType::EventJson,
            "text/event-xml" => ContentType::EventXml,
            "text/disconnect-notice" => ContentType::DisconnectNotice,
            "text/rude-rejection" => ContentType::RudeRejection,
            "log/data" => ContentType::LogData,
            other => ContentType::Other(other),
        }
    }
}

/// One frame, borrowed from the framer's buffer until the next call to [`Framer::next_frame`] or
/// [`Framer::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Stream offset of the frame's first byte, for messages about it.
    pub offset: u64,
    /// The header block: `Name: value\n` lines, validated as UTF-8 text without the closing blank line.
    pub headers: &'a str,
    /// The `Content-Type`.
    pub content_type: ContentType<'a>,
    /// The `Content-Length` bytes after the blank line (empty when there was no `Content-Length`).
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The value of the first header called `name` (ASCII case-insensitive), leading spaces and a trailing
    /// CR removed.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.header_lines()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// All header lines as `(name, value)` pairs, in order.
    pub fn header_lines(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.headers.lines().filter_map(split_header)
    }
}

/// Splits `Name: value` (already validated by the framer).
fn split_header(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    Some((name, value.trim_start_matches(' ').trim_end_matches('\r')))
}

/// Why bytes could not be framed. Each error has already been recovered from as the module docs describe;
/// the next call to [`Framer::next_frame`] continues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No blank line within the limit.
    #[error(
        "ESL stream offset {offset}: no blank line ending a header block within {limit} bytes; the buffer was \
         dropped and input is skipped to the next blank line (is the peer a FreeSWITCH event socket? if frames \
         this large are expected, raise max_frame_size)"
    )]
    HeadersTooLarge {
        /// Where the unfinished block began.
        offset: u64,
        /// The `max_frame_size` in force.
        limit: usize,
    },
    /// A header line with no `:`.
    #[error(
        "ESL frame at stream offset {offset}: header line {line:?} has no ':'; skipped to the next blank line \
         (the stream lost sync or the peer is not a FreeSWITCH event socket)"
    )]
    HeaderWithoutColon {
        /// Where the frame began.
        offset: u64,
        /// The line, lossily decoded and shortened.
        line: String,
    },
    /// A header block that is not text: control bytes, non-UTF-8 bytes or an invalid header name.
    #[error(
        "ESL frame at stream offset {offset}: {problem} in header line {line:?}; skipped to the next blank \
         line (the stream lost sync or the peer is not a FreeSWITCH event socket)"
    )]
    MalformedHeader {
        /// Where the frame began.
        offset: u64,
        /// What is wrong.
        problem: &'static str,
        /// The line, lossily decoded and shortened.
        line: String,
    },
    /// A `Content-Length` that is not a decimal number, or beyond `max_skip`.
    #[error(
        "ESL frame at stream offset {offset}: Content-Length {value:?} is not a byte count up to {max_skip}; \
         its body is not trusted and framing resumes after the blank line"
    )]
    BadContentLength {
        /// Where the frame began.
        offset: u64,
        /// The value as received, shortened.
        value: String,
        /// The `max_skip` in force.
        max_skip: u64,
    },
    /// A well-formed frame larger than `max_frame_size`.
    #[error(
        "ESL frame at stream offset {offset}: {length} bytes exceed max_frame_size {limit}; its body was \
         skipped unread (raise max_frame_size if such replies are expected)"
    )]
    FrameTooLarge {
        /// Where the frame began.
        offset: u64,
        /// Header block plus body length.
        length: u64,
        /// The `max_frame_size` in force.
        limit: usize,
    },
    /// A header block without `Content-Type`: FreeSWITCH always sends one, so this is a fragment of
    /// something else (typically the tail of an event after a loss of sync).
    #[error(
        "ESL frame at stream offset {offset}: no Content-Type header (first line {first_line:?}); skipped to \
         the next blank line"
    )]
    MissingContentType {
        /// Where the frame began.
        offset: u64,
        /// The first header line, shortened.
        first_line: String,
    },
}

/// Counters for monitoring a connection's framing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramerStats {
    /// Frames returned.
    pub frames: u64,
    /// Errors returned.
    pub errors: u64,
    /// Bytes discarded while resynchronising (oversize bodies, garbage up to a blank line).
    pub skipped_bytes: u64,
}

/// What the framer is doing with incoming bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Reading header blocks and bodies.
    Frames,
    /// Discarding the rest of an oversize body.
    SkipBody { remaining: u64 },
    /// Discarding up to and including the next blank line; `prev_nl` says the last discarded byte was `\n`.
    SkipToBlank { prev_nl: bool },
}

/// A header block that has been parsed but whose body has not fully arrived yet.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Header block length including the blank line.
    header_len: usize,
    /// Body length.
    body_len: usize,
    /// Where the `Content-Type` value lies, relative to the frame's start.
    content_type: (usize, usize),
}

/// The incremental framer. See the module docs.
#[derive(Debug)]
pub struct Framer {
    /// Limits.
    config: FramerConfig,
    /// Received bytes; `buf[start..]` is not yet consumed.
    buf: Vec<u8>,
    /// First unconsumed byte in `buf`.
    start: usize,
    /// Stream offset of `buf[0]`, for error messages.
    base: u64,
    /// How many bytes after `start` have already been searched for the blank line without finding it, so
    /// that a frame arriving one byte at a time is not rescanned from its start each time.
    scanned: usize,
    /// The parsed header block of a frame waiting for its body.
    pending: Option<Pending>,
    /// Normal framing or a resync in progress.
    mode: Mode,
    /// Counters.
    stats: FramerStats,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(FramerConfig::default())
    }
}

impl Framer {
    /// A framer with `config`'s limits, and nothing buffered.
    pub fn new(config: FramerConfig) -> Self {
        Framer {
            config: FramerConfig {
                // A limit below a minimal frame would reject everything; keep it usable.
                max_frame_size: config.max_frame_size.max(64),
                max_skip: config.max_skip,
            },
            buf: Vec::new(),
            start: 0,
            base: 0,
            scanned: 0,
            pending: None,
            mode: Mode::Frames,
            stats: FramerStats::default(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> FramerConfig {
        self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes of memory the buffer holds (its capacity), for checking the memory bound.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends received bytes. Call [`Framer::next_frame`] until it returns `None` after each push: the
    /// buffer then never holds more than one incomplete frame (at most `max_frame_size`) plus one pushed
    /// chunk.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.start == self.buf.len() {
            self.base += self.buf.len() as u64;
            self.buf.clear();
            self.start = 0;
            // Nothing buffered: a resync can eat straight from the input without copying it.
            if self.mode != Mode::Frames {
                let n = self.skip(data);
                self.base += n as u64;
                data = &data[n..];
            }
        } else if self.start > 0
            && (self.buf.len() + data.len() > self.buf.capacity()
                || self.start > self.buf.len() / 2)
        {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        let keep = self.config.max_frame_size.saturating_mul(2).max(1 << 16);
        if self.buf.capacity() > keep.saturating_mul(2) && self.buf.len() + data.len() <= keep {
            // A big push grew the buffer once; give the memory back.
            self.buf.shrink_to(keep);
        }
        self.buf.extend_from_slice(data);
    }

    /// Discards bytes from the front of `data` as the current resync mode says; returns how many.
    fn skip(&mut self, data: &[u8]) -> usize {
        let n = match self.mode {
            Mode::Frames => 0,
            Mode::SkipBody { remaining } => {
                let n = (data.len() as u64).min(remaining);
                self.mode = if n == remaining {
                    Mode::Frames
                } else {
                    Mode::SkipBody {
                        remaining: remaining - n,
                    }
                };
                n as usize
            }
            Mode::SkipToBlank { prev_nl } => {
                if data.is_empty() {
                    0
                } else if prev_nl && data[0] == b'\n' {
                    self.mode = Mode::Frames;
                    1
                } else if let Some(p) = memmem::find(data, b"\n\n") {
                    self.mode = Mode::Frames;
                    p + 2
                } else {
                    self.mode = Mode::SkipToBlank {
                        prev_nl: data.last() == Some(&b'\n'),
                    };
                    data.len()
                }
            }
        };
        self.stats.skipped_bytes += n as u64;
        n
    }

    /// The next complete frame, an error about bytes that could not be framed (already recovered from), or
    /// `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, FrameError>> {
        if self.mode != Mode::Frames {
            let (start, len) = (self.start, self.buf.len());
            // Borrow juggling: skip() needs &mut self and the data.
            let data = std::mem::take(&mut self.buf);
            let n = self.skip(&data[start..len]);
            self.buf = data;
            self.start += n;
            if self.mode != Mode::Frames {
                return None;
            }
        }
        if self.pending.is_none() {
            // Blank lines between frames carry nothing.
            while self.start < self.buf.len() && self.buf[self.start] == b'\n' {
                self.start += 1;
            }
            let avail = self.buf.len() - self.start;
            if avail == 0 {
                return None;
            }
            let limit = self.config.max_frame_size;
            let window_end = self.buf.len().min(self.start + limit);
            let from = self.start + self.scanned.saturating_sub(1);
            let found = memmem::find(&self.buf[from..window_end], b"\n\n").map(|p| from + p);
            let Some(nl) = found else {
                if window_end - self.start >= limit {
                    let offset = self.offset(self.start);
                    let prev_nl = self.buf[window_end - 1] == b'\n';
                    self.stats.skipped_bytes += (window_end - self.start) as u64;
                    self.start = window_end;
                    self.scanned = 0;
                    self.mode = Mode::SkipToBlank { prev_nl };
                    self.stats.errors += 1;
                    return Some(Err(FrameError::HeadersTooLarge { offset, limit }));
                }
                self.scanned = avail;
                return None;
            };
            self.scanned = 0;
            let header_len = nl + 2 - self.start;
            let offset = self.offset(self.start);
            let block = &self.buf[self.start..nl + 1];
            match parse_header_block(block, offset, &self.config) {
                Err(e) => {
                    self.start += header_len;
                    self.stats.errors += 1;
                    return Some(Err(e));
                }
                Ok((body_len, content_type)) => {
                    let total = header_len as u64 + body_len;
                    if total > limit as u64 {
                        self.start += header_len;
                        self.mode = Mode::SkipBody {
                            remaining: body_len,
                        };
                        self.stats.errors += 1;
                        return Some(Err(FrameError::FrameTooLarge {
                            offset,
                            length: total,
                            limit,
                        }));
                    }
                    self.pending = Some(Pending {
                        header_len,
                        // Bounded by max_frame_size just above.
                        body_len: body_len as usize,
                        content_type,
                    });
                }
            }
        }
        let p = self.pending?;
        if self.buf.len() - self.start < p.header_len + p.body_len {
            return None;
        }
        self.pending = None;
        let frame_start = self.start;
        self.start += p.header_len + p.body_len;
        self.stats.frames += 1;
        let offset = self.offset(frame_start);
        let head = &self.buf[frame_start..frame_start + p.header_len - 1];
        let body = &self.buf[frame_start + p.header_len..self.start];
        // The block was validated when it was parsed; this cannot fail, but an error is still an error.
        let headers = match std::str::from_utf8(head) {
            Ok(h) => h,
            Err(_) => {
                return Some(Err(FrameError::MalformedHeader {
                    offset,
                    problem: "non-UTF-8 bytes",
                    line: excerpt(head),
                }));
            }
        };
        let content_type = headers
            .get(p.content_type.0..p.content_type.1)
            .map(ContentType::from_value)
            .unwrap_or(ContentType::Other(""));
        Some(Ok(Frame {
            offset,
            headers,
            content_type,
            body,
        }))
    }

    fn offset(&self, index: usize) -> u64 {
        self.base + index as u64
    }
}

/// Checks a header block (its lines, each ending in `\n`, without the blank line) and returns the body
/// length it announces and where its `Content-Type` value lies in the block.
fn parse_header_block(
    block: &[u8],
    offset: u64,
    config: &FramerConfig,
) -> Result<(u64, (usize, usize)), FrameError> {
    let Ok(text) = std::str::from_utf8(block) else {
        let bad = block
            .split(|&b| b == b'\n')
            .find(|l| std::str::from_utf8(l).is_err())
            .unwrap_or(block);
        return Err(FrameError::MalformedHeader {
            offset,
            problem: "non-UTF-8 bytes",
            line: excerpt(bad),
        });
    };
    let mut body_len = 0u64;
    let mut content_type = None;
    let mut line_start = 0;
    for full in text.split_inclusive('\n') {
        let at = line_start;
        line_start += full.len();
        let line = full.trim_end_matches('\n').trim_end_matches('\r');
        let Some((name, raw)) = line.split_once(':') else {
            return Err(FrameError::HeaderWithoutColon {
                offset,
                line: excerpt(line.as_bytes()),
            });
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FrameError::MalformedHeader {
                offset,
                problem: "an empty header name or one with spaces, controls or non-ASCII bytes",
                line: excerpt(line.as_bytes()),
            });
        }
        let value = raw.trim_start_matches(' ');
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(FrameError::MalformedHeader {
                offset,
                problem: "a control byte",
                line: excerpt(line.as_bytes()),
            });
        }
        if name.eq_ignore_ascii_case("Content-Length") {
            let n = value.trim_end();
            body_len = match n.parse::<u64>() {
                Ok(v) if n.bytes().all(|b| b.is_ascii_digit()) && v <= config.max_skip => v,
                _ => {
                    return Err(FrameError::BadContentLength {
                        offset,
                        value: excerpt(value.as_bytes()),
                        max_skip: config.max_skip,
                    });
                }
            };
        } else if content_type.is_none() && name.eq_ignore_ascii_case("Content-Type") {
            let start = at + name.len() + 1 + (raw.len() - value.len());
            content_type = Some((start, start + value.len()));
        }
    }
    let Some(content_type) = content_type else {
        return Err(FrameError::MissingContentType {
            offset,
            first_line: excerpt(text.lines().next().unwrap_or("").as_bytes()),
        });
    };
    Ok((body_len, content_type))
}

/// A short, printable rendering of bad input for an error message.
fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(EXCERPT)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > EXCERPT {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], cfg: FramerConfig) -> Vec<Result<(String, Vec<u8>), FrameError>> {
        let mut f = Framer::new(cfg);
        f.push(input);
        let mut out = Vec::new();
        while let Some(r) = f.next_frame() {
            out.push(r.map(|fr| (fr.headers.to_string(), fr.body.to_vec())));
        }
        out
    }

    #[test]
    fn frames_reply_and_body() {
        let input =
            b"Content-Type: auth/request\n\nContent-Type: api/response\nContent-Length: 3\n\n+OK";
        let mut f = Framer::default();
        f.push(input);
        let a = f.next_frame().unwrap().unwrap();
        assert_eq!(a.content_type, ContentType::AuthRequest);
        assert!(a.body.is_empty());
        let b = f.next_frame().unwrap().unwrap();
        assert_eq!(b.content_type, ContentType::ApiResponse);
        assert_eq!(b.body, b"+OK");
        assert_eq!(b.header("content-length"), Some("3"));
        assert!(f.next_frame().is_none());
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn content_type_with_spaces_and_cr() {
        let mut f = Framer::default();
        f.push(b"Reply-Text: +OK\r\nContent-Type:   command/reply\r\n\n");
        let fr = f.next_frame().unwrap().unwrap();
        assert_eq!(fr.content_type, ContentType::CommandReply);
        assert_eq!(fr.header("Reply-Text"), Some("+OK"));
    }

    #[test]
    fn header_without_colon_resyncs_at_blank_line() {
        let input = b"garbage line\nmore\n\nContent-Type: auth/request\n\n";
        let got = frames(input, FramerConfig::default());
        assert!(matches!(
            got[0],
            Err(FrameError::HeaderWithoutColon { offset: 0, .. })
        ));
        assert_eq!(got[1].as_ref().unwrap().0, "Content-Type: auth/request\n");
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn bad_content_length_resyncs() {
        for bad in ["x12", "-1", "99999999999999999999999", "1 2", ""] {
            let input = format!(
                "Content-Type: api/response\nContent-Length: {bad}\n\nContent-Type: auth/request\n\n"
            );
            let got = frames(input.as_bytes(), FramerConfig::default());
            assert!(
                matches!(got[0], Err(FrameError::BadContentLength { .. })),
                "{bad}: {got:?}"
            );
            assert!(got[1].is_ok(), "{bad}");
        }
    }

    #[test]
    fn oversize_body_is_skipped_exactly_while_streaming() {
        let cfg = FramerConfig {
            max_frame_size: 1024,
            max_skip: 1 << 20,
        };
        let mut f = Framer::new(cfg);
        f.push(b"Content-Type: api/response\nContent-Length: 100000\n\n");
        assert!(matches!(
            f.next_frame(),
            Some(Err(FrameError::FrameTooLarge { length, .. })) if length > 100000
        ));
        let chunk = vec![b'\n'; 1000];
        for _ in 0..100 {
            f.push(&chunk);
            assert!(f.next_frame().is_none());
            assert!(f.capacity() <= 4096, "{}", f.capacity());
        }
        f.push(b"Content-Type: auth/request\n\n");
        assert_eq!(
            f.next_frame().unwrap().unwrap().content_type,
            ContentType::AuthRequest
        );
        assert_eq!(f.stats().skipped_bytes, 100000);
    }

    #[test]
    fn endless_header_is_dropped_with_bounded_memory() {
        let cfg = FramerConfig {
            max_frame_size: 4096,
            max_skip: 1 << 20,
        };
        let mut f = Framer::new(cfg);
        let chunk = vec![b'x'; 1000];
        let mut errors = 0;
        for _ in 0..100 {
            f.push(&chunk);
            while let Some(r) = f.next_frame() {
                assert!(matches!(r, Err(FrameError::HeadersTooLarge { .. })));
                errors += 1;
            }
            assert!(f.buffered() <= 4096 + 1000);
        }
        assert_eq!(errors, 1);
        f.push(b"\n");
        f.push(b"\nContent-Type: auth/request\n\n");
        assert!(f.next_frame().unwrap().is_ok());
    }

    #[test]
    fn binary_garbage_and_missing_content_type() {
        let got = frames(b"\x00\xff\xfe: x\n\n", FramerConfig::default());
        assert!(matches!(got[0], Err(FrameError::MalformedHeader { .. })));
        let got = frames(b"A: \x01\n\n", FramerConfig::default());
        assert!(matches!(got[0], Err(FrameError::MalformedHeader { .. })));
        let got = frames(b"Caller-ID: 1\n\n", FramerConfig::default());
        assert!(matches!(got[0], Err(FrameError::MissingContentType { .. })));
    }

    #[test]
    fn error_messages_say_where_and_what_to_do() {
        let got = frames(
            b"Content-Type: auth/request\n\nbogus\n\n",
            FramerConfig::default(),
        );
        let msg = got[1].as_ref().unwrap_err().to_string();
        assert!(msg.contains("offset 28"), "{msg}");
        assert!(msg.contains("\"bogus\""), "{msg}");
    }
}

//! Safe handles on FreeSWITCH sessions and channels.
//!
//! What may only happen on a FreeSWITCH-given thread is expressed in the types: [`Session`] is borrowed
//! from a callback FreeSWITCH made (the dialplan app) and is neither `Send` nor `Sync`, so it cannot leave that
//! thread or outlive the callback. [`LocatedSession`] holds the read lock `switch_core_session_locate` takes and
//! releases it in `Drop`, so it can be neither leaked nor released twice.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;

use freeswitch_sys::{SWITCH_STATUS_SUCCESS, switch_channel_t, switch_core_session_t};
use rtc_engine::{CallId, HangupCause};

use crate::logging::c_text;
use crate::shim;

/// A session FreeSWITCH handed to a callback, valid for that callback's duration and thread.
pub struct Session<'a> {
    /// The session; FreeSWITCH keeps it alive while the callback runs.
    ptr: NonNull<switch_core_session_t>,
    /// Ties the borrow to the callback and makes the type `!Send + !Sync`.
    _callback: PhantomData<&'a *mut ()>,
}

/// A channel variable or hangup request FreeSWITCH refused.
#[derive(Debug, thiserror::Error)]
#[error("FreeSWITCH refused to set channel variable {name} (status {status})")]
pub struct SetVariableError {
    /// The variable's name.
    pub name: String,
    /// The `switch_status_t` returned.
    pub status: u32,
}

impl<'a> Session<'a> {
    /// Wraps the session pointer of a FreeSWITCH callback.
    ///
    /// # Safety
    /// `ptr` must be null or a session FreeSWITCH guarantees alive for `'a` on this thread.
    pub unsafe fn from_callback(ptr: *mut switch_core_session_t) -> Option<Session<'a>> {
        NonNull::new(ptr).map(|ptr| Session {
            ptr,
            _callback: PhantomData,
        })
    }

    /// The channel UUID, if FreeSWITCH gives one that parses.
    pub fn call_id(&self) -> Option<CallId> {
        // SAFETY: the session is alive (type invariant); the uuid string lives as long as the session.
        let uuid = unsafe { freeswitch_sys::switch_core_session_get_uuid(self.ptr.as_ptr()) };
        if uuid.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated, owned by the session.
        let text = unsafe { CStr::from_ptr(uuid) };
        text.to_str().ok().and_then(|t| CallId::parse(t).ok())
    }

    /// Runs dialplan application `app` with `arg` on this session until it returns (for `bridge`: until the
    /// bridged call ends, or every route failed). Only on the session's own thread, which `Session` guarantees.
    pub fn execute(&self, app: &CStr, arg: &str) -> Result<(), ExecuteError> {
        let carg = c_text(arg);
        // SAFETY: the session is alive and this is its thread (type invariant); both strings are NUL-terminated
        // and outlive the call.
        let status =
            unsafe { shim::rtc_session_execute(self.ptr.as_ptr(), app.as_ptr(), carg.as_ptr()) };
        ExecuteError::check(app, status)
    }

    /// The session's channel.
    pub fn channel(&self) -> Option<Channel<'_>> {
        // SAFETY: the session is alive; its channel lives as long as it does.
        let ptr = unsafe { freeswitch_sys::switch_core_session_get_channel(self.ptr.as_ptr()) };
        NonNull::new(ptr).map(|ptr| Channel {
            ptr,
            _session: PhantomData,
        })
    }
}

/// FreeSWITCH refused to run (or queue) an application.
#[derive(Debug, thiserror::Error)]
#[error("FreeSWITCH could not run application {app} (status {status})")]
pub struct ExecuteError {
    /// The application's name.
    pub app: String,
    /// The `switch_status_t` returned.
    pub status: u32,
}

impl ExecuteError {
    fn check(app: &CStr, status: u32) -> Result<(), ExecuteError> {
        if status == SWITCH_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(ExecuteError {
                app: app.to_string_lossy().into_owned(),
                status,
            })
        }
    }
}

/// A session's channel, borrowed from the session.
pub struct Channel<'s> {
    /// The channel, alive as long as its session.
    ptr: NonNull<switch_channel_t>,
    /// Borrow of the session; `!Send + !Sync`.
    _session: PhantomData<&'s *mut ()>,
}

impl Channel<'_> {
    /// Sets channel variable `name` to `value`.
    pub fn set_variable(&self, name: &str, value: &str) -> Result<(), SetVariableError> {
        let (cname, cvalue): (CString, CString) = (c_text(name), c_text(value));
        // SAFETY: the channel is alive (borrowed from a live session); both strings are NUL-terminated and
        // FreeSWITCH copies them into the channel's pool.
        let status = unsafe {
            shim::rtc_channel_set_variable(self.ptr.as_ptr(), cname.as_ptr(), cvalue.as_ptr())
        };
        if status == SWITCH_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(SetVariableError {
                name: name.to_string(),
                status,
            })
        }
    }

    /// Removes channel variable `name`.
    pub fn clear_variable(&self, name: &str) -> Result<(), SetVariableError> {
        let cname = c_text(name);
        // SAFETY: the channel is alive; a NULL value removes the variable.
        let status = unsafe {
            shim::rtc_channel_set_variable(self.ptr.as_ptr(), cname.as_ptr(), std::ptr::null())
        };
        if status == SWITCH_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(SetVariableError {
                name: name.to_string(),
                status,
            })
        }
    }

    /// Channel variable `name`, when set and valid UTF-8.
    pub fn variable(&self, name: &str) -> Option<String> {
        let cname = c_text(name);
        // SAFETY: the channel is alive; FreeSWITCH copies the value into the session's pool, which outlives this
        // borrow; we copy it out at once.
        let value = unsafe { shim::rtc_channel_get_variable(self.ptr.as_ptr(), cname.as_ptr()) };
        // SAFETY: non-null values are NUL-terminated.
        (!value.is_null())
            .then(|| unsafe { CStr::from_ptr(value) })
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// A field of the channel's caller profile (`network_addr`, `caller_id_number`, `destination_number`...),
    /// when set and not empty.
    pub fn profile_field(&self, field: &CStr) -> Option<String> {
        // SAFETY: the channel is alive; the profile's strings live in the session's pool; copied out at once.
        let value = unsafe { shim::rtc_channel_profile_field(self.ptr.as_ptr(), field.as_ptr()) };
        // SAFETY: non-null values are NUL-terminated.
        (!value.is_null())
            .then(|| unsafe { CStr::from_ptr(value) })
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// Whether the channel is up and not hanging up.
    pub fn ready(&self) -> bool {
        // SAFETY: the channel is alive.
        unsafe { shim::rtc_channel_ready(self.ptr.as_ptr()) != 0 }
    }

    /// Whether FreeSWITCH placed this channel (an outbound leg) rather than received it.
    pub fn outbound(&self) -> bool {
        // SAFETY: the channel is alive.
        unsafe { shim::rtc_channel_outbound(self.ptr.as_ptr()) != 0 }
    }

    /// Hangs the channel up with `cause` (FreeSWITCH's cause numbers are HangupCause's).
    pub fn hangup(&self, cause: HangupCause) {
        // SAFETY: the channel is alive; hanging up an already hung-up channel is a no-op in FreeSWITCH.
        unsafe { shim::rtc_channel_hangup(self.ptr.as_ptr(), i32::from(cause.0)) };
    }
}

/// A session found by UUID, read-locked until this value is dropped.
pub struct LocatedSession {
    /// The locked session.
    ptr: NonNull<switch_core_session_t>,
    /// `!Send + !Sync`: the lock is released on the thread that took it.
    _not_send: PhantomData<*mut ()>,
}

impl LocatedSession {
    /// Finds the live session for `call`, or `None` when it is gone.
    pub fn locate(call: CallId) -> Option<LocatedSession> {
        let mut buf = [0u8; 37];
        call.encode((&mut buf[..36]).try_into().ok()?);
        // buf[36] stays 0: NUL-terminated.
        // SAFETY: buf is a NUL-terminated uuid string; a non-null result carries a read lock we now own.
        let ptr = unsafe { shim::rtc_session_locate(buf.as_ptr().cast()) };
        NonNull::new(ptr).map(|ptr| LocatedSession {
            ptr,
            _not_send: PhantomData,
        })
    }

    /// The session, borrowed for as long as the lock is held.
    pub fn session(&self) -> Session<'_> {
        Session {
            ptr: self.ptr,
            _callback: PhantomData,
        }
    }
}

impl LocatedSession {
    /// Queues dialplan application `app` with `arg` for the session's own thread (a parked channel runs it within
    /// its next park-loop turn, about 20 ms). Safe from any thread while the read lock is held.
    pub fn execute_async(&self, app: &CStr, arg: &str) -> Result<(), ExecuteError> {
        let carg = c_text(arg);
        // SAFETY: we hold the session's read lock, so it is alive; FreeSWITCH copies both strings into the queued
        // event.
        let status = unsafe {
            shim::rtc_session_execute_async(self.ptr.as_ptr(), app.as_ptr(), carg.as_ptr())
        };
        ExecuteError::check(app, status)
    }
}

impl Drop for LocatedSession {
    fn drop(&mut self) {
        // SAFETY: we hold exactly one read lock from rtc_session_locate; released once, here.
        unsafe { shim::rtc_session_rwunlock(self.ptr.as_ptr()) };
    }
}

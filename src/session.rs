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

impl Drop for LocatedSession {
    fn drop(&mut self) {
        // SAFETY: we hold exactly one read lock from rtc_session_locate; released once, here.
        unsafe { shim::rtc_session_rwunlock(self.ptr.as_ptr()) };
    }
}

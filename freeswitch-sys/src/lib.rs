//! Raw bindings to the part of the FreeSWITCH 1.10 C API that mod_rtc_core uses.
//!
//! # Layout
//! - The bindings themselves: bindgen output over the real headers (`cfg(freeswitch_real)`, generated into
//!   `OUT_DIR` by `build.rs`), or the checked-in bindings of the project's stub header
//!   `stub/fs_stub.h` (`cfg(freeswitch_stub)`). Both come from one allowlist, so they have the same names.
//! - [`USING_STUB`]: which of the two this build has.
//! - In a real build, a private module compares the stub's struct layouts and constants with the real
//!   ones at compile time: a stub that drifted from FreeSWITCH fails the build.
//!
//! Everything here is `unsafe` to use; the safe wrappers live in the module crate.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    clippy::all
)]
#![no_std]

#[cfg(freeswitch_stub)]
mod bindings {
    include!("stub_bindings.rs");
}

#[cfg(freeswitch_real)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub use bindings::*;

/// True when built against `stub/fs_stub.h` rather than a FreeSWITCH installation's headers.
pub const USING_STUB: bool = cfg!(freeswitch_stub);

/// `SWITCH_API_VERSION` as the `int` the module function table holds.
pub const API_VERSION: core::ffi::c_int = SWITCH_API_VERSION as core::ffi::c_int;

/// Compile-time proof, in a real build, that the stub header describes FreeSWITCH as it is.
#[cfg(freeswitch_real)]
mod stub_agrees_with_real_headers {
    use core::mem::{align_of, offset_of, size_of};

    mod stub {
        // The stub's prototypes name the stub's own (nominally different) types, so rustc sees two
        // declarations of one symbol; they are never called from here. Prototypes are checked by the C compiler
        // instead (c_shim/stub_check.c).
        #![allow(dead_code, clashing_extern_declarations)]
        include!("stub_bindings.rs");
    }
    use super::bindings as real;

    macro_rules! same_layout {
        ($ty:ident { $($field:ident),* $(,)? }) => {
            const _: () = assert!(size_of::<real::$ty>() == size_of::<stub::$ty>(), concat!("size of ", stringify!($ty)));
            const _: () = assert!(align_of::<real::$ty>() == align_of::<stub::$ty>(), concat!("alignment of ", stringify!($ty)));
            $(const _: () = assert!(
                offset_of!(real::$ty, $field) == offset_of!(stub::$ty, $field),
                concat!("offset of ", stringify!($ty), ".", stringify!($field))
            );)*
        };
    }

    macro_rules! same_value {
        ($($name:ident),* $(,)?) => {
            $(const _: () = assert!(real::$name as i64 == stub::$name as i64, concat!("value of ", stringify!($name)));)*
        };
    }

    macro_rules! same_size {
        ($($ty:ident),* $(,)?) => {
            $(const _: () = assert!(size_of::<real::$ty>() == size_of::<stub::$ty>(), concat!("size of ", stringify!($ty)));)*
        };
    }

    same_layout!(switch_loadable_module_function_table {
        switch_api_version,
        load,
        shutdown,
        runtime,
        flags
    });
    same_layout!(switch_event {
        event_id,
        priority,
        owner,
        subclass_name,
        headers,
        last_header,
        body,
        bind_user_data,
        event_user_data,
        key,
        next,
        flags
    });
    same_layout!(switch_event_header {
        name,
        value,
        array,
        idx,
        hash,
        next
    });
    same_layout!(switch_directories {
        base_dir,
        mod_dir,
        conf_dir,
        log_dir,
        run_dir,
        db_dir,
        script_dir,
        temp_dir,
        htdocs_dir,
        grammar_dir,
        storage_dir,
        cache_dir,
        recordings_dir,
        sounds_dir,
        lib_dir,
        certs_dir,
        fonts_dir,
        images_dir,
        data_dir,
        localstate_dir
    });
    same_layout!(switch_stream_handle {
        read_function,
        write_function,
        raw_write_function,
        data,
        end,
        data_size,
        data_len,
        alloc_len,
        alloc_chunk,
        param_event
    });
    same_layout!(switch_api_interface {
        interface_name,
        desc,
        function,
        syntax,
        rwlock,
        refs,
        reflock,
        parent,
        next
    });
    same_layout!(switch_application_interface {
        interface_name,
        application_function,
        long_desc,
        short_desc,
        syntax,
        flags,
        rwlock,
        refs,
        reflock,
        parent,
        next
    });
    same_size!(
        switch_status_t,
        switch_event_types_t,
        switch_log_level_t,
        switch_priority_t,
        switch_call_direction_t
    );
    same_value!(
        SWITCH_CALL_DIRECTION_INBOUND,
        SWITCH_CALL_DIRECTION_OUTBOUND
    );
    same_value!(SWITCH_API_VERSION);
    same_value!(
        SWITCH_STATUS_SUCCESS,
        SWITCH_STATUS_FALSE,
        SWITCH_STATUS_TIMEOUT,
        SWITCH_STATUS_RESTART,
        SWITCH_STATUS_INTR,
        SWITCH_STATUS_NOTIMPL,
        SWITCH_STATUS_MEMERR,
        SWITCH_STATUS_NOOP,
        SWITCH_STATUS_RESAMPLE,
        SWITCH_STATUS_GENERR,
        SWITCH_STATUS_INUSE,
        SWITCH_STATUS_BREAK,
        SWITCH_STATUS_SOCKERR,
        SWITCH_STATUS_MORE_DATA,
        SWITCH_STATUS_NOTFOUND,
        SWITCH_STATUS_UNLOAD,
        SWITCH_STATUS_NOUNLOAD,
        SWITCH_STATUS_IGNORE,
        SWITCH_STATUS_TOO_SMALL,
        SWITCH_STATUS_FOUND,
        SWITCH_STATUS_CONTINUE,
        SWITCH_STATUS_TERM,
        SWITCH_STATUS_NOT_INITALIZED,
        SWITCH_STATUS_TOO_LATE,
        SWITCH_STATUS_XBREAK,
        SWITCH_STATUS_WINBREAK,
    );
    same_value!(
        SWITCH_EVENT_CUSTOM,
        SWITCH_EVENT_CLONE,
        SWITCH_EVENT_CHANNEL_CREATE,
        SWITCH_EVENT_CHANNEL_DESTROY,
        SWITCH_EVENT_CHANNEL_STATE,
        SWITCH_EVENT_CHANNEL_CALLSTATE,
        SWITCH_EVENT_CHANNEL_ANSWER,
        SWITCH_EVENT_CHANNEL_HANGUP,
        SWITCH_EVENT_CHANNEL_HANGUP_COMPLETE,
        SWITCH_EVENT_CHANNEL_EXECUTE,
        SWITCH_EVENT_CHANNEL_EXECUTE_COMPLETE,
        SWITCH_EVENT_CHANNEL_HOLD,
        SWITCH_EVENT_CHANNEL_UNHOLD,
        SWITCH_EVENT_CHANNEL_BRIDGE,
        SWITCH_EVENT_CHANNEL_UNBRIDGE,
        SWITCH_EVENT_CHANNEL_PROGRESS,
        SWITCH_EVENT_CHANNEL_PROGRESS_MEDIA,
        SWITCH_EVENT_CHANNEL_OUTGOING,
        SWITCH_EVENT_CHANNEL_PARK,
        SWITCH_EVENT_CHANNEL_UNPARK,
    );
    same_value!(
        SWITCH_LOG_DEBUG10,
        SWITCH_LOG_DEBUG,
        SWITCH_LOG_INFO,
        SWITCH_LOG_NOTICE,
        SWITCH_LOG_WARNING,
        SWITCH_LOG_ERROR,
        SWITCH_LOG_CRIT,
        SWITCH_LOG_ALERT,
        SWITCH_LOG_CONSOLE,
        SWITCH_LOG_DISABLE,
        SWITCH_LOG_INVALID,
        SWITCH_LOG_UNINIT,
    );
}

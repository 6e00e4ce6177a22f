//! Declarations of the C shim's functions (`c_shim/rtc_shim.h`): FreeSWITCH macros and struct-field access
//! that Rust cannot express. Keep in step with the header by hand: it is small, project-owned, and a
//! mismatch shows up at once in the fake-host tests.

use core::ffi::{c_char, c_int, c_void};

use freeswitch_sys::{
    switch_api_function_t, switch_channel_t, switch_core_session_t, switch_event_header_t,
    switch_event_t, switch_event_types_t, switch_loadable_module_interface_t, switch_status_t,
    switch_stream_handle_t,
};

/// `switch_application_function_t`, spelt here because the bindings allowlist it only through the stub's
/// application-interface layout.
pub type AppFunction =
    Option<unsafe extern "C" fn(session: *mut switch_core_session_t, data: *const c_char)>;

/// Receives a text the shim owns for the duration of the call.
pub type TextSink = Option<unsafe extern "C" fn(user: *mut c_void, text: *const c_char)>;

unsafe extern "C" {
    pub fn rtc_log(
        level: c_int,
        file: *const c_char,
        func: *const c_char,
        line: c_int,
        text: *const c_char,
    );
    pub fn rtc_stream_write(
        stream: *mut switch_stream_handle_t,
        text: *const c_char,
    ) -> switch_status_t;
    pub fn rtc_event_get_header(event: *mut switch_event_t, name: *const c_char) -> *const c_char;
    pub fn rtc_event_id(event: *const switch_event_t) -> switch_event_types_t;
    pub fn rtc_add_api(
        module_interface: *mut switch_loadable_module_interface_t,
        name: *const c_char,
        desc: *const c_char,
        function: switch_api_function_t,
        syntax: *const c_char,
    ) -> switch_status_t;
    pub fn rtc_add_app(
        module_interface: *mut switch_loadable_module_interface_t,
        name: *const c_char,
        short_desc: *const c_char,
        long_desc: *const c_char,
        function: AppFunction,
        syntax: *const c_char,
    ) -> switch_status_t;
    pub fn rtc_session_locate(uuid: *const c_char) -> *mut switch_core_session_t;
    pub fn rtc_session_rwunlock(session: *mut switch_core_session_t);
    pub fn rtc_channel_set_variable(
        channel: *mut switch_channel_t,
        name: *const c_char,
        value: *const c_char,
    ) -> switch_status_t;
    pub fn rtc_channel_hangup(channel: *mut switch_channel_t, cause: c_int);
    pub fn rtc_event_fields_init(names: *const *const c_char, n: c_int) -> c_int;
    pub fn rtc_event_fields(
        event: *const switch_event_t,
        from: *const switch_event_header_t,
        values: *mut *const c_char,
        want: std::ffi::c_uint,
        stop_at_variables: c_int,
    ) -> *const switch_event_header_t;
    pub fn rtc_conf_dir() -> *const c_char;
    pub fn rtc_db_dir() -> *const c_char;
    pub fn rtc_log_dir() -> *const c_char;
    pub fn rtc_reserve_subclass(owner: *const c_char, subclass: *const c_char) -> switch_status_t;
    pub fn rtc_free_subclass(owner: *const c_char, subclass: *const c_char) -> switch_status_t;
    pub fn rtc_fire_custom(
        subclass: *const c_char,
        names: *const *const c_char,
        values: *const *const c_char,
        n: c_int,
    ) -> switch_status_t;
    pub fn rtc_xml_reload(err: *mut *const c_char) -> switch_status_t;
    pub fn rtc_channel_get_variable(
        channel: *mut switch_channel_t,
        name: *const c_char,
    ) -> *const c_char;
    pub fn rtc_channel_profile_field(
        channel: *mut switch_channel_t,
        field: *const c_char,
    ) -> *const c_char;
    pub fn rtc_channel_ready(channel: *mut switch_channel_t) -> c_int;
    pub fn rtc_channel_outbound(channel: *mut switch_channel_t) -> c_int;
    pub fn rtc_session_execute(
        session: *mut switch_core_session_t,
        app: *const c_char,
        arg: *const c_char,
    ) -> switch_status_t;
    pub fn rtc_session_execute_async(
        session: *mut switch_core_session_t,
        app: *const c_char,
        arg: *const c_char,
    ) -> switch_status_t;
    pub fn rtc_config_xml(
        file: *const c_char,
        sink: TextSink,
        user: *mut c_void,
    ) -> switch_status_t;
}

/*
 * rtc_shim.h — mod_rtc_core's C shim: what Rust cannot call directly.
 *
 * FreeSWITCH exposes part of its API as preprocessor macros (header getter, set_variable, hangup, session
 * locate, SWITCH_ADD_API/APP) and as structs whose fields modules fill in. Rust cannot expand the macros,
 * and poking FreeSWITCH structs from C keeps their layout where the compiler checks it. Everything else is
 * called from Rust through freeswitch-sys. The Rust side declares these functions in src/shim.rs: keep the
 * two in step.
 *
 * Built by the root build.rs with the include flags freeswitch-sys found: the real <switch.h>, or the
 * project's stub header when RTC_FS_STUB is defined.
 */
#ifndef RTC_SHIM_H
#define RTC_SHIM_H

#ifdef RTC_FS_STUB
#include "fs_stub.h"
#else
#include <switch.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Logs `text` at `level` on FreeSWITCH's log channel, as "%s": the text is never a format. */
void rtc_log(int level, const char *file, const char *func, int line, const char *text);

/* Writes `text` to an API command's output stream, as "%s". */
switch_status_t rtc_stream_write(switch_stream_handle_t *stream, const char *text);

/* The value of header `name` (first value of an array header), or NULL: switch_event_get_header. */
const char *rtc_event_get_header(switch_event_t *event, const char *name);

/* The event's type (event->event_id). */
switch_event_types_t rtc_event_id(const switch_event_t *event);

/* Registers an fs_cli API command on the module interface: SWITCH_ADD_API. The strings must outlive the
 * module (pass static strings). Returns SWITCH_STATUS_MEMERR when FreeSWITCH could not allocate it. */
switch_status_t rtc_add_api(switch_loadable_module_interface_t *module_interface, const char *name,
                            const char *desc, switch_api_function_t function, const char *syntax);

/* Registers a dialplan application that needs no media (SAF_SUPPORT_NOMEDIA): SWITCH_ADD_APP. Same rules as rtc_add_api. */
switch_status_t rtc_add_app(switch_loadable_module_interface_t *module_interface, const char *name,
                            const char *short_desc, const char *long_desc, switch_application_function_t function,
                            const char *syntax);

/* switch_core_session_locate: the session with that uuid, read-locked, or NULL. Release it with
 * rtc_session_rwunlock. */
switch_core_session_t *rtc_session_locate(const char *uuid);

/* switch_core_session_rwunlock (a macro in builds with SWITCH_DEBUG_RWLOCKS). */
void rtc_session_rwunlock(switch_core_session_t *session);

/* switch_channel_set_variable: sets (value != NULL) or clears (value == NULL) a channel variable. */
switch_status_t rtc_channel_set_variable(switch_channel_t *channel, const char *name, const char *value);

/* switch_channel_hangup with a numeric cause (Q.850 or FreeSWITCH's private codes, as switch_call_cause_t). */
void rtc_channel_hangup(switch_channel_t *channel, int cause);

/* Most header names rtc_event_fields can look for (one bit each of an unsigned mask). */
#define RTC_EVENT_FIELDS_MAX 32

/* Sets the header names rtc_event_fields looks for (the pointers are kept: pass static strings); a name's index
 * is its position. Call at load, before any event is bound. Returns 0, or -1 when n is out of range. */
int rtc_event_fields_init(const char *const *names, int n);

/* Walks the event's headers from `from` (NULL: the first) and sets values[i] to the value of the first header named
 * names[i] (case-insensitive, as switch_event_get_header) for each bit i of `want` whose value is still NULL; the
 * caller clears `values` before the first call. Stops when every wanted field has a value, at the end of the list,
 * or, when `stop_at_variables` is non-zero, at the first channel-variable header. Returns the first header it did
 * not look at (for a second call to go on from), NULL when it looked at them all. The values live as long as the
 * event.
 *
 * One walk instead of one switch_event_get_header per name (each walks the list from its head), and most of it
 * skipped: a channel event carries some 150 headers, two thirds of them channel variables, and every header is a
 * separate allocation to fetch from memory. */
const switch_event_header_t *rtc_event_fields(const switch_event_t *event, const switch_event_header_t *from,
											  const char **values, unsigned want, int stop_at_variables);

/* FreeSWITCH's configuration directory (SWITCH_GLOBAL_dirs.conf_dir), or NULL. */
const char *rtc_conf_dir(void);

/* FreeSWITCH's database directory (SWITCH_GLOBAL_dirs.db_dir, its -db option), or NULL. */
const char *rtc_db_dir(void);
/* SWITCH_GLOBAL_dirs.log_dir: where a relative audit trail file goes. */
const char *rtc_log_dir(void);

/* switch_event_reserve_subclass_detailed / switch_event_free_subclass_detailed: a CUSTOM subclass the module raises,
 * reserved by `owner` (the module's name) at load and freed at unload. FreeSWITCH copies both strings. Reserving
 * answers SWITCH_STATUS_INUSE when another owner holds the subclass; freeing fails (and leaves the subclass to the
 * listeners) while an event-socket listener subscribed to it. (Plain functions, kept here with the event they
 * serve rather than added to the bindings.) */
switch_status_t rtc_reserve_subclass(const char *owner, const char *subclass);
switch_status_t rtc_free_subclass(const char *owner, const char *subclass);

/* Creates a CUSTOM event of `subclass` (FreeSWITCH adds Event-Subclass), adds the n headers names[i]: values[i] in
 * order (copied, never read as formats), and fires it; FreeSWITCH owns the event from then on. The subclass should be
 * reserved (switch_event_reserve_subclass_detailed) by the caller. SWITCH_STATUS_SUCCESS, or the failing call's status
 * (the event, if created, is destroyed). */
switch_status_t rtc_fire_custom(const char *subclass, const char *const *names, const char *const *values, int n);

/* switch_channel_get_variable: the value copied into the session's pool, or NULL. */
const char *rtc_channel_get_variable(switch_channel_t *channel, const char *name);

/* A field of the channel's caller profile by name (switch_caller_get_field_by_name), or NULL. */
const char *rtc_channel_profile_field(switch_channel_t *channel, const char *field);

/* switch_channel_ready: non-zero while the channel is up and not hanging up. */
int rtc_channel_ready(switch_channel_t *channel);

/* Non-zero for an outbound channel (one FreeSWITCH placed). */
int rtc_channel_outbound(switch_channel_t *channel);

/* switch_core_session_execute_application: runs `app` with `arg` on the calling session thread until it returns. */
switch_status_t rtc_session_execute(switch_core_session_t *session, const char *app, const char *arg);

/* switch_core_session_execute_application_async: queues `app` for the session's own thread. The caller holds the
 * session's read lock (rtc_session_locate). */
switch_status_t rtc_session_execute_async(switch_core_session_t *session, const char *app, const char *arg);

/* switch_xml_reload (`reloadxml`): FreeSWITCH re-reads its XML files, so that a configuration edited on disk is seen.
 * SWITCH_STATUS_SUCCESS, or a failure with *err set to FreeSWITCH's static message. */
switch_status_t rtc_xml_reload(const char **err);

/* Receives a text the shim owns for the duration of the call. */
typedef void (*rtc_text_sink_t)(void *user, const char *text);

/* Opens configuration `file` (e.g. "rtc_core.conf") through switch_xml_open_cfg and hands the text of its
 * <configuration> element to `sink`, then frees everything. SWITCH_STATUS_FALSE when the file is missing or
 * unparsable (FreeSWITCH logs why), SWITCH_STATUS_MEMERR when it could not be printed. */
switch_status_t rtc_config_xml(const char *file, rtc_text_sink_t sink, void *user);

#ifdef __cplusplus
}
#endif

#endif /* RTC_SHIM_H */

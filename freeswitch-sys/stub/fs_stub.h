/*
 * fs_stub.h — mod_rtc_core's own declarations of the small part of the FreeSWITCH 1.10 C API it uses.
 *
 * Written by the mod_rtc_core authors from documented ABI facts of FreeSWITCH 1.10.x; it is not a copy of
 * FreeSWITCH's headers. It exists so that the module, its C shim and the fake host used in CI build on
 * machines without a FreeSWITCH installation. A build against the real headers checks this file:
 *   - freeswitch-sys compares every struct layout and every constant below with the real ones at compile
 *     time (see freeswitch-sys/src/lib.rs, `stub_agrees_with_real_headers`);
 *   - c_shim/stub_check.c re-declares the prototypes below after the real <switch.h>, so the C compiler
 *     rejects any prototype that disagrees with FreeSWITCH's.
 *
 * Layout of this file:
 *   1. types, enums, struct layouts    (skipped when FS_STUB_PROTOTYPES_ONLY is defined)
 *   2. function prototypes             (always)
 *   3. data                            (skipped when FS_STUB_PROTOTYPES_ONLY is defined)
 *
 * Only what the module, the shim or the fake host touches is declared. Types the module only passes
 * around by pointer are left incomplete (opaque).
 */
#ifndef RTC_FS_STUB_H
#define RTC_FS_STUB_H

#include <stddef.h>
#include <stdint.h>

#ifndef FS_STUB_PROTOTYPES_ONLY

/* ---- 1. Types ------------------------------------------------------------------------------------ */

/* The module-interface ABI version FreeSWITCH 1.10 checks in every module's function table
 * (switch_types.h defines it as 5 in 1.10.x). A module whose table carries another number is refused. */
#define SWITCH_API_VERSION 5

/* Status codes returned by FreeSWITCH functions and by module entry points. Numbering is FreeSWITCH's:
 * consecutive from 0, then two out-of-line values that make the enum's underlying type unsigned int. */
typedef enum {
    SWITCH_STATUS_SUCCESS = 0,
    SWITCH_STATUS_FALSE = 1,
    SWITCH_STATUS_TIMEOUT = 2,
    SWITCH_STATUS_RESTART = 3,
    SWITCH_STATUS_INTR = 4,
    SWITCH_STATUS_NOTIMPL = 5,
    SWITCH_STATUS_MEMERR = 6,
    SWITCH_STATUS_NOOP = 7,
    SWITCH_STATUS_RESAMPLE = 8,
    SWITCH_STATUS_GENERR = 9,
    SWITCH_STATUS_INUSE = 10,
    SWITCH_STATUS_BREAK = 11,
    SWITCH_STATUS_SOCKERR = 12,
    SWITCH_STATUS_MORE_DATA = 13,
    SWITCH_STATUS_NOTFOUND = 14,
    SWITCH_STATUS_UNLOAD = 15,
    SWITCH_STATUS_NOUNLOAD = 16,
    SWITCH_STATUS_IGNORE = 17,
    SWITCH_STATUS_TOO_SMALL = 18,
    SWITCH_STATUS_FOUND = 19,
    SWITCH_STATUS_CONTINUE = 20,
    SWITCH_STATUS_TERM = 21,
    SWITCH_STATUS_NOT_INITALIZED = 22,
    SWITCH_STATUS_TOO_LATE = 23,
    SWITCH_STATUS_XBREAK = 35,
    SWITCH_STATUS_WINBREAK = 730035
} switch_status_t;

typedef enum { SWITCH_FALSE = 0, SWITCH_TRUE = 1 } switch_bool_t;

/* Log levels (syslog-like; DISABLE = -1 makes the underlying type int). */
typedef enum {
    SWITCH_LOG_DEBUG10 = 110,
    SWITCH_LOG_DEBUG = 7,
    SWITCH_LOG_INFO = 6,
    SWITCH_LOG_NOTICE = 5,
    SWITCH_LOG_WARNING = 4,
    SWITCH_LOG_ERROR = 3,
    SWITCH_LOG_CRIT = 2,
    SWITCH_LOG_ALERT = 1,
    SWITCH_LOG_CONSOLE = 0,
    SWITCH_LOG_DISABLE = -1,
    SWITCH_LOG_INVALID = 64,
    SWITCH_LOG_UNINIT = 1000
} switch_log_level_t;

/* Where switch_log_printf writes; the module always uses the log channel. */
typedef enum {
    SWITCH_CHANNEL_ID_LOG = 0,
    SWITCH_CHANNEL_ID_LOG_CLEAN = 1,
    SWITCH_CHANNEL_ID_EVENT = 2,
    SWITCH_CHANNEL_ID_SESSION = 3
} switch_text_channel_t;

/* Event types: the channel events occupy 2..19 in FreeSWITCH 1.10's numbering. The enum continues past
 * 19 in FreeSWITCH; the module never sees those through its bindings, and the underlying type (unsigned
 * int) is the same. */
typedef enum {
    SWITCH_EVENT_CUSTOM = 0,
    SWITCH_EVENT_CLONE = 1,
    SWITCH_EVENT_CHANNEL_CREATE = 2,
    SWITCH_EVENT_CHANNEL_DESTROY = 3,
    SWITCH_EVENT_CHANNEL_STATE = 4,
    SWITCH_EVENT_CHANNEL_CALLSTATE = 5,
    SWITCH_EVENT_CHANNEL_ANSWER = 6,
    SWITCH_EVENT_CHANNEL_HANGUP = 7,
    SWITCH_EVENT_CHANNEL_HANGUP_COMPLETE = 8,
    SWITCH_EVENT_CHANNEL_EXECUTE = 9,
    SWITCH_EVENT_CHANNEL_EXECUTE_COMPLETE = 10,
    SWITCH_EVENT_CHANNEL_HOLD = 11,
    SWITCH_EVENT_CHANNEL_UNHOLD = 12,
    SWITCH_EVENT_CHANNEL_BRIDGE = 13,
    SWITCH_EVENT_CHANNEL_UNBRIDGE = 14,
    SWITCH_EVENT_CHANNEL_PROGRESS = 15,
    SWITCH_EVENT_CHANNEL_PROGRESS_MEDIA = 16,
    SWITCH_EVENT_CHANNEL_OUTGOING = 17,
    SWITCH_EVENT_CHANNEL_PARK = 18,
    SWITCH_EVENT_CHANNEL_UNPARK = 19
} switch_event_types_t;

typedef enum { SWITCH_PRIORITY_NORMAL = 0, SWITCH_PRIORITY_LOW = 1, SWITCH_PRIORITY_HIGH = 2 } switch_priority_t;

/* Where switch_event_add_header_string puts a header: BOTTOM appends it (the module's use). */
typedef enum {
    SWITCH_STACK_BOTTOM = (1 << 0),
    SWITCH_STACK_TOP = (1 << 1),
    SWITCH_STACK_UNSHIFT = (1 << 2),
    SWITCH_STACK_PUSH = (1 << 3)
} switch_stack_t;

/* Hangup causes: Q.850 codes plus FreeSWITCH's private ones (600+). The module passes the numeric code
 * of rtc_engine::HangupCause, which uses the same numbers. */
typedef enum {
    SWITCH_CAUSE_NONE = 0,
    SWITCH_CAUSE_NORMAL_CLEARING = 16,
    SWITCH_CAUSE_SYSTEM_SHUTDOWN = 701
} switch_call_cause_t;

/* Channel states; only the return type of the hangup function is needed. */
typedef enum { CS_NEW = 0, CS_HANGUP = 10, CS_DESTROY = 12, CS_NONE = 13 } switch_channel_state_t;

/* Which kind of interface switch_loadable_module_create_interface allocates. */
typedef enum {
    SWITCH_ENDPOINT_INTERFACE = 0,
    SWITCH_TIMER_INTERFACE = 1,
    SWITCH_DIALPLAN_INTERFACE = 2,
    SWITCH_CODEC_INTERFACE = 3,
    SWITCH_APPLICATION_INTERFACE = 4,
    SWITCH_API_INTERFACE = 5,
    SWITCH_FILE_INTERFACE = 6,
    SWITCH_SPEECH_INTERFACE = 7,
    SWITCH_DIRECTORY_INTERFACE = 8,
    SWITCH_CHAT_INTERFACE = 9,
    SWITCH_SAY_INTERFACE = 10,
    SWITCH_ASR_INTERFACE = 11,
    SWITCH_MANAGEMENT_INTERFACE = 12,
    SWITCH_LIMIT_INTERFACE = 13,
    SWITCH_CHAT_APPLICATION_INTERFACE = 14,
    SWITCH_JSON_API_INTERFACE = 15,
    SWITCH_DATABASE_INTERFACE = 16
} switch_module_interface_name_t;

/* Application flags (SAF_*). */
#define SAF_NONE 0
/* The application runs without media: FreeSWITCH does not pre-answer the channel for it. */
#define SAF_SUPPORT_NOMEDIA (1 << 0)

typedef uintptr_t switch_size_t;
typedef intptr_t switch_ssize_t;
typedef uint32_t switch_module_flag_t;

/* Which way a channel was created: inbound (it called in) or outbound (FreeSWITCH placed it). */
typedef enum { SWITCH_CALL_DIRECTION_INBOUND = 0, SWITCH_CALL_DIRECTION_OUTBOUND = 1 } switch_call_direction_t;

/* Opaque types: only ever handled by pointer. */
typedef struct fspr_pool_t switch_memory_pool_t;
typedef struct fspr_thread_rwlock_t switch_thread_rwlock_t;
typedef struct fspr_thread_mutex_t switch_mutex_t;
typedef struct switch_core_session switch_core_session_t;
typedef struct switch_channel switch_channel_t;
typedef struct switch_loadable_module_interface switch_loadable_module_interface_t;
typedef struct switch_event_node switch_event_node_t;
typedef struct switch_event_header switch_event_header_t;
typedef struct switch_xml *switch_xml_t;
typedef struct switch_caller_profile switch_caller_profile_t;

typedef struct switch_event switch_event_t;
typedef struct switch_stream_handle switch_stream_handle_t;
typedef struct switch_api_interface switch_api_interface_t;
typedef struct switch_application_interface switch_application_interface_t;

/* Callback and entry-point types. */
typedef void (*switch_event_callback_t)(switch_event_t *event);
typedef switch_status_t (*switch_module_load_t)(switch_loadable_module_interface_t **module_interface,
                                                switch_memory_pool_t *pool);
typedef switch_status_t (*switch_module_runtime_t)(void);
typedef switch_status_t (*switch_module_shutdown_t)(void);
typedef uint8_t *(*switch_stream_handle_read_function_t)(switch_stream_handle_t *handle, int *len);
typedef switch_status_t (*switch_stream_handle_write_function_t)(switch_stream_handle_t *handle,
                                                                 const char *fmt, ...);
typedef switch_status_t (*switch_stream_handle_raw_write_function_t)(switch_stream_handle_t *handle,
                                                                     uint8_t *data, switch_size_t datalen);
typedef switch_status_t (*switch_api_function_t)(const char *cmd, switch_core_session_t *session,
                                                 switch_stream_handle_t *stream);
typedef void (*switch_application_function_t)(switch_core_session_t *session, const char *data);

/* The table every module exports as `<name>_module_interface`; FreeSWITCH dlsyms it on load. */
typedef struct switch_loadable_module_function_table {
    int switch_api_version;
    switch_module_load_t load;
    switch_module_shutdown_t shutdown;
    switch_module_runtime_t runtime;
    switch_module_flag_t flags;
} switch_loadable_module_function_table_t;

/* An event. The module reads only event_id (through the shim); headers are read through
 * switch_event_get_header_idx. */
struct switch_event {
    switch_event_types_t event_id;
    switch_priority_t priority;
    char *owner;
    char *subclass_name;
    switch_event_header_t *headers;
    switch_event_header_t *last_header;
    char *body;
    void *bind_user_data;
    void *event_user_data;
    unsigned long key;
    struct switch_event *next;
    int flags;
};

/* One header of an event: a singly linked list from switch_event.headers. `hash` is the case-insensitive hash
 * of the name (switch_ci_hashfunc_default), or 0 when not computed; `array`/`idx` hold array headers. The
 * shim's event reader walks the list once. */
struct switch_event_header {
    char *name;
    char *value;
    char **array;
    int idx;
    unsigned long hash;
    struct switch_event_header *next;
};

/* The directories FreeSWITCH runs with (its -conf, -log, -db, ... options), as the global SWITCH_GLOBAL_dirs. The
 * module reads conf_dir (relative table paths in rtc_core.conf.xml resolve against it) and db_dir (where the ledger
 * rtc_core.db goes). */
typedef struct switch_directories {
    char *base_dir;
    char *mod_dir;
    char *conf_dir;
    char *log_dir;
    char *run_dir;
    char *db_dir;
    char *script_dir;
    char *temp_dir;
    char *htdocs_dir;
    char *grammar_dir;
    char *storage_dir;
    char *cache_dir;
    char *recordings_dir;
    char *sounds_dir;
    char *lib_dir;
    char *certs_dir;
    char *fonts_dir;
    char *images_dir;
    char *data_dir;
    char *localstate_dir;
} switch_directories;

/* The output stream an API command writes to; the shim calls write_function with "%s". */
struct switch_stream_handle {
    switch_stream_handle_read_function_t read_function;
    switch_stream_handle_write_function_t write_function;
    switch_stream_handle_raw_write_function_t raw_write_function;
    void *data;
    void *end;
    switch_size_t data_size;
    switch_size_t data_len;
    switch_size_t alloc_len;
    switch_size_t alloc_chunk;
    switch_event_t *param_event;
};

/* An API (fs_cli command) interface; the shim fills the first four fields like SWITCH_ADD_API. */
struct switch_api_interface {
    const char *interface_name;
    const char *desc;
    switch_api_function_t function;
    const char *syntax;
    switch_thread_rwlock_t *rwlock;
    int refs;
    switch_mutex_t *reflock;
    switch_loadable_module_interface_t *parent;
    struct switch_api_interface *next;
};

/* A dialplan application interface; the shim fills the first six fields like SWITCH_ADD_APP. */
struct switch_application_interface {
    const char *interface_name;
    switch_application_function_t application_function;
    const char *long_desc;
    const char *short_desc;
    const char *syntax;
    uint32_t flags;
    switch_thread_rwlock_t *rwlock;
    int refs;
    switch_mutex_t *reflock;
    switch_loadable_module_interface_t *parent;
    struct switch_application_interface *next;
};

#endif /* FS_STUB_PROTOTYPES_ONLY */

/* ---- 2. Prototypes ------------------------------------------------------------------------------- */

#ifdef __cplusplus
extern "C" {
#endif

/* Logging: printf-like. The module always passes "%s" and its own formatted text. */
void switch_log_printf(switch_text_channel_t channel, const char *file, const char *func, int line,
                       const char *userdata, switch_log_level_t level, const char *fmt, ...);

/* Events. Bindings made with switch_event_bind_removable are removed with switch_event_unbind, which
 * waits for deliveries in progress. switch_event_get_header is a macro over ..._get_header_idx(e, h, -1). */
switch_status_t switch_event_bind_removable(const char *id, switch_event_types_t event, const char *subclass_name,
                                            switch_event_callback_t callback, void *user_data,
                                            switch_event_node_t **node);
switch_status_t switch_event_unbind(switch_event_node_t **node);
char *switch_event_get_header_idx(switch_event_t *event, const char *header_name, int idx);
/* Events the module raises: a CUSTOM event's subclass is reserved by its owner (a module name) at load and freed at
 * unload; an event is created (FreeSWITCH adds Event-Subclass), given headers (copied), then fired: fire takes the
 * event whatever it returns (queued, delivered or destroyed). switch_event_create_subclass and switch_event_fire are
 * macros over the ..._detailed functions. */
switch_status_t switch_event_reserve_subclass_detailed(const char *owner, const char *subclass_name);
switch_status_t switch_event_free_subclass_detailed(const char *owner, const char *subclass_name);
switch_status_t switch_event_create_subclass_detailed(const char *file, const char *func, int line,
                                                      switch_event_t **event, switch_event_types_t event_id,
                                                      const char *subclass_name);
switch_status_t switch_event_add_header_string(switch_event_t *event, switch_stack_t stack, const char *header_name,
                                               const char *data);
switch_status_t switch_event_fire_detailed(const char *file, const char *func, int line, switch_event_t **event,
                                           void *user_data);
void switch_event_destroy(switch_event_t **event);
/* The case-insensitive hash FreeSWITCH keeps in switch_event_header.hash; klen -1: NUL-terminated key. */
unsigned int switch_ci_hashfunc_default(const char *char_key, switch_ssize_t *klen);

/* Module interfaces (SWITCH_ADD_API / SWITCH_ADD_APP allocate through the second one). */
switch_loadable_module_interface_t *switch_loadable_module_create_module_interface(switch_memory_pool_t *pool,
                                                                                  const char *name);
void *switch_loadable_module_create_interface(switch_loadable_module_interface_t *mod,
                                              switch_module_interface_name_t iname);

/* Sessions and channels. switch_core_session_locate is a macro over ..._perform_locate; a located session
 * holds a read lock until switch_core_session_rwunlock. switch_channel_set_variable is a macro over
 * ..._set_variable_var_check(c, n, v, SWITCH_TRUE); switch_channel_hangup over ..._perform_hangup. */
switch_core_session_t *switch_core_session_perform_locate(const char *uuid_str, const char *file, const char *func,
                                                          int line);
void switch_core_session_rwunlock(switch_core_session_t *session);
switch_channel_t *switch_core_session_get_channel(switch_core_session_t *session);
char *switch_core_session_get_uuid(switch_core_session_t *session);
switch_status_t switch_channel_set_variable_var_check(switch_channel_t *channel, const char *varname,
                                                      const char *value, switch_bool_t var_check);
switch_channel_state_t switch_channel_perform_hangup(switch_channel_t *channel, const char *file, const char *func,
                                                     int line, switch_call_cause_t hangup_cause);
/* switch_channel_get_variable is a macro over ..._get_variable_dup(c, n, SWITCH_TRUE, -1): the value is copied
 * into the session's pool. */
const char *switch_channel_get_variable_dup(switch_channel_t *channel, const char *varname, switch_bool_t dup,
                                            int idx);
/* switch_channel_ready is a macro over ..._test_ready(c, SWITCH_TRUE, SWITCH_FALSE). */
int switch_channel_test_ready(switch_channel_t *channel, switch_bool_t check_ready, switch_bool_t check_media);
switch_call_direction_t switch_channel_direction(switch_channel_t *channel);
/* The channel's caller profile and one of its fields by name ("network_addr", "caller_id_number",
 * "destination_number", ...): no struct layout needed. */
switch_caller_profile_t *switch_channel_get_caller_profile(switch_channel_t *channel);
const char *switch_caller_get_field_by_name(switch_caller_profile_t *caller_profile, const char *name);
/* Runs application `app` on the session, on the calling (session) thread, until it returns.
 * switch_core_session_execute_application is a macro over ..._get_flags(s, a, g, NULL). */
switch_status_t switch_core_session_execute_application_get_flags(switch_core_session_t *session, const char *app,
                                                                  const char *arg, int32_t *flags);
/* Queues application `app` for the session's own thread (a private "execute" event): safe from any thread that
 * holds the session's read lock; a parked channel runs it within its next park loop turn. */
switch_status_t switch_core_session_execute_application_async(switch_core_session_t *session, const char *app,
                                                              const char *arg);

/* Configuration: open_cfg returns the document root (free it with switch_xml_free) and sets *node to the
 * <configuration name="..."> element. toxml_ex returns a malloc'd string the caller frees with free(). */
switch_xml_t switch_xml_open_cfg(const char *file_path, switch_xml_t *node, switch_event_t *params);
char *switch_xml_toxml_ex(switch_xml_t xml, switch_bool_t prn_header, switch_bool_t use_utf8_encoding);
void switch_xml_free(switch_xml_t xml);
/* Re-reads FreeSWITCH's whole XML registry from disk (what `reloadxml` does); *err gets a static message. */
switch_status_t switch_xml_reload(const char **err);

#ifdef __cplusplus
}
#endif

/* ---- 3. Data ------------------------------------------------------------------------------------- */

#ifndef FS_STUB_PROTOTYPES_ONLY
#ifdef __cplusplus
extern "C" {
#endif
/* FreeSWITCH's directories (declared in switch_types.h as SWITCH_DECLARE_DATA). */
extern switch_directories SWITCH_GLOBAL_dirs;
#ifdef __cplusplus
}
#endif
#endif /* FS_STUB_PROTOTYPES_ONLY */

#endif /* RTC_FS_STUB_H */

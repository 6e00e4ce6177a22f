/* rtc_shim.c — see rtc_shim.h for why this file exists. Keep it to macro expansions and field access. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rtc_shim.h"

void rtc_log(int level, const char *file, const char *func, int line, const char *text)
{
	switch_log_printf(SWITCH_CHANNEL_ID_LOG, file, func, line, NULL, (switch_log_level_t)level, "%s", text);
}

switch_status_t rtc_stream_write(switch_stream_handle_t *stream, const char *text)
{
	if (!stream || !stream->write_function) {
		return SWITCH_STATUS_FALSE;
	}
	return stream->write_function(stream, "%s", text);
}

const char *rtc_event_get_header(switch_event_t *event, const char *name)
{
	return switch_event_get_header_idx(event, name, -1);
}

switch_event_types_t rtc_event_id(const switch_event_t *event)
{
	return event->event_id;
}

switch_status_t rtc_add_api(switch_loadable_module_interface_t *module_interface, const char *name,
							const char *desc, switch_api_function_t function, const char *syntax)
{
	switch_api_interface_t *api =
		(switch_api_interface_t *)switch_loadable_module_create_interface(module_interface, SWITCH_API_INTERFACE);
	if (!api) {
		return SWITCH_STATUS_MEMERR;
	}
	api->interface_name = name;
	api->desc = desc;
	api->function = function;
	api->syntax = syntax;
	return SWITCH_STATUS_SUCCESS;
}

switch_status_t rtc_add_app(switch_loadable_module_interface_t *module_interface, const char *name,
							const char *short_desc, const char *long_desc, switch_application_function_t function,
							const char *syntax)
{
	switch_application_interface_t *app = (switch_application_interface_t *)switch_loadable_module_create_interface(
		module_interface, SWITCH_APPLICATION_INTERFACE);
	if (!app) {
		return SWITCH_STATUS_MEMERR;
	}
	app->interface_name = name;
	app->application_function = function;
	app->short_desc = short_desc;
	app->long_desc = long_desc;
	app->syntax = syntax;
	/* No media needed: deciding a call must not pre-answer it (bridge, which it runs, supports no-media too). */
	app->flags = SAF_SUPPORT_NOMEDIA;
	return SWITCH_STATUS_SUCCESS;
}

switch_core_session_t *rtc_session_locate(const char *uuid)
{
	return switch_core_session_perform_locate(uuid, __FILE__, __func__, __LINE__);
}

void rtc_session_rwunlock(switch_core_session_t *session)
{
	switch_core_session_rwunlock(session);
}

switch_status_t rtc_channel_set_variable(switch_channel_t *channel, const char *name, const char *value)
{
	return switch_channel_set_variable_var_check(channel, name, value, SWITCH_TRUE);
}

void rtc_channel_hangup(switch_channel_t *channel, int cause)
{
	switch_channel_perform_hangup(channel, __FILE__, __func__, __LINE__, (switch_call_cause_t)cause);
}

switch_status_t rtc_config_xml(const char *file, rtc_text_sink_t sink, void *user)
{
	switch_xml_t cfg = NULL;
	switch_xml_t root = switch_xml_open_cfg(file, &cfg, NULL);
	char *text;

	if (!root) {
		return SWITCH_STATUS_FALSE;
	}
	if (!cfg) {
		switch_xml_free(root);
		return SWITCH_STATUS_FALSE;
	}
	/* Printed text is malloc'd by FreeSWITCH for the caller to free(). */
	text = switch_xml_toxml_ex(cfg, SWITCH_FALSE, SWITCH_TRUE);
	if (!text) {
		switch_xml_free(root);
		return SWITCH_STATUS_MEMERR;
	}
	sink(user, text);
	free(text);
	switch_xml_free(root);
	return SWITCH_STATUS_SUCCESS;
}

/* The names rtc_event_fields looks for, their FreeSWITCH hashes, and an open-addressing table from hash to index
 * (64 slots, linear probing; 0 = empty, else index + 1). Written once at load, read-only while events flow. */
#define RTC_FIELD_SLOTS 64
static const char *field_names[RTC_EVENT_FIELDS_MAX];
static unsigned long field_hashes[RTC_EVENT_FIELDS_MAX];
static unsigned char field_slots[RTC_FIELD_SLOTS];
static int field_count;

static unsigned long header_hash(const char *name)
{
	switch_ssize_t len = -1;
	return (unsigned long)switch_ci_hashfunc_default(name, &len);
}

int rtc_event_fields_init(const char *const *names, int n)
{
	int i;
	if (n < 0 || n > RTC_EVENT_FIELDS_MAX) {
		return -1;
	}
	memset(field_slots, 0, sizeof(field_slots));
	for (i = 0; i < n; i++) {
		unsigned slot;
		field_names[i] = names[i];
		field_hashes[i] = header_hash(names[i]);
		slot = (unsigned)(field_hashes[i] % RTC_FIELD_SLOTS);
		while (field_slots[slot]) {
			slot = (slot + 1) % RTC_FIELD_SLOTS;
		}
		field_slots[slot] = (unsigned char)(i + 1);
	}
	field_count = n;
	return 0;
}

/* A channel variable's header ("variable_<name>", or "scope_variable_<name>" for a scoped one)? FreeSWITCH adds them
 * after the event's own headers and the channel's and caller profiles' (switch_channel_event_set_extended_data runs
 * after switch_channel_event_set_basic_data), so the first one ends the part of the list most fields live in. The
 * name is allocated right after its header node, so this look costs little over reading the node. */
static int is_variable(const char *name)
{
	return (name[0] == 'v' && !strncmp(name, "variable_", 9)) ||
		   (name[0] == 's' && !strncmp(name, "scope_variable_", 15));
}

const switch_event_header_t *rtc_event_fields(const switch_event_t *event, const switch_event_header_t *from,
											  const char **values, unsigned want, int stop_at_variables)
{
	const switch_event_header_t *hp = from ? from : event->headers;
	unsigned missing = 0;
	int i;
	for (i = 0; i < field_count; i++) {
		if ((want & (1u << i)) && !values[i]) {
			missing |= 1u << i;
		}
	}
	for (; hp && missing; hp = hp->next) {
		unsigned long hash = hp->hash ? hp->hash : header_hash(hp->name);
		unsigned slot = (unsigned)(hash % RTC_FIELD_SLOTS);
		unsigned char at;
		if (stop_at_variables && is_variable(hp->name)) {
			return hp;
		}
		while ((at = field_slots[slot])) {
			i = at - 1;
			if (field_hashes[i] == hash && (missing & (1u << i)) && !strcasecmp(hp->name, field_names[i])) {
				values[i] = hp->value;
				missing &= ~(1u << i);
				break;
			}
			slot = (slot + 1) % RTC_FIELD_SLOTS;
		}
	}
	return hp;
}

const char *rtc_conf_dir(void)
{
	return SWITCH_GLOBAL_dirs.conf_dir;
}

const char *rtc_db_dir(void)
{
	return SWITCH_GLOBAL_dirs.db_dir;
}

const char *rtc_log_dir(void)
{
	return SWITCH_GLOBAL_dirs.log_dir;
}

switch_status_t rtc_reserve_subclass(const char *owner, const char *subclass)
{
	return switch_event_reserve_subclass_detailed(owner, subclass);
}

switch_status_t rtc_free_subclass(const char *owner, const char *subclass)
{
	return switch_event_free_subclass_detailed(owner, subclass);
}

switch_status_t rtc_fire_custom(const char *subclass, const char *const *names, const char *const *values, int n)
{
	switch_event_t *event = NULL;
	switch_status_t status;
	int i;

	status = switch_event_create_subclass_detailed(__FILE__, __func__, __LINE__, &event, SWITCH_EVENT_CUSTOM, subclass);
	if (status != SWITCH_STATUS_SUCCESS || !event) {
		return status != SWITCH_STATUS_SUCCESS ? status : SWITCH_STATUS_MEMERR;
	}
	for (i = 0; i < n; i++) {
		status = switch_event_add_header_string(event, SWITCH_STACK_BOTTOM, names[i], values[i]);
		if (status != SWITCH_STATUS_SUCCESS) {
			switch_event_destroy(&event);
			return status;
		}
	}
	/* Fire takes the event whatever it returns (queued, delivered, or destroyed). */
	return switch_event_fire_detailed(__FILE__, __func__, __LINE__, &event, NULL);
}

const char *rtc_channel_get_variable(switch_channel_t *channel, const char *name)
{
	return switch_channel_get_variable_dup(channel, name, SWITCH_TRUE, -1);
}

const char *rtc_channel_profile_field(switch_channel_t *channel, const char *field)
{
	switch_caller_profile_t *profile = switch_channel_get_caller_profile(channel);
	return profile ? switch_caller_get_field_by_name(profile, field) : NULL;
}

int rtc_channel_ready(switch_channel_t *channel)
{
	return switch_channel_test_ready(channel, SWITCH_TRUE, SWITCH_FALSE);
}

int rtc_channel_outbound(switch_channel_t *channel)
{
	return switch_channel_direction(channel) == SWITCH_CALL_DIRECTION_OUTBOUND;
}

switch_status_t rtc_session_execute(switch_core_session_t *session, const char *app, const char *arg)
{
	return switch_core_session_execute_application_get_flags(session, app, arg, NULL);
}

switch_status_t rtc_session_execute_async(switch_core_session_t *session, const char *app, const char *arg)
{
	return switch_core_session_execute_application_async(session, app, arg);
}

switch_status_t rtc_xml_reload(const char **err)
{
	return switch_xml_reload(err);
}

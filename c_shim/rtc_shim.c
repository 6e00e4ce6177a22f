/* rtc_shim.c — see rtc_shim.h for why this file exists. Keep it to macro expansions and field access. */
#include <stdlib.h>

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
	app->flags = SAF_NONE;
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

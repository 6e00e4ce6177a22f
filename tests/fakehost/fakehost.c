/*
 * fakehost.c — a fake FreeSWITCH core for testing mod_rtc_core.so without FreeSWITCH.
 *
 * Implements the switch_* functions the module imports (as declared in freeswitch-sys/stub/fs_stub.h, so
 * the prototypes are the stub's, which a real build checks against FreeSWITCH's), with just enough
 * behaviour to drive the module: event bindings with FreeSWITCH's unbind-waits-for-delivery guarantee, CUSTOM
 * subclass reservations and the events the module fires (recorded), a module interface holding API and app
 * interfaces, sessions with read-lock counts and variables, a configuration file registry, directories, and a log
 * kept in memory.
 *
 * Tests drive it through the fakehost_* control functions at the bottom. Loaded like libfreeswitch: dlopen'ed
 * RTLD_GLOBAL before the module, so the module's imports resolve here.
 */
#define _GNU_SOURCE /* asprintf */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "fs_stub.h"

#define FH_EXPORT __attribute__((visibility("default")))

/* ---- log ----------------------------------------------------------------------------------------- */

#define LOG_LINES 4096
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *log_lines[LOG_LINES];
static int log_count;

/* Appends malloc'd `entry` to list[*count] under `lock` while there is room (of `max`); otherwise frees it. */
static void keep(pthread_mutex_t *lock, char **list, int *count, int max, char *entry)
{
	pthread_mutex_lock(lock);
	if (*count < max) {
		list[(*count)++] = entry;
		entry = NULL;
	}
	pthread_mutex_unlock(lock);
	free(entry);
}

FH_EXPORT void switch_log_printf(switch_text_channel_t channel, const char *file, const char *func, int line,
								 const char *userdata, switch_log_level_t level, const char *fmt, ...)
{
	char text[4096];
	char *entry;
	va_list ap;
	(void)channel;
	(void)userdata;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (asprintf(&entry, "[%d] %s:%d %s: %s", (int)level, file ? file : "?", line, func ? func : "?", text) < 0) {
		return;
	}
	if (getenv("FAKEHOST_ECHO")) {
		fputs(entry, stderr);
	}
	keep(&log_lock, log_lines, &log_count, LOG_LINES, entry);
}

/* ---- events -------------------------------------------------------------------------------------- */

struct switch_event_node {
	switch_event_types_t type;
	switch_event_callback_t callback;
	void *user_data;
	char *id;
	struct switch_event_node *next;
};

/* FreeSWITCH delivers under a read lock and unbinds under the write lock: after unbind returns, no delivery
 * of that binding is in progress. The fake does the same. */
static pthread_rwlock_t event_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct switch_event_node *nodes;

FH_EXPORT switch_status_t switch_event_bind_removable(const char *id, switch_event_types_t event,
													  const char *subclass_name, switch_event_callback_t callback,
													  void *user_data, switch_event_node_t **node)
{
	struct switch_event_node *n = calloc(1, sizeof(*n));
	(void)subclass_name;
	if (!n || !callback) {
		free(n);
		return SWITCH_STATUS_MEMERR;
	}
	n->type = event;
	n->callback = callback;
	n->user_data = user_data;
	n->id = strdup(id ? id : "");
	pthread_rwlock_wrlock(&event_lock);
	n->next = nodes;
	nodes = n;
	pthread_rwlock_unlock(&event_lock);
	if (node) {
		*node = n;
	}
	return SWITCH_STATUS_SUCCESS;
}

FH_EXPORT switch_status_t switch_event_unbind(switch_event_node_t **node)
{
	struct switch_event_node **p;
	switch_status_t status = SWITCH_STATUS_FALSE;
	if (!node || !*node) {
		return SWITCH_STATUS_FALSE;
	}
	pthread_rwlock_wrlock(&event_lock);
	for (p = &nodes; *p; p = &(*p)->next) {
		if (*p == *node) {
			struct switch_event_node *dead = *p;
			*p = dead->next;
			free(dead->id);
			free(dead);
			status = SWITCH_STATUS_SUCCESS;
			break;
		}
	}
	pthread_rwlock_unlock(&event_lock);
	*node = NULL;
	return status;
}

/* An event: the stub's struct first, then the fake's header storage, linked as FreeSWITCH links them. */
#define MAX_HEADERS 256
struct fake_event {
	switch_event_t ev;
	int n;
	switch_event_header_t headers[MAX_HEADERS];
};

/* FreeSWITCH's case-insensitive header-name hash (hash * 33 + lower-case byte). */
FH_EXPORT unsigned int switch_ci_hashfunc_default(const char *char_key, switch_ssize_t *klen)
{
	unsigned int hash = 0;
	const unsigned char *p = (const unsigned char *)char_key;
	switch_ssize_t i = 0;
	for (; *klen < 0 ? *p != 0 : i < *klen; p++, i++) {
		unsigned char c = *p;
		hash = hash * 33 + (unsigned)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	if (*klen < 0) {
		*klen = i;
	}
	return hash;
}

FH_EXPORT char *switch_event_get_header_idx(switch_event_t *event, const char *header_name, int idx)
{
	switch_event_header_t *hp;
	(void)idx;
	if (!event || !header_name) {
		return NULL;
	}
	for (hp = event->headers; hp; hp = hp->next) {
		if (!strcasecmp(hp->name, header_name)) {
			return hp->value;
		}
	}
	return NULL;
}

/* ---- events the module raises --------------------------------------------------------------------- */

/* Reserved CUSTOM subclasses, as FreeSWITCH keeps them: name and owner. They outlive a module's load, as in
 * FreeSWITCH: a module that forgets to free its own finds it taken (SWITCH_STATUS_INUSE) at the next load. */
#define MAX_SUBCLASSES 16
static pthread_mutex_t subclass_lock = PTHREAD_MUTEX_INITIALIZER;
static char *subclass_names[MAX_SUBCLASSES];
static char *subclass_owners[MAX_SUBCLASSES];

static int find_subclass(const char *name)
{
	int i;
	for (i = 0; name && i < MAX_SUBCLASSES; i++) {
		if (subclass_names[i] && !strcmp(subclass_names[i], name)) {
			return i;
		}
	}
	return -1;
}

FH_EXPORT switch_status_t switch_event_reserve_subclass_detailed(const char *owner, const char *subclass_name)
{
	switch_status_t status = SWITCH_STATUS_MEMERR;
	int i;
	if (!owner || !subclass_name) {
		return SWITCH_STATUS_FALSE;
	}
	pthread_mutex_lock(&subclass_lock);
	if (find_subclass(subclass_name) >= 0) {
		status = SWITCH_STATUS_INUSE;
	} else {
		for (i = 0; i < MAX_SUBCLASSES; i++) {
			if (!subclass_names[i]) {
				subclass_names[i] = strdup(subclass_name);
				subclass_owners[i] = strdup(owner);
				status = SWITCH_STATUS_SUCCESS;
				break;
			}
		}
	}
	pthread_mutex_unlock(&subclass_lock);
	return status;
}

FH_EXPORT switch_status_t switch_event_free_subclass_detailed(const char *owner, const char *subclass_name)
{
	switch_status_t status = SWITCH_STATUS_FALSE;
	int i;
	pthread_mutex_lock(&subclass_lock);
	i = find_subclass(subclass_name);
	if (i >= 0 && owner && !strcmp(subclass_owners[i], owner)) {
		free(subclass_names[i]);
		free(subclass_owners[i]);
		subclass_names[i] = subclass_owners[i] = NULL;
		status = SWITCH_STATUS_SUCCESS;
	}
	pthread_mutex_unlock(&subclass_lock);
	return status;
}

FH_EXPORT switch_status_t switch_event_create_subclass_detailed(const char *file, const char *func, int line,
																switch_event_t **event, switch_event_types_t event_id,
																const char *subclass_name)
{
	(void)file;
	(void)func;
	(void)line;
	*event = NULL;
	if (event_id != SWITCH_EVENT_CUSTOM && subclass_name) {
		return SWITCH_STATUS_GENERR;
	}
	if (!(*event = calloc(1, sizeof(**event)))) {
		return SWITCH_STATUS_MEMERR;
	}
	(*event)->event_id = event_id;
	switch_event_add_header_string(*event, SWITCH_STACK_BOTTOM, "Event-Name", event_id == SWITCH_EVENT_CUSTOM ? "CUSTOM" : "OTHER");
	if (subclass_name) {
		(*event)->subclass_name = strdup(subclass_name);
		switch_event_add_header_string(*event, SWITCH_STACK_BOTTOM, "Event-Subclass", subclass_name);
	}
	return SWITCH_STATUS_SUCCESS;
}

/* Appends a copy of the header (only SWITCH_STACK_BOTTOM is used by the module; the fake appends for any). */
FH_EXPORT switch_status_t switch_event_add_header_string(switch_event_t *event, switch_stack_t stack,
														 const char *header_name, const char *data)
{
	switch_event_header_t *h;
	(void)stack;
	if (!event || !header_name || !data || !(h = calloc(1, sizeof(*h)))) {
		return SWITCH_STATUS_FALSE;
	}
	h->name = strdup(header_name);
	h->value = strdup(data);
	h->idx = 0;
	if (event->last_header) {
		event->last_header->next = h;
	} else {
		event->headers = h;
	}
	event->last_header = h;
	return SWITCH_STATUS_SUCCESS;
}

FH_EXPORT void switch_event_destroy(switch_event_t **event)
{
	switch_event_header_t *h, *next;
	if (!event || !*event) {
		return;
	}
	for (h = (*event)->headers; h; h = next) {
		next = h->next;
		free(h->name);
		free(h->value);
		free(h);
	}
	free((*event)->subclass_name);
	free(*event);
	*event = NULL;
}

/* CUSTOM events fired, as text ("name: value" lines), oldest first; tests read them with fakehost_fired. */
#define MAX_FIRED 256
static pthread_mutex_t fired_lock = PTHREAD_MUTEX_INITIALIZER;
static char *fired[MAX_FIRED];
static int fired_count;

/* Records the event (a CUSTOM one whose subclass nobody reserved is refused, as a check on the module) and takes it,
 * as FreeSWITCH does whatever the outcome. */
FH_EXPORT switch_status_t switch_event_fire_detailed(const char *file, const char *func, int line,
													 switch_event_t **event, void *user_data)
{
	switch_event_header_t *h;
	size_t len = 1;
	char *text;
	int reserved;
	(void)user_data;
	if (!event || !*event) {
		return SWITCH_STATUS_FALSE;
	}
	if ((*event)->event_id == SWITCH_EVENT_CUSTOM) {
		pthread_mutex_lock(&subclass_lock);
		reserved = find_subclass((*event)->subclass_name) >= 0;
		pthread_mutex_unlock(&subclass_lock);
		if (!reserved) {
			switch_log_printf(SWITCH_CHANNEL_ID_LOG, file, func, line, NULL, SWITCH_LOG_ERROR,
							  "fakehost: CUSTOM event %s fired without a reservation\n",
							  (*event)->subclass_name ? (*event)->subclass_name : "(none)");
			switch_event_destroy(event);
			return SWITCH_STATUS_FALSE;
		}
	}
	for (h = (*event)->headers; h; h = h->next) {
		len += strlen(h->name) + strlen(h->value) + 3;
	}
	if ((text = calloc(1, len))) {
		for (h = (*event)->headers; h; h = h->next) {
			strcat(text, h->name);
			strcat(text, ": ");
			strcat(text, h->value);
			strcat(text, "\n");
		}
		keep(&fired_lock, fired, &fired_count, MAX_FIRED, text);
	}
	switch_event_destroy(event);
	return SWITCH_STATUS_SUCCESS;
}

/* ---- module interface ---------------------------------------------------------------------------- */

#define MAX_IFACES 16
struct switch_loadable_module_interface {
	char *name;
	int napis, napps;
	switch_api_interface_t *apis[MAX_IFACES];
	switch_application_interface_t *apps[MAX_IFACES];
};

static pthread_mutex_t module_lock = PTHREAD_MUTEX_INITIALIZER;
static struct switch_loadable_module_interface *current_module;

FH_EXPORT switch_loadable_module_interface_t *switch_loadable_module_create_module_interface(switch_memory_pool_t *pool,
																							const char *name)
{
	struct switch_loadable_module_interface *m = calloc(1, sizeof(*m));
	(void)pool;
	if (!m) {
		return NULL;
	}
	m->name = strdup(name ? name : "");
	pthread_mutex_lock(&module_lock);
	current_module = m;
	pthread_mutex_unlock(&module_lock);
	return m;
}

FH_EXPORT void *switch_loadable_module_create_interface(switch_loadable_module_interface_t *mod,
														switch_module_interface_name_t iname)
{
	if (!mod) {
		return NULL;
	}
	if (iname == SWITCH_API_INTERFACE && mod->napis < MAX_IFACES) {
		switch_api_interface_t *api = calloc(1, sizeof(*api));
		mod->apis[mod->napis++] = api;
		return api;
	}
	if (iname == SWITCH_APPLICATION_INTERFACE && mod->napps < MAX_IFACES) {
		switch_application_interface_t *app = calloc(1, sizeof(*app));
		mod->apps[mod->napps++] = app;
		return app;
	}
	return NULL;
}

static void free_module(struct switch_loadable_module_interface *m)
{
	int i;
	if (!m) {
		return;
	}
	for (i = 0; i < m->napis; i++) {
		free(m->apis[i]);
	}
	for (i = 0; i < m->napps; i++) {
		free(m->apps[i]);
	}
	free(m->name);
	free(m);
}

/* ---- sessions and channels ----------------------------------------------------------------------- */

#define MAX_VARS 64
struct switch_channel {
	int nvars;
	char *names[MAX_VARS];
	char *values[MAX_VARS];
	int hangup_cause; /* -1 until hung up */
};

/* The fake's caller profile: the three fields the module reads by name. */
struct switch_caller_profile {
	char caller_id_number[64];
	char destination_number[64];
	char network_addr[64];
};

#define MAX_QUEUED 8
struct switch_core_session {
	char uuid[64];
	int locks;
	int outbound;
	struct switch_caller_profile profile;
	struct switch_channel channel;
	/* Applications queued with execute_application_async, run by fakehost_run_queued. */
	int nqueued;
	char *queued_app[MAX_QUEUED];
	char *queued_arg[MAX_QUEUED];
	/* Every application executed on the session, as "app(arg)" lines. */
	char executed[4096];
	/* When set, a bridge fails with this cause name; otherwise it "connects" and the channel hangs up after it. */
	char bridge_fails[64];
	struct switch_core_session *next;
};

static pthread_mutex_t session_lock = PTHREAD_MUTEX_INITIALIZER;
static struct switch_core_session *sessions;

static struct switch_core_session *find_session(const char *uuid)
{
	struct switch_core_session *s;
	for (s = sessions; s; s = s->next) {
		if (uuid && !strcasecmp(s->uuid, uuid)) {
			return s;
		}
	}
	return NULL;
}

FH_EXPORT switch_core_session_t *switch_core_session_perform_locate(const char *uuid_str, const char *file,
																	const char *func, int line)
{
	struct switch_core_session *s;
	(void)file;
	(void)func;
	(void)line;
	pthread_mutex_lock(&session_lock);
	s = find_session(uuid_str);
	if (s) {
		s->locks++;
	}
	pthread_mutex_unlock(&session_lock);
	return s;
}

FH_EXPORT void switch_core_session_rwunlock(switch_core_session_t *session)
{
	pthread_mutex_lock(&session_lock);
	if (session) {
		session->locks--;
	}
	pthread_mutex_unlock(&session_lock);
}

FH_EXPORT switch_channel_t *switch_core_session_get_channel(switch_core_session_t *session)
{
	return session ? &session->channel : NULL;
}

FH_EXPORT char *switch_core_session_get_uuid(switch_core_session_t *session)
{
	return session ? session->uuid : NULL;
}

FH_EXPORT switch_status_t switch_channel_set_variable_var_check(switch_channel_t *channel, const char *varname,
																const char *value, switch_bool_t var_check)
{
	int i;
	(void)var_check;
	if (!channel || !varname) {
		return SWITCH_STATUS_FALSE;
	}
	pthread_mutex_lock(&session_lock);
	for (i = 0; i < channel->nvars; i++) {
		if (!strcmp(channel->names[i], varname)) {
			free(channel->values[i]);
			channel->values[i] = strdup(value ? value : "");
			pthread_mutex_unlock(&session_lock);
			return SWITCH_STATUS_SUCCESS;
		}
	}
	if (channel->nvars == MAX_VARS) {
		pthread_mutex_unlock(&session_lock);
		return SWITCH_STATUS_MEMERR;
	}
	channel->names[channel->nvars] = strdup(varname);
	channel->values[channel->nvars] = strdup(value ? value : "");
	channel->nvars++;
	pthread_mutex_unlock(&session_lock);
	return SWITCH_STATUS_SUCCESS;
}

FH_EXPORT switch_channel_state_t switch_channel_perform_hangup(switch_channel_t *channel, const char *file,
															   const char *func, int line,
															   switch_call_cause_t hangup_cause)
{
	(void)file;
	(void)func;
	(void)line;
	pthread_mutex_lock(&session_lock);
	if (channel && channel->hangup_cause < 0) {
		channel->hangup_cause = (int)hangup_cause;
	}
	pthread_mutex_unlock(&session_lock);
	return CS_HANGUP;
}

static struct switch_core_session *session_of_channel(switch_channel_t *channel)
{
	return channel ? (struct switch_core_session *)((char *)channel - offsetof(struct switch_core_session, channel))
				   : NULL;
}

/* As FreeSWITCH's channel variables (an event's headers), looked up without regard to case. */
static const char *channel_var(switch_channel_t *channel, const char *varname)
{
	int i;
	for (i = 0; channel && i < channel->nvars; i++) {
		if (!strcasecmp(channel->names[i], varname)) {
			return channel->values[i];
		}
	}
	return NULL;
}

FH_EXPORT const char *switch_channel_get_variable_dup(switch_channel_t *channel, const char *varname, switch_bool_t dup,
													  int idx)
{
	const char *v;
	(void)dup;
	(void)idx;
	pthread_mutex_lock(&session_lock);
	v = channel_var(channel, varname);
	pthread_mutex_unlock(&session_lock);
	/* The fake never frees a value while a test runs (set_variable frees the old one: tests do not race it). */
	return v;
}

FH_EXPORT int switch_channel_test_ready(switch_channel_t *channel, switch_bool_t check_ready, switch_bool_t check_media)
{
	(void)check_ready;
	(void)check_media;
	return channel && channel->hangup_cause < 0;
}

FH_EXPORT switch_call_direction_t switch_channel_direction(switch_channel_t *channel)
{
	struct switch_core_session *s = session_of_channel(channel);
	return s && s->outbound ? SWITCH_CALL_DIRECTION_OUTBOUND : SWITCH_CALL_DIRECTION_INBOUND;
}

FH_EXPORT switch_caller_profile_t *switch_channel_get_caller_profile(switch_channel_t *channel)
{
	struct switch_core_session *s = session_of_channel(channel);
	return s ? &s->profile : NULL;
}

FH_EXPORT const char *switch_caller_get_field_by_name(switch_caller_profile_t *caller_profile, const char *name)
{
	if (!caller_profile || !name) {
		return NULL;
	}
	if (!strcasecmp(name, "caller_id_number")) {
		return caller_profile->caller_id_number;
	}
	if (!strcasecmp(name, "destination_number")) {
		return caller_profile->destination_number;
	}
	if (!strcasecmp(name, "network_addr")) {
		return caller_profile->network_addr[0] ? caller_profile->network_addr : NULL;
	}
	return NULL;
}

static void record_executed(struct switch_core_session *s, const char *app, const char *arg)
{
	size_t len = strlen(s->executed);
	snprintf(s->executed + len, sizeof(s->executed) - len, "%s(%s)\n", app, arg ? arg : "");
}

FH_EXPORT switch_status_t switch_core_session_execute_application_get_flags(switch_core_session_t *session,
																			const char *app, const char *arg,
																			int32_t *flags)
{
	(void)flags;
	if (!session || !app) {
		return SWITCH_STATUS_FALSE;
	}
	pthread_mutex_lock(&session_lock);
	record_executed(session, app, arg);
	pthread_mutex_unlock(&session_lock);
	if (!strcmp(app, "bridge")) {
		if (session->bridge_fails[0]) {
			switch_channel_set_variable_var_check(&session->channel, "originate_failed_cause", session->bridge_fails,
												  SWITCH_FALSE);
		} else {
			/* Connected, talked, and the far end hung up: hangup_after_bridge ends the call. */
			switch_channel_perform_hangup(&session->channel, __FILE__, __func__, __LINE__, SWITCH_CAUSE_NORMAL_CLEARING);
		}
	}
	return SWITCH_STATUS_SUCCESS;
}

FH_EXPORT switch_status_t switch_core_session_execute_application_async(switch_core_session_t *session,
																		const char *app, const char *arg)
{
	switch_status_t status = SWITCH_STATUS_FALSE;
	if (!session || !app) {
		return status;
	}
	pthread_mutex_lock(&session_lock);
	if (session->nqueued < MAX_QUEUED) {
		session->queued_app[session->nqueued] = strdup(app);
		session->queued_arg[session->nqueued] = strdup(arg ? arg : "");
		session->nqueued++;
		status = SWITCH_STATUS_SUCCESS;
	}
	pthread_mutex_unlock(&session_lock);
	return status;
}

/* ---- configuration ------------------------------------------------------------------------------- */

struct switch_xml {
	char *text;
};

static pthread_mutex_t config_lock = PTHREAD_MUTEX_INITIALIZER;
static char *config_name;
static char *config_text;

FH_EXPORT switch_xml_t switch_xml_open_cfg(const char *file_path, switch_xml_t *node, switch_event_t *params)
{
	switch_xml_t root = NULL;
	(void)params;
	pthread_mutex_lock(&config_lock);
	if (config_name && file_path && !strcmp(config_name, file_path) && config_text) {
		root = calloc(1, sizeof(*root));
		if (root) {
			root->text = strdup(config_text);
		}
	}
	pthread_mutex_unlock(&config_lock);
	if (node) {
		*node = root;
	}
	return root;
}

FH_EXPORT char *switch_xml_toxml_ex(switch_xml_t xml, switch_bool_t prn_header, switch_bool_t use_utf8_encoding)
{
	(void)prn_header;
	(void)use_utf8_encoding;
	return xml && xml->text ? strdup(xml->text) : NULL;
}

FH_EXPORT void switch_xml_free(switch_xml_t xml)
{
	if (xml) {
		free(xml->text);
		free(xml);
	}
}

FH_EXPORT switch_status_t switch_xml_reload(const char **err)
{
	if (err) {
		*err = "Success";
	}
	return SWITCH_STATUS_SUCCESS;
}

/* ---- directories -------------------------------------------------------------------------------- */

FH_EXPORT switch_directories SWITCH_GLOBAL_dirs;

/* ---- control API for tests ----------------------------------------------------------------------- */

#define DIR_MAX 4096

/* Points *slot at a copy of `dir` in `buf` (DIR_MAX bytes), or NULL. */
static void set_dir(char **slot, char *buf, const char *dir)
{
	if (dir) {
		snprintf(buf, DIR_MAX, "%s", dir);
		*slot = buf;
	} else {
		*slot = NULL;
	}
}

/* Sets SWITCH_GLOBAL_dirs.conf_dir (NULL: unset). */
FH_EXPORT void fakehost_set_conf_dir(const char *dir)
{
	static char buf[DIR_MAX];
	set_dir(&SWITCH_GLOBAL_dirs.conf_dir, buf, dir);
}

/* Sets SWITCH_GLOBAL_dirs.db_dir (NULL: unset), where the module keeps its ledger. */
FH_EXPORT void fakehost_set_db_dir(const char *dir)
{
	static char buf[DIR_MAX];
	set_dir(&SWITCH_GLOBAL_dirs.db_dir, buf, dir);
}

/* The owner of reserved CUSTOM subclass `name`, malloc'd, or NULL when it is not reserved. */
FH_EXPORT char *fakehost_subclass_owner(const char *name)
{
	char *out = NULL;
	int i;
	pthread_mutex_lock(&subclass_lock);
	i = find_subclass(name);
	if (i >= 0) {
		out = strdup(subclass_owners[i]);
	}
	pthread_mutex_unlock(&subclass_lock);
	return out;
}

/* The CUSTOM events of `subclass` fired so far (every one when NULL), each as "name: value" lines followed by a blank
 * line, malloc'd. */
FH_EXPORT char *fakehost_fired(const char *subclass)
{
	size_t len = 1;
	char *out, want[256];
	int i;
	snprintf(want, sizeof(want), "Event-Subclass: %s\n", subclass ? subclass : "");
	pthread_mutex_lock(&fired_lock);
	for (i = 0; i < fired_count; i++) {
		len += strlen(fired[i]) + 1;
	}
	out = calloc(1, len);
	for (i = 0; out && i < fired_count; i++) {
		if (!subclass || strstr(fired[i], want)) {
			strcat(out, fired[i]);
			strcat(out, "\n");
		}
	}
	pthread_mutex_unlock(&fired_lock);
	return out;
}

/* Sets the session's caller profile and direction. */
FH_EXPORT void fakehost_session_profile(const char *uuid, const char *caller, const char *destination,
										const char *network_addr, int outbound)
{
	struct switch_core_session *s;
	pthread_mutex_lock(&session_lock);
	if ((s = find_session(uuid))) {
		snprintf(s->profile.caller_id_number, sizeof(s->profile.caller_id_number), "%s", caller ? caller : "");
		snprintf(s->profile.destination_number, sizeof(s->profile.destination_number), "%s",
				 destination ? destination : "");
		snprintf(s->profile.network_addr, sizeof(s->profile.network_addr), "%s", network_addr ? network_addr : "");
		s->outbound = outbound;
	}
	pthread_mutex_unlock(&session_lock);
}

/* Makes the session's next bridges fail with `cause` (a cause name), or succeed (NULL). */
FH_EXPORT void fakehost_session_bridge_fails(const char *uuid, const char *cause)
{
	struct switch_core_session *s;
	pthread_mutex_lock(&session_lock);
	if ((s = find_session(uuid))) {
		snprintf(s->bridge_fails, sizeof(s->bridge_fails), "%s", cause ? cause : "");
	}
	pthread_mutex_unlock(&session_lock);
}

/* The applications executed on the session so far ("app(arg)" lines), malloc'd, or NULL. */
FH_EXPORT char *fakehost_session_executed(const char *uuid)
{
	struct switch_core_session *s;
	char *out = NULL;
	pthread_mutex_lock(&session_lock);
	if ((s = find_session(uuid))) {
		out = strdup(s->executed);
	}
	pthread_mutex_unlock(&session_lock);
	return out;
}

/* Runs the applications queued on the session (as a parked channel's loop does); returns how many ran. */
FH_EXPORT int fakehost_run_queued(const char *uuid)
{
	struct switch_core_session *s;
	int ran = 0;
	for (;;) {
		char *app = NULL, *arg = NULL;
		switch_application_function_t fn = NULL;
		int i;
		pthread_mutex_lock(&session_lock);
		s = find_session(uuid);
		if (s && s->nqueued) {
			app = s->queued_app[0];
			arg = s->queued_arg[0];
			for (i = 1; i < s->nqueued; i++) {
				s->queued_app[i - 1] = s->queued_app[i];
				s->queued_arg[i - 1] = s->queued_arg[i];
			}
			s->nqueued--;
		}
		pthread_mutex_unlock(&session_lock);
		if (!app) {
			return ran;
		}
		pthread_mutex_lock(&module_lock);
		for (i = 0; current_module && i < current_module->napps; i++) {
			if (current_module->apps[i]->interface_name && !strcmp(current_module->apps[i]->interface_name, app)) {
				fn = current_module->apps[i]->application_function;
			}
		}
		pthread_mutex_unlock(&module_lock);
		if (fn) {
			pthread_mutex_lock(&session_lock);
			record_executed(s, app, arg);
			pthread_mutex_unlock(&session_lock);
			fn(s, arg);
		} else {
			switch_core_session_execute_application_get_flags(s, app, arg, NULL);
		}
		free(app);
		free(arg);
		ran++;
	}
}

/* Sets the text switch_xml_open_cfg returns for `name` (NULL text: the file is missing). */
FH_EXPORT void fakehost_set_config(const char *name, const char *text)
{
	pthread_mutex_lock(&config_lock);
	free(config_name);
	free(config_text);
	config_name = name ? strdup(name) : NULL;
	config_text = text ? strdup(text) : NULL;
	pthread_mutex_unlock(&config_lock);
}

/* Number of live event bindings. */
FH_EXPORT int fakehost_bindings(void)
{
	int n = 0;
	struct switch_event_node *p;
	pthread_rwlock_rdlock(&event_lock);
	for (p = nodes; p; p = p->next) {
		n++;
	}
	pthread_rwlock_unlock(&event_lock);
	return n;
}

/* Delivers an event of `type` with `n` name/value pairs to every binding of that type; returns how many. */
FH_EXPORT int fakehost_fire(int type, const char *const *names, const char *const *values, int n)
{
	struct fake_event fe;
	struct switch_event_node *p;
	int delivered = 0, i;
	memset(&fe, 0, sizeof(fe));
	fe.ev.event_id = (switch_event_types_t)type;
	fe.n = n < MAX_HEADERS ? n : MAX_HEADERS;
	for (i = 0; i < fe.n; i++) {
		switch_ssize_t len = -1;
		fe.headers[i].name = (char *)names[i];
		fe.headers[i].value = (char *)values[i];
		/* Like FreeSWITCH, a header may carry no hash (0): readers must cope. Every third one has none here. */
		fe.headers[i].hash = i % 3 == 2 ? 0 : switch_ci_hashfunc_default(names[i], &len);
		fe.headers[i].next = i + 1 < fe.n ? &fe.headers[i + 1] : NULL;
	}
	fe.ev.headers = fe.n ? &fe.headers[0] : NULL;
	fe.ev.last_header = fe.n ? &fe.headers[fe.n - 1] : NULL;
	pthread_rwlock_rdlock(&event_lock);
	for (p = nodes; p; p = p->next) {
		if (p->type == (switch_event_types_t)type) {
			fe.ev.bind_user_data = p->user_data;
			p->callback(&fe.ev);
			delivered++;
		}
	}
	pthread_rwlock_unlock(&event_lock);
	return delivered;
}

/* The stream FreeSWITCH hands an API: write_function appends printf-style to a growing buffer. */
struct fake_stream {
	char *buf;
	size_t len, cap;
};

static switch_status_t fake_write(switch_stream_handle_t *handle, const char *fmt, ...)
{
	struct fake_stream *fs = (struct fake_stream *)handle->data;
	va_list ap;
	int need;
	va_start(ap, fmt);
	need = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (need < 0) {
		return SWITCH_STATUS_FALSE;
	}
	if (fs->len + (size_t)need + 1 > fs->cap) {
		size_t cap = (fs->len + (size_t)need + 1) * 2;
		char *b = realloc(fs->buf, cap);
		if (!b) {
			return SWITCH_STATUS_MEMERR;
		}
		fs->buf = b;
		fs->cap = cap;
	}
	va_start(ap, fmt);
	vsnprintf(fs->buf + fs->len, fs->cap - fs->len, fmt, ap);
	va_end(ap);
	fs->len += (size_t)need;
	return SWITCH_STATUS_SUCCESS;
}

/* Runs API `name` with `cmd`. Returns its status, or -1 if no such API; *out gets a malloc'd copy of the
 * output (free with fakehost_free). */
FH_EXPORT int fakehost_api(const char *name, const char *cmd, char **out)
{
	struct fake_stream fs = {0};
	switch_stream_handle_t stream;
	switch_api_function_t fn = NULL;
	int i, status;
	pthread_mutex_lock(&module_lock);
	for (i = 0; current_module && i < current_module->napis; i++) {
		if (current_module->apis[i]->interface_name && !strcmp(current_module->apis[i]->interface_name, name)) {
			fn = current_module->apis[i]->function;
		}
	}
	pthread_mutex_unlock(&module_lock);
	*out = NULL;
	if (!fn) {
		return -1;
	}
	memset(&stream, 0, sizeof(stream));
	stream.data = &fs;
	stream.write_function = fake_write;
	status = (int)fn(cmd, NULL, &stream);
	*out = fs.buf ? fs.buf : strdup("");
	return status;
}

/* Describes API/app `name` as "desc|syntax" (malloc'd), or NULL. */
FH_EXPORT char *fakehost_interface(int app, const char *name)
{
	char *out = NULL;
	int i;
	pthread_mutex_lock(&module_lock);
	for (i = 0; current_module && !app && i < current_module->napis; i++) {
		switch_api_interface_t *a = current_module->apis[i];
		if (a->interface_name && !strcmp(a->interface_name, name) &&
			asprintf(&out, "%s|%s", a->desc ? a->desc : "", a->syntax ? a->syntax : "") < 0) {
			out = NULL;
		}
	}
	for (i = 0; current_module && app && i < current_module->napps; i++) {
		switch_application_interface_t *a = current_module->apps[i];
		if (a->interface_name && !strcmp(a->interface_name, name) &&
			asprintf(&out, "%s|%s", a->short_desc ? a->short_desc : "", a->syntax ? a->syntax : "") < 0) {
			out = NULL;
		}
	}
	pthread_mutex_unlock(&module_lock);
	return out;
}

/* Runs app `name` on session `uuid` with `data`. Returns 0, or -1 if no such app or session. */
FH_EXPORT int fakehost_app(const char *name, const char *uuid, const char *data)
{
	switch_application_function_t fn = NULL;
	struct switch_core_session *s;
	int i;
	pthread_mutex_lock(&module_lock);
	for (i = 0; current_module && i < current_module->napps; i++) {
		if (current_module->apps[i]->interface_name && !strcmp(current_module->apps[i]->interface_name, name)) {
			fn = current_module->apps[i]->application_function;
		}
	}
	pthread_mutex_unlock(&module_lock);
	pthread_mutex_lock(&session_lock);
	s = find_session(uuid);
	pthread_mutex_unlock(&session_lock);
	if (!fn || !s) {
		return -1;
	}
	fn(s, data);
	return 0;
}

/* Creates a session (a no-op if it exists). */
FH_EXPORT void fakehost_session_new(const char *uuid)
{
	struct switch_core_session *s;
	pthread_mutex_lock(&session_lock);
	if (!find_session(uuid) && (s = calloc(1, sizeof(*s)))) {
		snprintf(s->uuid, sizeof(s->uuid), "%s", uuid);
		s->channel.hangup_cause = -1;
		s->next = sessions;
		sessions = s;
	}
	pthread_mutex_unlock(&session_lock);
}

/* Sets channel variable `var` of session `uuid`, as an endpoint would before the dialplan runs (mod_sofia's
 * sip_h_X-... from an INVITE's headers). */
FH_EXPORT void fakehost_session_set_var(const char *uuid, const char *var, const char *value)
{
	struct switch_core_session *s;
	pthread_mutex_lock(&session_lock);
	s = find_session(uuid);
	pthread_mutex_unlock(&session_lock);
	if (s) {
		switch_channel_set_variable_var_check(&s->channel, var, value, SWITCH_FALSE);
	}
}

/* Channel variable `var` of session `uuid`, malloc'd, or NULL. */
FH_EXPORT char *fakehost_session_var(const char *uuid, const char *var)
{
	struct switch_core_session *s;
	char *out = NULL;
	int i;
	pthread_mutex_lock(&session_lock);
	s = find_session(uuid);
	for (i = 0; s && i < s->channel.nvars; i++) {
		if (!strcmp(s->channel.names[i], var)) {
			out = strdup(s->channel.values[i]);
		}
	}
	pthread_mutex_unlock(&session_lock);
	return out;
}

/* The hangup cause of session `uuid`: -1 while up, -2 if no such session. */
FH_EXPORT int fakehost_session_hangup_cause(const char *uuid)
{
	struct switch_core_session *s;
	int cause;
	pthread_mutex_lock(&session_lock);
	s = find_session(uuid);
	cause = s ? s->channel.hangup_cause : -2;
	pthread_mutex_unlock(&session_lock);
	return cause;
}

/* Read locks held on session `uuid` (-1 if no such session). */
FH_EXPORT int fakehost_session_locks(const char *uuid)
{
	struct switch_core_session *s;
	int locks;
	pthread_mutex_lock(&session_lock);
	s = find_session(uuid);
	locks = s ? s->locks : -1;
	pthread_mutex_unlock(&session_lock);
	return locks;
}

/* Number of log lines containing `needle`. */
FH_EXPORT int fakehost_log_count(const char *needle)
{
	int i, n = 0;
	pthread_mutex_lock(&log_lock);
	for (i = 0; i < log_count; i++) {
		if (strstr(log_lines[i], needle)) {
			n++;
		}
	}
	pthread_mutex_unlock(&log_lock);
	return n;
}

/* The whole log, malloc'd. */
FH_EXPORT char *fakehost_log_dump(void)
{
	size_t len = 1;
	char *out;
	int i;
	pthread_mutex_lock(&log_lock);
	for (i = 0; i < log_count; i++) {
		len += strlen(log_lines[i]);
	}
	out = calloc(1, len);
	for (i = 0; out && i < log_count; i++) {
		strcat(out, log_lines[i]);
	}
	pthread_mutex_unlock(&log_lock);
	return out;
}

/* What FreeSWITCH does after a module's shutdown returns: frees its interfaces (its pool). */
FH_EXPORT void fakehost_module_destroyed(void)
{
	pthread_mutex_lock(&module_lock);
	free_module(current_module);
	current_module = NULL;
	pthread_mutex_unlock(&module_lock);
}

/* Forgets sessions, the log and the CUSTOM events fired (not the subclass reservations: FreeSWITCH keeps those). */
FH_EXPORT void fakehost_reset(void)
{
	struct switch_core_session *s;
	int i;
	pthread_mutex_lock(&session_lock);
	while ((s = sessions)) {
		sessions = s->next;
		for (i = 0; i < s->nqueued; i++) {
			free(s->queued_app[i]);
			free(s->queued_arg[i]);
		}
		for (i = 0; i < s->channel.nvars; i++) {
			free(s->channel.names[i]);
			free(s->channel.values[i]);
		}
		free(s);
	}
	pthread_mutex_unlock(&session_lock);
	pthread_mutex_lock(&log_lock);
	for (i = 0; i < log_count; i++) {
		free(log_lines[i]);
	}
	log_count = 0;
	pthread_mutex_unlock(&log_lock);
	pthread_mutex_lock(&fired_lock);
	for (i = 0; i < fired_count; i++) {
		free(fired[i]);
	}
	fired_count = 0;
	pthread_mutex_unlock(&fired_lock);
}

FH_EXPORT void fakehost_free(void *p)
{
	free(p);
}

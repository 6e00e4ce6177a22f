/*
 * stub_check.c — compiled only in builds against the real FreeSWITCH headers.
 *
 * Re-declares the stub header's prototypes after the real <switch.h>: C rejects a redeclaration whose type
 * differs, so a stub prototype that drifted from FreeSWITCH's fails the build here. (freeswitch-sys checks
 * the stub's struct layouts and constants the same way on the Rust side.)
 */
#include <switch.h>

#define FS_STUB_PROTOTYPES_ONLY
#include "fs_stub.h"

int rtc_stub_check_compiled(void);
int rtc_stub_check_compiled(void)
{
	return SWITCH_API_VERSION;
}

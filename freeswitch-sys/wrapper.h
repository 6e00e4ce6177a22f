/* What bindgen reads in a build against the real FreeSWITCH headers. */
#include <switch.h>

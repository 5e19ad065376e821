/* The wall clock of the spawn-rate window (session-children.c, MaxSpawnsPerMinute), which a test can move
 * forward instead of sleeping out the window: CLOCK_REALTIME plus the whole seconds written in the file
 * that $CCDOCKER_TEST_CLOCK_OFFSET_FILE names, read at each call. Test-only (docs/ccdockerd.md): with the
 * variable unset, as in the shipped units, it is CLOCK_REALTIME and reads no file. */
#pragma once

#include <stdint.h>

uint64_t test_clock_realtime_usec(void);

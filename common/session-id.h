/* Session ids, which the daemon makes and every program that names a session checks: 12 lowercase hex
 * digits, valid in unit and slice names (no '-'), in object paths once escaped, and in container
 * names. */
#pragma once

#include <stdbool.h>

bool session_id_is_valid(const char *id);

/* A new random id in ret (NUL-ended), from getrandom(); a negative errno-style value if that fails. */
int session_id_new(char ret[static 13]);

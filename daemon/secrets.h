/* The daemon's secrets (SPEC.md 6, DESIGN.md decision 10): read once at startup from systemd
 * credentials ($CREDENTIALS_DIRECTORY, one file per secret, named by the file) and from CC_SECRET_<NAME>
 * variables of the daemon's environment (which are then removed from it). A session asks for secrets by
 * name; the values only ever leave this store as podman secrets of type env for the session's
 * container. Nothing here logs a value; values are wiped when the store is freed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "cleanup.h"

/* A secret's name: an environment variable name, [A-Za-z_][A-Za-z0-9_]*, at most this long. */
#define SECRET_NAME_MAX 64
/* A secret's value: at most this many bytes (podman's limit is 512 KB). */
#define SECRET_VALUE_MAX (64U * 1024)
/* Secrets one session may ask for. */
#define SESSION_SECRETS_MAX 32

typedef struct SecretStore SecretStore;

bool secret_name_is_valid(const char *name);

/* Reads credentials_dir (NULL or missing: none) and the CC_SECRET_* variables of the environment, and
 * unsets those variables. A credential file and a variable of the same name: the file wins (and a
 * warning says so). Bad names, unreadable or oversized files are skipped with a warning naming them. */
int secret_store_load(const char *credentials_dir, SecretStore **ret);
SecretStore *secret_store_free(SecretStore *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(SecretStore *, secret_store_free);

/* The value of a secret, or NULL when there is none of that name. */
const char *secret_store_get(const SecretStore *s, const char *name);
size_t secret_store_count(const SecretStore *s);

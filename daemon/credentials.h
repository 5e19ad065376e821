/* The daemon's systemd credentials ($CREDENTIALS_DIRECTORY, one file per credential, named by the file):
 * one safe reader for every file of that directory, and the choice of the model proxy's credential.
 * Two kinds of file live there: the model credential (anthropic-api-key, claude-oauth-token), which
 * the model proxy adds to upstream calls, and every other file, a secret a session may ask for
 * (secrets.c). Nothing here logs a value. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* A model credential's value: at most this many bytes. */
#define MODEL_CREDENTIAL_MAX 4096

typedef enum ModelCredentialKind {
        MODEL_CREDENTIAL_NONE,    /* nothing is added (tests without a credential) */
        MODEL_CREDENTIAL_API_KEY, /* x-api-key: KEY */
        MODEL_CREDENTIAL_OAUTH,   /* Authorization: Bearer TOKEN, plus anthropic-beta: oauth-2025-04-20 */
} ModelCredentialKind;

/* Reads the credential file name (one path component) of dir: a regular file, opened without following
 * a symlink, of at most max bytes and without a NUL byte in it. *ret is NUL-terminated (*ret_len
 * leaves the NUL out); the caller wipes it. -ENOENT when there is no such file, -EFBIG when it is
 * longer than max, -EBADFD when it is not a regular file, -ELOOP for a symlink, -EBADMSG for a NUL. */
int credential_read(const char *dir, const char *name, size_t max, char **ret, size_t *ret_len);

/* The names of the files in dir, sorted, leaving out those starting with a dot: a NULL-ended list.
 * -ENOENT when dir does not exist. */
int credential_list(const char *dir, char ***ret);

/* Whether a credential file is the daemon's own (the model proxy's, or the Discord bot token), not a
 * session secret. */
bool credential_is_model(const char *name);

/* The credential the daemon adds to model calls: the first of the credential files
 * credentials_dir/anthropic-api-key and credentials_dir/claude-oauth-token (credentials_dir may be
 * NULL), then the variables ANTHROPIC_API_KEY and CLAUDE_CODE_OAUTH_TOKEN, which are then removed from
 * the environment (and their values wiped in it). Surrounding whitespace is dropped; a value with other
 * control characters or spaces, or longer than MODEL_CREDENTIAL_MAX, is refused (-EINVAL, the message
 * names the source, not the value). None found: 0 with MODEL_CREDENTIAL_NONE and *ret_value NULL. */
int model_credential_load(const char *credentials_dir, ModelCredentialKind *ret_kind, char **ret_value);

/* The Discord bot token (docs/discord.md): the credential file credentials_dir/discord-bot-token
 * (credentials_dir may be NULL), else the variable DISCORD_BOT_TOKEN, which is then removed from the
 * environment with its value wiped in it. Surrounding whitespace is dropped; a value longer than max or
 * with spaces or control characters is refused (-EINVAL, the message names the source, never the value).
 * None: 0 and *ret NULL. The caller wipes *ret. */
#define DISCORD_TOKEN_CREDENTIAL "discord-bot-token"
#define DISCORD_TOKEN_ENV "DISCORD_BOT_TOKEN"
int discord_token_load(const char *credentials_dir, size_t max, char **ret);

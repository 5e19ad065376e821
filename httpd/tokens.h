/* The bearer-token store of ccdocker-httpd, shared by the server (which checks tokens and records the
 * sessions each token created) and `ccdockerctl token` (which creates, lists and revokes them). A small
 * SQLite database: a token is shown once when it is created and only its SHA-256 is kept. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct TokenStore TokenStore;

typedef struct TokenInfo {
        char *name;
        uint64_t created_usec;
        uint64_t last_used_usec; /* 0: never */
        uint64_t n_sessions;     /* sessions created with it (not their descendants) */
} TokenInfo;

/* "ccd_" and 43 characters of base64url: 32 random bytes. */
#define TOKEN_PREFIX "ccd_"
#define TOKEN_LENGTH (4 + 43)

/* The hex SHA-256 under which a token (or a stream ticket, httpd/tickets.c) is kept. */
#define TOKEN_HASH_HEX_LENGTH 64
void token_hash_hex(const char *text, char ret[static TOKEN_HASH_HEX_LENGTH + 1]);
/* prefix (4 characters) and 32 random bytes in base64url without its padding: TOKEN_LENGTH characters. */
int token_random_text(const char *prefix, char ret[static TOKEN_LENGTH + 1]);

/* A token name: 1-64 characters of [A-Za-z0-9._-]. */
bool token_name_is_valid(const char *name);

/* The default path of the store: /var/lib/ccdocker-httpd/tokens.db, or for the user mode
 * $XDG_STATE_HOME/ccdocker-httpd/tokens.db (~/.local/state/... without XDG_STATE_HOME). */
int token_store_default_path(bool user, char **ret);

/* Opens (with create: also makes the directory, the file with mode 0600 and the schema) the store. */
int token_store_open(const char *path, bool create, TokenStore **ret);
TokenStore *token_store_free(TokenStore *s);
static inline void token_store_freep(TokenStore **s) {
        if (*s)
                token_store_free(*s);
}

/* A new random token under a new name: -EEXIST if the name is taken, -EINVAL if it is not valid.
 * *ret_token is the token text, the only time it exists outside the caller's hands. */
int token_store_create(TokenStore *s, const char *name, char **ret_token);
/* Removes a token and its record of sessions: -ENOENT if there is none of that name. */
int token_store_revoke(TokenStore *s, const char *name);
/* Every token, oldest first. */
int token_store_list(TokenStore *s, TokenInfo **ret, size_t *ret_n);
void token_info_free_many(TokenInfo *t, size_t n);

/* The id of the token with this text: -ENOENT for an unknown (or revoked) token. Marks it used. */
int token_store_lookup(TokenStore *s, const char *token, int64_t *ret_id);
/* > 0 if a token of this id is in the store (not revoked), 0 if not. */
int token_store_has_id(TokenStore *s, int64_t id);
/* Records that token id created session_id (POST /sessions, spawn). */
int token_store_add_session(TokenStore *s, int64_t token_id, const char *session_id);
/* > 0 if token id created session_id, 0 if not. */
int token_store_has_session(TokenStore *s, int64_t token_id, const char *session_id);
/* One read transaction around many token_store_has_session() calls (a list of sessions), so that SQLite
 * takes its lock and checks the file once rather than per call; token_store_read_end() ends it (a no-op
 * when begin failed). Nothing may write between them. */
int token_store_read_begin(TokenStore *s);
void token_store_read_end(TokenStore *s);
static inline void token_store_read_endp(TokenStore **s) {
        if (*s)
                token_store_read_end(*s);
}

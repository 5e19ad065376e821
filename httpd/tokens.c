/* The token store (tokens.h): SQLite with a rollback journal, so that ccdockerctl (often root) and
 * ccdocker-httpd (its own user) can both open it without sharing -wal/-shm files. Tokens are looked up by
 * the hex SHA-256 of their text; the text itself is never stored. Statements are prepared once per open
 * and run with bound parameters only. */
#define _GNU_SOURCE
#include "tokens.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <nettle/base16.h>
#include <nettle/base64.h>
#include <nettle/sha2.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "time-util.h"
#include "util.h"

#define TOKEN_BUSY_TIMEOUT_MSEC 250
/* last_used_usec is written at most this often per token, so checking a token is a read. */
#define TOKEN_LAST_USED_GRANULARITY_USEC (60 * USEC_PER_SEC)

static const char schema[] = "CREATE TABLE IF NOT EXISTS tokens ("
                             "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
                             "  name TEXT NOT NULL UNIQUE,"
                             "  hash TEXT NOT NULL UNIQUE,"
                             "  created_usec INTEGER NOT NULL,"
                             "  last_used_usec INTEGER NOT NULL DEFAULT 0"
                             ");"
                             "CREATE TABLE IF NOT EXISTS token_sessions ("
                             "  token_id INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,"
                             "  session_id TEXT NOT NULL,"
                             "  PRIMARY KEY (token_id, session_id)"
                             ") WITHOUT ROWID;";

enum {
        STMT_LOOKUP,
        STMT_TOUCH,
        STMT_ADD_SESSION,
        STMT_HAS_SESSION,
        _STMT_MAX,
};

static const char *const statements[_STMT_MAX] = {
        [STMT_LOOKUP] = "SELECT id, last_used_usec FROM tokens WHERE hash = ?1",
        [STMT_TOUCH] = "UPDATE tokens SET last_used_usec = ?2 WHERE id = ?1",
        [STMT_ADD_SESSION] = "INSERT OR IGNORE INTO token_sessions (token_id, session_id) VALUES (?1, ?2)",
        [STMT_HAS_SESSION] = "SELECT 1 FROM token_sessions WHERE token_id = ?1 AND session_id = ?2",
};

struct TokenStore {
        sqlite3 *db;
        sqlite3_stmt *stmt[_STMT_MAX];
};

static int sqlite_error(TokenStore *s, int rc, const char *what) {
        log_error("Token store: %s: %s", what, s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        return rc == SQLITE_NOMEM ? -ENOMEM : rc == SQLITE_BUSY ? -EBUSY : -EIO;
}

bool token_name_is_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strlen(name);
        if (n < 1 || n > 64)
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '.' || *p == '_' || *p == '-'))
                        return false;
        return true;
}

int token_store_default_path(bool user, char **ret) {
        const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
        char *p;
        int n;

        if (!user)
                n = asprintf(&p, "/var/lib/ccdocker-httpd/tokens.db");
        else if (!isempty(state) && state[0] == '/')
                n = asprintf(&p, "%s/ccdocker-httpd/tokens.db", state);
        else if (!isempty(home) && home[0] == '/')
                n = asprintf(&p, "%s/.local/state/ccdocker-httpd/tokens.db", home);
        else
                return -ENXIO;
        if (n < 0)
                return -ENOMEM;
        *ret = p;
        return 0;
}

/* mkdir -p of the directory part of path, mode 0700 for the last one. */
static int mkdir_parents(const char *path) {
        _cleanup_free_ char *dir = strdup(path);
        char *slash;

        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                return 0;
        *slash = '\0';
        return mkdir_p(dir, 0700);
}

TokenStore *token_store_free(TokenStore *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(s->stmt[i]);
        sqlite3_close(s->db);
        free(s);
        return NULL;
}

int token_store_open(const char *path, bool create, TokenStore **ret) {
        _cleanup_(token_store_freep) TokenStore *s = NULL;
        int rc, r;

        if (!path || !ret)
                return -EINVAL;

        if (create) {
                _cleanup_close_ int fd = -EBADF;

                r = mkdir_parents(path);
                if (r < 0)
                        return log_error_errno(r, "Failed to create the directory of %s: %m", path);
                /* The file first, so that it is 0600 whatever the umask. */
                fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd < 0)
                        return log_error_errno(errno, "Failed to create %s: %m", path);
        }

        s = calloc(1, sizeof(TokenStore));
        if (!s)
                return -ENOMEM;

        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL);
        if (rc != SQLITE_OK) {
                log_error("Failed to open the token store %s: %s", path, sqlite3_errstr(rc));
                return rc == SQLITE_CANTOPEN ? -ENOENT : -EIO;
        }
        sqlite3_busy_timeout(s->db, TOKEN_BUSY_TIMEOUT_MSEC);
        sqlite3_extended_result_codes(s->db, 0);

        rc = sqlite3_exec(s->db, "PRAGMA foreign_keys = ON;", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_exec(s->db, schema, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return sqlite_error(s, rc, path);

        for (size_t i = 0; i < _STMT_MAX; i++) {
                rc = sqlite3_prepare_v3(
                        s->db, statements[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);
                if (rc != SQLITE_OK)
                        return sqlite_error(s, rc, statements[i]);
        }

        *ret = TAKE_PTR(s);
        return 0;
}

static void hash_hex(const char *text, char ret[static BASE16_ENCODE_LENGTH(SHA256_DIGEST_SIZE) + 1]) {
        struct sha256_ctx ctx;
        uint8_t d[SHA256_DIGEST_SIZE];

        sha256_init(&ctx);
        sha256_update(&ctx, strlen(text), (const uint8_t *) text);
        sha256_digest(&ctx, sizeof d, d);
        base16_encode_update(ret, sizeof d, d);
        ret[BASE16_ENCODE_LENGTH(sizeof d)] = '\0';
}

void token_hash_hex(const char *text, char ret[static TOKEN_HASH_HEX_LENGTH + 1]) {
        hash_hex(text, ret);
}

int token_random_text(const char *prefix, char ret[static TOKEN_LENGTH + 1]) {
        struct base64_encode_ctx ctx;
        uint8_t b[32];
        char text[BASE64_ENCODE_LENGTH(sizeof b) + BASE64_ENCODE_FINAL_LENGTH];
        size_t n_text;
        int r;

        r = random_bytes(b, sizeof b);
        if (r < 0)
                return r;

        base64url_encode_init(&ctx);
        n_text = base64_encode_update(&ctx, text, sizeof b, b);
        n_text += base64_encode_final(&ctx, text + n_text);
        while (n_text > 0 && text[n_text - 1] == '=')
                n_text--;
        assert(strlen(prefix) + n_text == TOKEN_LENGTH);
        memcpy(ret, prefix, strlen(prefix));
        memcpy(ret + strlen(prefix), text, n_text);
        ret[TOKEN_LENGTH] = '\0';
        return 0;
}

int token_store_create(TokenStore *s, const char *name, char **ret_token) {
        _cleanup_free_ char *token = NULL;
        sqlite3_stmt *st = NULL;
        char hash[SHA256_DIGEST_SIZE * 2 + 1];
        int rc, r;

        if (!s || !ret_token)
                return -EINVAL;
        if (!token_name_is_valid(name))
                return -EINVAL;

        token = malloc(TOKEN_LENGTH + 1);
        if (!token)
                return -ENOMEM;
        r = token_random_text(TOKEN_PREFIX, token);
        if (r < 0)
                return r;
        hash_hex(token, hash);

        rc = sqlite3_prepare_v2(
                s->db, "INSERT INTO tokens (name, hash, created_usec) VALUES (?1, ?2, ?3)", -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, (sqlite3_int64) now_usec(CLOCK_REALTIME));
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc == SQLITE_CONSTRAINT)
                return -EEXIST;
        if (rc != SQLITE_DONE)
                return sqlite_error(s, rc, "adding a token");

        *ret_token = TAKE_PTR(token);
        return 0;
}

int token_store_revoke(TokenStore *s, const char *name) {
        sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !name)
                return -EINVAL;
        rc = sqlite3_prepare_v2(s->db, "DELETE FROM tokens WHERE name = ?1", -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return sqlite_error(s, rc, "revoking a token");
        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

void token_info_free_many(TokenInfo *t, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(t[i].name);
        free(t);
}

int token_store_list(TokenStore *s, TokenInfo **ret, size_t *ret_n) {
        sqlite3_stmt *st = NULL;
        TokenInfo *list = NULL;
        size_t n = 0;
        int rc;

        if (!s || !ret || !ret_n)
                return -EINVAL;
        rc = sqlite3_prepare_v2(
                s->db,
                "SELECT name, created_usec, last_used_usec,"
                " (SELECT count(*) FROM token_sessions WHERE token_id = tokens.id)"
                " FROM tokens ORDER BY created_usec, id",
                -1,
                &st,
                NULL);
        if (rc != SQLITE_OK)
                return sqlite_error(s, rc, "listing tokens");
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                TokenInfo *l = realloc(list, (n + 1) * sizeof(TokenInfo));

                if (!l) {
                        rc = SQLITE_NOMEM;
                        break;
                }
                list = l;
                list[n] = (TokenInfo){
                        .name = strdup((const char *) sqlite3_column_text(st, 0)),
                        .created_usec = (uint64_t) sqlite3_column_int64(st, 1),
                        .last_used_usec = (uint64_t) sqlite3_column_int64(st, 2),
                        .n_sessions = (uint64_t) sqlite3_column_int64(st, 3),
                };
                if (!list[n++].name) {
                        rc = SQLITE_NOMEM;
                        break;
                }
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
                token_info_free_many(list, n);
                return rc == SQLITE_NOMEM ? -ENOMEM : sqlite_error(s, rc, "listing tokens");
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

int token_store_lookup(TokenStore *s, const char *token, int64_t *ret_id) {
        sqlite3_stmt *st;
        char hash[SHA256_DIGEST_SIZE * 2 + 1];
        uint64_t last_used, now;
        int64_t id;
        int rc;

        if (!s || !token || !ret_id)
                return -EINVAL;
        /* Anything not shaped like our tokens is not looked up at all. */
        if (strlen(token) != TOKEN_LENGTH || !startswith(token, TOKEN_PREFIX))
                return -ENOENT;
        hash_hex(token, hash);

        st = s->stmt[STMT_LOOKUP];
        rc = sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                sqlite3_reset(st);
                sqlite3_clear_bindings(st);
                if (rc == SQLITE_DONE)
                        return -ENOENT;
                return sqlite_error(s, rc, "looking up a token");
        }
        id = sqlite3_column_int64(st, 0);
        last_used = (uint64_t) sqlite3_column_int64(st, 1);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);

        now = now_usec(CLOCK_REALTIME);
        if (now > last_used + TOKEN_LAST_USED_GRANULARITY_USEC) {
                st = s->stmt[STMT_TOUCH];
                rc = sqlite3_bind_int64(st, 1, id);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 2, (sqlite3_int64) now);
                if (rc == SQLITE_OK)
                        rc = sqlite3_step(st);
                sqlite3_reset(st);
                sqlite3_clear_bindings(st);
                /* Not worth failing a request for: the store may be busy with ccdockerctl. */
                if (rc != SQLITE_DONE)
                        log_debug(
                                "Token store: could not note the use of a token: %s", sqlite3_errmsg(s->db));
        }

        *ret_id = id;
        return 0;
}

int token_store_add_session(TokenStore *s, int64_t token_id, const char *session_id) {
        sqlite3_stmt *st;
        int rc;

        if (!s || !session_id)
                return -EINVAL;
        st = s->stmt[STMT_ADD_SESSION];
        rc = sqlite3_bind_int64(st, 1, token_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 2, session_id, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_DONE)
                return sqlite_error(s, rc, "recording a session of a token");
        return 0;
}

int token_store_has_session(TokenStore *s, int64_t token_id, const char *session_id) {
        sqlite3_stmt *st;
        int rc;

        if (!s || !session_id)
                return -EINVAL;
        st = s->stmt[STMT_HAS_SESSION];
        rc = sqlite3_bind_int64(st, 1, token_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 2, session_id, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return sqlite_error(s, rc, "checking a session of a token");
}

int token_store_read_begin(TokenStore *s) {
        int rc;

        if (!s)
                return -EINVAL;
        rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL);
        return rc == SQLITE_OK ? 0 : sqlite_error(s, rc, "starting a read");
}

void token_store_read_end(TokenStore *s) {
        if (s && !sqlite3_get_autocommit(s->db))
                (void) sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
}

int token_store_has_id(TokenStore *s, int64_t id) {
        sqlite3_stmt *st = NULL;
        int rc;

        if (!s)
                return -EINVAL;
        rc = sqlite3_prepare_v2(s->db, "SELECT 1 FROM tokens WHERE id = ?1", -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 1, id);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return sqlite_error(s, rc, "looking up a token by id");
}

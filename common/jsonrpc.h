/* JSON-RPC 2.0 as MCP speaks it on stdio: one JSON object per line. A reader that splits a byte stream
 * into parsed messages, bounded in length and (optionally) in nesting and values, and survives bad lines, a
 * classifier that validates a message and says what kind it is, builders for requests, notifications and
 * responses, and the line formatter. Batches (JSON arrays) are refused: MCP does not use them. Built on
 * jansson. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "cleanup.h"

/* Error codes of the JSON-RPC 2.0 specification. -32000..-32099 are for implementation errors. */
enum {
        JSONRPC_PARSE_ERROR = -32700,
        JSONRPC_INVALID_REQUEST = -32600,
        JSONRPC_METHOD_NOT_FOUND = -32601,
        JSONRPC_INVALID_PARAMS = -32602,
        JSONRPC_INTERNAL_ERROR = -32603,
};

/* Why a line or message was refused: the code and message to put in an error response, and the id to
 * answer with. id is borrowed from the message given to jsonrpc_classify() (valid as long as that
 * message is; json_incref() it to keep it) and is NULL when no valid id could be read, in which case
 * the response carries "id": null. */
struct jsonrpc_error {
        int code;
        char message[256];
        json_t *id;
};

/* ---- Bounding what a peer makes us parse ----
 *
 * jansson's tree costs tens of times the text it came from (an 8 MiB line of "[{},{},...]" parses into
 * over 600 MB), so a line from a peer that is not trusted is measured before it is parsed. The limits
 * of the session channel (docs/channel.md), also applied to stored events parsed back: far above what
 * Claude Code's stream-json needs (an event has tens of values, a big tool result is one long string,
 * a full call of 1000 events a few tens of thousands), and the most a line may cost parsed stays in
 * tens of megabytes. */
#define JSONRPC_MAX_DEPTH 64U
#define JSONRPC_MAX_VALUES 200000U

/* A lexical pass over the JSON text s[0, n) (strings and their escapes are skipped, nothing is
 * allocated), without validating it: counts its values (the top-level one, each array element and
 * each object member) and measures its nesting (arrays and objects in one another). A limit of 0 is no
 * limit. Returns 0 and the count in *ret_values (if not NULL), or stops at the first limit passed:
 * -ELOOP for nesting deeper than max_depth, -E2BIG for more than max_values values. Text that is not
 * JSON passes or not, and its parse says what is wrong with it. */
int jsonrpc_scan(const char *s, size_t n, unsigned max_depth, size_t max_values, size_t *ret_values);

/* ---- Reading lines ---- */

struct jsonrpc_reader;

/* max_line: the longest accepted line in bytes, not counting its "\n" or "\r\n". */
int jsonrpc_reader_new(size_t max_line, struct jsonrpc_reader **ret);
struct jsonrpc_reader *jsonrpc_reader_free(struct jsonrpc_reader *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct jsonrpc_reader *, jsonrpc_reader_free);

/* Makes every line pass jsonrpc_scan() with these limits (0: none, the default) before it is parsed. */
void jsonrpc_reader_set_limits(struct jsonrpc_reader *r, unsigned max_depth, size_t max_values);

/* Appends bytes read from the stream. While the rest of an oversized line is being skipped, bytes up to
 * and including its newline are dropped here rather than buffered. 0 or -ENOMEM. */
int jsonrpc_reader_feed(struct jsonrpc_reader *r, const void *data, size_t len);

/* Takes the next complete line from the buffer. Returns 1 and a new reference in *ret_msg (any JSON
 * value; pass it to jsonrpc_classify()), 0 if no complete line is buffered, or, with *ret_err filled
 * (its id is NULL) and the bad line consumed:
 *   -EBADMSG   the line is not valid JSON (or not UTF-8, or has duplicate keys): JSONRPC_PARSE_ERROR;
 *   -EMSGSIZE  the line is longer than max_line: JSONRPC_INVALID_REQUEST; the rest of it is skipped,
 *              even if its newline arrives in a later feed;
 *   -ELOOP     the line nests deeper than the reader's max_depth: JSONRPC_INVALID_REQUEST;
 *   -E2BIG     the line has more values than the reader's max_values: JSONRPC_INVALID_REQUEST;
 *   -ENOMEM    JSONRPC_INTERNAL_ERROR.
 * After an error, keep calling: the stream goes on with the next line. Lines end in "\n" or "\r\n";
 * blank lines (empty, or only spaces, tabs and "\r") are skipped. */
int jsonrpc_reader_next(struct jsonrpc_reader *r, json_t **ret_msg, struct jsonrpc_error *ret_err);

/* A line filter: called by jsonrpc_reader_next() with each line that passed the limits, before it is
 * parsed (line is not NUL-terminated, valid only during the call). 0: parse it as usual; 1: the filter
 * took it, and jsonrpc_reader_next() returns 2 with *ret_msg untouched; negative: returned as is. */
typedef int (*jsonrpc_line_filter_t)(const char *line, size_t n, void *userdata);
void jsonrpc_reader_set_filter(struct jsonrpc_reader *r, jsonrpc_line_filter_t filter, void *userdata);

/* Bytes buffered that do not yet form a complete line: non-zero at end of stream means the peer
 * stopped in the middle of a message. */
size_t jsonrpc_reader_pending(const struct jsonrpc_reader *r);
/* Bytes the reader holds allocated: once every line is read, at most BYTE_QUEUE_KEEP (a long line's
 * memory goes back when it has been handled). */
size_t jsonrpc_reader_allocated(const struct jsonrpc_reader *r);

/* ---- Classifying ---- */

enum jsonrpc_kind {
        JSONRPC_REQUEST,        /* method and id */
        JSONRPC_NOTIFICATION,   /* method, no id */
        JSONRPC_RESPONSE,       /* result and id */
        JSONRPC_ERROR_RESPONSE, /* error and id (which may be null) */
};

/* All pointers are borrowed from the classified message. Members that are absent are NULL. */
struct jsonrpc_message {
        enum jsonrpc_kind kind;
        json_t *id; /* a string or an integer; for an error response it may be a JSON null */
        const char *method;
        json_t *params; /* an object or an array */
        json_t *result; /* any value, including a JSON null */
        json_t *error;  /* the error object; its parts are below */
        int error_code;
        const char *error_message;
};

/* Checks that msg is a single JSON-RPC 2.0 message and fills *ret (which may be NULL to only check).
 * On failure returns -EBADMSG and fills *ret_err (if not NULL) with JSONRPC_INVALID_REQUEST, a message
 * naming what is wrong, and the message's id if it had a valid one. Members other than the ones of
 * the specification are ignored. */
int jsonrpc_classify(const json_t *msg, struct jsonrpc_message *ret, struct jsonrpc_error *ret_err);

/* ---- Building ----
 *
 * Ownership: every json_t argument is borrowed. The builders take their own references, and the
 * caller keeps (and still owns) what it passed, whether the call succeeds or not; so an id borrowed
 * from a request can be passed straight back, and a freshly built params object is released by the
 * caller as usual (e.g. with _cleanup_(json_decrefp)). Each builder returns a new reference, or NULL
 * with errno set: EINVAL for an argument that cannot be put in a valid message, ENOMEM.
 *
 * An id must be a JSON string or integer. params, if not NULL, must be an object or an array; NULL
 * omits "params". */
json_t *jsonrpc_request_new(json_t *id, const char *method, json_t *params);
json_t *jsonrpc_notification_new(const char *method, json_t *params);
/* result NULL is sent as "result": null. */
json_t *jsonrpc_result_new(json_t *id, json_t *result);
/* id NULL (or a JSON null) is sent as "id": null, for errors about messages whose id is unknown.
 * message is required; data NULL omits "data". */
json_t *jsonrpc_error_new(json_t *id, int code, const char *message, json_t *data);

/* ---- Writing ---- */

/* Serialises msg (an object) compactly as one line ending in "\n", with no other newline in it (those
 * inside strings are escaped). *ret is allocated with malloc(), NUL-terminated; *ret_len counts the
 * bytes including the "\n" but not the NUL. 0, -EINVAL (not an object, or not serialisable), -ENOMEM. */
int jsonrpc_format_line(const json_t *msg, char **ret, size_t *ret_len);

/* JSON-RPC 2.0 framing and validation for MCP's stdio transport: the line reader with its limits and
 * recovery after bad lines, the message classifier, the builders and the line formatter. Everything
 * that comes from the peer is checked here once, and every refusal names what was wrong. */
#define _GNU_SOURCE
#include "jsonrpc.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "byte-queue.h"
#include "cleanup.h"
#include "util.h"

struct jsonrpc_reader {
        ByteQueue buf;  /* the unread data */
        size_t scanned; /* bytes from start already searched for a newline, without finding one */
        size_t max_line;
        unsigned max_depth; /* jsonrpc_scan()'s limits, 0: none */
        size_t max_values;
        bool skipping; /* dropping the rest of an oversized line; the buffer is empty meanwhile */
        jsonrpc_line_filter_t filter; /* sees each line before it is parsed; may take it */
        void *filter_userdata;
};

/* Fills *e (if not NULL) and returns error. The message may quote jansson's text, which may quote the
 * input: anything but printable ASCII becomes '?', so the message can always go back in a JSON string. */
static int set_error(struct jsonrpc_error *e, int error, int code, json_t *id, const char *format, ...)
        __attribute__((format(printf, 5, 6)));

static int set_error(struct jsonrpc_error *e, int error, int code, json_t *id, const char *format, ...) {
        va_list ap;

        if (!e)
                return error;

        *e = (struct jsonrpc_error){ .code = code, .id = id };

        va_start(ap, format);
        (void) vsnprintf(e->message, sizeof(e->message), format, ap);
        va_end(ap);

        for (char *p = e->message; *p; p++)
                if (*p < 0x20 || *p > 0x7e)
                        *p = '?';

        return error;
}

int jsonrpc_reader_new(size_t max_line, struct jsonrpc_reader **ret) {
        struct jsonrpc_reader *r;

        if (max_line == 0 || !ret)
                return -EINVAL;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->max_line = max_line;

        *ret = r;
        return 0;
}

struct jsonrpc_reader *jsonrpc_reader_free(struct jsonrpc_reader *r) {
        if (!r)
                return NULL;
        byte_queue_free(&r->buf);
        return mfree(r);
}

void jsonrpc_reader_set_limits(struct jsonrpc_reader *r, unsigned max_depth, size_t max_values) {
        r->max_depth = max_depth;
        r->max_values = max_values;
}

/* The index of the quote that ends the string whose opening quote is at s[start], or n if it does not
 * end: the first quote after it that is preceded by an even number of backslashes. */
static size_t string_end(const char *s, size_t n, size_t start) {
        for (size_t i = start + 1; i < n; i++) {
                const char *q = memchr(s + i, '"', n - i);
                size_t k = 0;

                if (!q)
                        break;
                i = (size_t) (q - s);
                while (s[i - 1 - k] == '\\') /* stops at the opening quote at the latest */
                        k++;
                if (k % 2 == 0)
                        return i;
        }
        return n;
}

/* One pass outside strings, a byte at a time, and a memchr() to the end of each string. A value is
 * counted where it starts: the top-level one at the first token, the first one of a container at the
 * first token after its bracket that does not close it (so "[]" and "{}" hold none), every other one
 * at its comma. */
int jsonrpc_scan(const char *s, size_t n, unsigned max_depth, size_t max_values, size_t *ret_values) {
        size_t values = 0, depth = 0;
        bool opened = false; /* the last token opened a container */

        if (!s && n > 0)
                return -EINVAL;

        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
                        continue;

                if (values == 0 || c == ',' || (opened && c != ']' && c != '}')) {
                        values++;
                        if (max_values > 0 && values > max_values)
                                return -E2BIG;
                }
                opened = false;

                if (c == '"')
                        i = string_end(s, n, i);
                else if (c == '[' || c == '{') {
                        depth++;
                        if (max_depth > 0 && depth > max_depth)
                                return -ELOOP;
                        opened = true;
                } else if ((c == ']' || c == '}') && depth > 0)
                        depth--;
        }

        if (ret_values)
                *ret_values = values;
        return 0;
}

void jsonrpc_reader_set_filter(struct jsonrpc_reader *r, jsonrpc_line_filter_t filter, void *userdata) {
        r->filter = filter;
        r->filter_userdata = userdata;
}

size_t jsonrpc_reader_pending(const struct jsonrpc_reader *r) {
        return byte_queue_len(&r->buf);
}

size_t jsonrpc_reader_allocated(const struct jsonrpc_reader *r) {
        return r->buf.cap;
}

int jsonrpc_reader_feed(struct jsonrpc_reader *r, const void *data, size_t len) {
        const char *p = data;

        if (len == 0)
                return 0;
        if (!data)
                return -EINVAL;

        if (r->skipping) {
                const char *nl = memchr(p, '\n', len);

                if (!nl)
                        return 0;
                r->skipping = false;
                len -= (size_t) (nl + 1 - p);
                p = nl + 1;
                if (len == 0)
                        return 0;
        }

        if (len > SIZE_MAX - 1 - byte_queue_len(&r->buf))
                return -ENOMEM;
        return byte_queue_put(&r->buf, p, len);
}

static bool line_is_blank(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
                        return false;
        return true;
}

static int oversized(struct jsonrpc_reader *r, struct jsonrpc_error *ret_err) {
        return set_error(
                ret_err,
                -EMSGSIZE,
                JSONRPC_INVALID_REQUEST,
                NULL,
                "Message too long: lines are limited to %zu bytes",
                r->max_line);
}

int jsonrpc_reader_next(struct jsonrpc_reader *r, json_t **ret_msg, struct jsonrpc_error *ret_err) {
        if (!r->buf.data)
                return 0; /* nothing was fed yet: no buffer to point into (NULL + 0 is undefined) */
        for (;;) {
                char *line = r->buf.data + r->buf.start;
                size_t avail = byte_queue_len(&r->buf), n;
                json_error_t e;
                json_t *msg;
                char *nl;

                nl = avail > r->scanned ? memchr(line + r->scanned, '\n', avail - r->scanned) : NULL;
                if (!nl) {
                        size_t content = avail;

                        r->scanned = avail;

                        /* A trailing "\r" may be the start of "\r\n": it does not count yet. */
                        if (content > 0 && line[content - 1] == '\r')
                                content--;
                        if (content <= r->max_line) {
                                /* All read: no line of it is held past this call (a filter's
                                 * spans end with it), so a burst's memory can go. */
                                if (avail == 0)
                                        byte_queue_release_if_empty(&r->buf);
                                return 0;
                        }

                        /* Nothing buffered is worth keeping: drop it, and the rest of the line as it
                         * arrives. */
                        byte_queue_clear(&r->buf);
                        r->scanned = 0;
                        r->skipping = true;
                        return oversized(r, ret_err);
                }

                /* Consume the line now, so that whatever happens to it the next call moves on. The
                 * bytes stay in place until the next feed. */
                n = (size_t) (nl - line);
                r->buf.start += n + 1;
                r->scanned = 0;
                if (n > 0 && line[n - 1] == '\r')
                        n--;

                if (n > r->max_line)
                        return oversized(r, ret_err);
                if (line_is_blank(line, n))
                        continue;

                /* Measured before it is parsed: what a line may cost in memory is bounded by its
                 * structure, not by its length. */
                if (r->max_depth > 0 || r->max_values > 0) {
                        int k = jsonrpc_scan(line, n, r->max_depth, r->max_values, NULL);

                        if (k == -ELOOP)
                                return set_error(
                                        ret_err,
                                        k,
                                        JSONRPC_INVALID_REQUEST,
                                        NULL,
                                        "Message too deeply nested: at most %u levels of arrays and objects",
                                        r->max_depth);
                        if (k == -E2BIG)
                                return set_error(
                                        ret_err,
                                        k,
                                        JSONRPC_INVALID_REQUEST,
                                        NULL,
                                        "Message has too many values: at most %zu array elements and object members in a line",
                                        r->max_values);
                }

                if (r->filter) {
                        int k = r->filter(line, n, r->filter_userdata);

                        if (k != 0)
                                return k < 0 ? k : 2;
                }

                /* JSON_DECODE_ANY: a valid JSON scalar is an invalid request, not a parse error; the
                 * classifier says so. Duplicate keys would make a message mean different things to
                 * different readers. */
                msg = json_loadb(line, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
                if (!msg) {
                        if (json_error_code(&e) == json_error_out_of_memory)
                                return set_error(
                                        ret_err, -ENOMEM, JSONRPC_INTERNAL_ERROR, NULL, "Out of memory");
                        return set_error(
                                ret_err,
                                -EBADMSG,
                                JSONRPC_PARSE_ERROR,
                                NULL,
                                "Parse error at byte %d: %s",
                                e.position,
                                e.text);
                }

                *ret_msg = msg;
                return 1;
        }
}

static const char *json_type_name(const json_t *j) {
        switch (json_typeof(j)) {
        case JSON_OBJECT:
                return "an object";
        case JSON_ARRAY:
                return "an array";
        case JSON_STRING:
                return "a string";
        case JSON_INTEGER:
                return "an integer";
        case JSON_REAL:
                return "a real number";
        case JSON_TRUE:
        case JSON_FALSE:
                return "a boolean";
        case JSON_NULL:
                return "null";
        }
        return "an unknown type";
}

static bool id_is_valid(const json_t *id) {
        return json_is_string(id) || json_is_integer(id);
}

static bool params_is_valid(const json_t *params) {
        return !params || json_is_object(params) || json_is_array(params);
}

#define INVALID(ret_err, id, ...) set_error((ret_err), -EBADMSG, JSONRPC_INVALID_REQUEST, (id), __VA_ARGS__)

static int classify_error_object(
        const json_t *error, json_t *id, struct jsonrpc_message *m, struct jsonrpc_error *ret_err) {
        json_t *code, *message;

        if (!json_is_object(error))
                return INVALID(
                        ret_err, id, "Member \"error\" must be an object, got %s", json_type_name(error));

        code = json_object_get(error, "code");
        if (!code)
                return INVALID(ret_err, id, "Member \"error\" has no \"code\"");
        if (!json_is_integer(code) || json_integer_value(code) < INT_MIN ||
            json_integer_value(code) > INT_MAX)
                return INVALID(
                        ret_err,
                        id,
                        "Member \"error.code\" must be an integer, got %s",
                        json_type_name(code));

        message = json_object_get(error, "message");
        if (!message)
                return INVALID(ret_err, id, "Member \"error\" has no \"message\"");
        if (!json_is_string(message))
                return INVALID(
                        ret_err,
                        id,
                        "Member \"error.message\" must be a string, got %s",
                        json_type_name(message));

        m->error_code = (int) json_integer_value(code);
        m->error_message = json_string_value(message);
        return 0;
}

int jsonrpc_classify(const json_t *msg, struct jsonrpc_message *ret, struct jsonrpc_error *ret_err) {
        json_t *version, *id, *valid_id = NULL, *method, *params, *result, *error;
        struct jsonrpc_message m = {};
        int r;

        if (!msg)
                return INVALID(ret_err, NULL, "No message");
        if (json_is_array(msg))
                return INVALID(
                        ret_err, NULL, "Batches (JSON arrays) are not supported, send one message per line");
        if (!json_is_object(msg))
                return INVALID(
                        ret_err, NULL, "A message must be a JSON object, got %s", json_type_name(msg));

        /* Read the id first so that every later refusal can be answered with it. */
        id = json_object_get(msg, "id");
        if (id_is_valid(id))
                valid_id = id;

        version = json_object_get(msg, "jsonrpc");
        if (!version)
                return INVALID(ret_err, valid_id, "Member \"jsonrpc\" is missing, it must be \"2.0\"");
        if (!json_is_string(version) || json_string_length(version) != 3 ||
            !streq(json_string_value(version), "2.0"))
                return INVALID(ret_err, valid_id, "Member \"jsonrpc\" must be the string \"2.0\"");

        method = json_object_get(msg, "method");
        params = json_object_get(msg, "params");
        result = json_object_get(msg, "result");
        error = json_object_get(msg, "error");

        if (method) {
                if (!json_is_string(method))
                        return INVALID(
                                ret_err,
                                valid_id,
                                "Member \"method\" must be a string, got %s",
                                json_type_name(method));
                if (json_string_length(method) == 0)
                        return INVALID(ret_err, valid_id, "Member \"method\" must not be empty");
                if (result || error)
                        return INVALID(ret_err, valid_id, "A request must not have \"result\" or \"error\"");
                if (!params_is_valid(params))
                        return INVALID(
                                ret_err,
                                valid_id,
                                "Member \"params\" must be an object or an array, got %s",
                                json_type_name(params));
                if (id && !valid_id)
                        return INVALID(
                                ret_err,
                                NULL,
                                "Member \"id\" must be a string or an integer, got %s",
                                json_type_name(id));

                m.kind = id ? JSONRPC_REQUEST : JSONRPC_NOTIFICATION;
                m.method = json_string_value(method);
                m.params = params;
        } else if (result && error)
                return INVALID(ret_err, valid_id, "A response must not have both \"result\" and \"error\"");
        else if (result || error) {
                if (params)
                        return INVALID(ret_err, valid_id, "A response must not have \"params\"");
                if (!id)
                        return INVALID(ret_err, NULL, "A response must have an \"id\"");
                /* Only an error response may have a null id: the error was in reading the request's. */
                if (!valid_id && !(error && json_is_null(id)))
                        return INVALID(
                                ret_err,
                                NULL,
                                "Member \"id\" must be a string or an integer, got %s",
                                json_type_name(id));

                if (error) {
                        r = classify_error_object(error, valid_id, &m, ret_err);
                        if (r < 0)
                                return r;
                }

                m.kind = result ? JSONRPC_RESPONSE : JSONRPC_ERROR_RESPONSE;
                m.result = result;
                m.error = error;
        } else
                return INVALID(ret_err, valid_id, "A message must have \"method\", \"result\" or \"error\"");

        m.id = id;
        if (ret)
                *ret = m;
        return 0;
}

/* json_pack_ex() leaves no errno; turn its error into one. */
static json_t *packed(json_t *j, const json_error_t *e) {
        if (!j)
                errno = json_error_code(e) == json_error_out_of_memory ? ENOMEM : EINVAL;
        return j;
}

/* The "O" and "O*" formats take a new reference to the argument: the caller keeps its own. */
json_t *jsonrpc_request_new(json_t *id, const char *method, json_t *params) {
        json_error_t e;

        if (!id_is_valid(id) || isempty(method) || !params_is_valid(params)) {
                errno = EINVAL;
                return NULL;
        }

        return packed(
                json_pack_ex(
                        &e,
                        0,
                        "{s:s, s:O, s:s, s:O*}",
                        "jsonrpc",
                        "2.0",
                        "id",
                        id,
                        "method",
                        method,
                        "params",
                        params),
                &e);
}

json_t *jsonrpc_notification_new(const char *method, json_t *params) {
        json_error_t e;

        if (isempty(method) || !params_is_valid(params)) {
                errno = EINVAL;
                return NULL;
        }

        return packed(
                json_pack_ex(
                        &e, 0, "{s:s, s:s, s:O*}", "jsonrpc", "2.0", "method", method, "params", params),
                &e);
}

json_t *jsonrpc_result_new(json_t *id, json_t *result) {
        json_error_t e;

        if (!id_is_valid(id)) {
                errno = EINVAL;
                return NULL;
        }

        return packed(
                json_pack_ex(
                        &e,
                        0,
                        "{s:s, s:O, s:O}",
                        "jsonrpc",
                        "2.0",
                        "id",
                        id,
                        "result",
                        result ?: json_null()),
                &e);
}

json_t *jsonrpc_error_new(json_t *id, int code, const char *message, json_t *data) {
        json_error_t e;

        if ((id && !id_is_valid(id) && !json_is_null(id)) || !message) {
                errno = EINVAL;
                return NULL;
        }

        return packed(
                json_pack_ex(
                        &e,
                        0,
                        "{s:s, s:O, s:{s:i, s:s, s:O*}}",
                        "jsonrpc",
                        "2.0",
                        "id",
                        id ?: json_null(),
                        "error",
                        "code",
                        code,
                        "message",
                        message,
                        "data",
                        data),
                &e);
}

int jsonrpc_format_line(const json_t *msg, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t n;

        if (!json_is_object(msg) || !ret || !ret_len)
                return -EINVAL;

        /* The first call measures. 0 means jansson could not serialise it (e.g. a string that is not
         * UTF-8, which only the *_nocheck constructors can make). */
        n = json_dumpb(msg, NULL, 0, JSON_COMPACT);
        if (n == 0 || n > SIZE_MAX - 2)
                return -EINVAL;

        buf = malloc(n + 2);
        if (!buf)
                return -ENOMEM;
        if (json_dumpb(msg, buf, n, JSON_COMPACT) != n)
                return -EINVAL;

        /* Cannot happen: without JSON_INDENT jansson puts no newline between tokens and escapes control
         * characters in strings. But the framing depends on it, so it is checked, not assumed. */
        if (memchr(buf, '\n', n))
                return -EINVAL;

        buf[n] = '\n';
        buf[n + 1] = '\0';
        *ret = TAKE_PTR(buf);
        *ret_len = n + 1;
        return 0;
}

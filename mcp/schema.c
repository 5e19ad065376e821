/* The JSON Schema subset of ccdocker-mcp's tools: argument checks with messages the model can act on,
 * and the projection of the daemon's answers onto the output schemas. schema.h says which keywords. */
#define _GNU_SOURCE
#include "schema.h"

#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "util.h"

#define SHOWN_STRING 40 /* characters of a bad string value quoted in a message */
#define HINTS_MAX 2     /* known arguments suggested for an unknown one */

static int fail(char **ret_message, const char *format, ...) __attribute__((format(printf, 2, 3)));

static int fail(char **ret_message, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(ret_message, format, ap);
        va_end(ap);
        if (r < 0) {
                *ret_message = NULL;
                return -ENOMEM;
        }
        return -EINVAL;
}

/* ---- what a value is, what a schema wants ---- */

static bool is_integral(const json_t *v) {
        double d;

        if (json_is_integer(v))
                return true;
        if (!json_is_real(v))
                return false;
        d = json_real_value(v);
        return isfinite(d) && d == floor(d) && fabs(d) < 9007199254740992.0; /* 2^53: exact in a double */
}

static json_int_t integral_value(const json_t *v) {
        return json_is_integer(v) ? json_integer_value(v) : (json_int_t) json_real_value(v);
}

static bool type_matches(const char *type, const json_t *v) {
        if (streq(type, "object"))
                return json_is_object(v);
        if (streq(type, "array"))
                return json_is_array(v);
        if (streq(type, "string"))
                return json_is_string(v);
        if (streq(type, "boolean"))
                return json_is_boolean(v);
        if (streq(type, "null"))
                return json_is_null(v);
        if (streq(type, "integer"))
                return is_integral(v);
        if (streq(type, "number"))
                return json_is_number(v);
        return false;
}

/* The type keyword: a name, or an array of names; none means any type. */
static bool types_match(const json_t *schema, const json_t *v) {
        const json_t *type = json_object_get(schema, "type"), *t;
        size_t i;

        if (json_is_string(type))
                return type_matches(json_string_value(type), v);
        if (!json_is_array(type))
                return true;
        json_array_foreach (type, i, t)
                if (json_is_string(t) && type_matches(json_string_value(t), v))
                        return true;
        return false;
}

static bool allows_type(const json_t *schema, const char *name) {
        const json_t *type = json_object_get(schema, "type"), *t;
        size_t i;

        if (json_is_string(type))
                return streq(json_string_value(type), name);
        json_array_foreach (type, i, t)
                if (streq_ptr(json_string_value(t), name))
                        return true;
        return false;
}

/* The type of v that picks the keywords to apply: a number is an integer when it is one in value and
 * the schema allows integers. */
static const char *value_type(const json_t *schema, const json_t *v) {
        if (json_is_object(v))
                return "object";
        if (json_is_array(v))
                return "array";
        if (json_is_string(v))
                return "string";
        if (json_is_boolean(v))
                return "boolean";
        if (json_is_null(v))
                return "null";
        return is_integral(v) && allows_type(schema, "integer") ? "integer" : "number";
}

/* Number of characters (code points) of a UTF-8 string: jansson has checked the encoding. */
static size_t utf8_length(const char *s, size_t bytes) {
        size_t n = 0;

        for (size_t i = 0; i < bytes; i++)
                if (((unsigned char) s[i] & 0xC0) != 0x80)
                        n++;
        return n;
}

static bool has_int(const json_t *schema, const char *key, json_int_t *ret) {
        const json_t *v = json_object_get(schema, key);

        if (!is_integral(v))
                return false;
        *ret = integral_value(v);
        return true;
}

/* "a string", "an integer (7)", "an empty string": what the caller sent, for "got ...". */
static void describe_value(const json_t *v, char *buf, size_t size) {
        if (json_is_string(v)) {
                size_t len = json_string_length(v);

                if (len == 0)
                        snprintf(buf, size, "an empty string");
                else
                        snprintf(buf, size, "a string");
        } else if (json_is_integer(v))
                snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_real(v))
                snprintf(buf, size, "%g", json_real_value(v));
        else if (json_is_boolean(v))
                snprintf(buf, size, "%s", json_is_true(v) ? "true" : "false");
        else if (json_is_null(v))
                snprintf(buf, size, "null");
        else if (json_is_array(v))
                snprintf(buf, size, "an array");
        else
                snprintf(buf, size, "an object");
}

static void append(char **p, size_t *left, const char *format, ...) __attribute__((format(printf, 3, 4)));

static void append(char **p, size_t *left, const char *format, ...) {
        va_list ap;
        int k;

        if (*left == 0)
                return;
        va_start(ap, format);
        k = vsnprintf(*p, *left, format, ap);
        va_end(ap);
        if (k < 0)
                return;
        if ((size_t) k >= *left)
                k = (int) *left - 1;
        *p += k;
        *left -= (size_t) k;
}

/* What one type of a schema asks for, in words. */
static void describe_type(const json_t *schema, const char *type, char **p, size_t *left) {
        const json_t *en = json_object_get(schema, "enum"), *e;
        json_int_t lo, hi;
        bool has_lo, has_hi;
        size_t i;

        if (json_is_array(en) && json_array_size(en) > 0) {
                append(p, left, "one of ");
                json_array_foreach (en, i, e)
                        append(p, left, "%s\"%s\"", i > 0 ? ", " : "", strempty(json_string_value(e)));
                return;
        }
        if (streq(type, "integer") || streq(type, "number")) {
                has_lo = has_int(schema, "minimum", &lo);
                has_hi = has_int(schema, "maximum", &hi);
                append(p, left, "%s", streq(type, "integer") ? "an integer" : "a number");
                if (has_lo && has_hi)
                        append(p, left, " from %" JSON_INTEGER_FORMAT " to %" JSON_INTEGER_FORMAT, lo, hi);
                else if (has_lo)
                        append(p, left, " of at least %" JSON_INTEGER_FORMAT, lo);
                else if (has_hi)
                        append(p, left, " of at most %" JSON_INTEGER_FORMAT, hi);
        } else if (streq(type, "string")) {
                const char *pattern = json_string_value(json_object_get(schema, "pattern"));

                has_lo = has_int(schema, "minLength", &lo) && lo > 0;
                has_hi = has_int(schema, "maxLength", &hi);
                if (pattern)
                        append(p, left, "a string matching %s", pattern);
                else if (has_lo && has_hi)
                        append(p,
                               left,
                               "a string of %" JSON_INTEGER_FORMAT " to %" JSON_INTEGER_FORMAT " characters",
                               lo,
                               hi);
                else if (has_hi)
                        append(p, left, "a string of at most %" JSON_INTEGER_FORMAT " characters", hi);
                else if (has_lo && lo == 1)
                        append(p, left, "a non-empty string");
                else if (has_lo)
                        append(p, left, "a string of at least %" JSON_INTEGER_FORMAT " characters", lo);
                else
                        append(p, left, "a string");
        } else if (streq(type, "boolean"))
                append(p, left, "true or false");
        else if (streq(type, "null"))
                append(p, left, "null");
        else if (streq(type, "object"))
                append(p, left, "a JSON object");
        else if (streq(type, "array")) {
                const json_t *items = json_object_get(schema, "items");
                const char *item_type = json_string_value(json_object_get(items, "type"));

                append(p, left, "an array");
                if (item_type) {
                        append(p, left, " of %ss", item_type);
                        if (json_is_array(json_object_get(items, "enum"))) {
                                append(p, left, ", each ");
                                describe_type(items, item_type, p, left);
                        }
                }
        } else
                append(p, left, "%s", type);
}

static void describe_expected(const json_t *schema, char *buf, size_t size) {
        const json_t *type = json_object_get(schema, "type"), *t;
        char *p = buf;
        size_t left = size, i;

        buf[0] = '\0';
        if (json_is_string(type))
                describe_type(schema, json_string_value(type), &p, &left);
        else if (json_is_array(type))
                json_array_foreach (type, i, t) {
                        if (i > 0)
                                append(&p, &left, " or ");
                        describe_type(schema, strempty(json_string_value(t)), &p, &left);
                }
        else
                append(&p, &left, "any JSON value");
}

/* ---- checking arguments ---- */

typedef struct Check {
        const char *tool;
        char **message;
} Check;

static int check_value(Check *c, const json_t *schema, const json_t *v, const char *path, json_t **ret);

static bool pattern_matches(const char *pattern, const json_t *v) {
        regex_t re;
        bool ok;

        /* A string with a NUL in it matches no pattern of ours: the regex would stop at the NUL. */
        if (strlen(json_string_value(v)) != json_string_length(v))
                return false;
        if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
                return false;
        ok = regexec(&re, json_string_value(v), 0, NULL, 0) == 0;
        regfree(&re);
        return ok;
}

static int check_string(Check *c, const json_t *schema, const json_t *v, const char *path) {
        const json_t *en = json_object_get(schema, "enum"), *e;
        const char *pattern = json_string_value(json_object_get(schema, "pattern"));
        size_t len = utf8_length(json_string_value(v), json_string_length(v)), i;
        char want[512];
        json_int_t lo, hi;

        describe_expected(schema, want, sizeof(want));
        if (json_is_array(en)) {
                json_array_foreach (en, i, e)
                        if (json_equal(e, v))
                                return 0;
                return fail(
                        c->message,
                        "%s: argument '%s' must be %s, got \"%.*s%s\"",
                        c->tool,
                        path,
                        want,
                        SHOWN_STRING,
                        json_string_value(v),
                        len > SHOWN_STRING ? "..." : "");
        }
        if (has_int(schema, "minLength", &lo) && (json_int_t) len < lo)
                return fail(
                        c->message,
                        "%s: argument '%s' must be %s, got %s",
                        c->tool,
                        path,
                        want,
                        len == 0 ? "an empty string" : "a shorter one");
        if (has_int(schema, "maxLength", &hi) && (json_int_t) len > hi)
                return fail(
                        c->message,
                        "%s: argument '%s' must be %s, got %zu characters",
                        c->tool,
                        path,
                        want,
                        len);
        if (pattern && !pattern_matches(pattern, v))
                return fail(
                        c->message,
                        "%s: argument '%s' must be %s, got \"%.*s%s\"",
                        c->tool,
                        path,
                        want,
                        SHOWN_STRING,
                        json_string_value(v),
                        len > SHOWN_STRING ? "..." : "");
        return 0;
}

static int check_number(Check *c, const json_t *schema, const json_t *v, const char *path, json_t **ret) {
        char want[256], got[64];
        json_int_t lo, hi;
        double d = json_number_value(v);

        if ((has_int(schema, "minimum", &lo) && d < (double) lo) ||
            (has_int(schema, "maximum", &hi) && d > (double) hi)) {
                describe_expected(schema, want, sizeof(want));
                describe_value(v, got, sizeof(got));
                return fail(c->message, "%s: argument '%s' must be %s, got %s", c->tool, path, want, got);
        }
        /* 600.0 is an integer to JSON Schema; the daemon wants it written as one. */
        *ret = json_is_real(v) && streq(value_type(schema, v), "integer") ? json_integer(integral_value(v))
                                                                          : json_incref((json_t *) v);
        return *ret ? 0 : -ENOMEM;
}

static int check_array(Check *c, const json_t *schema, const json_t *v, const char *path, json_t **ret) {
        _cleanup_(json_decrefp) json_t *out = json_array();
        const json_t *items = json_object_get(schema, "items"), *item;
        char want[512];
        json_int_t lo, hi;
        bool has_lo, has_hi;
        size_t i;
        int r;

        if (!out)
                return -ENOMEM;
        has_lo = has_int(schema, "minItems", &lo);
        has_hi = has_int(schema, "maxItems", &hi);
        if ((has_lo && (json_int_t) json_array_size(v) < lo) ||
            (has_hi && (json_int_t) json_array_size(v) > hi)) {
                bool few = has_lo && (json_int_t) json_array_size(v) < lo;

                describe_expected(schema, want, sizeof(want));
                return fail(
                        c->message,
                        "%s: argument '%s' must be %s with %s %" JSON_INTEGER_FORMAT " items, got %zu",
                        c->tool,
                        path,
                        want,
                        few ? "at least" : "at most",
                        few ? lo : hi,
                        json_array_size(v));
        }
        json_array_foreach (v, i, item) {
                _cleanup_free_ char *item_path = NULL;
                json_t *checked = NULL;

                if (asprintf(&item_path, "%s[%zu]", path, i) < 0)
                        return -ENOMEM;
                r = items ? check_value(c, items, item, item_path, &checked)
                          : ((checked = json_incref((json_t *) item)) ? 0 : -ENOMEM);
                if (r < 0)
                        return r;
                if (json_array_append_new(out, checked) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(out);
        return 0;
}

/* Names of known properties that look like the unknown one: it is part of theirs, or theirs of it
 * (child_id and child_session_id share their first and last words). */
static bool looks_like(const char *known, const char *unknown) {
        const char *first_end = strchr(unknown, '_'), *last = strrchr(unknown, '_');

        if (strstr(known, unknown) || strstr(unknown, known))
                return true;
        if (!first_end || !last)
                return false;
        return strncmp(known, unknown, (size_t) (first_end - unknown + 1)) == 0 &&
                strlen(known) > strlen(last) && streq(known + strlen(known) - strlen(last), last);
}

static int fail_unknown(Check *c, const json_t *props, const char *path, const char *key) {
        char names[512], hints[256];
        char *p = names, *h = hints;
        size_t left = sizeof(names), hleft = sizeof(hints);
        unsigned n = 0;
        const char *k;
        json_t *unused;

        names[0] = hints[0] = '\0';
        json_object_foreach ((json_t *) props, k, unused) {
                append(&p, &left, "%s%s", p == names ? "" : ", ", k);
                if (n < HINTS_MAX && looks_like(k, key)) {
                        append(&h, &hleft, "%s'%s'", n == 0 ? " (did you mean " : " or ", k);
                        n++;
                }
        }
        if (n > 0)
                append(&h, &hleft, "?)");
        if (!path)
                return fail(
                        c->message,
                        "%s: unknown argument '%s'%s; %s takes %s",
                        c->tool,
                        key,
                        hints,
                        c->tool,
                        left == sizeof(names) ? "no arguments" : names);
        return fail(
                c->message,
                "%s: argument '%s' has an unknown field '%s'%s; it takes %s",
                c->tool,
                path,
                key,
                hints,
                left == sizeof(names) ? "no fields" : names);
}

/* path is NULL for the arguments object itself. */
static int check_object(Check *c, const json_t *schema, const json_t *v, const char *path, json_t **ret) {
        _cleanup_(json_decrefp) json_t *out = NULL;
        const json_t *props = json_object_get(schema, "properties"), *required, *name;
        bool closed = json_is_false(json_object_get(schema, "additionalProperties"));
        const char *key;
        json_t *value;
        size_t i;
        int r;

        if (!json_is_object(props)) {
                *ret = json_incref((json_t *) v);
                return 0;
        }
        out = json_object();
        if (!out)
                return -ENOMEM;

        /* Unknown names first: a misspelt argument explains a "required" one that seems missing. */
        json_object_foreach ((json_t *) v, key, value)
                if (closed && !json_object_get(props, key))
                        return fail_unknown(c, props, path, key);

        required = json_object_get(schema, "required");
        json_array_foreach (required, i, name) {
                const char *n = json_string_value(name);
                char want[512];

                if (!n || json_object_get(v, n))
                        continue;
                describe_expected(json_object_get(props, n), want, sizeof(want));
                if (!path)
                        return fail(c->message, "%s: argument '%s' is required (%s)", c->tool, n, want);
                return fail(c->message, "%s: argument '%s.%s' is required (%s)", c->tool, path, n, want);
        }

        json_object_foreach ((json_t *) v, key, value) {
                _cleanup_free_ char *sub = NULL;
                const json_t *ps = json_object_get(props, key);
                json_t *checked = NULL;

                if (!ps) {
                        if (json_object_set(out, key, value) < 0)
                                return -ENOMEM;
                        continue;
                }
                if (path ? asprintf(&sub, "%s.%s", path, key) < 0 : !(sub = strdup(key)))
                        return -ENOMEM;
                r = check_value(c, ps, value, sub, &checked);
                if (r < 0)
                        return r;
                if (json_object_set_new(out, key, checked) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(out);
        return 0;
}

static int check_value(Check *c, const json_t *schema, const json_t *v, const char *path, json_t **ret) {
        char want[512], got[64];
        const char *type;
        int r;

        if (!types_match(schema, v)) {
                describe_expected(schema, want, sizeof(want));
                describe_value(v, got, sizeof(got));
                return fail(c->message, "%s: argument '%s' must be %s, got %s", c->tool, path, want, got);
        }
        type = value_type(schema, v);
        if (streq(type, "object"))
                return check_object(c, schema, v, path, ret);
        if (streq(type, "array"))
                return check_array(c, schema, v, path, ret);
        if (streq(type, "integer") || streq(type, "number"))
                return check_number(c, schema, v, path, ret);
        if (streq(type, "string")) {
                r = check_string(c, schema, v, path);
                if (r < 0)
                        return r;
        }
        *ret = json_incref((json_t *) v);
        return 0;
}

int schema_check_arguments(
        const json_t *schema, const char *tool, const json_t *args, json_t **ret_args, char **ret_message) {
        _cleanup_(json_decrefp) json_t *empty = NULL;
        Check c = { .tool = tool, .message = ret_message };
        char got[64];

        *ret_message = NULL;
        if (!args) {
                empty = json_object();
                if (!empty)
                        return -ENOMEM;
                args = empty;
        }
        if (!json_is_object(args)) {
                describe_value(args, got, sizeof(got));
                return fail(ret_message, "%s: the arguments must be a JSON object, got %s", tool, got);
        }
        return check_object(&c, schema, args, NULL, ret_args);
}

/* ---- projecting answers ---- */

static int project(
        const json_t *schema, const json_t *v, const char *path, json_t **ret, char **ret_message);

static int misfit(char **ret_message, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* As fail(), for an answer that does not fit: -EBADMSG. */
static int misfit(char **ret_message, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(ret_message, format, ap);
        va_end(ap);
        if (r < 0) {
                *ret_message = NULL;
                return -ENOMEM;
        }
        return -EBADMSG;
}

static int project_object(
        const json_t *schema, const json_t *v, const char *path, json_t **ret, char **ret_message) {
        _cleanup_(json_decrefp) json_t *out = NULL;
        const json_t *props = json_object_get(schema, "properties"),
                     *required = json_object_get(schema, "required");
        const char *key;
        json_t *ps;
        int r;

        if (!json_is_object(props)) {
                *ret = json_incref((json_t *) v);
                return 0;
        }
        out = json_object();
        if (!out)
                return -ENOMEM;
        json_object_foreach ((json_t *) props, key, ps) {
                _cleanup_free_ char *sub = NULL, *message = NULL;
                const json_t *value = json_object_get(v, key), *name;
                bool is_required = false;
                json_t *projected = NULL;
                size_t i;

                json_array_foreach (required, i, name)
                        if (streq_ptr(json_string_value(name), key))
                                is_required = true;
                if (*path ? asprintf(&sub, "%s.%s", path, key) < 0 : !(sub = strdup(key)))
                        return -ENOMEM;
                if (!value) {
                        if (is_required)
                                return misfit(ret_message, "'%s' is missing", sub);
                        continue;
                }
                r = project(ps, value, sub, &projected, &message);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        if (is_required) {
                                *ret_message = TAKE_PTR(message);
                                return r;
                        }
                        continue; /* an optional field of the wrong type is left out */
                }
                if (json_object_set_new(out, key, projected) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(out);
        return 0;
}

static int project(
        const json_t *schema, const json_t *v, const char *path, json_t **ret, char **ret_message) {
        const json_t *items, *en, *e, *item;
        char want[512], got[64];
        const char *type;
        bool found = false;
        size_t i;
        int r;

        if (!types_match(schema, v)) {
                describe_expected(schema, want, sizeof(want));
                describe_value(v, got, sizeof(got));
                return misfit(
                        ret_message, "'%s' must be %s, got %s", *path ? path : "the answer", want, got);
        }
        en = json_object_get(schema, "enum");
        if (json_is_string(v) && json_is_array(en)) {
                json_array_foreach (en, i, e)
                        found = found || json_equal(e, v);
                if (!found) {
                        describe_expected(schema, want, sizeof(want));
                        return misfit(
                                ret_message,
                                "'%s' must be %s, got \"%s\"",
                                path,
                                want,
                                json_string_value(v));
                }
        }
        type = value_type(schema, v);
        if (streq(type, "object"))
                return project_object(schema, v, path, ret, ret_message);
        items = json_object_get(schema, "items");
        if (streq(type, "array") && json_is_object(items)) {
                _cleanup_(json_decrefp) json_t *out = json_array();

                if (!out)
                        return -ENOMEM;
                json_array_foreach (v, i, item) {
                        _cleanup_free_ char *sub = NULL;
                        json_t *projected = NULL;

                        if (asprintf(&sub, "%s[%zu]", path, i) < 0)
                                return -ENOMEM;
                        r = project(items, item, sub, &projected, ret_message);
                        if (r < 0)
                                return r;
                        if (json_array_append_new(out, projected) < 0)
                                return -ENOMEM;
                }
                *ret = TAKE_PTR(out);
                return 0;
        }
        if (json_is_real(v) && streq(type, "integer"))
                *ret = json_integer(integral_value(v));
        else
                *ret = json_incref((json_t *) v);
        return *ret ? 0 : -ENOMEM;
}

int schema_project(const json_t *schema, const json_t *value, json_t **ret, char **ret_message) {
        *ret_message = NULL;
        return project(schema, value, "", ret, ret_message);
}

/* The fast path of the channel's "events" requests: a strict, conservative JSON validator that keeps the
 * spans of each event's data. It accepts a subset of what jansson accepts with JSON_REJECT_DUPLICATES
 * (valid UTF-8, no control characters in strings, escapes but not \u0000 or surrogates, numbers whose
 * value jansson can hold, keys without escapes and none twice in an object); anything else is left to
 * jansson, whose errors the peer then gets. The events of ccdocker-init (Claude Code's stream-json,
 * compact) take this path. */
#define _GNU_SOURCE
#include "channel-events.h"

#include <errno.h>
#include <string.h>

#include "jsonrpc.h"

/* Keys per object the duplicate check compares pairwise; an object with more goes to jansson. */
#define MAX_KEYS 64
/* Digits of a number the fast path takes: an integer fits int64, a real stays far from overflow. */
#define MAX_INT_DIGITS 18
#define MAX_REAL_INT_DIGITS 200
#define MAX_EXP_DIGITS 2

typedef struct Parser {
        const char *p, *end;
        unsigned depth;
        bool no_ws; /* inside a data value: whitespace there sends the line to jansson */
} Parser;

/* Every parse_* returns true if the value is one the fast path takes, false if not (the line goes to
 * jansson). */

static bool skip_ws(Parser *ps) {
        const char *p = ps->p;

        while (p < ps->end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
                p++;
        if (p != ps->p && ps->no_ws)
                return false;
        ps->p = p;
        return true;
}

static bool expect(Parser *ps, char c) {
        if (!skip_ws(ps) || ps->p >= ps->end || *ps->p != c)
                return false;
        ps->p++;
        return true;
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* One UTF-8 sequence starting at p (a byte >= 0x80): its length, or 0 if it is not valid (overlong, a
 * surrogate, past U+10FFFF, cut short). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
        unsigned char c = p[0];
        size_t len;
        uint32_t v;

        if (c >= 0xC2 && c <= 0xDF) {
                len = 2;
                v = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
                len = 3;
                v = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
                len = 4;
                v = c & 0x07;
        } else
                return 0;
        if ((size_t) (end - p) < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xC0) != 0x80)
                        return 0;
                v = (v << 6) | (p[i] & 0x3F);
        }
        if ((len == 3 && v < 0x800) || (len == 4 && v < 0x10000) || v > 0x10FFFF ||
            (v >= 0xD800 && v <= 0xDFFF))
                return 0;
        return len;
}

/* A string at ps->p (its opening quote): the span of its contents, and whether it has an escape. */
static bool parse_string(Parser *ps, const char **ret_s, size_t *ret_len, bool *ret_escaped) {
        const unsigned char *p = (const unsigned char *) ps->p + 1, *end = (const unsigned char *) ps->end;
        bool escaped = false;

        while (p < end) {
                unsigned char c = *p;

                if (c == '"') {
                        *ret_s = ps->p + 1;
                        *ret_len = (size_t) ((const char *) p - (ps->p + 1));
                        *ret_escaped = escaped;
                        ps->p = (const char *) p + 1;
                        return true;
                }
                if (c < 0x20)
                        return false;
                if (c == '\\') {
                        escaped = true;
                        if (end - p < 2)
                                return false;
                        c = p[1];
                        if (c == 'u') {
                                int v = 0;

                                if (end - p < 6)
                                        return false;
                                for (int i = 2; i < 6; i++) {
                                        int h = hexval((char) p[i]);

                                        if (h < 0)
                                                return false;
                                        v = v * 16 + h;
                                }
                                if (v == 0 || (v >= 0xD800 && v <= 0xDFFF))
                                        return false; /* NUL, or half a surrogate pair: jansson's call */
                                p += 6;
                        } else if (strchr("\"\\/bfnrt", c) && c != '\0')
                                p += 2;
                        else
                                return false;
                        continue;
                }
                if (c >= 0x80) {
                        size_t k = utf8_len(p, end);

                        if (k == 0)
                                return false;
                        p += k;
                        continue;
                }
                p++;
        }
        return false;
}

/* A number: integer sets *ret_int if it is one of at most MAX_INT_DIGITS digits (and *ret_neg). */
static bool parse_number(Parser *ps, bool *ret_is_int, uint64_t *ret_int, bool *ret_neg) {
        const char *p = ps->p, *end = ps->end, *digits;
        bool is_int = true, neg = false;
        uint64_t v = 0;
        size_t nd;

        if (p < end && *p == '-') {
                neg = true;
                p++;
        }
        digits = p;
        if (p >= end || *p < '0' || *p > '9')
                return false;
        if (*p == '0')
                p++;
        else
                while (p < end && *p >= '0' && *p <= '9')
                        p++;
        nd = (size_t) (p - digits);
        if (p < end && *p >= '0' && *p <= '9')
                return false; /* a leading zero */
        if (p < end && *p == '.') {
                is_int = false;
                p++;
                if (p >= end || *p < '0' || *p > '9')
                        return false;
                while (p < end && *p >= '0' && *p <= '9')
                        p++;
        }
        if (p < end && (*p == 'e' || *p == 'E')) {
                const char *e;

                is_int = false;
                p++;
                if (p < end && (*p == '+' || *p == '-'))
                        p++;
                e = p;
                while (p < end && *p >= '0' && *p <= '9')
                        p++;
                if (p == e || p - e > MAX_EXP_DIGITS)
                        return false;
        }
        if (is_int) {
                if (nd > MAX_INT_DIGITS)
                        return false;
                for (const char *q = digits; q < digits + nd; q++)
                        v = v * 10 + (uint64_t) (*q - '0');
        } else if (nd > MAX_REAL_INT_DIGITS)
                return false;

        if (ret_is_int)
                *ret_is_int = is_int;
        if (ret_int)
                *ret_int = v;
        if (ret_neg)
                *ret_neg = neg;
        ps->p = p;
        return true;
}

static bool parse_literal(Parser *ps, const char *word, size_t len) {
        if ((size_t) (ps->end - ps->p) < len || memcmp(ps->p, word, len) != 0)
                return false;
        ps->p += len;
        return true;
}

static bool parse_value(Parser *ps, bool *ret_result);

/* Keys of one object, for the duplicate check. */
typedef struct Keys {
        const char *s[MAX_KEYS];
        size_t len[MAX_KEYS];
        size_t n;
} Keys;

static bool keys_add(Keys *k, const char *s, size_t len) {
        for (size_t i = 0; i < k->n; i++)
                if (k->len[i] == len && memcmp(k->s[i], s, len) == 0)
                        return false; /* a duplicate: jansson says what is wrong */
        if (k->n >= MAX_KEYS)
                return false;
        k->s[k->n] = s;
        k->len[k->n] = len;
        k->n++;
        return true;
}

/* The next key of an object at ps->p (after '{' or ','), its colon consumed. */
static bool parse_key(Parser *ps, Keys *keys, const char **ret_s, size_t *ret_len) {
        bool escaped;

        if (!skip_ws(ps) || ps->p >= ps->end || *ps->p != '"')
                return false;
        if (!parse_string(ps, ret_s, ret_len, &escaped) || escaped)
                return false;
        if (!keys_add(keys, *ret_s, *ret_len))
                return false;
        return expect(ps, ':');
}

/* After a member or an element: true and *ret_more for ',', true and !*ret_more for close. */
static bool parse_next(Parser *ps, char close, bool *ret_more) {
        if (!skip_ws(ps) || ps->p >= ps->end)
                return false;
        if (*ps->p == ',') {
                ps->p++;
                *ret_more = true;
                return true;
        }
        if (*ps->p == close) {
                ps->p++;
                *ret_more = false;
                return true;
        }
        return false;
}

/* Whether the object or array at ps->p (its bracket) is empty; if so, it is consumed. */
static bool parse_empty(Parser *ps, char close, bool *ret_empty) {
        ps->p++;
        if (!skip_ws(ps))
                return false;
        *ret_empty = ps->p < ps->end && *ps->p == close;
        if (*ret_empty)
                ps->p++;
        return true;
}

static bool is_key(const char *s, size_t len, const char *key) {
        return len == strlen(key) && memcmp(s, key, len) == 0;
}

/* ret_result, if not NULL: set when this object has "type": "result". */
static bool parse_object(Parser *ps, bool *ret_result) {
        Keys keys = {};
        bool empty, more = true;

        if (!parse_empty(ps, '}', &empty))
                return false;
        if (empty)
                return true;
        while (more) {
                const char *k;
                size_t klen;

                if (!parse_key(ps, &keys, &k, &klen) || !skip_ws(ps) || ps->p >= ps->end)
                        return false;
                if (ret_result && is_key(k, klen, "type") && *ps->p == '"') {
                        const char *s;
                        size_t slen;
                        bool escaped;

                        if (!parse_string(ps, &s, &slen, &escaped) || escaped)
                                return false;
                        *ret_result = is_key(s, slen, "result");
                } else if (!parse_value(ps, NULL))
                        return false;
                if (!parse_next(ps, '}', &more))
                        return false;
        }
        return true;
}

static bool parse_array(Parser *ps) {
        bool empty, more = true;

        if (!parse_empty(ps, ']', &empty))
                return false;
        if (empty)
                return true;
        while (more)
                if (!parse_value(ps, NULL) || !parse_next(ps, ']', &more))
                        return false;
        return true;
}

static bool parse_value(Parser *ps, bool *ret_result) {
        const char *s;
        size_t len;
        bool escaped, ok;

        if (!skip_ws(ps) || ps->p >= ps->end)
                return false;
        switch (*ps->p) {
        case '{':
        case '[':
                if (ps->depth >= JSONRPC_MAX_DEPTH)
                        return false;
                ps->depth++;
                ok = *ps->p == '{' ? parse_object(ps, ret_result) : parse_array(ps);
                ps->depth--;
                return ok;
        case '"':
                return parse_string(ps, &s, &len, &escaped);
        case 't':
                return parse_literal(ps, "true", 4);
        case 'f':
                return parse_literal(ps, "false", 5);
        case 'n':
                return parse_literal(ps, "null", 4);
        default:
                return parse_number(ps, NULL, NULL, NULL);
        }
}

/* An unsigned integer (seq, time): at most MAX_INT_DIGITS digits, no sign, fraction or exponent. */
static bool parse_uint(Parser *ps, uint64_t *ret) {
        bool is_int, neg;

        if (!skip_ws(ps) || ps->p >= ps->end || *ps->p == '-')
                return false;
        return parse_number(ps, &is_int, ret, &neg) && is_int && !neg;
}

static bool parse_event(Parser *ps, ChannelEvent *ev) {
        Keys keys = {};
        bool have_seq = false, have_time = false, have_data = false, more = true;

        if (!expect(ps, '{'))
                return false;
        *ev = (ChannelEvent){};
        while (more) {
                const char *k;
                size_t klen;

                if (!parse_key(ps, &keys, &k, &klen))
                        return false;
                if (is_key(k, klen, "seq")) {
                        if (!parse_uint(ps, &ev->seq) || ev->seq < 1)
                                return false;
                        have_seq = true;
                } else if (is_key(k, klen, "time")) {
                        if (!parse_uint(ps, &ev->time))
                                return false;
                        have_time = true;
                } else if (is_key(k, klen, "data")) {
                        if (!skip_ws(ps))
                                return false;
                        ev->data = ps->p;
                        ps->no_ws = true;
                        if (!parse_value(ps, &ev->result))
                                return false;
                        ps->no_ws = false;
                        ev->data_len = (size_t) (ps->p - ev->data);
                        have_data = true;
                } else if (!parse_value(ps, NULL))
                        return false;
                if (!parse_next(ps, '}', &more))
                        return false;
        }
        return have_seq && have_time && have_data;
}

static bool parse_events(Parser *ps, ChannelEvent *events, size_t max, size_t *ret_n) {
        size_t n = 0;
        bool more = true;

        if (!expect(ps, '['))
                return false;
        while (more) {
                if (n >= max || !parse_event(ps, &events[n]))
                        return false;
                n++;
                if (!parse_next(ps, ']', &more))
                        return false;
        }
        *ret_n = n;
        return true;
}

static bool parse_params(Parser *ps, ChannelEvent *events, size_t max, size_t *ret_n) {
        Keys keys = {};
        const char *k;
        size_t klen;
        bool more;

        /* Only {"events": [...]}: anything else is the ordinary path's to judge. */
        if (!expect(ps, '{') || !parse_key(ps, &keys, &k, &klen) || !is_key(k, klen, "events") ||
            !parse_events(ps, events, max, ret_n) || !parse_next(ps, '}', &more))
                return false;
        return !more;
}

int channel_events_parse(
        const char *line, size_t n, ChannelEvent *events, size_t max, size_t *ret_n, json_t **ret_id) {
        Parser ps = { .p = line, .end = line + n };
        Keys keys = {};
        const char *id = NULL, *k, *s;
        size_t id_len = 0, klen, slen, n_events = 0;
        bool have_version = false, have_method = false, have_params = false, more = true, escaped;
        json_t *idv;

        if (!line || !events || !ret_n || !ret_id)
                return -EINVAL;
        /* Most lines that are not events requests are known at once. */
        if (!memmem(line, n, "\"events\"", 8))
                return 0;

        if (!expect(&ps, '{'))
                return 0;
        while (more) {
                if (!parse_key(&ps, &keys, &k, &klen) || !skip_ws(&ps) || ps.p >= ps.end)
                        return 0;
                if (is_key(k, klen, "jsonrpc")) {
                        if (*ps.p != '"' || !parse_string(&ps, &s, &slen, &escaped) ||
                            !is_key(s, slen, "2.0"))
                                return 0;
                        have_version = true;
                } else if (is_key(k, klen, "method")) {
                        if (*ps.p != '"' || !parse_string(&ps, &s, &slen, &escaped) ||
                            !is_key(s, slen, "events"))
                                return 0;
                        have_method = true;
                } else if (is_key(k, klen, "id")) {
                        bool is_int, neg;
                        uint64_t v;

                        id = ps.p;
                        if (*ps.p == '"') {
                                if (!parse_string(&ps, &s, &slen, &escaped) || escaped)
                                        return 0;
                        } else if (!parse_number(&ps, &is_int, &v, &neg) || !is_int)
                                return 0;
                        id_len = (size_t) (ps.p - id);
                } else if (is_key(k, klen, "params")) {
                        if (!parse_params(&ps, events, max, &n_events))
                                return 0;
                        have_params = true;
                } else
                        return 0;
                if (!parse_next(&ps, '}', &more))
                        return 0;
        }
        if (!skip_ws(&ps) || ps.p != ps.end || !have_version || !have_method || !have_params || !id)
                return 0;

        idv = json_loadb(id, id_len, JSON_DECODE_ANY, NULL);
        if (!idv)
                return -ENOMEM;
        *ret_id = idv;
        *ret_n = n_events;
        return 1;
}

/* The egress proxy's policy, pure and without I/O: the strict parser of a request head, the allowlist
 * (its entries and the match of a host:port), and the check of the addresses an allowed host resolves
 * to (loopback, link-local and private ranges only when the allowlist names them). egress-proxy.c calls
 * these on the loop; the unit and fuzz tests call them directly. egress-proxy.h declares them. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "egress-proxy.h"
#include "url-authority.h"
#include "util.h"

/* ---- the request head ---- */

static bool is_tchar(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_name_char(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                c == '.' || c == '_';
}

/* A port of 1 to 5 digits, 1-65535, in s[0, n). */
static bool parse_port(const char *s, size_t n, uint16_t *ret) {
        unsigned v = 0;

        if (n == 0 || n > 5)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v == 0 || v > 65535)
                return false;
        *ret = (uint16_t) v;
        return true;
}

/* A host in s[0, n): a DNS-ish name or IPv4 literal of [A-Za-z0-9._-], or "[IPv6]". Written lowercased
 * and without brackets to ret (EGRESS_HOST_MAX + 1 bytes). */
static bool parse_host(const char *s, size_t n, char *ret) {
        if (n >= 2 && s[0] == '[') {
                char v6[INET6_ADDRSTRLEN];
                struct in6_addr a;

                if (s[n - 1] != ']' || n - 2 == 0 || n - 2 >= sizeof(v6))
                        return false;
                for (size_t i = 1; i < n - 1; i++)
                        if (!strchr("0123456789abcdefABCDEF:.", s[i]) || s[i] == '\0')
                                return false;
                memcpy(v6, s + 1, n - 2);
                v6[n - 2] = '\0';
                if (inet_pton(AF_INET6, v6, &a) != 1)
                        return false;
                for (size_t i = 0; i <= n - 2; i++)
                        ret[i] = (char) tolower((unsigned char) v6[i]);
                return true;
        }
        if (n == 0 || n > EGRESS_HOST_MAX || s[0] == '.' || s[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                if (!is_name_char((unsigned char) s[i]))
                        return false;
                ret[i] = (char) tolower((unsigned char) s[i]);
        }
        ret[n] = '\0';
        return true;
}

/* "host:port" in s[0, n), the authority form of a CONNECT target (RFC 9110 9.3.6). */
static bool parse_authority(const char *s, size_t n, char *ret_host, uint16_t *ret_port) {
        const char *colon = NULL;

        for (size_t i = n; i > 0; i--)
                if (s[i - 1] == ':') {
                        colon = s + i - 1;
                        break;
                }
        if (!colon)
                return false;
        if (!parse_port(colon + 1, (size_t) (s + n - colon - 1), ret_port))
                return false;
        return parse_host(s, (size_t) (colon - s), ret_host);
}

/* The request line in s[0, n): METHOD SP TARGET SP HTTP/1.x. */
static bool parse_request_line(
        const char *s, size_t n, char *ret_method, const char **ret_target, size_t *ret_target_len) {
        size_t i = 0, m, t0;

        while (i < n && is_tchar((unsigned char) s[i]))
                i++;
        m = i;
        if (m == 0 || m > EGRESS_METHOD_MAX || i >= n || s[i] != ' ')
                return false;
        t0 = ++i;
        while (i < n && (unsigned char) s[i] > 0x20 && (unsigned char) s[i] < 0x7f)
                i++;
        if (i == t0 || i >= n || s[i] != ' ')
                return false;
        if (n - i - 1 != 8 ||
            (memcmp(s + i + 1, "HTTP/1.1", 8) != 0 && memcmp(s + i + 1, "HTTP/1.0", 8) != 0))
                return false;
        memcpy(ret_method, s, m);
        ret_method[m] = '\0';
        *ret_target = s + t0;
        *ret_target_len = i - t0;
        return true;
}

/* A header field line in s[0, n): NAME ":" VALUE, no obsolete folding, no control characters. */
static bool header_line_valid(const char *s, size_t n) {
        size_t i = 0;

        while (i < n && is_tchar((unsigned char) s[i]))
                i++;
        if (i == 0 || i >= n || s[i] != ':')
                return false;
        for (i++; i < n; i++) {
                unsigned char c = (unsigned char) s[i];

                if ((c < 0x20 && c != '\t') || c == 0x7f)
                        return false;
        }
        return true;
}

int egress_parse_head(const char *buf, size_t len, EgressRequest *ret, size_t *ret_head_len) {
        size_t limit = len < EGRESS_HEAD_MAX ? len : EGRESS_HEAD_MAX, line_start = 0, head_len = 0;
        unsigned lines = 0;
        EgressRequest req = {};
        const char *target = NULL;
        size_t target_len = 0;

        if (!buf && len > 0)
                return -EBADMSG;

        /* Find the blank line that ends the head; lines end in LF, optionally after CR. */
        for (size_t i = 0; i < limit; i++) {
                size_t line_end;

                if (buf[i] != '\n')
                        continue;
                line_end = i > line_start && buf[i - 1] == '\r' ? i - 1 : i;
                if (line_end == line_start) {
                        if (lines == 0)
                                return -EBADMSG; /* no request line */
                        head_len = i + 1;
                        break;
                }
                lines++;
                line_start = i + 1;
        }

        if (head_len == 0) {
                /* Not complete. Text that cannot start a request is refused now, not after 8 KiB. */
                for (size_t i = 0; i < limit && buf[i] != '\n'; i++) {
                        unsigned char c = (unsigned char) buf[i];

                        if ((c < 0x20 && c != '\r') || c >= 0x7f)
                                return -EBADMSG;
                }
                return len >= EGRESS_HEAD_MAX ? -E2BIG : 0;
        }

        /* Check every line of [0, head_len). */
        line_start = 0;
        lines = 0;
        for (size_t i = 0; i < head_len; i++) {
                size_t line_end, n;

                if (buf[i] != '\n')
                        continue;
                line_end = i > line_start && buf[i - 1] == '\r' ? i - 1 : i;
                n = line_end - line_start;
                if (n == 0)
                        break;
                if (memchr(buf + line_start, '\r', n))
                        return -EBADMSG; /* a CR that does not end the line */
                if (lines == 0) {
                        if (!parse_request_line(buf + line_start, n, req.method, &target, &target_len))
                                return -EBADMSG;
                } else if (!header_line_valid(buf + line_start, n))
                        return -EBADMSG;
                lines++;
                line_start = i + 1;
        }

        if (!streq(req.method, "CONNECT")) {
                *ret = req;
                *ret_head_len = head_len;
                return -EOPNOTSUPP;
        }
        if (!parse_authority(target, target_len, req.host, &req.port))
                return -EBADMSG;
        *ret = req;
        *ret_head_len = head_len;
        return 1;
}

/* ---- the allowlist ---- */

typedef struct AllowEntry {
        char host[EGRESS_HOST_MAX + 1];
        uint16_t port; /* 0: every port */
        bool wildcard; /* "*.host" */
} AllowEntry;

static bool allow_entry_parse(const char *entry, AllowEntry *ret) {
        AllowEntry e = {};
        size_t n, host_len;
        const char *s = entry, *colon;

        if (isempty(entry))
                return false;
        n = strlen(entry);
        if (startswith(s, "*.")) {
                e.wildcard = true;
                s += 2;
                n -= 2;
        }
        /* A port follows the last ':' unless the host is a bare IPv6 literal, which must be bracketed. */
        colon = strrchr(s, ':');
        if (s[0] == '[') {
                const char *close = strchr(s, ']');

                if (!close || e.wildcard)
                        return false;
                colon = close[1] == ':' ? close + 1 : NULL;
                if (!colon && close[1] != '\0')
                        return false;
        } else if (colon && strchr(s, ':') != colon)
                return false;
        host_len = colon ? (size_t) (colon - s) : n;
        if (colon && !parse_port(colon + 1, strlen(colon + 1), &e.port))
                return false;
        if (!parse_host(s, host_len, e.host))
                return false;
        *ret = e;
        return true;
}

bool egress_allow_entry_valid(const char *entry) {
        AllowEntry e;

        return allow_entry_parse(entry, &e);
}

static bool hosts_equal(const char *a, const char *b) {
        struct in6_addr x, y;

        if (strchr(a, ':') && strchr(b, ':'))
                return inet_pton(AF_INET6, a, &x) == 1 && inet_pton(AF_INET6, b, &y) == 1 &&
                        memcmp(&x, &y, sizeof(x)) == 0;
        return strcasecmp(a, b) == 0;
}

bool egress_host_allowed(char *const *allowed, const char *host, uint16_t port) {
        if (isempty(host) || port == 0)
                return false;
        for (size_t i = 0; allowed && allowed[i]; i++) {
                AllowEntry e;

                if (!allow_entry_parse(allowed[i], &e))
                        continue;
                if (e.port != 0 && e.port != port)
                        continue;
                if (e.wildcard) {
                        size_t hl = strlen(host), el = strlen(e.host);

                        if (hl > el + 1 && host[hl - el - 1] == '.' &&
                            strcasecmp(host + hl - el, e.host) == 0)
                                return true;
                } else if (hosts_equal(host, e.host))
                        return true;
        }
        return false;
}

/* ---- addresses ---- */

static EgressAddressClass classify_ipv4(const uint8_t a[4]) {
        if (a[0] == 0)
                return EGRESS_ADDRESS_UNSPECIFIED; /* 0/8: "this network", 0.0.0.0 reaches the host */
        if (a[0] == 127)
                return EGRESS_ADDRESS_LOOPBACK;
        if (a[0] == 169 && a[1] == 254)
                return EGRESS_ADDRESS_LINK_LOCAL;
        if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
            (a[0] == 100 && (a[1] & 0xc0) == 64)) /* 100.64/10, carrier-grade NAT (RFC 6598) */
                return EGRESS_ADDRESS_PRIVATE;
        if ((a[0] & 0xf0) == 224)
                return EGRESS_ADDRESS_MULTICAST;
        if ((a[0] & 0xf0) == 240)
                return EGRESS_ADDRESS_RESERVED; /* 240/4 and the broadcast 255.255.255.255 */
        return EGRESS_ADDRESS_PUBLIC;
}

EgressAddressClass egress_address_classify(int family, const void *addr) {
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        static const uint8_t nat64[12] = { 0, 0x64, 0xff, 0x9b };
        const uint8_t *a = addr;

        if (!addr)
                return EGRESS_ADDRESS_RESERVED;
        if (family == AF_INET)
                return classify_ipv4(a);
        if (family != AF_INET6)
                return EGRESS_ADDRESS_RESERVED;

        /* IPv4 inside IPv6: mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d, compatible ::a.b.c.d (but
         * :: and ::1 themselves), and 6to4 2002:AABB:CCDD::/48. */
        if (memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0)
                return classify_ipv4(a + 12);
        if (memcmp(a, mapped, 10) == 0 && a[10] == 0 && a[11] == 0) {
                if (a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] <= 1)
                        return a[15] == 0 ? EGRESS_ADDRESS_UNSPECIFIED : EGRESS_ADDRESS_LOOPBACK;
                return classify_ipv4(a + 12);
        }
        if (a[0] == 0x20 && a[1] == 0x02)
                return classify_ipv4(a + 2);
        if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
                return EGRESS_ADDRESS_LINK_LOCAL; /* fe80::/10 */
        if ((a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) || (a[0] & 0xfe) == 0xfc)
                return EGRESS_ADDRESS_PRIVATE; /* fec0::/10 (old site-local), fc00::/7 (unique local) */
        if (a[0] == 0xff)
                return EGRESS_ADDRESS_MULTICAST;
        return EGRESS_ADDRESS_PUBLIC;
}

const char *egress_address_class_to_string(EgressAddressClass c) {
        static const char *const table[] = {
                [EGRESS_ADDRESS_PUBLIC] = "public",           [EGRESS_ADDRESS_LOOPBACK] = "loopback",
                [EGRESS_ADDRESS_LINK_LOCAL] = "link-local",   [EGRESS_ADDRESS_PRIVATE] = "private",
                [EGRESS_ADDRESS_UNSPECIFIED] = "unspecified", [EGRESS_ADDRESS_MULTICAST] = "multicast",
                [EGRESS_ADDRESS_RESERVED] = "reserved",
        };

        return (size_t) c < sizeof(table) / sizeof(table[0]) ? table[c] : NULL;
}

/* The address of sa (AF_INET or AF_INET6) as 16 bytes, an IPv4 one (or IPv4-mapped IPv6) as
 * ::ffff:a.b.c.d, so that an entry "127.0.0.1" and an address ::ffff:127.0.0.1 compare equal. */
static bool address_key(int family, const void *addr, uint8_t ret[16]) {
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

        if (family == AF_INET) {
                memcpy(ret, mapped, 12);
                memcpy(ret + 12, addr, 4);
                return true;
        }
        if (family == AF_INET6) {
                memcpy(ret, addr, 16);
                return true;
        }
        return false;
}

static const void *sockaddr_address(const struct sockaddr *sa, int *ret_family) {
        if (!sa)
                return NULL;
        *ret_family = sa->sa_family;
        if (sa->sa_family == AF_INET)
                return &((const struct sockaddr_in *) sa)->sin_addr;
        if (sa->sa_family == AF_INET6)
                return &((const struct sockaddr_in6 *) sa)->sin6_addr;
        return NULL;
}

/* RFC 6761 6.3: "localhost" and the names under it are the loopback host. */
static bool is_loopback_name(const char *name) {
        size_t n = strlen(name);

        return strcasecmp(name, "localhost") == 0 ||
                (n > strlen(".localhost") && strcasecmp(name + n - strlen(".localhost"), ".localhost") == 0);
}

bool egress_address_permitted(
        char *const *allowed, const char *host, uint16_t port, const struct sockaddr *sa) {
        EgressAddressClass class;
        const void *addr;
        uint8_t key[16];
        int family = AF_UNSPEC;

        addr = sockaddr_address(sa, &family);
        if (!addr || isempty(host) || port == 0 || !address_key(family, addr, key))
                return false;
        class = egress_address_classify(family, addr);
        if (class == EGRESS_ADDRESS_PUBLIC)
                return true;

        for (size_t i = 0; allowed && allowed[i]; i++) {
                AllowEntry e;
                union {
                        struct in_addr v4;
                        struct in6_addr v6;
                } literal;
                uint8_t entry_key[16];

                /* A wildcard never names an address, whatever it matches. */
                if (!allow_entry_parse(allowed[i], &e) || e.wildcard || (e.port != 0 && e.port != port))
                        continue;
                /* An address literal names that address. */
                if (inet_pton(AF_INET, e.host, &literal.v4) == 1) {
                        if (address_key(AF_INET, &literal.v4, entry_key) && memcmp(entry_key, key, 16) == 0)
                                return true;
                        continue;
                }
                if (inet_pton(AF_INET6, e.host, &literal.v6) == 1) {
                        if (address_key(AF_INET6, &literal.v6, entry_key) && memcmp(entry_key, key, 16) == 0)
                                return true;
                        continue;
                }
                /* "localhost" asked for by that name names the loopback addresses it resolves to. */
                if (class == EGRESS_ADDRESS_LOOPBACK && is_loopback_name(e.host) &&
                    hosts_equal(host, e.host))
                        return true;
        }
        return false;
}

/* ---- forwards ---- */

bool egress_forward_id_valid(const char *id) {
        size_t n;

        if (!id)
                return false;
        n = strlen(id);
        if (n == 0 || n > EGRESS_FORWARD_ID_MAX || id[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9') || id[i] == '-'))
                        return false;
        return true;
}

bool egress_forward_id_of(const char *host, char *ret) {
        size_t n = host ? strlen(host) : 0, suffix = strlen(EGRESS_FORWARD_SUFFIX);
        char id[EGRESS_FORWARD_ID_MAX + 1];

        if (n <= suffix || n - suffix > EGRESS_FORWARD_ID_MAX ||
            !streq(host + n - suffix, EGRESS_FORWARD_SUFFIX))
                return false;
        memcpy(id, host, n - suffix);
        id[n - suffix] = '\0';
        if (!egress_forward_id_valid(id))
                return false;
        memcpy(ret, id, n - suffix + 1);
        return true;
}

int egress_url_authority(const char *url, uint16_t default_port, char **ret_host, uint16_t *ret_port) {
        char host[EGRESS_HOST_MAX + 1];
        const char *start, *end, *colon = NULL;
        uint16_t port = default_port;
        char *copy;

        if (!ret_host || !ret_port || url_authority(url, &start, &end) < 0)
                return -EINVAL;
        if (*start == '[') {
                const char *close = memchr(start, ']', (size_t) (end - start));

                if (!close)
                        return -EINVAL;
                if (close + 1 < end) {
                        if (close[1] != ':')
                                return -EINVAL;
                        colon = close + 1;
                }
        } else
                colon = memchr(start, ':', (size_t) (end - start));
        if (colon && !parse_port(colon + 1, (size_t) (end - colon - 1), &port))
                return -EINVAL;
        if (!parse_host(start, (size_t) ((colon ?: end) - start), host) || port == 0)
                return -EINVAL;
        copy = strdup(host);
        if (!copy)
                return -ENOMEM;
        *ret_host = copy;
        *ret_port = port;
        return 0;
}

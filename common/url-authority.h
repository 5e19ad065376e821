/* The authority of a URL, for the TCP forwards (docs/egress-proxy.md): the daemon reads a secret's
 * host and port out of it, ccdocker-init puts the forward's loopback address in its place. */
#pragma once

/* In url ("scheme://[userinfo@]host[:port][/path][?query]"), the span [*ret_start, *ret_end) of
 * "host[:port]": after the userinfo (which ends at the last '@' of the authority), up to the first '/',
 * '?' or '#'. 0, or -EINVAL when there is no scheme, no host (a unix-socket DSN) or several (a ','). */
int url_authority(const char *url, const char **ret_start, const char **ret_end);

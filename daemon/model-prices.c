/* What model calls cost: see model-prices.h. */
#define _GNU_SOURCE
#include "model-prices.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void model_prices_free(ModelPrice *prices, size_t n) {
        for (size_t i = 0; prices && i < n; i++)
                free(prices[i].model_prefix);
        free(prices);
}

static int parse_price_number(const char *s, size_t len, double *ret) {
        char buf[32], *end;
        double v;

        if (len == 0 || len >= sizeof(buf) || strspn(s, "0123456789.") < len)
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = '\0';
        errno = 0;
        v = strtod(buf, &end);
        if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0 || v > 1e6)
                return -EINVAL;
        *ret = v;
        return 0;
}

int model_prices_parse(const char *text, ModelPrice **ret, size_t *ret_n) {
        ModelPrice *prices = NULL;
        size_t n = 0;
        const char *p = text;
        int r;

        if (!text || !ret || !ret_n)
                return -EINVAL;

        for (;;) {
                const char *word, *eq, *slash;
                size_t len;
                ModelPrice *np;
                double in, out;

                p += strspn(p, " \t");
                if (*p == '\0')
                        break;
                word = p;
                len = strcspn(p, " \t");
                p += len;

                eq = memchr(word, '=', len);
                if (!eq) {
                        r = -EINVAL;
                        goto fail;
                }
                slash = memchr(eq, '/', (size_t) (word + len - eq));
                if (!slash || parse_price_number(eq + 1, (size_t) (slash - eq - 1), &in) < 0 ||
                    parse_price_number(slash + 1, (size_t) (word + len - slash - 1), &out) < 0) {
                        r = -EINVAL;
                        goto fail;
                }
                for (const char *c = word; c < eq; c++)
                        if (!isalnum((unsigned char) *c) && !strchr("-._:@*", *c)) {
                                r = -EINVAL;
                                goto fail;
                        }

                np = reallocarray(prices, n + 1, sizeof(ModelPrice));
                if (!np) {
                        r = -ENOMEM;
                        goto fail;
                }
                prices = np;
                prices[n] = (ModelPrice){ .input_per_mtok = in, .output_per_mtok = out };
                /* "*" and a trailing '*' mean "any": a prefix says that already. */
                len = (size_t) (eq - word);
                if (len > 0 && word[len - 1] == '*')
                        len--;
                prices[n].model_prefix = strndup(word, len);
                if (!prices[n].model_prefix) {
                        r = -ENOMEM;
                        goto fail;
                }
                n++;
        }

        *ret = prices;
        *ret_n = n;
        return 0;

fail:
        /* (The one ladder here: a partly built array.) */
        model_prices_free(prices, n);
        return r;
}

double model_price_cost(const ModelPrice *prices, size_t n, const char *model, const ModelUsage *u) {
        const ModelPrice *best = NULL;
        size_t best_len = 0;

        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(prices[i].model_prefix);

                if (strncmp(strempty(model), prices[i].model_prefix, len) == 0 &&
                    (!best || len > best_len)) {
                        best = prices + i;
                        best_len = len;
                }
        }
        if (!best)
                return 0;

        return ((double) u->input_tokens * best->input_per_mtok +
                (double) u->cache_creation_input_tokens * best->input_per_mtok * 1.25 +
                (double) u->cache_read_input_tokens * best->input_per_mtok * 0.1 +
                (double) u->output_tokens * best->output_per_mtok) /
                1e6;
}

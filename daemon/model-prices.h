/* What model calls cost: prices per model, as ModelPrices= sets them (docs/ccdockerd.conf.md), and the
 * cost of one call's usage. */
#pragma once

#include <stddef.h>

#include "model-usage.h"

/* A price in USD per million tokens, for models whose name starts with model_prefix ("" or "*"
 * matches every model). Cache writes cost 1.25 times the input price, cache reads 0.1 times. */
typedef struct ModelPrice {
        char *model_prefix;
        double input_per_mtok, output_per_mtok;
} ModelPrice;

/* "PREFIX=IN/OUT ..." (USD per million tokens, e.g. "claude-opus=15/75 *=3/15"), as ModelPrices=
 * takes it. -EINVAL for anything else. */
int model_prices_parse(const char *text, ModelPrice **ret, size_t *ret_n);
void model_prices_free(ModelPrice *prices, size_t n);
/* The cost in USD of usage by model: the longest matching prefix's price; 0 when none matches. */
double model_price_cost(const ModelPrice *prices, size_t n, const char *model, const ModelUsage *u);

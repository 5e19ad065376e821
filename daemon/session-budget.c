/* A session tree's model budgets: see session-budget.h. */
#define _GNU_SOURCE
#include "session-budget.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "manager.h"
#include "session.h"
#include "util.h"

/* What the admitted calls of root's tree hold now. */
static void tree_reserved(Manager *m, Session *root, ModelReservation *ret) {
        _cleanup_free_ Session **children = NULL;
        size_t n = 0;

        model_proxy_session_reserved(root->model, ret);
        if (manager_list_sessions(m, root, &children, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                ModelReservation sub;

                tree_reserved(m, children[i], &sub);
                ret->calls += sub.calls;
                ret->tokens += sub.tokens;
                ret->cost_usd += sub.cost_usd;
        }
}

bool session_budget_admits(Session *s, const ModelReservation *reserve, char **ret_reason) {
        static const ModelReservation none = {};
        Manager *m = s->manager;
        char *ignored = NULL;

        if (!ret_reason) {
                bool ok = session_budget_admits(s, reserve, &ignored);

                free(ignored);
                return ok;
        }

        if (!reserve)
                reserve = &none;
        for (Session *a = s; a; a = a->parent_id ? manager_get_session(m, a->parent_id) : NULL) {
                ModelReservation held;
                StoreUsage u;
                uint64_t tokens;

                if (!a->config || (a->config->budget_usd <= 0 && a->config->budget_tokens == 0))
                        continue;
                manager_subtree_usage(m, a, &u);
                tree_reserved(m, a, &held);
                /* Cache writes and reads count one for one, as input does. */
                tokens = u.input_tokens + u.output_tokens + u.cache_creation_input_tokens +
                        u.cache_read_input_tokens;
                if (!model_budget_admits(a->config->budget_tokens, tokens, held.tokens, reserve->tokens)) {
                        if (asprintf(
                                    ret_reason,
                                    "session %s and its children have used %" PRIu64 " and reserved %" PRIu64
                                    " of their budget of %" PRIu64 " tokens (budget_tokens)",
                                    a->id,
                                    tokens,
                                    held.tokens,
                                    a->config->budget_tokens) < 0)
                                *ret_reason = NULL;
                        return false;
                }
                if (!model_budget_admits_usd(
                            a->config->budget_usd, u.cost_usd, held.cost_usd, reserve->cost_usd)) {
                        if (asprintf(
                                    ret_reason,
                                    "session %s and its children have used $%.4f and reserved $%.4f of their "
                                    "budget of $%.4f (budget_usd)",
                                    a->id,
                                    u.cost_usd,
                                    held.cost_usd,
                                    a->config->budget_usd) < 0)
                                *ret_reason = NULL;
                        return false;
                }
        }
        return true;
}

void session_budget_set_paused(Session *s, const char *reason) {
        bool was = s->budget_exhausted;

        if (reason) {
                if (was && streq(s->budget_reason, reason))
                        return;
                s->budget_exhausted = true;
                (void) snprintf(s->budget_reason, sizeof(s->budget_reason), "%s", reason);
                if (!was)
                        log_struct(
                                LOG_NOTICE,
                                "MESSAGE=session %s: paused: %s",
                                s->id,
                                reason,
                                "CCDOCKER_SESSION=%s",
                                s->id,
                                "CCDOCKER_EVENT=budget-paused",
                                NULL);
        } else {
                if (!was)
                        return;
                s->budget_exhausted = false;
                s->budget_reason[0] = '\0';
                log_struct(
                        LOG_NOTICE,
                        "MESSAGE=session %s: resumed: its budgets allow model calls again",
                        s->id,
                        "CCDOCKER_SESSION=%s",
                        s->id,
                        "CCDOCKER_EVENT=budget-resumed",
                        NULL);
        }
        session_mark_changed(s, SESSION_CHANGED_STATE);
        if (!s->budget_exhausted)
                session_deliver_next(s);
}

/* Used up, not merely unable to take one more reservation: only used >= budget pauses. */
static bool tree_used_up(Session *s, char **ret_reason) {
        return !session_budget_admits(s, NULL, ret_reason);
}

bool session_budget_holds(Session *s) {
        _cleanup_free_ char *reason = NULL;

        if (tree_used_up(s, &reason)) {
                session_budget_set_paused(s, reason ?: "a budget of its tree is used up");
                return true;
        }
        if (s->budget_exhausted) {
                /* Not through session_budget_set_paused(): the caller is delivering already. */
                s->budget_exhausted = false;
                s->budget_reason[0] = '\0';
                session_mark_changed(s, SESSION_CHANGED_STATE);
        }
        return false;
}

void session_budget_resume_all(Manager *m) {
        _cleanup_free_ Session **all = NULL;
        size_t n = 0;

        if (manager_list_sessions(m, NULL, &all, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                Session *s = all[i];
                _cleanup_free_ char *reason = NULL;

                if (!s->budget_exhausted)
                        continue;
                if (!tree_used_up(s, &reason))
                        session_budget_set_paused(s, NULL);
                else if (reason)
                        session_budget_set_paused(s, reason); /* names the budget that holds it now */
        }
}

int session_set_budget(
        Session *s, bool set_usd, double budget_usd, bool set_tokens, uint64_t budget_tokens, CoreError *e) {
        _cleanup_free_ char *json = NULL;
        SessionRecord rec;
        int r;

        if (set_usd && (!isfinite(budget_usd) || budget_usd < 0))
                return core_error(
                        e,
                        -EINVAL,
                        CORE_ERROR_INVALID_CONFIG,
                        "SetBudget: budget_usd must be a number >= 0");
        if (session_state_is_final(s->state))
                return core_error(
                        e, -ESTALE, CORE_ERROR_BAD_STATE, "SetBudget: session %s has ended", s->id);
        if (!s->config)
                return core_error(
                        e, -EINVAL, CORE_ERROR_FAILED, "SetBudget: session %s has no config", s->id);
        if (set_usd)
                s->config->budget_usd = budget_usd;
        if (set_tokens)
                s->config->budget_tokens = budget_tokens;

        session_to_record(s, &rec, &json);
        r = store_save_session(s->manager->store, &rec);
        if (r < 0)
                log_warning_errno(r, "session %s: could not store its new budget: %m", s->id);
        log_struct(
                LOG_NOTICE,
                "MESSAGE=session %s: budget set to $%.4f, %" PRIu64 " tokens (0: none)",
                s->id,
                s->config->budget_usd,
                s->config->budget_tokens,
                "CCDOCKER_SESSION=%s",
                s->id,
                "CCDOCKER_EVENT=budget-set",
                NULL);
        session_mark_changed(s, SESSION_CHANGED_STATE);
        session_budget_resume_all(s->manager);
        return 0;
}

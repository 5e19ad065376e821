/* A session tree's model budgets (budget_usd, budget_tokens of CreateSession), held by the model proxy's
 * hooks (docs/model-proxy.md): a call is let through only when its reservation fits under every budget
 * of the session's ancestors (itself included) over their whole trees; a session whose tree has used a
 * budget up is paused (BudgetExhausted): its queued prompts are held until SetBudget raises the budget. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core-error.h"
#include "model-proxy.h"

typedef struct Manager Manager;
typedef struct Session Session;

/* The model proxy's budget hook: whether session s may reserve reserve (NULL: nothing, only whether
 * its trees are under their budgets). false with *ret_reason (malloc'd, may stay NULL; ret_reason may
 * be NULL) naming the budget. */
bool session_budget_admits(Session *s, const ModelReservation *reserve, char **ret_reason);

/* Pauses s for reason (which budget is used up), or resumes it with NULL: BudgetExhausted changes, and
 * a resumed session's held prompt is delivered. */
void session_budget_set_paused(Session *s, const char *reason);

/* session_deliver_next()'s check: whether s's next prompt is held because a budget of its tree is used
 * up (pausing it when it was not yet paused). */
bool session_budget_holds(Session *s);

/* SetBudget: sets s's budget_usd and/or budget_tokens (0: none), stores them, and resumes every paused
 * session that is now under all its budgets. -EINVAL for a negative or non-finite amount, -ESTALE when s
 * has ended. */
int session_set_budget(
        Session *s, bool set_usd, double budget_usd, bool set_tokens, uint64_t budget_tokens, CoreError *e);

/* Resumes every paused session of m that is now under all its budgets. */
void session_budget_resume_all(Manager *m);

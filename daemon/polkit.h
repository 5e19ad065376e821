/* Authorisation through polkit (org.freedesktop.PolicyKit1) in --system mode, asynchronously: a method
 * handler calls polkit_check_async() and returns 1 without replying; the callback resumes it. Root,
 * and the owner of a session for actions on their own session, pass without asking. In --user mode
 * nothing is asked: the bus itself admits only the user. Actions are in polkit/org.ccdocker1.policy. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#define POLKIT_ACTION_CREATE "org.ccdocker1.create-session"
#define POLKIT_ACTION_MANAGE_OWN "org.ccdocker1.manage-own-sessions"
#define POLKIT_ACTION_MANAGE_ANY "org.ccdocker1.manage-sessions"
/* Asked once per secret a session asks for, with the detail secret=NAME (rules can match on it). */
#define POLKIT_ACTION_USE_SECRET "org.ccdocker1.use-secret"

/* r: 1 allowed, 0 denied, negative: polkit could not be asked (treat as denied; the error says why). */
typedef void (*polkit_callback_t)(int r, sd_bus_message *call, const sd_bus_error *error, void *userdata);

/* Asks polkit whether the sender of call may do action (subject: the sender's system-bus-name).
 * details: NULL or a NULL-ended list of key, value, key, value... Holds a reference on call until cb
 * has run. Returns 0 when the question was sent, or a negative errno (cb will not run). */
int polkit_check_async(
        sd_bus *bus,
        sd_bus_message *call,
        const char *action,
        const char **details,
        polkit_callback_t cb,
        void *userdata);

/* The effective uid of the sender of message, asked of the bus (never taken from the message itself). */
int bus_message_caller_uid(sd_bus_message *message, uid_t *ret);

/* The org.ccdocker1.Session objects (session-dbus.c), as systemd-machined's machine-dbus.h: what the
 * Manager's publisher (manager-dbus.c) calls to publish them. */
#pragma once

#include "manager.h"

/* Serves every session's object (a fallback vtable and a node enumerator) on m->bus. */
int session_dbus_attach(Manager *m);

/* PropertiesChanged of the properties that changes (SessionChange bits) cover. */
void session_dbus_send_changed(Manager *m, Session *s, unsigned changes);

/* Runs next(s, message, caller) once the caller may manage s: at once on the user bus and for root or
 * the owner, else when polkit allows org.ccdocker1.manage-sessions (a refusal is audited and replied).
 * Returns 1, or a negative errno / error set when nothing was started. */
typedef void (*session_authorized_t)(Session *s, sd_bus_message *message, uid_t caller);
int session_authorize(
        Session *s,
        sd_bus_message *message,
        const char *method,
        session_authorized_t next,
        sd_bus_error *error);

/* The Session objects' find function: s for a session the caller may read (its methods authorise
 * themselves), 0 otherwise. For the other vtables on the Session interface. */
int session_object_find(
        sd_bus *bus,
        const char *path,
        const char *interface,
        void *userdata,
        void **found,
        sd_bus_error *error);

/* questions-dbus.c: ListQuestions, Answer and the question signals on the Session objects, and the
 * Manager's ListQuestions and AnswerQuestion. */
int questions_dbus_attach(Manager *m);
void questions_dbus_question(
        Manager *m, Session *s, const char *id, const char *kind, const char *status, const char *text);

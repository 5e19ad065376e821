/* The org.ccdocker1.Session objects (session-dbus.c), as systemd-machined's machine-dbus.h: what the
 * Manager's publisher (manager-dbus.c) calls to publish them. */
#pragma once

#include "manager.h"

/* Serves every session's object (a fallback vtable and a node enumerator) on m->bus. */
int session_dbus_attach(Manager *m);

/* PropertiesChanged of the properties that changes (SessionChange bits) cover. */
void session_dbus_send_changed(Manager *m, Session *s, unsigned changes);

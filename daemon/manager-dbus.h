/* The org.ccdocker1 D-Bus API (manager-dbus.c, session-dbus.c), as systemd-machined's machined-dbus.h:
 * the publisher that ccdockerd.c installs on the manager, and the small helpers both vtables share. The
 * core (manager.c, session*.c) includes nothing of this: it reaches the bus only through
 * Manager.publisher. */
#pragma once

#include <systemd/sd-bus.h>

#include "core-error.h"
#include "manager.h"

/* Publishes the Manager object and the Session objects (attach), SessionNew and SessionRemoved, and
 * PropertiesChanged from the manager's publishing flush. */
extern const ManagerPublisher manager_dbus_publisher;

/* Replies e as its org.ccdocker1.Error.* (core_error_bus_name()), its message prefixed with "method: "
 * when method is not NULL. */
int bus_reply_core_error(sd_bus_message *message, const char *method, const CoreError *e);

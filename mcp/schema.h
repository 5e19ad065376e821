/* The small part of JSON Schema that ccdocker-mcp's tool schemas use, applied in both directions: a
 * tool call's arguments are checked against the tool's inputSchema before anything is sent to the
 * daemon (STYLE.md 7), and the daemon's answer is projected through the tool's outputSchema so that
 * structuredContent always fits the schema tools/list published. The schemas are the ones of
 * tools.c; a keyword this file does not know is ignored (description, default, title, examples). */
#pragma once

#include <jansson.h>

/* Checks args (the "arguments" of tools/call: an object, or NULL for none) against schema, an object
 * schema with properties, required, additionalProperties false. Keywords understood, at any depth:
 * type (a name or an array of names), properties, required, additionalProperties (false), enum (of
 * strings), minimum, maximum, minLength, maxLength (in characters), pattern (POSIX extended, as
 * written), items, minItems, maxItems.
 *
 * On success returns 0 and *ret_args, a new object: args with every number that is an integer in
 * value (600.0) stored as an integer. Returns -EINVAL with *ret_message (malloc()ed), a sentence that
 * starts with tool's name and names the argument, what it must be and what it got, e.g.
 * "spawn_child: argument 'timeout_seconds' must be an integer from 1 to 86400, got a string";
 * -ENOMEM. Only the first problem found is reported. */
int schema_check_arguments(
        const json_t *schema, const char *tool, const json_t *args, json_t **ret_args, char **ret_message);

/* A copy of value with only what schema describes: for an object schema with properties, each known
 * property of the right type (projected in turn) and none other; for an array with items, each item
 * projected; an object schema without properties takes any object as it is. A property that is not
 * required and has the wrong type is left out.
 *
 * Returns 0 and *ret (a new reference), or -EBADMSG with *ret_message (malloc()ed) naming what does
 * not fit ("'children[0].session_id' is missing"), or -ENOMEM. */
int schema_project(const json_t *schema, const json_t *value, json_t **ret, char **ret_message);

/* ccdocker-mcp: the MCP server Claude Code starts in a session container, from the generated
 * /workspace/.mcp.json. It speaks JSON-RPC 2.0 on stdio (one message per line, REFERENCE.md A.1):
 * the initialize handshake, ping and the tools methods. This is the protocol core: it lists only
 * tools that work, and so far there are none. Answers go to stdout, one compact line each; logs go
 * to stderr. It exits 0 when stdin ends. docs/ccdocker-mcp.md has the rest. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "config-build.h"
#include "jsonrpc.h"
#include "log.h"
#include "util.h"

#define PROGRAM "ccdocker-mcp"
#define LINE_MAX_BYTES (8U * 1024 * 1024)
#define READ_CHUNK (64 * 1024)
#define TOOL_NAME_SHOWN 128 /* of an unknown tool's name in the error message */

#define INSTRUCTIONS \
        "ccdocker-mcp connects this Claude Code session to cc-docker, which runs it in a container."

/* Newest first: the first is what a client asking for another version gets. */
static const char *const protocol_versions[] = { "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05" };

/* Set once the initialize request has been answered: from then on the client may send any request. */
static bool initialized;

/* Fails loudly (STYLE.md 9): "ccdocker-mcp: what failed: strerror", exit 1. _exit(): what the callers'
 * frames own is not freed on this way out, and is no leak. */
static _Noreturn void die(int error, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void die(int error, const char *format, ...) {
        va_list ap;

        fputs(PROGRAM ": ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        if (error != 0)
                fprintf(stderr, ": %s", strerror(abs(error)));
        fputc('\n', stderr);
        _exit(EXIT_FAILURE);
}

/* One line on stdout, flushed at once: the client waits for it. A stdout that cannot be written means
 * the client is gone, and there is nobody left to answer. */
static void send_message(json_t *msg) {
        _cleanup_free_ char *line = NULL;
        size_t len;
        int r;

        if (!msg)
                die(errno ?: ENOMEM, "building a response");
        r = jsonrpc_format_line(msg, &line, &len);
        if (r < 0)
                die(r, "formatting a response");
        if (fwrite(line, 1, len, stdout) != len || fflush(stdout) != 0)
                die(errno, "writing to stdout");
}

static void reply_result(json_t *id, json_t *result) {
        _cleanup_(json_decrefp) json_t *msg = NULL;

        if (!result)
                die(ENOMEM, "building a result");
        msg = jsonrpc_result_new(id, result);
        json_decref(result);
        send_message(msg);
}

static void reply_error(json_t *id, int code, const char *format, ...) __attribute__((format(printf, 3, 4)));

static void reply_error(json_t *id, int code, const char *format, ...) {
        _cleanup_(json_decrefp) json_t *msg = NULL;
        _cleanup_free_ char *message = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r < 0)
                die(ENOMEM, "building an error message");
        log_debug("answering error %d: %s", code, message);
        msg = jsonrpc_error_new(id, code, message, NULL);
        send_message(msg);
}

static void handle_initialize(json_t *id, json_t *params) {
        const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
        const char *version = protocol_versions[0];

        /* A supported version is echoed; for any other the client gets the newest and decides. */
        for (size_t i = 0; asked && i < ELEMENTSOF(protocol_versions); i++)
                if (streq(asked, protocol_versions[i]))
                        version = protocol_versions[i];
        if (!streq_ptr(asked, version))
                log_info(
                        "the client asked for protocol version '%s', answering %s",
                        strempty(asked),
                        version);

        reply_result(
                id,
                json_pack(
                        "{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}",
                        "protocolVersion",
                        version,
                        "capabilities",
                        "tools",
                        "listChanged",
                        false,
                        "serverInfo",
                        "name",
                        PROGRAM,
                        "version",
                        PROJECT_VERSION,
                        "instructions",
                        INSTRUCTIONS));
        initialized = true;
}

static void handle_tools_list(json_t *id, json_t *params) {
        /* There is one page, and no cursor: any cursor is one this server never gave out. */
        if (json_object_get(params, "cursor")) {
                reply_error(id, JSONRPC_INVALID_PARAMS, "tools/list: unknown cursor");
                return;
        }
        reply_result(id, json_pack("{s:[]}", "tools"));
}

static void handle_tools_call(json_t *id, json_t *params) {
        const char *name = json_string_value(json_object_get(params, "name"));

        if (!name) {
                reply_error(id, JSONRPC_INVALID_PARAMS, "tools/call: params.name must be a string");
                return;
        }
        reply_error(
                id,
                JSONRPC_INVALID_PARAMS,
                "unknown tool '%.*s%s'",
                TOOL_NAME_SHOWN,
                name,
                strlen(name) > TOOL_NAME_SHOWN ? "..." : "");
}

static void handle_request(const struct jsonrpc_message *m) {
        static const struct {
                const char *method;
                void (*handler)(json_t *id, json_t *params);
                bool before_initialize;
        } methods[] = {
                { "initialize", handle_initialize, true },
                { "ping", NULL, true },
                { "tools/list", handle_tools_list, false },
                { "tools/call", handle_tools_call, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
                if (!streq(m->method, methods[i].method))
                        continue;

                if (streq(m->method, "initialize") && initialized)
                        reply_error(m->id, JSONRPC_INVALID_REQUEST, "already initialized");
                else if (!initialized && !methods[i].before_initialize)
                        reply_error(m->id, JSONRPC_INVALID_REQUEST, "initialize first");
                else if (methods[i].handler)
                        methods[i].handler(m->id, m->params);
                else
                        reply_result(m->id, json_object()); /* ping */
                return;
        }

        /* At once, also before initialize: a client probing for a method (server/discover) must not
         * wait for a timeout. */
        reply_error(m->id, JSONRPC_METHOD_NOT_FOUND, "unknown method '%s'", m->method);
}

static void handle_message(json_t *msg) {
        struct jsonrpc_message m;
        struct jsonrpc_error err;

        if (jsonrpc_classify(msg, &m, &err) < 0) {
                reply_error(err.id, err.code, "%s", err.message);
                return;
        }

        switch (m.kind) {
        case JSONRPC_REQUEST:
                handle_request(&m);
                break;
        case JSONRPC_NOTIFICATION:
                /* notifications/initialized needs nothing: requests are served once initialize is
                 * answered. notifications/cancelled has nothing to cancel, as every request is
                 * answered before the next line is read. */
                log_debug("notification %s", m.method);
                break;
        case JSONRPC_RESPONSE:
        case JSONRPC_ERROR_RESPONSE:
                /* This server sends no requests, so no response is awaited. */
                log_debug("ignoring a response to a request never sent");
                break;
        }
}

int main(int argc, char *argv[]) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *reader = NULL;
        static char buf[READ_CHUNK];
        int r;

        log_set_prefix(PROGRAM);
        log_set_target(LOG_TARGET_STDERR);
        if (argc > 1)
                die(0, "takes no arguments (it speaks MCP on stdin and stdout)");
        if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
                die(errno, "ignoring SIGPIPE");
        r = jsonrpc_reader_new(LINE_MAX_BYTES, &reader);
        if (r < 0)
                die(r, "creating the message reader");

        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        die(errno, "reading stdin");
                }
                if (n == 0)
                        break;
                r = jsonrpc_reader_feed(reader, buf, n);
                if (r < 0)
                        die(r, "buffering stdin");

                for (;;) {
                        _cleanup_(json_decrefp) json_t *msg = NULL;
                        struct jsonrpc_error err;

                        r = jsonrpc_reader_next(reader, &msg, &err);
                        if (r == 0)
                                break;
                        if (r < 0) {
                                log_warning("refusing a line: %s", err.message);
                                reply_error(NULL, err.code, "%s", err.message);
                                continue;
                        }
                        handle_message(msg);
                }
        }

        if (jsonrpc_reader_pending(reader) > 0)
                log_warning(
                        "stdin ended inside a message; %zu bytes dropped", jsonrpc_reader_pending(reader));
        return EXIT_SUCCESS;
}

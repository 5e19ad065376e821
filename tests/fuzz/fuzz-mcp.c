/* libFuzzer target: ccdocker-mcp's stdin, what the model's client (Claude Code) writes: JSON-RPC lines
 * through common/jsonrpc's reader and classifier, and for each tools/call the tool lookup, the argument
 * checks against the tool's inputSchema (mcp/tools.c, mcp/schema.c) and the channel params built from
 * checked arguments, as ccdocker-mcp.c does. The checked arguments are then shaped as a tool result
 * (tool_result() projects through the outputSchema) to reach schema_project() with hostile shapes too;
 * ask_user's timeout against the daemon's lowest, and permission_prompt's question built from any input.
 * The input is fed to the reader in two halves, so lines that straddle reads are covered. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "jsonrpc.h"
#include "log.h"
#include "tools.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* As ccdocker-mcp reads its stdin (LINE_MAX_BYTES there); smaller here, so long lines are reached. */
#define FUZZ_MAX_LINE (64U * 1024U)

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_EMERG);
        if (tools_load() < 0)
                abort();
        return 0;
}

static void tools_call(json_t *params) {
        _cleanup_(json_decrefp) json_t *args = NULL, *channel_params = NULL, *result = NULL;
        _cleanup_free_ char *message = NULL, *result_message = NULL, *error_message = NULL;
        const char *name = json_string_value(json_object_get(params, "name"));
        const Tool *t;
        int r;

        if (!name)
                return;
        t = tool_find(name);
        if (!t)
                return;
        r = tool_check_arguments(t, json_object_get(params, "arguments"), &args, &message);
        if (r < 0) {
                if (r == -EINVAL && !message)
                        abort();
                return;
        }
        free(tool_check_question_timeout(t, args, 60));
        channel_params = tool_channel_params(t, args);
        (void) tool_result(t, args, &result, &result_message);
        error_message = tool_channel_error_message(
                t, t->method, -32001, json_string_value(json_object_get(args, "prompt")) ?: "refused");
}

static void consume(struct jsonrpc_reader *reader) {
        for (;;) {
                _cleanup_(json_decrefp) json_t *msg = NULL;
                struct jsonrpc_error e = {};
                struct jsonrpc_message m;
                int r;

                r = jsonrpc_reader_next(reader, &msg, &e);
                if (r == 0)
                        return;
                if (r < 0)
                        continue;
                if (jsonrpc_classify(msg, &m, &e) < 0)
                        continue;
                if (m.kind == JSONRPC_REQUEST && strcmp(m.method, "tools/call") == 0)
                        tools_call(m.params);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *reader = NULL;
        size_t split = size / 2;

        if (jsonrpc_reader_new(FUZZ_MAX_LINE, &reader) < 0)
                abort();
        if (jsonrpc_reader_feed(reader, data, split) < 0)
                abort();
        consume(reader);
        if (jsonrpc_reader_feed(reader, data + split, size - split) < 0)
                abort();
        consume(reader);
        if (jsonrpc_reader_feed(reader, "\n", 1) < 0)
                abort();
        consume(reader);
        return 0;
}

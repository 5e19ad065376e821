/* Unit tests for oci-image/init/init-config.c, the configuration ccdocker-init writes: template
 * expansion (known names, defaults, names left for Claude Code, JSON escaping), the variables of a
 * session config, and the files themselves in a mkdtemp() tree: MCP servers without their executable
 * left out, hooks without their script left out, the skills asked for, the workspace trusted, other
 * files left alone, and no write through a symlink planted in the workspace. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "init-config.h"
#include "unit-test.h"
#include "util.h"

/* ---- helpers ---- */

typedef struct Fixture {
        char root[64];
        char templates[128], skills[128], workspace[128], home[128], tool[128];
        InitPaths paths;
        json_t *warnings;
} Fixture;

static void write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_int_equal(fputs(text, f) >= 0, 1);
        assert_int_equal(fclose(f), 0);
}

static char *read_text(const char *path) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = fopen(path, "re"), *m;
        int c;

        if (!f)
                return NULL;
        m = open_memstream(&buf, &size);
        assert_non_null(m);
        while ((c = fgetc(f)) != EOF)
                fputc(c, m);
        fclose(f);
        fclose(m);
        return buf;
}

static json_t *read_json(const char *path) {
        json_error_t err;
        json_t *j = json_load_file(path, 0, &err);

        if (!j)
                fail_msg("%s: %s", path, err.text);
        return j;
}

static char *path_join(const char *a, const char *b) {
        char *p;

        assert_true(asprintf(&p, "%s/%s", a, b) >= 0);
        return p;
}

/* mkdir -p of rel under root. */
static void mkdir_under(const char *root, const char *rel) {
        _cleanup_free_ char *path = path_join(root, rel);

        assert_int_equal(mkdir_p(path, 0755), 0);
}

static const char *MCP_TMPL =
        "{\"mcpServers\": {\n"
        "  \"present\": {\"description\": \"A server that is there\", \"type\": \"stdio\", \"command\": \"${TOOL}\",\n"
        "              \"env\": {\"SESSION_ID\": \"${SESSION_ID}\", \"TOKEN\": \"${SOME_TOKEN}\"}},\n"
        "  \"absent\": {\"type\": \"stdio\", \"command\": \"/nonexistent/mcp-server\"},\n"
        "  \"bare\": {\"type\": \"stdio\", \"command\": \"sh\"},\n"
        "  \"web\": {\"type\": \"http\", \"url\": \"https://example.invalid/mcp\"}},\n"
        " \"conditionalServers\": {\n"
        "  \"cond\": {\"condition\": \"env:TEST_INIT_CONFIG_COND\", \"config\": {\"type\": \"stdio\", \"command\": "
        "\"sh\"}}}}\n";

static const char *SETTINGS_TMPL =
        "{\"permissions\": {\"allow\": [\"Read\"], \"defaultMode\": \"${PERMISSION_MODE:-default}\"},\n"
        " \"env\": {\"SESSION_ID\": \"${SESSION_ID}\", \"TASK\": \"${TASK_TYPE}\"},\n"
        " \"hooks\": {\"SessionStart\": [{\"matcher\": \"*\", \"hooks\": [\n"
        "     {\"type\": \"command\", \"command\": \"/nonexistent/hook.sh --flag\"},\n"
        "     {\"type\": \"command\", \"command\": \"${TOOL} start\"}]}],\n"
        "           \"Stop\": [{\"matcher\": \"*\", \"hooks\": [{\"type\": \"command\", \"command\": "
        "\"/nonexistent/stop.sh\"}]}]}}\n";

static const char *PROJECT_TMPL = "{\"enableAllProjectMcpServers\": true, \"enabledMcpjsonServers\": [],\n"
                                  " \"permissions\": {\"allow\": [\"mcp__cc-docker__*\"]}}\n";

static const char *CLAUDE_MD_TMPL = "# Session ${SESSION_ID}\n"
                                    "Parent: ${PARENT_SESSION_ID:-None (root session)}\n"
                                    "Role: ${CONTAINER_ROLE}\n"
                                    "Task: ${TASK_TYPE}\n"
                                    "## MCP\n${MCP_SERVERS}\n"
                                    "## Skills\n${SKILLS}\n"
                                    "Keep ${HOME_SECRET} for later.\n";

static const char *SKILL_MD = "---\n"
                              "name: alpha\n"
                              "description: |\n"
                              "  Does alpha things. Use when alpha.\n"
                              "  Second line.\n"
                              "---\n"
                              "\n"
                              "# Alpha\n";

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));
        _cleanup_free_ char *p = NULL;

        assert_non_null(f);
        strcpy(f->root, "/tmp/test-init-config-XXXXXX");
        assert_non_null(mkdtemp(f->root));
        snprintf(f->templates, sizeof(f->templates), "%s/templates", f->root);
        snprintf(f->skills, sizeof(f->skills), "%s/skills", f->root);
        snprintf(f->workspace, sizeof(f->workspace), "%s/workspace", f->root);
        snprintf(f->home, sizeof(f->home), "%s/home", f->root);
        snprintf(f->tool, sizeof(f->tool), "%s/tool", f->root);
        mkdir_under(f->root, "templates");
        mkdir_under(f->root, "skills/alpha");
        mkdir_under(f->root, "workspace");
        mkdir_under(f->root, "home");

        write_text(f->tool, "#!/bin/sh\nexit 0\n");
        assert_int_equal(chmod(f->tool, 0755), 0);

        /* The templates name the fake tool through ${TOOL}, a key of the test's session config. */
        p = path_join(f->templates, "mcp.json.tmpl");
        write_text(p, MCP_TMPL);
        free(p);
        p = path_join(f->templates, "settings.json.tmpl");
        write_text(p, SETTINGS_TMPL);
        free(p);
        p = path_join(f->templates, "project-settings.json.tmpl");
        write_text(p, PROJECT_TMPL);
        free(p);
        p = path_join(f->templates, "CLAUDE.md.tmpl");
        write_text(p, CLAUDE_MD_TMPL);
        free(p);
        p = path_join(f->skills, "alpha/SKILL.md");
        write_text(p, SKILL_MD);

        f->paths = (InitPaths){
                .templates = f->templates,
                .skills = f->skills,
                .workspace = f->workspace,
                .home = f->home,
        };
        f->warnings = json_array();
        assert_non_null(f->warnings);
        unsetenv("TEST_INIT_CONFIG_COND");
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *cmd = NULL;

        assert_true(asprintf(&cmd, "rm -rf '%s'", f->root) >= 0);
        assert_int_equal(system(cmd), 0);
        json_decref(f->warnings);
        free(f);
        return 0;
}

static json_t *session_config(const Fixture *f) {
        json_t *c = json_pack(
                "{s:s, s:n, s:i, s:s, s:s, s:[s, s, s, s, s, s], s:[s, s, s], s:[s, s], s:s}",
                "session_id",
                "3f9c0a1b2c4d",
                "parent_id",
                "depth",
                0,
                "task_type",
                "review \"quoted\"\nline",
                "permission_mode",
                "bypassPermissions",
                "mcp_servers",
                "present",
                "absent",
                "bare",
                "web",
                "cond",
                "unknown",
                "skills",
                "alpha",
                "missing",
                "../evil",
                "allowed_tools",
                "Bash(git:*)",
                "Read",
                "tool",
                f->tool);

        assert_non_null(c);
        return c;
}

static bool warned(const Fixture *f, const char *needle) {
        size_t i;
        json_t *w;

        json_array_foreach (f->warnings, i, w)
                if (strstr(json_string_value(w), needle))
                        return true;
        return false;
}

static bool strv_has(const json_t *a, const char *s) {
        size_t i;
        json_t *e;

        json_array_foreach ((json_t *) a, i, e)
                if (json_is_string(e) && streq(json_string_value(e), s))
                        return true;
        return false;
}

/* ---- expansion ---- */

static void test_expand_replaces_known_names_and_keeps_the_others(void **state) {
        _cleanup_(json_decrefp) json_t *vars = json_pack("{s:s, s:s}", "SESSION_ID", "abc", "EMPTY", "");
        _cleanup_free_ char *out = NULL;

        assert_int_equal(
                init_template_expand(
                        "id=${SESSION_ID} tok=${GITHUB_TOKEN} e=${EMPTY:-dflt} u=${UNKNOWN:-x} $5 ${1A} ${open",
                        vars,
                        false,
                        &out),
                0);
        assert_string_equal(out, "id=abc tok=${GITHUB_TOKEN} e=dflt u=${UNKNOWN:-x} $5 ${1A} ${open");
}

static void test_expand_escapes_values_for_json_only(void **state) {
        _cleanup_(json_decrefp) json_t *vars = json_pack("{s:s}", "T", "a \"b\"\n\\c");
        _cleanup_free_ char *json = NULL, *md = NULL;

        assert_int_equal(init_template_expand("\"${T}\"", vars, true, &json), 0);
        assert_string_equal(json, "\"a \\\"b\\\"\\n\\\\c\"");
        assert_int_equal(init_template_expand("${T}", vars, false, &md), 0);
        assert_string_equal(md, "a \"b\"\n\\c");
}

static void test_vars_of_a_session_config(void **state) {
        _cleanup_(json_decrefp) json_t *root = NULL, *child = NULL, *rv = NULL, *cv = NULL;

        root = json_pack(
                "{s:s, s:n, s:i, s:n, s:[s, s], s:b, s:{}}",
                "session_id",
                "s1",
                "parent_id",
                "depth",
                0,
                "task_type",
                "skills",
                "a",
                "b",
                "flag",
                1,
                "nested");
        child = json_pack("{s:s, s:s, s:i}", "session_id", "s2", "parent_id", "s1", "depth", 2);
        rv = init_config_vars(root);
        cv = init_config_vars(child);
        assert_non_null(rv);
        assert_non_null(cv);

        assert_string_equal(json_string_value(json_object_get(rv, "SESSION_ID")), "s1");
        assert_string_equal(json_string_value(json_object_get(rv, "DEPTH")), "0");
        assert_string_equal(json_string_value(json_object_get(rv, "TASK_TYPE")), "");
        assert_string_equal(json_string_value(json_object_get(rv, "SKILLS")), "a, b");
        assert_string_equal(json_string_value(json_object_get(rv, "FLAG")), "true");
        assert_null(json_object_get(rv, "NESTED"));
        assert_string_equal(json_string_value(json_object_get(rv, "PARENT_SESSION_ID")), "");
        assert_string_equal(json_string_value(json_object_get(rv, "CONTAINER_ROLE")), "root");

        assert_string_equal(json_string_value(json_object_get(cv, "PARENT_SESSION_ID")), "s1");
        assert_string_equal(json_string_value(json_object_get(cv, "PARENT_ID")), "s1");
        assert_string_equal(json_string_value(json_object_get(cv, "DEPTH")), "2");
        assert_string_equal(json_string_value(json_object_get(cv, "CONTAINER_ROLE")), "child");
}

static void test_executable_exists_checks_paths_and_path_search(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *plain = path_join(f->root, "plain");

        write_text(plain, "not executable\n");
        assert_true(init_executable_exists(f->tool));
        assert_true(init_executable_exists("sh"));
        assert_false(init_executable_exists(plain));
        assert_false(init_executable_exists(f->root)); /* a directory */
        assert_false(init_executable_exists("/nonexistent/x"));
        assert_false(init_executable_exists("no-such-command-anywhere"));
        assert_false(init_executable_exists("relative/tool"));
        assert_false(init_executable_exists(""));
}

/* ---- the files ---- */

static void test_write_makes_mcp_json_of_the_servers_that_can_run(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f), *mcp = NULL, *project = NULL;
        _cleanup_free_ char *what = NULL, *mcp_path = path_join(f->workspace, ".mcp.json"),
                            *project_path = path_join(f->workspace, ".claude/settings.json");
        json_t *servers, *present;

        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        assert_null(what);

        mcp = read_json(mcp_path);
        servers = json_object_get(mcp, "mcpServers");
        assert_int_equal(json_object_size(servers), 3);
        present = json_object_get(servers, "present");
        assert_non_null(present);
        assert_string_equal(json_string_value(json_object_get(present, "command")), f->tool);
        assert_null(json_object_get(present, "description")); /* ours, not Claude Code's */
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(present, "env"), "SESSION_ID")),
                "3f9c0a1b2c4d");
        /* Not a session variable: left for Claude Code to expand from its environment. */
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(present, "env"), "TOKEN")),
                "${SOME_TOKEN}");
        assert_non_null(json_object_get(servers, "bare"));
        assert_non_null(json_object_get(servers, "web"));
        assert_null(json_object_get(servers, "absent"));
        assert_null(json_object_get(servers, "cond"));

        assert_true(warned(
                f,
                "MCP server 'absent' left out: its command /nonexistent/mcp-server is not in the container"));
        assert_true(warned(f, "MCP server 'cond' left out: TEST_INIT_CONFIG_COND is not set"));
        assert_true(warned(f, "MCP server 'unknown' left out"));

        /* The project approves exactly the servers written, in template order. */
        project = read_json(project_path);
        assert_true(json_is_true(json_object_get(project, "enableAllProjectMcpServers")));
        assert_int_equal(json_array_size(json_object_get(project, "enabledMcpjsonServers")), 3);
        assert_string_equal(
                json_string_value(json_array_get(json_object_get(project, "enabledMcpjsonServers"), 0)),
                "present");
        assert_true(strv_has(
                json_object_get(json_object_get(project, "permissions"), "allow"), "mcp__cc-docker__*"));
}

static void test_write_includes_a_conditional_server_when_its_variable_is_set(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f), *mcp = NULL;
        _cleanup_free_ char *what = NULL, *mcp_path = path_join(f->workspace, ".mcp.json");

        setenv("TEST_INIT_CONFIG_COND", "1", 1);
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        unsetenv("TEST_INIT_CONFIG_COND");
        mcp = read_json(mcp_path);
        assert_non_null(json_object_get(json_object_get(mcp, "mcpServers"), "cond"));
        assert_false(warned(f, "'cond'"));
}

static void test_write_applies_mcp_overrides(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f), *mcp = NULL, *project = NULL;
        _cleanup_free_ char *what = NULL, *mcp_path = path_join(f->workspace, ".mcp.json"),
                            *project_path = path_join(f->workspace, ".claude/settings.json");
        json_t *servers;

        /* SPEC.md 8.3: keys of a known server replaced, a new http server added, and an override that
         * leaves a server unusable here left out with a warning. */
        assert_int_equal(
                json_object_set_new(
                        config,
                        "mcp_overrides",
                        json_pack(
                                "{s:{s:[ss]}, s:{s:s, s:s}, s:{s:s}}",
                                "present",
                                "args",
                                "/workspace",
                                "/custom/path",
                                "custom-server",
                                "type",
                                "http",
                                "url",
                                "https://mcp.example.invalid/mcp",
                                "broken",
                                "command",
                                "/nonexistent/other")),
                0);
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        mcp = read_json(mcp_path);
        servers = json_object_get(mcp, "mcpServers");
        assert_string_equal(
                json_string_value(
                        json_array_get(json_object_get(json_object_get(servers, "present"), "args"), 1)),
                "/custom/path");
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(servers, "present"), "command")), f->tool);
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(servers, "custom-server"), "url")),
                "https://mcp.example.invalid/mcp");
        assert_null(json_object_get(servers, "broken"));
        assert_true(warned(f, "MCP override 'broken' left out"));
        project = read_json(project_path);
        assert_true(strv_has(json_object_get(project, "enabledMcpjsonServers"), "custom-server"));
}

static void test_write_points_remote_servers_at_their_bridge_without_headers(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f), *mcp = NULL;
        _cleanup_free_ char *what = NULL, *mcp_path = path_join(f->workspace, ".mcp.json");
        json_t *servers, *cond, *custom;

        /* The conditional "cond" is the daemon's (its variable is not set: no warning), and an http
         * override whose header names a secret goes to the bridge with its headers dropped. */
        assert_int_equal(
                json_object_set_new(
                        config,
                        "mcp_overrides",
                        json_pack(
                                "{s:{s:s, s:s, s:{s:s}}}",
                                "custom",
                                "type",
                                "http",
                                "url",
                                "https://mcp.example.invalid/mcp",
                                "headers",
                                "Authorization",
                                "Bearer ${CUSTOM_TOKEN}")),
                0);
        assert_int_equal(
                json_array_append_new(json_object_get(config, "mcp_servers"), json_string("cond")), 0);
        assert_int_equal(
                json_object_set_new(
                        config,
                        "remote_mcp",
                        json_pack(
                                "{s:{s:s}, s:{s:s}, s:{}}",
                                "cond",
                                "url",
                                "http://127.0.0.1:4000/cond",
                                "custom",
                                "url",
                                "http://127.0.0.1:4000/custom",
                                "nobridge")),
                0);
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        mcp = read_json(mcp_path);
        servers = json_object_get(mcp, "mcpServers");
        cond = json_object_get(servers, "cond");
        custom = json_object_get(servers, "custom");
        assert_string_equal(json_string_value(json_object_get(cond, "type")), "http");
        assert_string_equal(json_string_value(json_object_get(cond, "url")), "http://127.0.0.1:4000/cond");
        assert_string_equal(
                json_string_value(json_object_get(custom, "url")), "http://127.0.0.1:4000/custom");
        assert_null(json_object_get(custom, "headers"));
        assert_null(json_object_get(servers, "nobridge"));
        assert_true(warned(f, "MCP server 'nobridge' left out: there is no bridge"));
        assert_false(warned(f, "'cond'"));
}

static void test_url_with_authority_keeps_all_but_host_and_port(void **state) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

        assert_int_equal(
                init_url_with_authority(
                        "postgresql://u:p@db.example.com:6543/app?sslmode=disable", "127.0.0.1", 40000, &a),
                0);
        assert_string_equal(a, "postgresql://u:p@127.0.0.1:40000/app?sslmode=disable");
        assert_int_equal(init_url_with_authority("postgres://db", "127.0.0.1", 1, &b), 0);
        assert_string_equal(b, "postgres://127.0.0.1:1");
        assert_int_equal(init_url_with_authority("postgres://u:p@ss@[::1]:5432/x", "127.0.0.1", 2, &c), 0);
        assert_string_equal(c, "postgres://u:p@ss@127.0.0.1:2/x");
        assert_int_equal(init_url_with_authority("postgres:///x?host=/run", "127.0.0.1", 2, &d), -EINVAL);
        assert_int_equal(init_url_with_authority("postgres://a,b/x", "127.0.0.1", 2, &d), -EINVAL);
        assert_int_equal(init_url_with_authority("nourl", "127.0.0.1", 2, &d), -EINVAL);
        assert_null(d);

        setenv("TEST_INIT_FORWARD_URL", "postgres://u:pw@db.example.com/app", 1);
        assert_int_equal(init_forward_env("TEST_INIT_FORWARD_URL", 5555, NULL), 1);
        assert_string_equal(getenv("TEST_INIT_FORWARD_URL"), "postgres://u:pw@127.0.0.1:5555/app");
        unsetenv("TEST_INIT_FORWARD_URL");
        assert_int_equal(init_forward_env("TEST_INIT_FORWARD_URL", 5555, NULL), 0);
}

static void test_write_without_mcp_servers_in_the_config_takes_every_usable_one(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f), *mcp = NULL;
        _cleanup_free_ char *what = NULL, *mcp_path = path_join(f->workspace, ".mcp.json");

        assert_int_equal(json_object_del(config, "mcp_servers"), 0);
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        mcp = read_json(mcp_path);
        assert_int_equal(json_object_size(json_object_get(mcp, "mcpServers")), 3);
        /* Not asked for by name: a conditional server whose variable is unset is no news. */
        assert_false(warned(f, "'cond'"));
        assert_true(warned(f, "'absent'"));
}

static void test_write_user_settings_without_missing_hooks_and_with_allowed_tools(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f), *user = NULL;
        _cleanup_free_ char *what = NULL, *path = path_join(f->home, ".claude/settings.json");
        json_t *allow, *hooks, *start;

        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        user = read_json(path);

        allow = json_object_get(json_object_get(user, "permissions"), "allow");
        assert_int_equal(json_array_size(allow), 2); /* "Read" was there already */
        assert_true(strv_has(allow, "Read"));
        assert_true(strv_has(allow, "Bash(git:*)"));
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(user, "permissions"), "defaultMode")),
                "bypassPermissions");
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(user, "env"), "TASK")),
                "review \"quoted\"\nline");

        hooks = json_object_get(user, "hooks");
        assert_null(json_object_get(hooks, "Stop")); /* its only hook is gone, and so is the event */
        start = json_object_get(json_array_get(json_object_get(hooks, "SessionStart"), 0), "hooks");
        assert_int_equal(json_array_size(start), 1);
        assert_true(strstr(
                json_string_value(json_object_get(json_array_get(start, 0), "command")), "/tool start"));
        assert_true(warned(f, "SessionStart hook /nonexistent/hook.sh left out"));
        assert_true(warned(f, "Stop hook /nonexistent/stop.sh left out"));
}

/* Outside bypassPermissions a person approves tool calls (--permission-prompt-tool): the template's
 * approvals go, cc-docker's own tools and the session's allowed_tools stay. */
static void test_write_user_settings_outside_bypass_keep_only_the_sessions_approvals(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f), *user = NULL;
        _cleanup_free_ char *what = NULL, *path = path_join(f->home, ".claude/settings.json");
        json_t *allow;

        assert_int_equal(json_object_set_new(config, "permission_mode", json_string("default")), 0);
        assert_int_equal(json_object_set_new(config, "allowed_tools", json_pack("[s]", "Bash(git:*)")), 0);
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        user = read_json(path);
        allow = json_object_get(json_object_get(user, "permissions"), "allow");
        assert_int_equal(json_array_size(allow), 1);
        assert_true(strv_has(allow, "Bash(git:*)"));
        assert_false(strv_has(allow, "Read"));
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(user, "permissions"), "defaultMode")),
                "default");
}

static void test_write_claude_md_and_skills(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f);
        _cleanup_free_ char *what = NULL, *md = NULL, *skill = NULL,
                            *md_path = path_join(f->workspace, ".claude/CLAUDE.md"),
                            *skill_path = path_join(f->workspace, ".claude/skills/alpha/SKILL.md"),
                            *evil = path_join(f->workspace, ".claude/evil");

        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);

        md = read_text(md_path);
        assert_non_null(md);
        assert_non_null(strstr(md, "# Session 3f9c0a1b2c4d\n"));
        assert_non_null(strstr(md, "Parent: None (root session)\n"));
        assert_non_null(strstr(md, "Role: root\n"));
        assert_non_null(strstr(md, "Task: review \"quoted\"\nline\n")); /* markdown: not escaped */
        assert_non_null(strstr(md, "- **present**: A server that is there\n- **bare**\n- **web**\n"));
        assert_non_null(strstr(md, "## Skills\n- **/alpha**: Does alpha things. Use when alpha.\n"));
        assert_non_null(strstr(md, "Keep ${HOME_SECRET} for later."));

        skill = read_text(skill_path);
        assert_non_null(skill);
        assert_string_equal(skill, SKILL_MD);
        assert_true(warned(f, "skill 'missing' left out"));
        assert_true(warned(f, "skill '../evil' left out"));
        assert_int_equal(access(evil, F_OK), -1);
}

static void test_write_trusts_the_workspace_and_keeps_the_rest_of_claude_json(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f), *st = NULL;
        _cleanup_free_ char *what = NULL, *path = path_join(f->home, ".claude.json");
        json_t *projects;

        write_text(path, "{\"userID\": \"u1\", \"projects\": {\"/elsewhere\": {\"x\": 1}}}");
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        st = read_json(path);
        assert_true(json_is_true(json_object_get(st, "hasCompletedOnboarding")));
        assert_string_equal(json_string_value(json_object_get(st, "userID")), "u1");
        projects = json_object_get(st, "projects");
        assert_non_null(json_object_get(projects, "/elsewhere"));
        assert_true(json_is_true(
                json_object_get(json_object_get(projects, f->workspace), "hasTrustDialogAccepted")));
}

static void test_write_leaves_other_workspace_files_alone_and_is_repeatable(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f);
        _cleanup_free_ char *what = NULL, *mine = path_join(f->workspace, "notes.md"), *text = NULL,
                            *local = NULL, *local_text = NULL;

        mkdir_under(f->workspace, ".claude");
        local = path_join(f->workspace, ".claude/settings.local.json");
        write_text(mine, "my notes\n");
        write_text(local, "{\"x\": 1}\n");
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        text = read_text(mine);
        local_text = read_text(local);
        assert_string_equal(text, "my notes\n");
        assert_string_equal(local_text, "{\"x\": 1}\n");
}

static void test_write_does_not_follow_a_symlink_in_the_workspace(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f);
        _cleanup_free_ char *what = NULL, *target = path_join(f->root, "target"), *link = NULL,
                            *victim = NULL;

        mkdir_under(f->root, "target");
        link = path_join(f->workspace, ".claude");
        assert_int_equal(symlink(target, link), 0);
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), -ENOTDIR);
        assert_non_null(what);
        assert_non_null(strstr(what, ".claude"));
        victim = path_join(target, "CLAUDE.md");
        assert_int_equal(access(victim, F_OK), -1);
}

static void test_write_refuses_config_keys_of_the_wrong_type(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f);
        _cleanup_free_ char *what = NULL;

        assert_int_equal(json_object_set_new(config, "skills", json_string("alpha")), 0);
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), -EINVAL);
        assert_non_null(strstr(what, "'skills' must be an array of strings"));
}

static void test_write_with_a_missing_template_warns_and_goes_on(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f);
        _cleanup_free_ char *what = NULL, *tmpl = path_join(f->templates, "CLAUDE.md.tmpl"),
                            *md = path_join(f->workspace, ".claude/CLAUDE.md"),
                            *mcp = path_join(f->workspace, ".mcp.json");

        assert_int_equal(unlink(tmpl), 0);
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), 0);
        assert_true(warned(f, "CLAUDE.md.tmpl is missing"));
        assert_int_equal(access(md, F_OK), -1);
        assert_int_equal(access(mcp, F_OK), 0);
}

static void test_write_names_a_template_that_is_not_json(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *config = session_config(f);
        _cleanup_free_ char *what = NULL, *tmpl = path_join(f->templates, "settings.json.tmpl");

        write_text(tmpl, "{\"a\": \n");
        assert_int_equal(init_config_write(&f->paths, config, f->warnings, &what), -EBADMSG);
        assert_non_null(strstr(what, "settings.json.tmpl"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_expand_replaces_known_names_and_keeps_the_others),
                cmocka_unit_test(test_expand_escapes_values_for_json_only),
                cmocka_unit_test(test_vars_of_a_session_config),
                cmocka_unit_test_setup_teardown(
                        test_executable_exists_checks_paths_and_path_search, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_makes_mcp_json_of_the_servers_that_can_run, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_includes_a_conditional_server_when_its_variable_is_set, setup, teardown),
                cmocka_unit_test_setup_teardown(test_write_applies_mcp_overrides, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_points_remote_servers_at_their_bridge_without_headers, setup, teardown),
                cmocka_unit_test(test_url_with_authority_keeps_all_but_host_and_port),
                cmocka_unit_test_setup_teardown(
                        test_write_without_mcp_servers_in_the_config_takes_every_usable_one,
                        setup,
                        teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_user_settings_without_missing_hooks_and_with_allowed_tools,
                        setup,
                        teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_user_settings_outside_bypass_keep_only_the_sessions_approvals,
                        setup,
                        teardown),
                cmocka_unit_test_setup_teardown(test_write_claude_md_and_skills, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_trusts_the_workspace_and_keeps_the_rest_of_claude_json, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_leaves_other_workspace_files_alone_and_is_repeatable, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_does_not_follow_a_symlink_in_the_workspace, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_refuses_config_keys_of_the_wrong_type, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_with_a_missing_template_warns_and_goes_on, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_write_names_a_template_that_is_not_json, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

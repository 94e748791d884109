/*
 * Tests of the C side of the hooks (core/script/hooks.c) in a real LuaJIT
 * VM built as a reload builds it (ess_vm_create, ess_vm_load_config,
 * ess_hooks_init), with no broker: msg.properties decoded from raw AMQP
 * application-properties on first read, the clearing of the optional msg
 * fields (properties, raw, protobuf_type) between messages even when a
 * hook wrote them, and the conf argument built from lua.enrich_options /
 * lua.route_options (validated by the module's schema, refused with the
 * key named, absent for two-argument hooks). The hook modules are written
 * into a temporary Lua root whose ess/ links to the source tree's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "ess.h"
#include "ess_test.h"
#include "metrics/metrics.h"
#include "script/hooks.h"
#include "script/vm.h"

static char root[256];

static void write_file(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    fputs(text, f);
    fclose(f);
}

/* The probe hook reports what it sees in msg and conf; "poison" writes the
 * optional fields, as a careless script might. */
static const char probe_lua[] =
    "local format, tostring = string.format, tostring\n"
    "return {\n"
    "  schema = {\n"
    "    { name = 'tag', type = 'string', default = 'none' },\n"
    "    { name = 'n', type = 'integer', default = 1 },\n"
    "  },\n"
    "  enrich = function(msg, es, conf)\n"
    "    local body = msg.body\n"
    "    if body == 'props' then\n"
    "      local p = msg.properties\n"
    "      return format('%s,%s,%s,%s,%s', tostring(p.message_type), tostring(p.n),\n"
    "        tostring(p.flag), tostring(p.nothing), tostring(msg.properties == p))\n"
    "    elseif body == 'poison' then\n"
    "      msg.properties = { message_type = 'fake' }\n"
    "      msg.raw, msg.protobuf_type = 'stale', 'stale'\n"
    "      return 'poisoned'\n"
    "    elseif body == 'peek' then\n"
    "      return format('%s|%s|%s|%s|%d|%s|%s|%s', tostring(msg.raw and #msg.raw),\n"
    "        tostring(msg.protobuf_type), tostring(msg.properties.message_type),\n"
    "        conf.tag, conf.n, tostring(msg.offset), tostring(msg.is_text), es.uuid)\n"
    "    end\n"
    "    return body\n"
    "  end,\n"
    "  route = function(es, cfg, conf)\n"
    "    return { mode = 'stream', stream = es.routing_key .. '-' .. conf.tag }\n"
    "  end,\n"
    "}\n";

/* A hook written before options existed: two arguments, no schema. */
static const char two_lua[] =
    "return {\n"
    "  enrich = function(msg, es) return msg.body .. '!' .. select('#', es) end,\n"
    "  route = function(es, cfg) return { mode = 'stream', stream = 's' } end,\n"
    "}\n";

static void setup_root(void)
{
    snprintf(root, sizeof root, "%s", "/tmp/ess_test_hooks_XXXXXX");
    CHECK(mkdtemp(root) != NULL);
    const char *src = getenv("ESS_SOURCE_DIR");
    char target[512], link[512];
    snprintf(target, sizeof target, "%s/lua/ess", src && src[0] ? src : ESS_SOURCE_DIR);
    snprintf(link, sizeof link, "%s/ess", root);
    CHECK(symlink(target, link) == 0);
    snprintf(link, sizeof link, "%s/t", root);
    CHECK(mkdir(link, 0700) == 0);
    write_file("t/probe.lua", probe_lua);
    write_file("t/two.lua", two_lua);
}

static void cleanup_root(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

/* Build a VM from YAML text as ess_script_build does; ESS_OK or the error
 * in err (the VM is freed then). */
static int build(const char *yaml, ess_vm_t **out, char *err, size_t errlen)
{
    char path[512];
    snprintf(path, sizeof path, "%s/essd.yaml", root);
    char text[2048];
    snprintf(text, sizeof text, "lua:\n  path: \"%s\"\n%s", root, yaml);
    write_file("essd.yaml", text);
    ess_vm_t *vm;
    ess_config_t *cfg = NULL;
    int rc = ess_vm_create(root, &vm, err, errlen);
    if (rc != ESS_OK)
        return rc;
    if ((rc = ess_vm_load_config(vm, path, &cfg, err, errlen)) == ESS_OK)
        rc = ess_hooks_init(vm, cfg->lua_enrich, cfg->lua_route, err, errlen);
    if (rc == ESS_OK)
        rc = ess_hooks_selftest(vm, err, errlen);
    ess_config_free(cfg);
    if (rc != ESS_OK) {
        ess_vm_free(vm);
        return rc;
    }
    *out = vm;
    return ESS_OK;
}

typedef struct {
    char text[512];
    int calls;
} sink_t;

static void emit(void *ud, const ess_hook_msg_t *msg, const uint8_t *data, size_t len)
{
    sink_t *s = ud;
    (void)msg;
    s->calls++;
    snprintf(s->text, sizeof s->text, "%.*s", (int)len, (const char *)data);
}

/* One enrich call; the frame text, or "(no frame)". The single place that
 * knows ess_hooks_enrich's signature. */
static const char *run(ess_vm_t *vm, ess_hook_es_t *es, ess_hook_msg_t *m, sink_t *s)
{
    s->calls = 0;
    snprintf(s->text, sizeof s->text, "(no frame)");
    ess_hooks_enrich(vm, es, m, emit, s);
    CHECK(s->calls <= 1);
    return s->text;
}

/* {"message_type": "Pod", "n": 7, "flag": true, "nothing": null} as an
 * AMQP 1.0 map8 (the application-properties section's value). */
static const uint8_t props[] = {
    0xc1, 42, 8,                                                             /* map8, size, count */
    0xa1, 12, 'm', 'e',  's', 's', 'a',  'g', 'e', '_',  't', 'y', 'p', 'e', /* key */
    0xa1, 3,  'P', 'o',  'd',                                                /* str8 */
    0xa1, 1,  'n', 0x52, 7,                                                  /* smalluint */
    0xa1, 4,  'f', 'l',  'a', 'g', 0x41,                                     /* true */
    0xa1, 7,  'n', 'o',  't', 'h', 'i',  'n', 'g', 0x40,                     /* null */
};

static ess_hook_msg_t msg(const char *body, int with_props, const char *pb_type)
{
    static const uint8_t raw[] = {0x0a, 0x03, 'j', 'o', 'b'};
    ess_hook_msg_t m = {.body = (const uint8_t *)body,
                        .len = strlen(body),
                        .offset = 7,
                        .timestamp_ms = 1746019980000,
                        .is_text = 1};
    if (with_props) {
        m.app_props = props;
        m.app_props_len = sizeof props;
    }
    if (pb_type) {
        m.raw = raw;
        m.raw_len = sizeof raw;
        m.protobuf_type = pb_type;
        m.protobuf_type_len = strlen(pb_type);
    }
    return m;
}

static void test_props_and_extras(void)
{
    char err[2048] = "";
    ess_vm_t *vm = NULL;
    CHECK_EQ_INT(build("  enrich: \"t.probe\"\n  route: \"t.probe\"\n"
                       "  enrich_options: { tag: E, n: 3 }\n  route_options: { tag: R }\n",
                       &vm, err, sizeof err),
                 ESS_OK);
    if (vm == NULL) {
        fprintf(stderr, "build: %s\n", err);
        return;
    }
    ess_hook_es_t es = {.id = 1, .uuid = "U1", .routing_key = "orders", .ref = LUA_NOREF};
    sink_t s;
    ess_hook_msg_t m;

    /* msg.properties from the raw map: null reads as false; one table per call. */
    m = msg("props", 1, NULL);
    CHECK_EQ_STR(run(vm, &es, &m, &s), "Pod,7,true,false,true");
    /* Every optional field, then none: nothing of the first message stays. */
    m = msg("peek", 1, "datamanager.Pod");
    CHECK_EQ_STR(run(vm, &es, &m, &s), "5|datamanager.Pod|Pod|E|3|7|true|U1");
    m = msg("peek", 0, NULL);
    CHECK_EQ_STR(run(vm, &es, &m, &s), "nil|nil|nil|E|3|7|true|U1");
    /* A hook that writes the optional fields does not leak them either. */
    m = msg("poison", 0, NULL);
    CHECK_EQ_STR(run(vm, &es, &m, &s), "poisoned");
    m = msg("peek", 0, NULL);
    CHECK_EQ_STR(run(vm, &es, &m, &s), "nil|nil|nil|E|3|7|true|U1");
    /* properties read (empty) above, then a message that has some. */
    m = msg("peek", 1, NULL);
    CHECK_EQ_STR(run(vm, &es, &m, &s), "nil|nil|Pod|E|3|7|true|U1");
    m = msg("poison", 1, "Pod");
    CHECK_EQ_STR(run(vm, &es, &m, &s), "poisoned");
    m = msg("peek", 1, "Pod");
    CHECK_EQ_STR(run(vm, &es, &m, &s), "5|Pod|Pod|E|3|7|true|U1");
    /* A malformed map: the properties decoded before the fault, no crash. */
    m = msg("props", 1, NULL);
    m.app_props_len = 10;
    CHECK_EQ_STR(run(vm, &es, &m, &s), "nil,nil,nil,nil,true");

    /* route(es, cfg, conf) gets lua.route_options, not enrich's. */
    ess_route_t route;
    CHECK_EQ_INT(ess_hooks_route(vm, &es, &route), ESS_OK);
    CHECK_EQ_STR(route.stream, "orders-R");
    CHECK(!route.classic);

    /* Another VM (a reload) with other options: its conf, and fields that
     * the old VM's message set are not assumed clear. */
    ess_vm_t *vm2 = NULL;
    CHECK_EQ_INT(build("  enrich: \"t.probe\"\n  route: \"t.probe\"\n"
                       "  enrich_options: { tag: E2 }\n",
                       &vm2, err, sizeof err),
                 ESS_OK);
    if (vm2 != NULL) {
        m = msg("poison", 0, NULL);
        run(vm2, &es, &m, &s);
        m = msg("peek", 0, NULL);
        CHECK_EQ_STR(run(vm2, &es, &m, &s), "nil|nil|nil|E2|1|7|true|U1");
        CHECK_EQ_INT(ess_hooks_route(vm2, &es, &route), ESS_OK);
        CHECK_EQ_STR(route.stream, "orders-none"); /* route_options absent: defaults */
        /* Back in the first VM: it was marked dirty by the switch. */
        m = msg("peek", 0, NULL);
        CHECK_EQ_STR(run(vm, &es, &m, &s), "nil|nil|nil|E|3|7|true|U1");
        ess_hooks_es_release(vm2, &es);
        ess_vm_free(vm2);
    }
    ess_hooks_es_release(vm, &es);
    ess_vm_free(vm);
}

static void test_two_argument_hooks(void)
{
    char err[2048] = "";
    ess_vm_t *vm = NULL;
    CHECK_EQ_INT(build("  enrich: \"t.two\"\n  route: \"t.two\"\n", &vm, err, sizeof err), ESS_OK);
    if (vm == NULL) {
        fprintf(stderr, "build: %s\n", err);
        return;
    }
    ess_hook_es_t es = {.id = 2, .uuid = "U2", .routing_key = "k", .ref = LUA_NOREF};
    sink_t s;
    ess_hook_msg_t m = msg("body", 0, NULL);
    CHECK_EQ_STR(run(vm, &es, &m, &s), "body!1");
    ess_route_t route;
    CHECK_EQ_INT(ess_hooks_route(vm, &es, &route), ESS_OK);
    CHECK_EQ_STR(route.stream, "s");
    ess_hooks_es_release(vm, &es);
    ess_vm_free(vm);
}

static void test_bad_options_refused(void)
{
    static const struct {
        const char *yaml;
        const char *want;
    } cases[] = {
        {"  enrich: \"t.probe\"\n  enrich_options: { tag: 5 }\n",
         "config: lua.enrich_options.tag: expected a string, got 5"},
        {"  enrich: \"t.probe\"\n  enrich_options: { n: 1.5 }\n",
         "config: lua.enrich_options.n: expected an integer, got 1.5"},
        {"  route: \"t.probe\"\n  route_options: { tga: x }\n",
         "config: lua.route_options: unknown key \"tga\" (module t.probe takes: tag, n)"},
        {"  enrich: \"t.two\"\n  enrich_options: { x: 1 }\n",
         "config: lua.enrich_options: unknown key \"x\" (module t.two declares no options)"},
    };
    for (size_t i = 0; i < ESS_ARRAY_SIZE(cases); i++) {
        char err[2048] = "";
        ess_vm_t *vm = NULL;
        CHECK(build(cases[i].yaml, &vm, err, sizeof err) != ESS_OK);
        CHECK_EQ_STR(err, cases[i].want);
        CHECK(vm == NULL);
    }
}

static void setup(void)
{
    setup_root();
}

static void teardown(void)
{
    cleanup_root();
}

ESS_TEST_MAIN(ESS_TEST(setup), ESS_TEST(test_props_and_extras), ESS_TEST(test_two_argument_hooks),
              ESS_TEST(test_bad_options_refused), ESS_TEST(teardown))

/*
 * The stream client following a broker cluster (issue 14): the node list
 * (broker.stream_hosts) it parses, the member of a stream it picks from a
 * Metadata answer (broker.read_from, and not the node a subscription just
 * lost), and the locator connection moving to the next node when its node
 * refuses connections or drops them (loopback sockets, no broker: the
 * test only watches where the client connects).
 */
#include "ess.h"
#include "ess_test.h"
#include "mq/stream_internal.h"

static void free_nodes(ess_stream_client_t *c)
{
    for (int i = 0; i < c->nnodes; i++)
        free(c->nodes[i].host);
    c->nnodes = 0;
}

static void test_nodes_parse(void)
{
    ess_stream_client_t c;
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(ess__stream_node_add(&c, "a", 1, 5552, 0), 0);
    CHECK_EQ_INT(ess__stream_nodes_parse(&c, "b:5553, [::1]:5554,,a:5552 ,c.example:1"), ESS_OK);
    CHECK_EQ_INT(c.nnodes, 4); /* a:5552 is there already */
    CHECK_EQ_STR(c.nodes[1].host, "b");
    CHECK_EQ_INT(c.nodes[1].port, 5553);
    CHECK_EQ_STR(c.nodes[2].host, "::1");
    CHECK_EQ_INT(c.nodes[2].port, 5554);
    CHECK_EQ_STR(c.nodes[3].host, "c.example");
    CHECK_EQ_INT(c.nodes[3].learned, 0);
    CHECK_EQ_INT(ess__stream_nodes_parse(&c, ""), ESS_OK);
    CHECK_EQ_INT(c.nnodes, 4);
    /* A node known under the name it advertised is not learned twice. */
    c.nodes[0].adv_host = strdup("localhost");
    c.nodes[0].adv_port = 5552;
    CHECK_EQ_INT(ess__stream_node_add(&c, "localhost", 9, 5552, 1), 0);
    CHECK_EQ_INT(c.nnodes, 4);
    CHECK_EQ_INT(ess__stream_node_add(&c, "localhost", 9, 5553, 1), 4);
    CHECK_EQ_INT(c.nnodes, 5);
    free(c.nodes[0].adv_host);
    c.nodes[0].adv_host = NULL;
    const char *bad[] = {"b",    "b:",       ":5552",     "b:0",    "b:65536", "b:123456",
                         "b:5x", "::1:5552", "[::1]5552", "[::1]:", "[::1"};
    for (size_t i = 0; i < ESS_ARRAY_SIZE(bad); i++) {
        int rc = ess__stream_nodes_parse(&c, bad[i]);
        if (rc != ESS_EINVAL)
            fprintf(stderr, "accepted \"%s\"\n", bad[i]);
        CHECK_EQ_INT(rc, ESS_EINVAL);
    }
    /* The list is bounded: learned nodes stop being added, never overflow. */
    char h[16];
    for (int i = 0; i < 100; i++) {
        snprintf(h, sizeof h, "n%d", i);
        ess__stream_node_add(&c, h, strlen(h), 5552, 1);
    }
    CHECK_EQ_INT(c.nnodes, MAX_NODES);
    CHECK_EQ_INT(ess__stream_node_add(&c, "a", 1, 5552, 0), 0);
    free_nodes(&c);
}

static void test_pick_member(void)
{
    ess__stream_member_t m[3] = {
        {"n1", 2, 5601, 0, 0}, /* leader */
        {"n2", 2, 5602, 0, 0},
        {"n3", 2, 5603, 0, 0},
    };
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, m, 3, 0), 1);
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_LEADER, m, 3, 0), 0);
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_ANY, m, 3, 0), 1);
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, m, 3, 1), 0); /* publisher */
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_ANY, m, 3, 1), 0);
    /* any: a member already connected to first (the leader too). */
    m[0].connected = 1;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_ANY, m, 3, 0), 0);
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, m, 3, 0), 1);
    m[0].connected = 0;
    m[2].connected = 1;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_ANY, m, 3, 0), 2);
    m[2].connected = 0;
    /* The node just lost is picked only when nothing else is left. */
    m[1].avoid = 1;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, m, 3, 0), 2);
    m[2].avoid = 1;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, m, 3, 0), 0);
    m[0].avoid = 1;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, m, 3, 0), 1);
    m[0].avoid = m[1].avoid = m[2].avoid = 0;
    m[1].connected = 1;
    m[1].avoid = 1;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_ANY, m, 3, 0), 2);
    m[1].connected = m[1].avoid = 0;
    /* The leader is always avoidable by a subscription, never by a publisher. */
    m[0].avoid = 1;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_LEADER, m, 3, 0), 0);
    m[0].avoid = 0;
    /* A member whose broker is not in the answer is not usable. */
    m[1].host = NULL;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, m, 3, 0), 2);
    m[2].host = NULL;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, m, 3, 0), 0);
    m[0].host = NULL;
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, m, 3, 0), -1);
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_LEADER, m, 3, 1), -1);
    /* No replicas: the leader. */
    ess__stream_member_t one = {"n1", 2, 5601, 0, 0};
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, &one, 1, 0), 0);
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_ANY, &one, 1, 0), 0);
    CHECK_EQ_INT(ess__stream_pick_member(ESS_READ_REPLICA, &one, 0, 0), -1);
}

/* A fake node: a listening socket that counts connections and closes each
 * one at once (a node that accepts, then is lost). */
typedef struct {
    uv_tcp_t srv;
    int accepted;
    int *total, stop_at; /* the loop stops when *total reaches stop_at */
} node_t;

static void on_client_closed(uv_handle_t *h)
{
    free(h);
}

static void on_conn(uv_stream_t *srv, int status)
{
    node_t *n = srv->data;
    if (status < 0)
        return;
    uv_tcp_t *cl = calloc(1, sizeof *cl);
    uv_tcp_init(srv->loop, cl);
    if (uv_accept(srv, (uv_stream_t *)cl) == 0) {
        n->accepted++;
        if (n->total && ++*n->total >= n->stop_at)
            uv_stop(srv->loop);
    }
    uv_close((uv_handle_t *)cl, on_client_closed);
}

static int listen_on(uv_loop_t *loop, node_t *n)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &n->srv);
    n->srv.data = n;
    uv_tcp_bind(&n->srv, (const struct sockaddr *)&a, 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&n->srv, (struct sockaddr *)&ss, &len);
    uv_listen((uv_stream_t *)&n->srv, 16, on_conn);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* A port nothing listens on (bound, then closed). */
static int closed_port(void)
{
    uv_loop_t l;
    uv_loop_init(&l);
    node_t n;
    memset(&n, 0, sizeof n);
    int port = listen_on(&l, &n);
    uv_close((uv_handle_t *)&n.srv, NULL);
    uv_run(&l, UV_RUN_DEFAULT);
    uv_loop_close(&l);
    return port;
}

typedef struct {
    node_t *a, *b;
    int want;
    uv_timer_t t;
    int ticks;
} watch_t;

static void on_tick(uv_timer_t *t)
{
    watch_t *w = t->data;
    if (++w->ticks > 500)
        uv_stop(t->loop);
}

static void on_done(void *ud)
{
    (void)ud;
}

static void close_walk(uv_handle_t *h, void *ud)
{
    (void)ud;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void test_locator_moves_on(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int dead = closed_port();
    node_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int pa = listen_on(&loop, &a), pb = listen_on(&loop, &b);
    char url[64], hosts[128];
    /* The URL's node refuses connections; the list names two more. */
    snprintf(url, sizeof url, "amqp://guest:guest@127.0.0.1:1/");
    snprintf(hosts, sizeof hosts, "127.0.0.1:%d,127.0.0.1:%d", pa, pb);
    ess_stream_client_opts_t o = {.url = url,
                                  .stream_port = dead,
                                  .stream_hosts = hosts,
                                  .reconnect_min_ms = 10,
                                  .reconnect_max_ms = 40};
    ess_stream_client_t *c = NULL;
    CHECK_EQ_INT(ess_stream_client_create(&loop, &o, &c), ESS_OK);
    CHECK_EQ_INT(c->nnodes, 3);
    watch_t w = {&a, &b, 1, {0}, 0};
    int total = 0;
    a.total = b.total = &total;
    a.stop_at = b.stop_at = 1;
    uv_timer_init(&loop, &w.t);
    w.t.data = &w;
    uv_timer_start(&w.t, on_tick, 10, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    /* The first node was refused: the second one was tried next. */
    CHECK_EQ_INT(a.accepted, 1);
    CHECK_EQ_INT(b.accepted, 0);
    /* That one drops the connection: the third, then round again past the
     * refusing first to the second. */
    a.stop_at = b.stop_at = 4;
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(w.ticks <= 500);
    CHECK(a.accepted >= 2);
    CHECK(b.accepted >= 2);
    char buf[64];
    CHECK(ess_stream_client_locator_node(c, buf, sizeof buf) != NULL);
    CHECK(ess_stream_client_locator_node(c, buf, 4) == NULL);
    CHECK_EQ_INT(ess_stream_client_connected(c), 0);
    ess_stream_client_close(c, on_done, NULL);
    uv_close((uv_handle_t *)&w.t, NULL);
    uv_close((uv_handle_t *)&a.srv, NULL);
    uv_close((uv_handle_t *)&b.srv, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_bad_opts(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    ess_stream_client_t *c = NULL;
    ess_stream_client_opts_t o = {.url = "amqp://guest:guest@127.0.0.1/", .stream_hosts = "x"};
    CHECK_EQ_INT(ess_stream_client_create(&loop, &o, &c), ESS_EINVAL);
    o.stream_hosts = NULL;
    o.read_from = 7;
    CHECK_EQ_INT(ess_stream_client_create(&loop, &o, &c), ESS_EINVAL);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

ESS_TEST_MAIN(ESS_TEST(test_nodes_parse), ESS_TEST(test_pick_member),
              ESS_TEST(test_locator_moves_on), ESS_TEST(test_bad_opts))

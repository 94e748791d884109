/*
 * http/lwssort.c: lws_dll2_add_sorted puts each element where lws 4.1's
 * own does (before the first element not less than it, so a new element
 * goes before older equal ones), for insertions at the head, the tail and
 * anywhere between, and an insertion at either end of a long list costs a
 * comparison or two, not a walk of the list.
 */
#include "ess_test.h"

#include <libwebsockets.h>
#include <stddef.h>
#include <stdlib.h>

typedef struct {
    lws_dll2_t list;
    int key, seq;
} item_t;

static unsigned long compares;

static int cmp(const lws_dll2_t *a, const lws_dll2_t *b)
{
    compares++;
    int x = ((const item_t *)(const void *)a)->key, y = ((const item_t *)(const void *)b)->key;
    return x < y ? -1 : x > y;
}

/* The reference: lws's rule on an array. */
static void ref_insert(item_t **ref, int *n, item_t *it)
{
    int i = 0;
    while (i < *n && ref[i]->key < it->key)
        i++;
    for (int j = *n; j > i; j--)
        ref[j] = ref[j - 1];
    ref[i] = it;
    (*n)++;
}

static int same_order(lws_dll2_owner_t *own, item_t **ref, int n)
{
    if ((int)own->count != n)
        return 0;
    int i = 0;
    lws_dll2_t *prev = NULL;
    for (lws_dll2_t *p = own->head; p; prev = p, p = p->next, i++)
        if (i >= n || p != &ref[i]->list || p->prev != prev || p->owner != own)
            return 0;
    return i == n && own->tail == prev;
}

static void test_same_place_as_lws(void)
{
    enum { N = 600 };
    static item_t it[N];
    item_t *ref[N];
    int n = 0;
    lws_dll2_owner_t own = {0};
    srand(15);
    for (int i = 0; i < N; i++) {
        /* few distinct keys: many ties, and every kind of position */
        it[i].key = i % 3 == 0 ? rand() % 20 : i % 3 == 1 ? 1000 + i : -i;
        it[i].seq = i;
        lws_dll2_add_sorted(&it[i].list, &own, cmp);
        ref_insert(ref, &n, &it[i]);
        CHECK(same_order(&own, ref, n));
    }
    /* removal keeps the list usable, and insertion after it */
    for (int i = 0; i < N; i += 2)
        lws_dll2_remove(&it[i].list);
    n = 0;
    for (lws_dll2_t *p = own.head; p; p = p->next)
        ref[n++] = (item_t *)(void *)p;
    CHECK_EQ_INT(n, N / 2);
    for (int i = 0; i < N; i += 2) {
        lws_dll2_add_sorted(&it[i].list, &own, cmp);
        ref_insert(ref, &n, &it[i]);
        CHECK(same_order(&own, ref, n));
    }
}

static void test_ends_cost_no_walk(void)
{
    enum { N = 2000 };
    static item_t it[N];
    lws_dll2_owner_t own = {0};
    compares = 0;
    for (int i = 0; i < N / 2; i++) { /* later and later: the tail */
        it[i].key = i;
        lws_dll2_add_sorted(&it[i].list, &own, cmp);
    }
    CHECK(compares <= 2 * (unsigned long)(N / 2));
    compares = 0;
    for (int i = N / 2; i < N; i++) { /* earlier than all: the head */
        it[i].key = -i;
        lws_dll2_add_sorted(&it[i].list, &own, cmp);
    }
    CHECK(compares <= (unsigned long)(N / 2));
    CHECK_EQ_INT((int)own.count, N);
    CHECK(((item_t *)(void *)own.head)->key == -(N - 1));
    CHECK(((item_t *)(void *)own.tail)->key == N / 2 - 1);
}

ESS_TEST_MAIN(ESS_TEST(test_same_place_as_lws), ESS_TEST(test_ends_cost_no_walk))

/*
 * lws_dll2_add_sorted, defined over libwebsockets' own for this process
 * (essd's link asks for it: CMakeLists.txt). lws 4.1 keeps every pending
 * timer of a service thread (each connection's timeouts, any hrtimer or
 * validity timer) in one list sorted by expiry, and its lws_dll2_add_sorted
 * walks that list from the head to find where a timer goes: in a burst of
 * N connections each new timer is later than all the others, so each
 * insertion walks all N (3-8% of essd's CPU for a 1,000 burst, 8 insertions
 * per connection). Measured in such a burst, every insertion landed at one
 * end of the list or the other, so this version looks from both ends at
 * once: the same position as lws's (before the first element that is not
 * less than the new one, so equal timers keep their order of insertion), in
 * as many steps as the nearer end is away. Only lws's public list calls
 * and the list layout of its public header are used. Loop thread only, as
 * lws's own.
 */
#include <libwebsockets.h>

void lws_dll2_add_sorted(lws_dll2_t *d, lws_dll2_owner_t *own,
                         int (*compare)(const lws_dll2_t *d, const lws_dll2_t *i))
{
    /* Everything before h is less than d; everything after t is not. */
    for (lws_dll2_t *h = own->head, *t = own->tail; h && t; h = h->next, t = t->prev) {
        if (compare(h, d) >= 0) {
            lws_dll2_add_before(d, h);
            return;
        }
        if (compare(t, d) < 0) {
            if (t->next)
                lws_dll2_add_before(d, t->next);
            else
                lws_dll2_add_tail(d, own);
            return;
        }
    }
    lws_dll2_add_tail(d, own); /* an empty list */
}

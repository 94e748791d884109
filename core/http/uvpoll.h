/*
 * uv_poll_start without the epoll churn, and writable at once (see
 * uvpoll.c). Loop thread only.
 */
#ifndef ESS_HTTP_UVPOLL_H
#define ESS_HTTP_UVPOLL_H

/* 1 when the uv_poll_start below changes a started handle's events in
 * place (the libuv this process runs is the one it was built against),
 * 0 when every call goes to libuv's own. Counts the calls it answered
 * itself in *fast when fast is not NULL. */
int ess__uvpoll_active(unsigned long *fast);

/* How many times a handle was offered UV_WRITABLE before epoll said so. */
unsigned long ess__uvpoll_early(void);

/* Closes the check handle (the loop must run once more to finish); with
 * reuse, a later poll start on a loop may open a new one (tests), else
 * nothing is offered early any more (the server's shutdown). */
void ess__uvpoll_stop(int reuse);

#endif

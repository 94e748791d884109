/*
 * uv_poll_start without the epoll churn (see uvpoll.c). Loop thread only.
 */
#ifndef ESS_HTTP_UVPOLL_H
#define ESS_HTTP_UVPOLL_H

/* 1 when the uv_poll_start below changes a started handle's events in
 * place (the libuv this process runs is the one it was built against),
 * 0 when every call goes to libuv's own. Counts the calls it answered
 * itself in *fast when fast is not NULL. */
int ess__uvpoll_active(unsigned long *fast);

#endif

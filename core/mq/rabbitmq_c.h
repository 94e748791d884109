/*
 * librabbitmq-c's headers, wherever this version keeps them. rabbitmq-c
 * 0.12 moved them under <rabbitmq-c/...> and 0.15 (Debian 13) warns on the
 * old names, which -Werror turns into a build failure; 0.11 (Debian 12)
 * has only the old names. Include this instead of <amqp.h>.
 */
#ifndef ESS_MQ_RABBITMQ_C_H
#define ESS_MQ_RABBITMQ_C_H

#if defined(__has_include)
#if __has_include(<rabbitmq-c/amqp.h>)
#define ESS__RABBITMQ_C_NEW 1
#endif
#endif

#ifdef ESS__RABBITMQ_C_NEW
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/framing.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#endif

#endif

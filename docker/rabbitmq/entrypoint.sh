#!/bin/bash
# ess-rabbitmq [check]: write rabbitmq.conf from the environment, raise the
# open-file limit and run the node in the foreground; `check` (the image's
# HEALTHCHECK) exits 0 once the node answers and the stream port accepts.
set -euo pipefail
amqp=${RABBITMQ_AMQP_PORT:-5672}
stream=${RABBITMQ_STREAM_PORT:-5552}
export RABBITMQ_NODE_PORT=$amqp
export RABBITMQ_CONFIG_FILE=/var/lib/rabbitmq/rabbitmq   # .conf is appended
export RABBITMQ_MNESIA_BASE=/var/lib/rabbitmq/mnesia
export RABBITMQ_LOG_BASE=/var/lib/rabbitmq/log
export RABBITMQ_PID_FILE=/var/lib/rabbitmq/rabbit.pid
bin=/usr/lib/rabbitmq/bin

if [ "${1:-}" = check ]; then
    "$bin/rabbitmq-diagnostics" -q ping >/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$stream")
    exit
fi

cat > "$RABBITMQ_CONFIG_FILE.conf" <<CONF
listeners.tcp.default = $amqp
stream.listeners.tcp.default = $stream
stream.advertised_host = ${RABBITMQ_ADVERTISED_HOST:-$(hostname)}
stream.advertised_port = $stream
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
loopback_users = none
log.console = true
log.console.level = ${RABBITMQ_LOG_LEVEL:-info}
log.file = false
CONF

# Every stream holds files open: at the usual 1024 the node fails near
# 500 streams. Raise the soft limit to RABBITMQ_NOFILE, or the hard limit.
want=${RABBITMQ_NOFILE:-65536}
hard=$(ulimit -Hn)
[ "$hard" != unlimited ] && [ "$hard" -lt "$want" ] && want=$hard
ulimit -n "$want" || true
[ "$(ulimit -n)" -ge 10000 ] || echo "ess-rabbitmq: open-file limit $(ulimit -n); give the container --ulimit nofile=65536:65536" >&2

# No scheduler busy-waiting: it takes CPU from essd on small hosts.
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-+sbwt none +sbwtdcpu none +sbwtdio none}"
exec "$bin/rabbitmq-server"

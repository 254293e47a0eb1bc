#!/bin/sh
set -eu
: "${REDIS_PASSWORD:?REDIS_PASSWORD is not set (images/gen-env.sh writes it to .env)}"
conf=$(mktemp)
chmod 600 "$conf"
cat > "$conf" <<CONF
bind 0.0.0.0
protected-mode yes
port 6379
dir /data
appendonly yes
requirepass $REDIS_PASSWORD
CONF
exec redis-server "$conf"

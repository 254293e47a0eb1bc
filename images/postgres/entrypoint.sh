#!/bin/sh
# First start: initdb with the password from the environment, allow password logins from the
# compose network, create the databases listed in POSTGRES_DATABASES. Then run postgres.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set (images/gen-env.sh writes it to .env)}"
    pw=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pw" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pw"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
    for db in ${POSTGRES_DATABASES:-}; do
        psql -h /tmp -U "$user" -d postgres -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE \"$db\""
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "slicert-postgres: initialized $PGDATA (databases: ${POSTGRES_DATABASES:-none})"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -k /tmp

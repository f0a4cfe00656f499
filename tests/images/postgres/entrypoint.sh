#!/bin/sh
# The part of the official image's entrypoint the tests rely on: a first start makes the cluster
# with POSTGRES_USER as its superuser (password auth over TCP) and POSTGRES_DB, then PostgreSQL
# runs in the foreground with the command's `-c` settings.
set -eu
if [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi
shift
user="${POSTGRES_USER:-postgres}"
database="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "POSTGRES_PASSWORD is not set: the cluster would accept anyone over TCP" >&2
        exit 1
    fi
    password_file="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --username="$user" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --no-sync --no-instructions >/dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$database" != postgres ]; then
        # Made in single-user mode: no server to start and stop, nothing listens before it is ready.
        echo "CREATE DATABASE \"$database\";" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
fi
exec postgres -c listen_addresses='*' "$@"

#!/bin/sh
# First start: a cluster whose superuser password comes from a secret file; then serve.
set -eu
bin=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(cat "${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE must name the password file}")
  printf '%s\n' "$pw" > /tmp/pw
  "$bin/initdb" -D "$PGDATA" -U postgres --pwfile=/tmp/pw --encoding=UTF8 --locale=C.UTF-8 \
      --auth-local=trust \
      --auth-host=scram-sha-256 >/dev/null
  rm -f /tmp/pw
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
  "$bin/psql" -q -h /tmp -U postgres -c "CREATE DATABASE xai_sandbox" >/dev/null
  "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp

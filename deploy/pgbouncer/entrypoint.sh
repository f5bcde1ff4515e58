#!/bin/sh
# Writes PgBouncer's configuration from the environment, then runs it in the foreground.
#   DB_HOST, DB_PORT (5432): the PostgreSQL server;  DB_USER, DB_PASSWORD: the one login,
#   checked here (SCRAM) and used for the server;  POOL_SIZE (20): server connections per
#   database;  MAX_CLIENT_CONN (4000): worker connections accepted (about 4 per slot).
# Transaction pooling: each transaction gets a server connection, given back at its end, so a
# few dozen server connections carry hundreds of worker slots. Clients must not use server-side
# prepared statements: actsearch turns them off with ACTSEARCH_DATABASE_POOLER=pgbouncer.
set -eu
: "${DB_HOST:?set DB_HOST to the PostgreSQL host}"
: "${DB_USER:?set DB_USER}" "${DB_PASSWORD:?set DB_PASSWORD}"
dir="${PGBOUNCER_DIR:-/etc/pgbouncer}"
cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=${DB_HOST} port=${DB_PORT:-5432}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = ${LISTEN_PORT:-6432}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = ${POOL_SIZE:-20}
max_client_conn = ${MAX_CLIENT_CONN:-4000}
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,options
INI
umask 077
printf '"%s" "%s"\n' "$DB_USER" "$DB_PASSWORD" > "$dir/userlist.txt"
exec pgbouncer "$dir/pgbouncer.ini"

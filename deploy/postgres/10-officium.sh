#!/bin/sh
# First start of the compose database only (/docker-entrypoint-initdb.d): the role and
# the schema Officium runs with, as deploy/postgresql.md describes. The role owns only its
# schema: no superuser, no CREATEDB, no CREATEROLE, nothing in `public`.
set -eu
psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     --set password="$OFFICIUM_DB_PASSWORD" <<'SQL'
CREATE ROLE officium LOGIN PASSWORD :'password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION CONNECTION LIMIT 100;
REVOKE ALL ON DATABASE officium FROM PUBLIC;
GRANT CONNECT ON DATABASE officium TO officium;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA officium AUTHORIZATION officium;
ALTER ROLE officium IN DATABASE officium SET search_path = officium;
SQL

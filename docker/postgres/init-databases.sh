#!/usr/bin/env bash
# One PostgreSQL server, five databases, each owned by the role that uses it:
#   airflow      Airflow's metadata DB (the image's POSTGRES_DB, owned by POSTGRES_USER)
#   wap_ledger   the pipelines' run ledger        (role wap)
#   wap_catalog  the Iceberg SQL catalog           (role wap)
#   marquez      Marquez's lineage store           (role marquez)
#   shop         LOCAL DEVELOPMENT ONLY: a sample source database for the JDBC pipeline
#                (role wap; sample_data.customers fills it). A real source lives elsewhere.
# The postgres image runs this once, on an empty data volume. Passwords come from the
# container's environment (docker-compose.yaml, from .env) and reach SQL as psql variables,
# quoted by psql itself (:'name'), never pasted into the statement text.
set -euo pipefail

: "${WAP_DB_PASSWORD:?WAP_DB_PASSWORD must be set}"
: "${MARQUEZ_DB_PASSWORD:?MARQUEZ_DB_PASSWORD must be set}"

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v wap_password="$WAP_DB_PASSWORD" -v marquez_password="$MARQUEZ_DB_PASSWORD" <<'SQL'
CREATE ROLE wap LOGIN PASSWORD :'wap_password';
CREATE DATABASE wap_ledger OWNER wap;
CREATE DATABASE wap_catalog OWNER wap;
CREATE DATABASE shop OWNER wap;
CREATE ROLE marquez LOGIN PASSWORD :'marquez_password';
CREATE DATABASE marquez OWNER marquez;
SQL

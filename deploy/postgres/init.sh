#!/usr/bin/env bash
# One database and one login role per twoline service (DESIGN: "its own Postgres database and
# role"). Run once by the postgres image's entrypoint, from /docker-entrypoint-initdb.d, when the
# data directory is empty; safe to run again by hand (it creates what is missing and resets the
# passwords from the environment).
#
# Firewall rule F1 at the database: each role owns only its own database, and CONNECT on every
# database is revoked from PUBLIC, so the case-resolution role (zone B) cannot even open a
# connection to the intake or consent database (zone A), whatever its password.
#
# Passwords come from the environment (deploy/.env): INTAKE_DB_PASSWORD, CONSENT_DB_PASSWORD,
# REFERRAL_DB_PASSWORD, CASE_RESOLUTION_DB_PASSWORD, AUDIT_DB_PASSWORD.
#
# The entrypoint sources this file instead of running it if it is not executable, so the script
# sets no shell options beyond the entrypoint's own and never calls `exit`.
set -Eeo pipefail

# $1: the database to connect to; the rest goes to psql.
twoline_psql() {
	local database="$1"
	shift
	psql -v ON_ERROR_STOP=1 -X -q --no-password \
		--username "${POSTGRES_USER:-postgres}" --dbname "$database" "$@"
}

# name: role and database name; variable: the environment variable holding its password.
twoline_create_service_database() {
	local name="$1" variable="$2"
	local password="${!variable}"
	if [ -z "$password" ]; then
		echo "init.sh: $variable is empty; set it in deploy/.env" >&2
		return 1
	fi
	# psql variables (:'x' quotes a literal, :"x" an identifier) keep the password out of the SQL
	# text; \gexec runs CREATE DATABASE, which cannot run inside a DO block or a transaction.
	twoline_psql "${POSTGRES_DB:-postgres}" -v name="$name" -v password="$password" <<-'SQL'
		SELECT format('CREATE ROLE %I LOGIN', :'name')
		WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
		ALTER ROLE :"name" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
			INHERIT PASSWORD :'password';
		SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
		WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
		ALTER DATABASE :"name" OWNER TO :"name";
		REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
	SQL
	# Inside the new database: only the owner may use or create in the public schema (Postgres 15
	# and later already deny CREATE to PUBLIC; older ones do not).
	twoline_psql "$name" -v name="$name" <<-'SQL'
		REVOKE ALL ON SCHEMA public FROM PUBLIC;
		ALTER SCHEMA public OWNER TO :"name";
	SQL
	echo "init.sh: database and role '$name' ready"
}

twoline_create_service_database intake INTAKE_DB_PASSWORD
twoline_create_service_database consent CONSENT_DB_PASSWORD
twoline_create_service_database referral REFERRAL_DB_PASSWORD
twoline_create_service_database case_resolution CASE_RESOLUTION_DB_PASSWORD
twoline_create_service_database audit AUDIT_DB_PASSWORD

# No service role may connect to the maintenance databases either (the superuser still can).
twoline_psql "${POSTGRES_DB:-postgres}" -v maintenance="${POSTGRES_DB:-postgres}" <<-'SQL'
	REVOKE CONNECT ON DATABASE :"maintenance" FROM PUBLIC;
	REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;
SQL

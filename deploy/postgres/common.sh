# shellcheck shell=bash
# Shared by deploy/postgres/start, stop and env: where the test database
# lives, its port, and how to tell whether it runs. Sourced, not run.

PG_DIR=${PG_DIR:-/tmp/smimeproxy-pg}
PG_PORT=${PG_PORT:-15432}

case $PG_DIR in
/*) ;;
*) echo "postgres: PG_DIR must be an absolute path, not $PG_DIR" >&2; exit 2 ;;
esac
PG_DIR=${PG_DIR%/}
PG_DATA=$PG_DIR/data
PG_RUN=$PG_DIR/run
ENV_FILE=$PG_DIR/postgres.env
# Owns the cluster's files and runs the server: PostgreSQL refuses to run as root.
PG_USER=postgres

log() { echo "postgres: $*" >&2; }

# pg_lock serialises start and stop: go test runs packages in parallel.
pg_lock() {
	mkdir -p "$PG_DIR"
	exec 9>"$PG_DIR/.lock"
	flock 9
}

# pg_bin prints the directory of the newest installed server's programs.
pg_bin() {
	local d
	d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
	[ -n "$d" ] || return 1
	echo "$d"
}

# pg_pid prints the server's pid when it runs.
pg_pid() {
	local pid
	[ -r "$PG_DATA/postmaster.pid" ] || return 1
	read -r pid <"$PG_DATA/postmaster.pid" || return 1
	[ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
	[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] || return 1
	echo "$pid"
}

pg_running() {
	pg_pid >/dev/null && [ -r "$ENV_FILE" ]
}

# pg_stop stops the server (fast: open sessions are cut) and waits for it.
pg_stop() {
	local bin
	pg_pid >/dev/null || { rm -f "$ENV_FILE"; return 0; }
	bin=$(pg_bin) || return 1
	log "stopping PostgreSQL"
	runuser -u "$PG_USER" -- "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
	rm -f "$ENV_FILE"
}

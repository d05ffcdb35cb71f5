# shellcheck shell=bash
# Shared by deploy/ldap/start, stop and env: where the test directory server
# lives, its ports, and how to tell whether it runs. Sourced, not run.

LDAP_DIR=${LDAP_DIR:-/tmp/smimeproxy-ldap}
LDAP_PORT=${LDAP_PORT:-10389}
LDAPS_PORT=${LDAPS_PORT:-10636}
LDAP_SUFFIX=dc=smimeproxy,dc=test

case $LDAP_DIR in
/*) ;;
*) echo "ldap: LDAP_DIR must be an absolute path, not $LDAP_DIR" >&2; exit 2 ;;
esac
LDAP_DIR=${LDAP_DIR%/}
LDAP_CONF=$LDAP_DIR/slapd.d
LDAP_DATA=$LDAP_DIR/data
LDAP_RUN=$LDAP_DIR/run
ENV_FILE=$LDAP_DIR/ldap.env
# Owns the server's files and runs it: Debian's slapd package makes this user.
LDAP_USER=openldap

log() { echo "ldap: $*" >&2; }

# ldap_lock serialises start and stop: go test runs packages in parallel.
ldap_lock() {
	mkdir -p "$LDAP_DIR"
	exec 9>"$LDAP_DIR/.lock"
	flock 9
}

# ldap_pid prints the server's pid when it runs.
ldap_pid() {
	local pid
	[ -r "$LDAP_RUN/slapd.pid" ] || return 1
	pid=$(tr -d ' \n' <"$LDAP_RUN/slapd.pid")
	[ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
	[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slapd ] || return 1
	echo "$pid"
}

ldap_running() {
	ldap_pid >/dev/null && [ -r "$ENV_FILE" ]
}

# ldap_stop stops the server and waits until it is gone.
ldap_stop() {
	local pid _
	rm -f "$ENV_FILE"
	pid=$(ldap_pid) || return 0
	log "stopping slapd"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		[ -d "/proc/$pid" ] || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	sleep 0.2
	[ ! -d "/proc/$pid" ]
}

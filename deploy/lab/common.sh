# shellcheck shell=bash
# Shared by deploy/lab/start, stop and env: where the lab lives, its ports, how
# to tell whether it runs and how to stop it. Sourced, not run.

LAB_DIR=${LAB_DIR:-/tmp/smimeproxy-lab}
LAB_SUBMISSION_PORT=${LAB_SUBMISSION_PORT:-10587}
LAB_IMAP_PORT=${LAB_IMAP_PORT:-10143}
LAB_IMAPS_PORT=${LAB_IMAPS_PORT:-10993}
LAB_LMTP_PORT=${LAB_LMTP_PORT:-10024}

# Postfix needs an absolute config directory, and everything below derives from it.
case $LAB_DIR in
/*) ;;
*) echo "lab: LAB_DIR must be an absolute path, not $LAB_DIR" >&2; exit 2 ;;
esac
LAB_DIR=${LAB_DIR%/}

POSTFIX_CONF=$LAB_DIR/postfix
POSTFIX_QUEUE=$LAB_DIR/postfix-spool
DOVECOT_RUN=$LAB_DIR/dovecot/run
ENV_FILE=$LAB_DIR/lab.env

log() { echo "lab: $*" >&2; }

# lab_lock serialises start and stop: go test runs packages in parallel, and
# each may ask for the lab at the same moment.
lab_lock() {
	mkdir -p "$LAB_DIR"
	exec 9>"$LAB_DIR/.lock"
	flock 9
}

# proc_stat PID prints the state and parent pid of process PID. It reads
# /proc, so it needs neither root nor procps.
proc_stat() {
	local s state ppid
	{ read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
	# The command name, in parentheses, may hold spaces: skip past it.
	read -r state ppid _ <<<"${s##*) }"
	echo "$state $ppid"
}

# alive PID succeeds while PID runs; a zombie has stopped.
alive() {
	local s
	s=$(proc_stat "$1") || return 1
	[ "${s%% *}" != Z ]
}

# pid_of FILE COMM prints the pid in FILE when that process runs and is COMM.
pid_of() {
	local pid comm
	[ -r "$1" ] || return 1
	pid=$(tr -d ' \n' <"$1")
	[ -n "$pid" ] && alive "$pid" || return 1
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[ "$comm" = "$2" ] || return 1
	echo "$pid"
}

postfix_pid() { pid_of "$POSTFIX_QUEUE/pid/master.pid" master; }
dovecot_pid() { pid_of "$DOVECOT_RUN/master.pid" dovecot; }

lab_running() {
	postfix_pid >/dev/null && dovecot_pid >/dev/null && [ -r "$ENV_FILE" ]
}

# tree PID prints PID and all its descendants: each master forks its workers.
tree() {
	local d p s parents=() queue=("$1")
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		s=$(proc_stat "$p") || continue
		parents[p]=${s#* }
	done
	while [ "${#queue[@]}" -gt 0 ]; do
		p=${queue[0]}
		queue=("${queue[@]:1}")
		echo "$p"
		for d in "${!parents[@]}"; do
			[ "${parents[d]}" = "$p" ] && queue+=("$d")
		done
	done
}

# running PID... prints those of the given processes that still run.
running() {
	local p left=()
	for p in "$@"; do
		alive "$p" && left+=("$p")
	done
	echo "${left[*]}"
}

# lab_stop stops both servers and waits until every process they had is gone,
# killing what outlives ten seconds. The caller holds the lock.
lab_stop() {
	local pid pids=() left
	if pid=$(postfix_pid); then
		mapfile -t -O "${#pids[@]}" pids < <(tree "$pid")
		log "stopping Postfix (master $pid)"
		postfix -c "$POSTFIX_CONF" stop 2>/dev/null || kill -TERM "$pid"
	fi
	if pid=$(dovecot_pid); then
		mapfile -t -O "${#pids[@]}" pids < <(tree "$pid")
		log "stopping Dovecot (master $pid)"
		kill -TERM "$pid"
	fi
	rm -f "$ENV_FILE"
	[ "${#pids[@]}" -gt 0 ] || return 0

	for _ in $(seq 100); do
		[ -z "$(running "${pids[@]}")" ] && return 0
		sleep 0.1
	done
	left=$(running "${pids[@]}")
	log "killing what did not stop: $left"
	# shellcheck disable=SC2086
	kill -KILL $left 2>/dev/null || true
	sleep 0.5
	left=$(running "${pids[@]}")
	if [ -n "$left" ]; then
		log "still running: $left"
		return 1
	fi
}

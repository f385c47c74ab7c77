#!/bin/busybox sh
# PID 1 of a `cargo xtask vm-test` guest. It mounts what sockbuf and its tests use, runs each
# test binary once per attach mode, prints `VMTEST:` marker lines on the serial console for the
# host to parse, and powers off. The host's settings come from the kernel command line: the
# kernel hands NAME=VALUE words it does not know to init as environment variables.
#   VMTEST_MODES   attach modes, comma-separated (fentry,tp_btf,kprobe,tracepoint,auto)
#   VMTEST_FILTER  test-name filters for every test binary, comma-separated (may be empty)
#   VMTEST_SKIP    test-name filters to skip, comma-separated (may be empty)
#   VMTEST_LIMIT   seconds one test binary may run before it is stopped (SIGTERM)
#   VMTEST_INJECT  fail|hang|panic: a deliberate failure, to prove the host catches it

# Nothing is mounted yet, and the kernel found no /dev/console in the archive to give us:
# mount devtmpfs, then point our output at the console.
/bin/busybox mkdir -p /dev /proc /sys /run /tmp /bb
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bb
# Real tools (ip, ss, setpriv, bash) first: the tests need their full versions.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/bb
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# `ip netns add` keeps its namespaces in /run/netns; the non-root test copies sockbuf to /tmp.
mount -t tmpfs -o mode=0755 tmpfs /run
# /tmp stays the initramfs's own (already writable): a checkout under /tmp has its test
# binaries there, and a tmpfs on top would hide them.
chmod 1777 /tmp
ip link set lo up
# `ss -m` needs sock_diag for TCP, kTLS needs tls (and gcm where it is a module): Debian
# builds them as modules; the list says which this kernel has, in load order, and which
# are loaded only around the kTLS tests (`ktls`).
modules=/lib/modules/$(uname -r)
for m in $(awk '$2 != "ktls" { print $1 }' "$modules/modules.list"); do
	insmod "$modules/$m.ko" || echo "VMTEST:warn insmod $m failed"
done
# ktls load|unload: TLS and its ciphers, for the kTLS tests only.
ktls() {
	if [ "$1" = load ]; then
		for m in $(awk '$2 == "ktls" { print $1 }' "$modules/modules.list"); do
			insmod "$modules/$m.ko" || echo "VMTEST:warn insmod $m failed"
		done
	else
		for m in $(awk '$2 == "ktls" { l[n++] = $1 } END { while (n) print l[--n] }' "$modules/modules.list"); do
			rmmod "$m" || echo "VMTEST:warn rmmod $m failed"
		done
	fi
}
echo "VMTEST:boot $(uname -r)"
# Whether sockbuf attaches its standby copies follows from this (the console keeps it).
echo "preemption: $(cat /sys/kernel/debug/sched/preempt 2>&1)"

filters=$(echo "$VMTEST_FILTER" | tr , ' ')
for s in $(echo "$VMTEST_SKIP" | tr , ' '); do
	filters="$filters --skip $s"
done

# run NAME MODE CMD...: one step, framed by markers that carry its exit code. A step that
# outlives VMTEST_LIMIT is stopped (exit 143), so one hung test costs only its own binary.
run() {
	name=$1 mode=$2
	shift 2
	echo "VMTEST:run $mode $name"
	timeout "${VMTEST_LIMIT:-600}" "$@"
	rc=$?
	# Whatever the step left running (a sockbuf its test never stopped) must not trace into
	# the next one: every process but this one is ours to end.
	kill -KILL -1 2>/dev/null
	# A newline first: a test stopped mid-line leaves libtest's `test NAME ... ` open.
	echo
	echo "VMTEST:exit $mode $name $rc"
}

# The tracepoints sockbuf's tracepoint backends (raw and tp_btf) cannot do without, in the
# order they check them (without tcp_sendmsg_locked they open send calls at the syscalls).
TRACEPOINTS="sock/sock_send_length sched/sched_switch tcp/tcp_probe sock/sock_recv_length"

for mode in $(echo "$VMTEST_MODES" | tr , ' '); do
	export SOCKBUF_ATTACH=$mode
	if [ "$mode" = tracepoint ] || [ "$mode" = tp_btf ]; then
		missing=
		for tp in $TRACEPOINTS; do
			[ -d "/sys/kernel/tracing/events/$tp" ] || missing="$missing $tp"
		done
		if [ -n "$missing" ]; then
			# Where the kernel lacks one, the right answer is a one-line refusal and exit 2.
			msg=$(sockbuf trace --attach "$mode" -d 1s 2>&1 >/dev/null)
			echo "VMTEST:refused $mode rc=$? missing=$(echo $missing | tr ' ' ,) $msg"
			continue
		fi
	fi
	list=/vmtest/tests
	if [ "$mode" = auto ]; then
		echo "VMTEST:picked $(sockbuf trace --json -d 1s -p 1 | head -n 1)"
		# auto must be fentry on every kernel here (the line above is checked): the whole
		# suite under it would repeat the fentry run. The choosing itself is `backends`'.
		if grep -q '^backends ' /vmtest/tests; then
			grep '^backends ' /vmtest/tests >/tmp/auto-tests
			list=/tmp/auto-tests
		fi
	fi
	while read -r name path; do
		[ "$name" = ktls ] && ktls load
		# shellcheck disable=SC2086 # filters are words
		run "$name" "$mode" "$path" --test-threads=1 $filters
		[ "$name" = ktls ] && ktls unload
	done <"$list"
	case "$VMTEST_INJECT" in
	fail) run injected "$mode" sh -c 'echo "test injected ... FAILED"; exit 1' ;;
	hang) sleep 100000 ;; # outside run's time limit: the whole guest hangs
	panic) echo c >/proc/sysrq-trigger ;;
	esac
done

echo "VMTEST:done"
sync
poweroff -f

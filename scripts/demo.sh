#!/usr/bin/env bash
# Runs every image in a micro-VM beside its native run and compares them.
set -uo pipefail
cd "$(dirname "$0")/.."
MOSVM=${MOSVM:-target/release/mosvm}
B=images/build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seq 1 5000 | sed 's/^/line /' > "$work/in.txt"

ms() { date +%s%N; }
abs() { case $1 in /*) echo "$1" ;; *) echo "$OLDPWD/$1" ;; esac; }
show() { # name, args...
	local name=$1; shift
	local prog=$B/$name
	# An absolute path is a program of this machine (run where it is).
	case $name in /*) prog=$name ;; esac
	echo "=== $name $*"
	local t0 t1 t2
	t0=$(ms)
	(cd "$work" && "$(abs "$prog")" "$@") > "$work/native.out" 2> "$work/native.err"
	local ns=$?
	t1=$(ms)
	(cd "$work" && "$OLDPWD/$MOSVM" run -- "$(abs "$prog")" "$@") > "$work/vm.out" 2> "$work/vm.err"
	local vs=$?
	t2=$(ms)
	echo "--- micro-VM output (exit status $vs):"
	sed 's/^/    /' "$work/vm.out" | tail -n 6
	[ -s "$work/vm.err" ] && sed 's/^/    stderr: /' "$work/vm.err"
	if cmp -s "$work/native.out" "$work/vm.out" && [ "$ns" = "$vs" ]; then
		echo "--- native run: same stdout, same exit status ($ns)"
	else
		echo "--- native run DIFFERS (exit status $ns):"
		sed 's/^/    /' "$work/native.out" | tail -n 6
	fi
	printf -- '--- wall time: native %.1f ms, micro-VM %.1f ms\n' \
		"$(echo "($t1-$t0)/1000000" | bc -l)" "$(echo "($t2-$t1)/1000000" | bc -l)"
	echo
}

show hello
show cpu 1000000000
show mem 128 32 20
show files in.txt out.txt 3
show crash null

echo "=== programs users run: Debian's own, dynamically linked (ld.so and libraries read through the job's site)"
show /usr/bin/python3 -c 'import collections, hashlib; c = collections.Counter(open("in.txt").read().split()); print(len(c), hashlib.md5(open("in.txt", "rb").read()).hexdigest())'
show /bin/bash -c 'sort -r in.txt | head -n 3; while read -r w n; do s=$((s + n)); done < in.txt; echo "sum $s"; gzip -c in.txt | gzip -dc | md5sum'
show /usr/bin/perl -ne '$s += (split)[1]; END { print "$s\n" }' in.txt

echo "=== launch-to-exit of hello, median of 30 runs"
native=() vm=()
for i in $(seq 30); do
	t0=$(ms); $B/hello > /dev/null; t1=$(ms); $MOSVM run $B/hello > /dev/null; t2=$(ms)
	native+=($((t1 - t0))); vm+=($((t2 - t1)))
done
med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
n=$(med "${native[@]}") v=$(med "${vm[@]}")
printf 'native %.2f ms, micro-VM %.2f ms, ratio %.2fx\n' "$(echo "$n/1000000" | bc -l)" \
	"$(echo "$v/1000000" | bc -l)" "$(echo "$v/$n" | bc -l)"

echo
echo "=== a cluster of three hosts on this machine: a job started at h1 moves to h2, h3 and home"
# Each host is a `mosvm host` daemon on its own loopback address, with its
# own state dir and API socket. The job's output, files and exit status
# stay at its home (h1) wherever its body runs. Only the operator moves
# it here (--no-balance); the balancers come next.
port=$((17000 + RANDOM % 2000))
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
# First the cluster's identity: a CA, and a certificate per host. Every
# connection between the hosts is then mutual TLS, gossip is sealed, and
# a machine without a certificate of this cluster gets nothing.
echo "--- mosvm cluster init; mosvm cluster add-host (h1 h2 h3 b1 b2 b3)"
"$MOSVM" cluster init --dir "$work/ca" | sed 's/^/    /'
for h in h1 h2 h3 b1 b2 b3; do "$MOSVM" cluster add-host "$h" --dir "$work/ca" > /dev/null; done
for i in 1 2 3; do
	mkdir -p "$work/h$i"
	join=(); [ "$i" != 1 ] && join=(--join "127.0.0.2:$port")
	"$MOSVM" host --tls "$work/ca/hosts/h$i" --name "h$i" --listen "127.0.0.$((i + 1)):$port" --api-sock "$work/h$i.sock" \
		--state-dir "$work/h$i/state" --no-balance "${join[@]}" > "$work/h$i.ready" 2> "$work/h$i.log" &
	pids+=($!)
	for _ in $(seq 100); do grep -q '"ready"' "$work/h$i.ready" 2>/dev/null && break; sleep 0.05; done
done
export MOSVM_SOCK="$work/h1.sock"
for _ in $(seq 100); do [ "$("$MOSVM" hosts --json | python3 -c 'import json,sys; print(sum(h["state"]=="alive" for h in json.load(sys.stdin)))')" = 3 ] && break; sleep 0.1; done
echo "--- mosvm hosts"
"$MOSVM" hosts | sed 's/^/    /'
echo "--- a host of another cluster (its own CA) tries to join through h1: nobody hears it"
"$MOSVM" cluster init --dir "$work/other" > /dev/null && "$MOSVM" cluster add-host x --dir "$work/other" > /dev/null
mkdir -p "$work/x"
"$MOSVM" host --tls "$work/other/hosts/x" --name x --listen "127.0.0.5:$port" --api-sock "$work/x.sock" \
	--state-dir "$work/x/state" --no-balance --join "127.0.0.2:$port" > "$work/x.ready" 2> "$work/x.log" &
xpid=$!
sleep 2
echo "    h1 knows: $("$MOSVM" hosts --json | python3 -c 'import json,sys; print(" ".join(h["name"] for h in json.load(sys.stdin)))')"
echo "    x knows:  $("$MOSVM" hosts --json --sock "$work/x.sock" | python3 -c 'import json,sys; print(" ".join(h["name"] for h in json.load(sys.stdin)))')"
echo "    h1 logged: $(grep -o 'dropped datagram not sealed by this cluster[^"]*' "$work/h1.log" | head -1)"
kill "$xpid" 2>/dev/null; wait "$xpid" 2>/dev/null
mkdir -p "$work/job"
seq 1 20000 | sed 's/^/input line /' > "$work/job/in.txt"
(cd "$work/job" && "$OLDPWD/$MOSVM" run -- "$OLDPWD/$B/tests/homework" in.txt out.txt 150 > "$work/job.out" 2> "$work/job.err"; echo $? > "$work/job.status") &
for _ in $(seq 200); do grep -q "round 5 of" "$work/job.out" 2>/dev/null && break; sleep 0.02; done
job=$("$MOSVM" ps --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
ps_now() { echo "--- mosvm ps"; "$MOSVM" ps | sed 's/^/    /'; }
ps_now
for to in h2 h3 home; do
	echo "--- mosvm migrate $job --to $to"
	"$MOSVM" migrate "$job" --to "$to" | sed 's/^/    /'
	ps_now
	sleep 0.5
done
for _ in $(seq 600); do [ -s "$work/job.status" ] && break; sleep 0.05; done
echo "--- the job's output at home (h1), exit status $(cat "$work/job.status"):"
tail -n 3 "$work/job.out" | sed 's/^/    /'
echo "--- the same job run natively:"
(cd "$work/job" && "$OLDPWD/$B/tests/homework" in.txt native.txt 150 > "$work/native.out" 2>/dev/null; echo $? > "$work/native.status")
tail -n 3 "$work/native.out" | sed 's/^/    /'
echo "    exit status $(cat "$work/native.status")"
cmp -s "$work/job/out.txt" "$work/job/native.txt" && echo "--- out.txt at home: identical to the native run's"
echo "--- files the job left on h2 and h3: $(find "$work/h2" "$work/h3" -name 'out*' | wc -l)"
echo "--- mosvm ps --all"
"$MOSVM" ps --all | sed 's/^/    /'

echo
echo "=== automatic rebalancing: six CPU-bound jobs started at one of three hosts of 0.5 CPU spread by themselves"
# Each daemon runs with a CPU budget of its own (--cpu-limit: a cgroup
# quota for it and everything it runs), so three emulated hosts on this
# machine really are three small hosts. Nobody moves the jobs: the
# balancers gossip their loads and move them, live.
for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; pids=()
if [ "$(id -u)" != 0 ]; then
	echo "--- skipped: emulated hosts with CPU budgets need root (cgroups)"
	exit 0
fi
port=$((port + 1))
for i in 1 2 3; do
	mkdir -p "$work/b$i"
	join=(); [ "$i" != 1 ] && join=(--join "127.0.0.2:$port")
	"$MOSVM" host --tls "$work/ca/hosts/b$i" --name "b$i" --listen "127.0.0.$((i + 1)):$port" --api-sock "$work/b$i.sock" \
		--state-dir "$work/b$i/state" --cpu-limit 0.5 "${join[@]}" > "$work/b$i.ready" 2> "$work/b$i.log" &
	pids+=($!)
	for _ in $(seq 100); do grep -q '"ready"' "$work/b$i.ready" 2>/dev/null && break; sleep 0.05; done
done
export MOSVM_SOCK="$work/b1.sock"
for _ in $(seq 100); do [ "$("$MOSVM" hosts --json | python3 -c 'import json,sys; print(sum(h["state"]=="alive" for h in json.load(sys.stdin)))')" = 3 ] && break; sleep 0.1; done
work_n=1500000000
ids=()
for j in 1 2 3 4 5 6; do ids+=("$("$MOSVM" run -d --mem 64M -- "$B/cpu" "$work_n")"); done
echo "--- started jobs ${ids[*]} at b1 (mosvm run -d)"
running() { "$MOSVM" ps --json | python3 -c 'import json,sys; print(sum(j["state"] in ("running","moving") for j in json.load(sys.stdin)))'; }
at_b2() { "$MOSVM" ps --json | python3 -c 'import json,sys; print(sum(j["state"] in ("running","moving") and j["host"]=="b2" for j in json.load(sys.stdin)))'; }
t0=$(date +%s)
for round in 1 2 3 4 5 6 7 8 9 10; do
	sleep 2
	echo "--- after $(( $(date +%s) - t0 )) s: mosvm hosts; mosvm ps"
	"$MOSVM" hosts | sed 's/^/    /'
	"$MOSVM" ps | sed 's/^/    /'
	[ "$(at_b2)" -ge 2 ] && break
done
echo "--- mosvm top (its plain snapshot: stdout is not a terminal here)"
"$MOSVM" top --once | sed 's/^/    /'
echo
echo "=== maintenance: mosvm drain b2, asked at b3, while every job keeps running"
MOSVM_SOCK="$work/b3.sock" "$MOSVM" drain b2 --timeout 60s 2>&1 | sed 's/^/    /'
echo "--- mosvm ps at b1 right after: no job runs at b2"
"$MOSVM" ps | sed 's/^/    /'
echo "--- mosvm hosts"
"$MOSVM" hosts | sed 's/^/    /'
for id in "${ids[@]}"; do "$MOSVM" wait "$id" > /dev/null; done
echo "--- all done after $(( $(date +%s) - t0 )) s; each output against the native run:"
"$B/cpu" "$work_n" > "$work/cpu.native"
for id in "${ids[@]}"; do
	"$MOSVM" logs "$id" > "$work/cpu.$id"
	where=$("$MOSVM" ps "$id" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(" -> ".join([d["job"]["home"]] + [m["to"] for m in d["history"]]))')
	if cmp -s "$work/cpu.native" "$work/cpu.$id"; then same=identical; else same=DIFFERS; fi
	echo "    job $id ran on $where: output $same"
done
echo "--- mosvm events (the balancers' decisions, at b1)"
"$MOSVM" events -n 12 | sed 's/^/    /'
echo "--- mosvm uncordon b2: it takes jobs again"
"$MOSVM" uncordon b2 | sed 's/^/    /'

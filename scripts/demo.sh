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
show() { # name, args...
	local name=$1; shift
	local prog=$B/$name
	echo "=== $name $*"
	local t0 t1 t2
	t0=$(ms)
	(cd "$work" && "$OLDPWD/$prog" "$@") > "$work/native.out" 2> "$work/native.err"
	local ns=$?
	t1=$(ms)
	(cd "$work" && "$OLDPWD/$MOSVM" run -- "$OLDPWD/$prog" "$@") > "$work/vm.out" 2> "$work/vm.err"
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
echo "=== live migration: a job moves from one mosvm to another while it runs"
sock="$work/job.sock"
"$MOSVM" receive --listen 127.0.0.1:0 > "$work/dst.out" 2> "$work/dst.err" &
dst=$!
for _ in $(seq 100); do grep -q "waiting for a job on" "$work/dst.err" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/.*waiting for a job on //p' "$work/dst.err" | head -1)
"$MOSVM" run --api-sock "$sock" -- $B/mem 128 32 300 > "$work/src.out" 2> "$work/src.err" &
src=$!
for _ in $(seq 200); do grep -q "pass 60" "$work/src.out" 2>/dev/null && break; sleep 0.02; done
echo "--- the job before the move (source):"
sed 's/^/    /' "$work/src.out"
echo "--- mosvm migrate --to $addr --json:"
"$MOSVM" migrate --api-sock "$sock" --to "$addr" --json | sed 's/,/,\n      /g; s/^/    /'
wait $src
echo "--- source process: $(cat "$work/src.err")"
wait $dst
echo "--- the job after the move (destination), exit status $?:"
sed 's/^/    /' "$work/dst.out"
echo "--- the same job never moved:"
$B/mem 128 32 300 | tail -n 2 | sed 's/^/    /'

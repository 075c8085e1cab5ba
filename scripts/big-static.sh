#!/bin/bash
# Builds a ~100 MB static program (a 100 MiB initialized array, linked in
# with .incbin) and times its start in a job against a native run:
#   scripts/big-static.sh [OUT_DIR] [RUNS]
# It prints one byte of every MiB of the array, so the job touches only
# a little of it, as a large program that starts and exits does.
set -euo pipefail
out=${1:-images/build/bench-big}
runs=${2:-10}
mosvm=${MOSVM:-target/release/mosvm}
mkdir -p "$out"
if [ ! -x "$out/big" ]; then
    head -c $((100 << 20)) /dev/urandom > "$out/big.bin"
    cat > "$out/big.c" <<'C'
#include <stdio.h>
extern const unsigned char big[];
extern const unsigned long big_size;
__asm__(".section .rodata\n.balign 4096\n.global big\nbig:\n.incbin \"big.bin\"\n"
        ".balign 8\n.global big_size\nbig_size: .quad . - big\n.text\n");
int main(void) {
    unsigned sum = 0;
    for (unsigned long i = 0; i < big_size; i += 1 << 20) sum = sum * 31 + big[i];
    printf("%lu bytes, sum %u\n", big_size, sum);
    return 0;
}
C
    (cd "$out" && musl-gcc -static -O2 -o big big.c)
fi
ls -l "$out/big"
# Warm the page cache: both runs read the file from memory.
cat "$out/big" > /dev/null
best() { # the fastest of $runs runs of "$@", in ms, and its max RSS
    local best=999999 rss=0
    for _ in $(seq "$runs"); do
        local t0 t1 r
        t0=$(date +%s%N)
        r=$( { /usr/bin/time -f "%M" "$@" > /dev/null; } 2>&1 | tail -1)
        t1=$(date +%s%N)
        local ms=$(( (t1 - t0) / 1000 ))
        if [ "$ms" -lt "$best" ]; then best=$ms; rss=$r; fi
    done
    echo "$((best / 1000)).$(printf %03d $((best % 1000))) ms, max RSS ${rss} KB"
}
echo "native:    $(best "$out/big")"
echo "mosvm run: $(best "$mosvm" run -- "$out/big")"
"$mosvm" run -- "$out/big"
"$out/big"

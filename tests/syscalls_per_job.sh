#!/bin/sh
# System calls per job of `li3g-host work`, counted by `strace -f -c`, for each li3g-host build
# given (a release directory holding `li3g-host` and the example plugin; default the workspace's
# target/harness/main/release), each draining the same N queued no-op `Hello::run` jobs from its
# own gearmand. "No new system call per job" (docs/WATCHING.md) is this script's figure compared
# between two builds:
#
#   tests/syscalls_per_job.sh 5000 /path/to/old/release target/harness/main/release [--atomic]
#
# Needs strace, gearmand and libgearman-dev (for the C client in tests/peers).
set -eu
n=${1:-5000}; shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
extra=""
dirs=""
for a in "$@"; do case $a in --*) extra="$extra $a";; *) dirs="$dirs $a";; esac; done
[ -n "$dirs" ] || dirs=$root/target/harness/main/release
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/bench_client" "$root/tests/peers/bench_client.c" -lgearman
printf '| build | jobs | system calls | per job | sendto | recvfrom |\n|---|---:|---:|---:|---:|---:|\n'
for dir in $dirs; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    gearmand --listen=127.0.0.1 --port="$port" --threads=1 --log-file="$tmp/gearmand.log" --verbose=ERROR >/dev/null 2>&1 &
    g=$!
    i=0; until "$tmp/bench_client" 127.0.0.1 "$port" Hello::run '[]' bg 1 >/dev/null 2>&1; do
        i=$((i+1)); [ $i -lt 100 ] || { echo "gearmand did not start" >&2; exit 1; }; sleep 0.1
    done
    "$tmp/bench_client" 127.0.0.1 "$port" Hello::run '[]' bg $((n - 1)) >/dev/null
    # shellcheck disable=SC2086
    strace -f -c -o "$tmp/strace" "$dir/li3g-host" work --servers "127.0.0.1:$port" --plugins "$dir" --max-jobs "$n" $extra \
        >/dev/null 2>&1 || true
    kill "$g"; wait "$g" 2>/dev/null || true
    total=$(awk '$NF=="total"{print $4}' "$tmp/strace")
    call() { awk -v c="$1" '$NF==c{print $4}' "$tmp/strace"; }
    printf '| %s | %s | %s | %s | %s | %s |\n' "$dir" "$n" "$total" \
        "$(awk -v t="$total" -v n="$n" 'BEGIN{printf "%.2f", t/n}')" "$(call sendto)" "$(call recvfrom)"
done

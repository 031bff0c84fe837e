# Timing helpers the bench scripts share; sourced, not run. The caller
# defines `die` and `$work` (a scratch directory) first.

# measure RUNS CMD... → "median_ms max_rss_kb" over RUNS runs (GNU time);
# each run must exit 0.
measure() {
  local runs=$1; shift
  local times=() rss=0 i out r
  for ((i = 0; i < runs; i++)); do
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1 || die "failed: $*"
    out=$(tail -n 1 "$work/time")
    times+=("$(awk '{print $1 * 1000}' <<<"$out")")
    r=$(awk '{print $2}' <<<"$out")
    ((r > rss)) && rss=$r
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v rss="$rss" '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f %d\n", m, rss}'
}

# loop_ms RUNS CMD... → the mean wall time in ms of RUNS runs in a loop:
# GNU time counts wall time in 10 ms steps, too coarse for the fast ones.
loop_ms() {
  local runs=$1; shift
  local start end i
  start=$(date +%s%N)
  for ((i = 0; i < runs; i++)); do "$@" >/dev/null 2>&1 || die "failed: $*"; done
  end=$(date +%s%N)
  awk -v s="$start" -v e="$end" -v n="$runs" 'BEGIN {printf "%.1f", (e - s) / n / 1e6}'
}

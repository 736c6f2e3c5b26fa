#!/usr/bin/env bash
# Two lrf-flow binaries' fits timed alternately with `bench fit` (old, new, old, new, ...), so both see the
# same machine load; prints each configuration's median milliseconds per iteration and the ratio.
#
#   scripts/fit-bench-compare.sh OLD_BINARY NEW_BINARY SCENE [ROUNDS] [-- BENCH FIT OPTIONS]
#   scripts/fit-bench-compare.sh /tmp/lrf-old target/debug/lrf-flow ../shared/data/real/llff_fern 3 -- --images images_8
#
# Configurations: latent SH 3, latent SH 1, RGB SH 3. The scene's latents are cached in work/bench-fit.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,7p' "$0"
  exit 2
fi
old=$1 new=$2 scene=$3
shift 3
rounds=3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then rounds=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; fi
lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for config in "latent 3" "latent 1" "rgb 3"; do
  set -- $config "$@"
  space=$1 degree=$2
  shift 2
  for round in $(seq "$rounds"); do
    for side in old new; do
      binary=$old
      [ "$side" = new ] && binary=$new
      line=$("$binary" bench fit "$scene" --space "$space" --sh-degree "$degree" "$@" | grep '^fit-bench ')
      echo "$side $line" >> "$lines"
      echo "$side round $round: $line" >&2
    done
  done
done
# Median per (space, SH degree, side), then the ratio.
awk '
  { side = $1; key = ""; ms = ""; gaussians = "";
    for (i = 2; i <= NF; i++) { split($i, kv, "=");
      if (kv[1] == "space" || kv[1] == "sh_degree") key = key kv[1] "=" kv[2] " ";
      if (kv[1] == "ms_per_iteration") ms = kv[2];
      if (kv[1] == "gaussians") gaussians = kv[2] }
    n[key side]++; values[key side, n[key side]] = ms; keys[key] = 1; count[key side] = gaussians }
  function median(k,   m, i, j, t, a) {
    m = n[k]; for (i = 1; i <= m; i++) a[i] = values[k, i];
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
  END { printf "%-26s %10s %10s %8s %12s\n", "fit", "old ms/it", "new ms/it", "speed-up", "Gaussians";
    for (k in keys) { o = median(k "old"); w = median(k "new");
      printf "%-26s %10.2f %10.2f %7.2fx %12s\n", k, o, w, o / w, count[k "new"] } }
' "$lines"

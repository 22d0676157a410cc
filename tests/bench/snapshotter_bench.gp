# Plots snapshotter_bench's medians (--data DIR writes DIR/snapshotter-<driver>.dat:
# a header row with the two snapshotters' labels, then "op ours built-in" in ms):
# prepare, mount, remove (containerd's Snapshots API) and `ctr run --rm … true`,
# both side by side, log scale.
#   tests/vm/run --timeout 3000 -- build/bench/snapshotter_bench --driver devicemapper --data build/bench-out
#   gnuplot -e "dat='build/bench-out/snapshotter-devicemapper.dat'; out='docs/performance-containerd-devicemapper.svg'" \
#     tests/bench/snapshotter_bench.gp
if (!exists("dat")) dat = "build/bench-out/snapshotter-devicemapper.dat"
if (!exists("out")) out = "docs/performance-containerd-devicemapper.svg"
if (!exists("term")) term = "svg"
if (term eq "png") set terminal pngcairo size 700,360 font "sans,10" background rgb "white"; else set terminal svg size 700,360 dynamic font "sans,11" background rgb "white"
set output out
set title "containerd, one run, steps interleaved: median ms per step" noenhanced
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.7 border -1
set boxwidth 0.9
set logscale y
set yrange [1:200000]
set grid ytics
set ylabel "ms (log scale)"
set key top center horizontal noenhanced
plot dat using 2:xtic(1) title columnheader(2) lc 2, '' using 3 title columnheader(3) lc 1

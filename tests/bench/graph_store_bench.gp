# Plots the data file of graph_store_bench --data DIR:
#   gnuplot -e "dir='DIR'; out='docs/performance-graph-store.svg'" tests/bench/graph_store_bench.gp
if (!exists("dir")) dir = "build/bench-out"
if (!exists("out")) out = "docs/performance-graph-store.svg"
set terminal svg size 900,420 dynamic font "sans,11" background rgb "white"
set output out
set title "LayerStore on overlay (host, shared machine), ms (log scale); red: the issue's targets"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid ytics
set logscale y
set key top left
set xtics nomirror rotate by -20 font ",9"
set ylabel "ms"
# store.dat: "operation" median p90 target (0 = none) cpu_median
plot dir."/store.dat" using 2:xtic(1) title "wall median", '' using 3 title "wall p90", \
     '' using 5 title "CPU median", \
     '' using 0:($4 > 0 ? $4 : 1/0) with points pt 7 ps 1.2 lc rgb "red" title "target"

# Plots the data files of graph_driver_bench --data DIR:
#   gnuplot -e "dir='DIR'; out='docs/performance-graph-drivers.svg'" tests/bench/graph_driver_bench.gp
if (!exists("dir")) dir = "build/bench-out"
if (!exists("out")) out = "docs/performance-graph-drivers.svg"
set terminal svg size 900,380 dynamic font "sans,11" background rgb "white"
set output out
set multiplot layout 1,2 title "graph drivers side by side, same VM run (tests/vm/run, TCG)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid ytics
set key top left
set xtics nomirror
set title "container layer on a 10-layer image (median ms)"
set ylabel "ms"
plot dir."/ops.dat" using 2:xtic(1) title "create", '' using 3 title "mount (Get)", \
     '' using 4 title "umount (Put)", '' using 5 title "remove"
set title "fio in the container layer (MiB/s)"
set ylabel "MiB/s"
set logscale y
# fio.dat: a header row (job, then one column per driver), one row per job.
plot for [i=2:*] dir."/fio.dat" using i:xtic(1) title columnheader(i)
unset multiplot

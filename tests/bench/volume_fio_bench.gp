# Plots the data files of volume_fio_bench --data DIR:
#   gnuplot -e "dir='DIR'; out='docs/performance-volumes.svg'" tests/bench/volume_fio_bench.gp
if (!exists("dir")) dir = "build/bench-out"
if (!exists("out")) out = "docs/performance-volumes.svg"
set terminal svg size 1000,400 dynamic font "sans,11" background rgb "white"
set output out
set multiplot layout 1,2 title "fio: volumes vs container layers vs a bind mount, one VM run (tests/vm/run, TCG)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid ytics
set key top right font ",9"
set xtics nomirror
set title "MiB/s (median of the rounds)"
set ylabel "MiB/s"
set logscale y
plot for [i=2:*] dir."/volume_fio.dat" using i:xtic(1) title columnheader(i)
set title "ratio to the bind mount (> 1: faster)"
set ylabel "ratio"
plot for [i=2:*] dir."/volume_fio_ratio.dat" using i:xtic(1) title columnheader(i)
unset multiplot

# Plots docker_bench's table (its stdout saved as OUTPUT.md): each step's
# time on dmthin-docker-plugin relative to dockerd's built-in driver (the
# "plugin / built-in" row; below 1 the plugin is faster).
#   tests/vm/run -- build/bench/docker_bench --devicemapper --image IMAGE.tar > build/bench-out/docker_devicemapper.md
#   gnuplot -e "md='build/bench-out/docker_devicemapper.md'; out='docs/performance-docker-devicemapper.svg'" \
#     tests/bench/docker_bench.gp
if (!exists("md")) md = "build/bench-out/docker_devicemapper.md"
if (!exists("out")) out = "docs/performance-docker-devicemapper.svg"
# The ratio row: | plugin / built-in | load | run median | run total | rmi |
data = "< awk -F'|' '/plugin \\/ built-in/ {print \"\\\"docker load\\\"\", $3; print \"\\\"run, median\\\"\", $4; print \"\\\"runs, total\\\"\", $5; print \"\\\"docker rmi\\\"\", $6}' ".md
if (!exists("term")) term = "svg"
if (term eq "png") set terminal pngcairo size 700,340 font "sans,10" background rgb "white"; else set terminal svg size 700,340 dynamic font "sans,11" background rgb "white"
set output out
set title "dmthin-docker-plugin / dockerd built-in driver, same run, steps interleaved (below 1: plugin faster)" noenhanced
set style data histograms
set style fill solid 0.7 border -1
set boxwidth 0.6
set yrange [0:1.6]
set grid ytics
set ylabel "time ratio"
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2
plot data using 2:xtic(1) notitle lc 2

# Plots thinpool_ops_bench's table (its OUTPUT.md): median latency of
# libthinpool and of the bare ioctl sequence vs thin devices in the pool.
#   gnuplot -e "md='build/bench-out/thinpool_scale.md'; out='docs/performance-thinpool-scale.svg'" \
#     tests/bench/thinpool_ops_bench.gp
if (!exists("md")) md = "build/bench-out/thinpool_scale.md"
if (!exists("out")) out = "docs/performance-thinpool-scale.svg"
# Rows of the first table: | n | lib create | bare create | ratio | lib snap | bare snap | ratio | lib del | bare del | ratio |
# (cells "median / p90"); awk keeps n and the medians.
data = "< awk -F'|' '/\\*\\*/ {split($3,a,\" / \"); split($4,b,\" / \"); split($6,c,\" / \"); split($7,d,\" / \"); split($9,e,\" / \"); split($10,f,\" / \"); print $2, a[1], b[1], c[1], d[1], e[1], f[1]}' ".md
set terminal svg size 900,380 dynamic font "sans,11" background rgb "white"
set output out
set title "thin operations vs devices in the pool: libthinpool and the bare ioctl sequence (median ms, one VM run, TCG)"
set logscale x
set grid
set xlabel "thin devices in the pool"
set ylabel "ms"
set key top left
plot data using 1:2 with linespoints lw 2 lc 1 title "create: libthinpool", \
     data using 1:3 with linespoints dt 2 lc 1 title "create: bare", \
     data using 1:4 with linespoints lw 2 lc 2 title "snapshot: libthinpool", \
     data using 1:5 with linespoints dt 2 lc 2 title "snapshot: bare", \
     data using 1:6 with linespoints lw 2 lc 3 title "delete: libthinpool", \
     data using 1:7 with linespoints dt 2 lc 3 title "delete: bare"

# Plots graph_store_scale_bench's first table (its standard output saved to
# a file) against the layer count: the median cost of making one layer, the
# in-process store open + List, and `graphctl ls` / `graphctl check` as
# fresh processes (wall). One run per file; a second file (md2) is drawn
# beside the first with dashed lines (e.g. the host's overlay store and the
# vm's devicemapper one).
#   gnuplot -e "md='host.txt'; label='overlay, host'; md2='vm.txt'; label2='devicemapper, vm'; \
#               out='docs/performance-store-scale.svg'" tests/bench/graph_store_scale_bench.gp
if (!exists("md")) md = "build/bench-out/store_scale.txt"
if (!exists("label")) label = "store"
if (!exists("out")) out = "docs/performance-store-scale.svg"
if (!exists("label2")) label2 = "second store"
# Rows of the first table: | layers | make ms | open + List | ls wall / CPU | RSS | check wall / CPU | ...
# (the pool table's rows have no "+" in their third cell; progress lines
# repeat rows, kept once). awk prints:
# layers, make ms, open + List ms, ls wall ms, check wall ms.
rows(f) = "< awk -F'|' '{gsub(/,/, \"\", $2)} $4 ~ /\\+/ && $2+0 > 0 && !seen[$2+0]++ {split($4,o,\" \\\\+ \"); split($5,l,\" / \"); split($7,c,\" / \"); print $2, $3, o[1]+o[2], l[1], c[1]}' ".f
set terminal svg size 900,560 dynamic font "sans,11" background rgb "white"
set output out
set title "a layer store vs its size (median ms; one run per store, load in docs/performance.md)"
set logscale xy
set grid
set xlabel "layers in the store"
set ylabel "ms"
set key below maxrows 4 width 2
if (!exists("md2")) {
  plot rows(md) using 1:2 with linespoints lw 2 lc 1 title label.": make a layer", \
       rows(md) using 1:3 with linespoints lw 2 lc 2 title label.": open + List (in process)", \
       rows(md) using 1:4 with linespoints lw 2 lc 3 title label.": graphctl ls", \
       rows(md) using 1:5 with linespoints lw 2 lc 4 title label.": graphctl check"
} else {
  plot rows(md) using 1:2 with linespoints lw 2 lc 1 title label.": make a layer", \
       rows(md) using 1:3 with linespoints lw 2 lc 2 title label.": open + List (in process)", \
       rows(md) using 1:4 with linespoints lw 2 lc 3 title label.": graphctl ls", \
       rows(md) using 1:5 with linespoints lw 2 lc 4 title label.": graphctl check", \
       rows(md2) using 1:2 with linespoints dt 2 lc 1 title label2.": make a layer", \
       rows(md2) using 1:3 with linespoints dt 2 lc 2 title label2.": open + List (in process)", \
       rows(md2) using 1:4 with linespoints dt 2 lc 3 title label2.": graphctl ls", \
       rows(md2) using 1:5 with linespoints dt 2 lc 4 title label2.": graphctl check"
}

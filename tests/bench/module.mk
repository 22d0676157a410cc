# tests/bench/graph_store_scale_bench builds its layers with the tests' tar
# helper (libarchive, already in LDLIBS) and runs this build's graphctl.
STORE_SCALE_BENCH_SUPPORT := $(BUILD)/obj/tests/support/graph_tar.o
$(BUILD)/bench/graph_store_scale_bench: $(STORE_SCALE_BENCH_SUPPORT) | $(BUILD)/bin/graphctl
$(BUILD)/bench/graph_store_scale_bench: LDLIBS += $(STORE_SCALE_BENCH_SUPPORT) $(call pkglibs,libarchive)

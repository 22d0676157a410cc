# tests/bench/graph_store_scale_bench builds its layers with the tests' tar
# helper (libarchive, already in LDLIBS) and runs this build's graphctl
# (and dmthin, for a devicemapper store).
STORE_SCALE_BENCH_SUPPORT := $(BUILD)/obj/tests/support/graph_tar.o
$(BUILD)/bench/graph_store_scale_bench: $(STORE_SCALE_BENCH_SUPPORT) | $(BUILD)/bin/graphctl $(BUILD)/bin/dmthin
$(BUILD)/bench/graph_store_scale_bench: LDLIBS += $(STORE_SCALE_BENCH_SUPPORT) $(call pkglibs,libarchive)

# tests/bench/volume_fio_bench: its scratch ext4 (loop) and fio with the
# tests' helpers (linked before the libraries).
VOLUME_FIO_BENCH_SUPPORT := $(patsubst %,$(BUILD)/obj/tests/support/%.o,fio graph_conformance graph_tar process scratch_dir)
$(BUILD)/bench/volume_fio_bench: $(VOLUME_FIO_BENCH_SUPPORT)
$(BUILD)/bench/volume_fio_bench: BENCH_C_OBJS += $(VOLUME_FIO_BENCH_SUPPORT)
$(BUILD)/bench/volume_fio_bench: LDLIBS += $(call pkglibs,libarchive gtest)

# tests/bench/graph_driver_bench runs fio with the same helper.
GRAPH_DRIVER_BENCH_SUPPORT := $(patsubst %,$(BUILD)/obj/tests/support/%.o,fio process)
$(BUILD)/bench/graph_driver_bench: $(GRAPH_DRIVER_BENCH_SUPPORT)
$(BUILD)/bench/graph_driver_bench: BENCH_C_OBJS += $(GRAPH_DRIVER_BENCH_SUPPORT)

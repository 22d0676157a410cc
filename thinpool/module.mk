# thinpool: pools on sparse files and loop devices, registry, thin devices.
LIBRARIES += thinpool
thinpool_SRCS := $(sort $(wildcard thinpool/*.cc))
thinpool_DEPS := dm dmbase
# filesystem.cc reports libext2fs errors with com_err's error_message().
LDLIBS += $(call pkglibs,com_err)

# Benchmarks (tests/bench/thinpool_*_bench.cc → $(BUILD)/bench/thinpool_*_bench).
THINPOOL_BENCH_SRCS := $(sort $(wildcard tests/bench/thinpool_*_bench.cc))
THINPOOL_BENCH_BINS := $(patsubst tests/bench/%.cc,$(BUILD)/bench/%,$(THINPOOL_BENCH_SRCS))
BENCH_BINS += $(THINPOOL_BENCH_BINS)
$(THINPOOL_BENCH_BINS): $(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(BUILD)/lib/libthinpool.a $(BUILD)/lib/libdm.a $(BUILD)/lib/libdmbase.a
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) -o $@ $< $(BUILD)/lib/libthinpool.a $(BUILD)/lib/libdm.a $(BUILD)/lib/libdmbase.a $(LDLIBS)

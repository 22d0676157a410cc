# libdm: the device-mapper ioctl binding (no libdevmapper, no dmsetup).
LIBRARIES += dm
dm_SRCS := $(sort $(wildcard libdm/*.cc))
dm_DEPS := dmbase
HEADERS_dm := $(wildcard libdm/include/libdm/*.h)

# Benchmark: libdm vs the bare ioctl (C) vs the dmsetup program (vm tier).
LIBDM_BENCH := $(BUILD)/bench/libdm_ops_bench
BENCH_BINS += $(LIBDM_BENCH)
$(LIBDM_BENCH): $(BUILD)/obj/tests/bench/libdm_ops_bench.o $(BUILD)/obj/tests/bench/libdm_bare_ioctl.o \
                $(BUILD)/lib/libdm.a $(BUILD)/lib/libdmbase.a
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

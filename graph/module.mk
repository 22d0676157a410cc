# graph: libgraph — layer drivers, layer tarballs, layer store, C ABI.
# Sources are picked up by wildcard so each part can add files freely.
LIBRARIES += graph
graph_SRCS := $(sort $(wildcard graph/*.cc graph/*/*.cc))
graph_DEPS := dmbase

# Benchmarks (tests/bench/graph_*_bench.cc → $(BUILD)/bench/graph_*_bench).
GRAPH_BENCH_SRCS := $(sort $(wildcard tests/bench/graph_*_bench.cc))
GRAPH_BENCH_BINS := $(patsubst tests/bench/%.cc,$(BUILD)/bench/%,$(GRAPH_BENCH_SRCS))
BENCH_BINS += $(GRAPH_BENCH_BINS)
$(GRAPH_BENCH_BINS): $(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(BUILD)/lib/libgraph.a $(BUILD)/lib/libdmbase.a
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) -o $@ $< $(BUILD)/lib/libgraph.a $(BUILD)/lib/libdmbase.a $(LDLIBS)

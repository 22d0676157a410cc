# graph/capi: the C test program for libgraph's C ABI (graph/include/graph.h),
# compiled as C11 and linked against the shared library like a runtime would;
# tests/host/graph_capi_test runs it.
GRAPH_CAPI_C := $(BUILD)/tests/host/graph_capi_c
EXTRA_TEST_BINS += $(GRAPH_CAPI_C)

$(GRAPH_CAPI_C): tests/host/graph_capi_c.c graph/include/graph.h $(BUILD)/lib/libgraph.so $(BUILD)/lib/libdmbase.so
	@mkdir -p $(@D)
	$(CC) -std=c11 -Wall -Wextra -Werror -pedantic $(OPT) $(SANFLAGS) -Igraph/include \
	  -o $@ $< -L$(BUILD)/lib -lgraph -Wl,--disable-new-dtags,-rpath,$(abspath $(BUILD)/lib) \
	  -Wl,-rpath-link,$(abspath $(BUILD)/lib)

# The host test that runs it needs it built first.
$(BUILD)/tests/host/graph_capi_test: | $(GRAPH_CAPI_C)

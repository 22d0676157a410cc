# library_abi_test reads the shared libraries' exports (nm -D).
$(BUILD)/tests/unit/library_abi_test: | $(BUILD)/lib/libgraph.so $(BUILD)/lib/libvolume.so

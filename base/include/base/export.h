// What dmthin's shared libraries export. They are built with
// -fvisibility=hidden: only declarations between DMTHIN_API_BEGIN and
// DMTHIN_API_END — the documented C++ API, the public headers under each
// library's include/ directory — are visible to other objects (graph.h
// marks the C ABI itself). Everything else, the libraries' own helpers and
// the absl and std code they instantiate, stays inside the .so. The
// soname policy: docs/graph.md, "The C ABI and its soname policy".
#ifndef DMTHIN_BASE_EXPORT_H_
#define DMTHIN_BASE_EXPORT_H_

#if defined(__GNUC__)
#define DMTHIN_API_BEGIN _Pragma("GCC visibility push(default)")
#define DMTHIN_API_END _Pragma("GCC visibility pop")
#else
#define DMTHIN_API_BEGIN
#define DMTHIN_API_END
#endif

#endif  // DMTHIN_BASE_EXPORT_H_

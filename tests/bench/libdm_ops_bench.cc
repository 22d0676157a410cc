// libdm against the bare ioctl (a minimal C loop) and against the dmsetup
// program doing the same steps (as containerd's devmapper snapshotter does),
// in one process, on one thin-pool over loop devices. Needs device-mapper:
// run inside the VM:
//   tests/vm/run -- build/bench/libdm_ops_bench [--rounds N]
// Prints a markdown table of per-operation medians.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "libdm/control.h"
#include "tests/bench/libdm_bare_ioctl.h"

extern char** environ;

namespace {

double CpuUs() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

double NowUs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "libdm_ops_bench: %s\n", what.c_str());
  std::exit(1);
}

void Check(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Die(absl::StrCat(what, ": ", s.ToString()));
}
void CheckBare(int r, const std::string& what) {
  if (r < 0) Die(absl::StrCat(what, ": ", std::strerror(-r)));
}

// Runs argv with stdio on /dev/null; returns the exit status.
int Exec(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int r = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (r != 0) Die(absl::StrCat("spawn ", argv[0], ": ", std::strerror(r)));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}
void MustExec(const std::vector<std::string>& argv) {
  if (Exec(argv) != 0) {
    std::string cmd;
    for (const auto& a : argv) absl::StrAppend(&cmd, a, " ");
    Die(absl::StrCat("failed: ", cmd));
  }
}

// Runs argv and returns its stdout, trailing whitespace trimmed.
std::string Capture(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) Die("pipe");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  pid_t pid;
  int r = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  if (r != 0) Die(absl::StrCat("spawn ", argv[0], ": ", std::strerror(r)));
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Method {
  const char* name;
  int reps;  // per round
  std::function<void(int i)> step;
  std::vector<double> samples;      // wall time
  std::vector<double> cpu_samples;  // this thread's CPU time (user + kernel)
};

struct Op {
  std::string name;
  std::vector<Method> methods;  // bare, libdm, libdm+nodes, dmsetup
  std::function<void()> after_round;  // untimed cleanup
};

// libdm's own user-space work per call, without the kernel: what it adds
// to an ioctl. Encode a thin TABLE_LOAD from a typed Table; decode a
// thin-pool STATUS reply into a typed ThinPoolStatus; decode a 3-device list.
void CpuOnly() {
  constexpr int kIters = 200000;
  dm::Table table = dm::Table::Single(dm::Sectors(2097152),
                                      dm::ThinTarget{{253, 0}, 1, std::nullopt});
  dm::wire::Buffer buf;
  double t0 = NowUs();
  for (int i = 0; i < kIters; ++i) {
    dm::wire::Request req;
    req.command = dm::Command::kTableLoad;
    req.name = "bench-device-name";
    if (!table.Validate().ok()) Die("validate");
    for (const dm::Target& t : table.targets())
      req.targets.push_back({t.start.value(), t.length.value(), t.type(), t.FormatParams()});
    if (!dm::wire::Encode(req, {4, 0, 0}, 0, &buf).ok()) Die("encode");
  }
  double load_ns = (NowUs() - t0) * 1000 / kIters;

  // A STATUS reply as the kernel writes it.
  const std::string status = "5 1655/16384 530/16384 - rw discard_passdown queue_if_no_space - 1024 ";
  dm::wire::Buffer reply(16384);
  std::memset(reply.data(), 0, 16384);
  struct dm_ioctl* h = reply.header();
  h->version[0] = 4;
  h->version[1] = 47;
  h->data_start = 312;
  h->target_count = 1;
  struct dm_target_spec spec = {};
  spec.length = 2097152;
  std::strcpy(spec.target_type, "thin-pool");
  std::memcpy(reply.data() + 312, &spec, sizeof spec);
  std::memcpy(reply.data() + 312 + sizeof spec, status.c_str(), status.size() + 1);
  h->data_size = static_cast<uint32_t>(312 + sizeof spec + status.size() + 1);
  t0 = NowUs();
  for (int i = 0; i < kIters; ++i) {
    auto r = dm::wire::ParseResponse(reply.bytes());
    auto lines = dm::wire::DecodeTargets(*r);
    auto st = dm::ParseThinPoolStatus((*lines)[0].params);
    if (!st.ok()) Die("parse");
  }
  double status_ns = (NowUs() - t0) * 1000 / kIters;

  std::memset(reply.data() + 312, 0, 1024);
  size_t at = 312;
  for (int d = 0; d < 3; ++d) {
    std::string name = absl::StrCat("device-", d);
    uint64_t dev = dm::DevNum{253, static_cast<uint32_t>(d)}.ToKernel();
    std::memcpy(reply.data() + at, &dev, 8);
    std::memcpy(reply.data() + at + 12, name.c_str(), name.size() + 1);
    size_t next = dm::wire::Align8(at + 12 + name.size() + 1) + 8;
    uint32_t rel = d < 2 ? static_cast<uint32_t>(next - at) : 0;
    std::memcpy(reply.data() + at + 8, &rel, 4);
    uint32_t flags = DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID;
    std::memcpy(reply.data() + next - 4, &flags, 4);
    at = next;
  }
  h->data_size = static_cast<uint32_t>(at);
  t0 = NowUs();
  for (int i = 0; i < kIters; ++i) {
    auto r = dm::wire::ParseResponse(reply.bytes());
    auto list = dm::wire::DecodeDeviceList(*r);
    if (!list.ok() || list->size() != 3) Die("list");
  }
  double list_ns = (NowUs() - t0) * 1000 / kIters;
  std::printf("\nlibdm user-space work per call, no kernel (ns, %d iterations):\n\n", kIters);
  std::printf("| step | ns |\n|---|---:|\n");
  std::printf("| encode TABLE_LOAD from a typed thin Table | %.0f |\n", load_ns);
  std::printf("| decode STATUS reply into ThinPoolStatus | %.0f |\n", status_ns);
  std::printf("| decode LIST_DEVICES reply (3 devices) | %.0f |\n", list_ns);
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  bool cpu_only = false;
  std::string only;
  bool bare_no_cookie = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (a == "--cpu-only") cpu_only = true;
    else if (a == "--only" && i + 1 < argc) only = argv[++i];  // substring of op names
    else if (a == "--bare-no-cookie") bare_no_cookie = true;
    else Die("usage: libdm_ops_bench [--rounds N] [--only SUBSTRING] [--bare-no-cookie] [--cpu-only]");
  }
  // The same steps: the bare loop sends the udev cookie libdm sends on
  // resume/remove (the kernel then adds DM_COOKIE to its uevent).
  if (!bare_no_cookie) bare_cookie = dm::udev::Cookie(dm::udev::kPrimarySource);
  if (cpu_only) {
    CpuOnly();
    return 0;
  }
  if (access("/dev/mapper/control", F_OK) != 0) Die("no /dev/mapper/control: run inside tests/vm/run");

  dm::ControlOptions quiet;
  quiet.node_mode = dm::NodeMode::kNone;
  auto opened = dm::Control::Open(quiet);
  if (!opened.ok()) Die(opened.status().ToString());
  std::unique_ptr<dm::Control> dm = *std::move(opened);
  dm::ControlOptions with_nodes;
  with_nodes.node_mode = dm::NodeMode::kManual;
  std::unique_ptr<dm::Control> dmn = *dm::Control::Open(with_nodes);
  int fd = bare_open();
  if (fd < 0) Die("open control");

  // A thin-pool over two loop devices on /tmp (guest tmpfs).
  std::string tag = absl::StrCat("lbench", getpid());
  std::string dir = "/tmp/" + tag;
  mkdir(dir.c_str(), 0700);
  auto make_loop = [&](const std::string& f, off_t size) {
    std::string path = dir + "/" + f;
    int file = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (file < 0 || ftruncate(file, size) != 0) Die("create " + path);
    if (f == "meta") {
      char zero[4096] = {};
      if (pwrite(file, zero, sizeof zero, 0) != 4096) Die("zero meta");
    }
    close(file);
    std::string dev = Capture({"losetup", "--find", "--show", path});
    if (dev.empty()) Die("losetup " + path);
    return dev;
  };
  std::string meta_loop = make_loop("meta", 64 << 20);
  std::string data_loop = make_loop("data", off_t{1} << 30);
  dm::Name pool = dm::Name::OrDie(tag + "-pool");
  dm::Table pool_table = dm::Table::Single(
      dm::Sectors((off_t{1} << 30) / 512),
      dm::ThinPoolTarget{*dm::DevNum::FromPath(meta_loop), *dm::DevNum::FromPath(data_loop),
                         dm::Sectors(128), dm::DataBlocks(0)});
  auto pool_info = dm->CreateDevice(pool, pool_table);
  Check(pool_info.status(), "create pool");
  const std::string pool_dev = pool_info->dev.ToString();
  Check(dm->SendThinPoolMessage(pool, dm::thin_msg::CreateThin{1}), "create_thin 1");
  Check(dm->SendThinPoolMessage(pool, dm::thin_msg::CreateThin{2}), "create_thin 2");
  const uint64_t thin_len = 2097152;
  const std::string thin_params = absl::StrCat(pool_dev, " 1");
  dm::Table thin_table = dm::Table::Single(
      dm::Sectors(thin_len), dm::ThinTarget{pool_info->dev, 1, std::nullopt});
  dm::Name sr = dm::Name::OrDie(tag + "-sr");
  Check(dm->CreateDevice(sr, dm::Table::Single(dm::Sectors(thin_len),
                                               dm::ThinTarget{pool_info->dev, 2, std::nullopt}))
            .status(),
        "activate sr");

  int counter = 0;
  auto cyc_name = [&] { return absl::StrCat(tag, "-c", counter++); };
  uint32_t next_id = 100;
  std::vector<uint32_t> made_ids;

  std::vector<Op> ops;
  ops.push_back(Op{
      "version (DM_VERSION)",
      {{"bare", 100, [&](int) { CheckBare(bare_version(fd), "bare version"); }, {}, {}},
       {"libdm", 100, [&](int) { Check(dm->QueryVersion().status(), "libdm version"); }, {}, {}},
       {"libdm+nodes", 0, nullptr, {}, {}},
       {"dmsetup", 4, [&](int) { MustExec({"dmsetup", "version"}); }, {}, {}}},
      nullptr});
  ops.push_back(Op{
      "create+load+resume+remove (thin)",
      {{"bare", 10,
        [&](int) {
          std::string n = cyc_name();
          CheckBare(bare_create(fd, n.c_str()), "bare create");
          CheckBare(bare_load(fd, n.c_str(), thin_len, "thin", thin_params.c_str()), "bare load");
          CheckBare(bare_resume(fd, n.c_str()), "bare resume");
          CheckBare(bare_remove(fd, n.c_str()), "bare remove");
        }, {}, {}},
       {"libdm", 10,
        [&](int) {
          dm::Name n = dm::Name::OrDie(cyc_name());
          Check(dm->CreateDevice(n, thin_table).status(), "libdm create");
          Check(dm->Remove(n).status(), "libdm remove");
        }, {}, {}},
       {"libdm+nodes", 10,
        [&](int) {
          dm::Name n = dm::Name::OrDie(cyc_name());
          Check(dmn->CreateDevice(n, thin_table).status(), "libdm create");
          Check(dmn->Remove(n).status(), "libdm remove");
        }, {}, {}},
       {"dmsetup", 2,
        [&](int) {
          std::string n = cyc_name();
          MustExec({"dmsetup", "create", n, "--table",
                    absl::StrCat("0 ", thin_len, " thin ", thin_params)});
          MustExec({"dmsetup", "remove", n});
        }, {}, {}}},
      nullptr});
  auto del_ids = [&] {
    for (uint32_t id : made_ids)
      Check(dm->SendThinPoolMessage(pool, dm::thin_msg::Delete{id}), "delete");
    made_ids.clear();
  };
  ops.push_back(Op{
      "create_thin message",
      {{"bare", 20,
        [&](int) {
          uint32_t id = next_id++;
          made_ids.push_back(id);
          CheckBare(bare_message(fd, pool.str().c_str(), absl::StrCat("create_thin ", id).c_str()),
                    "bare message");
        }, {}, {}},
       {"libdm", 20,
        [&](int) {
          uint32_t id = next_id++;
          made_ids.push_back(id);
          Check(dm->SendThinPoolMessage(pool, dm::thin_msg::CreateThin{id}), "libdm message");
        }, {}, {}},
       {"libdm+nodes", 0, nullptr, {}, {}},
       {"dmsetup", 4,
        [&](int) {
          uint32_t id = next_id++;
          made_ids.push_back(id);
          MustExec({"dmsetup", "message", pool.str(), "0", absl::StrCat("create_thin ", id)});
        }, {}, {}}},
      del_ids});
  ops.push_back(Op{
      "suspend+resume",
      {{"bare", 20,
        [&](int) {
          CheckBare(bare_suspend(fd, sr.str().c_str()), "bare suspend");
          CheckBare(bare_resume(fd, sr.str().c_str()), "bare resume");
        }, {}, {}},
       {"libdm", 20,
        [&](int) {
          Check(dm->Suspend(sr).status(), "libdm suspend");
          Check(dm->Resume(sr).status(), "libdm resume");
        }, {}, {}},
       {"libdm+nodes", 20,
        [&](int) {
          Check(dmn->Suspend(sr).status(), "libdm suspend");
          Check(dmn->Resume(sr).status(), "libdm resume");
        }, {}, {}},
       {"dmsetup", 2,
        [&](int) {
          MustExec({"dmsetup", "suspend", sr.str()});
          MustExec({"dmsetup", "resume", sr.str()});
        }, {}, {}}},
      nullptr});
  ops.push_back(Op{
      "status (thin-pool, noflush, parsed)",
      {{"bare", 60, [&](int) { CheckBare(bare_status(fd, pool.str().c_str()), "bare status"); }, {}, {}},
       {"libdm", 60,
        [&](int) { Check(dm->GetThinPoolStatus(pool, /*noflush=*/true).status(), "libdm status"); },
        {}, {}},
       {"libdm+nodes", 0, nullptr, {}, {}},
       {"dmsetup", 4, [&](int) { MustExec({"dmsetup", "status", "--noflush", pool.str()}); }, {}, {}}},
      nullptr});
  ops.push_back(Op{
      "list devices",
      {{"bare", 60, [&](int) { CheckBare(bare_list(fd), "bare list"); }, {}, {}},
       {"libdm", 60, [&](int) { Check(dm->List().status(), "libdm list"); }, {}, {}},
       {"libdm+nodes", 0, nullptr, {}, {}},
       {"dmsetup", 4, [&](int) { MustExec({"dmsetup", "ls"}); }, {}, {}}},
      nullptr});

  if (!only.empty())
    ops.erase(std::remove_if(ops.begin(), ops.end(),
                             [&](const Op& op) { return op.name.find(only) == std::string::npos; }),
              ops.end());
  // Warm up each method once (page cache, module code), then interleave
  // rounds so drift hits every method alike.
  for (Op& op : ops)
    for (Method& m : op.methods)
      if (m.step) m.step(-1);
  // Phase 1: bare ioctl and libdm, interleaved sample by sample so load and
  // drift hit both alike. Phase 2: the dmsetup program (its exec churns the
  // emulator's translation cache, which would otherwise tax whatever runs
  // next).
  for (int phase = 0; phase < 2; ++phase) {
    for (Op& op : ops) {
      if (op.after_round) op.after_round();
      for (int r = 0; r < rounds; ++r) {
        int most = 0;
        for (const Method& m : op.methods) most = std::max(most, m.reps);
        for (int i = 0; i < most; ++i) {
          // Rotate which method goes first, so none always follows another.
          for (size_t j = 0; j < op.methods.size(); ++j) {
            size_t k = (j + static_cast<size_t>(i)) % op.methods.size();
            Method& m = op.methods[k];
            if (i >= m.reps || (phase == 0) != (k < 3)) continue;
            double c0 = CpuUs();
            double t0 = NowUs();
            m.step(i);
            m.samples.push_back(NowUs() - t0);
            m.cpu_samples.push_back(CpuUs() - c0);
          }
        }
        if (op.after_round) op.after_round();
      }
    }
  }

  // Clean up.
  Check(dm->Remove(sr).status(), "remove sr");
  Check(dm->Remove(pool).status(), "remove pool");
  MustExec({"losetup", "-d", meta_loop});
  MustExec({"losetup", "-d", data_loop});
  unlink((dir + "/meta").c_str());
  unlink((dir + "/data").c_str());
  rmdir(dir.c_str());

  std::printf("Median per operation, µs (samples per method in brackets; CPU = this thread's user+kernel CPU time, which leaves out waits); "
              "dm interface %s, %s.\n\n",
              dm->version().ToString().c_str(), Capture({"uname", "-r"}).c_str());
  std::printf("| operation | bare ioctl (C) | libdm | libdm vs bare | CPU: bare | CPU: libdm | "
              "CPU: libdm vs bare | libdm + /dev/mapper nodes | dmsetup program | dmsetup / libdm |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Op& op : ops) {
    double bare = Median(op.methods[0].samples), lib = Median(op.methods[1].samples);
    double nodes = Median(op.methods[2].samples), prog = Median(op.methods[3].samples);
    double bare_cpu = Median(op.methods[0].cpu_samples), lib_cpu = Median(op.methods[1].cpu_samples);
    std::string nodes_cell =
        op.methods[2].samples.empty()
            ? "—"
            : absl::StrFormat("%.0f [%d]", nodes, op.methods[2].samples.size());
    std::printf("| %s | %.0f [%zu] | %.0f [%zu] | %+.1f%% | %.0f | %.0f | %+.1f%% | %s | %.0f [%zu] | %.1f× |\n",
                op.name.c_str(), bare, op.methods[0].samples.size(), lib,
                op.methods[1].samples.size(), (lib / bare - 1) * 100, bare_cpu, lib_cpu,
                (lib_cpu / bare_cpu - 1) * 100, nodes_cell.c_str(), prog,
                op.methods[3].samples.size(), prog / lib);
  }
  CpuOnly();
  return 0;
}

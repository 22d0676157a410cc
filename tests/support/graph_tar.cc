#include "tests/support/graph_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "graph/digest.h"

namespace testsupport {
namespace {

la_ssize_t AppendCb(struct archive*, void* ctx, const void* buf, size_t len) {
  static_cast<std::string*>(ctx)->append(static_cast<const char*>(buf), len);
  return static_cast<la_ssize_t>(len);
}

void Check(struct archive* a, int r, const char* what) {
  if (r < ARCHIVE_WARN) {
    throw std::runtime_error(std::string(what) + ": " +
                             (archive_error_string(a) ? archive_error_string(a) : "?"));
  }
}

}  // namespace

std::string BuildTar(const std::vector<TarEntry>& entries, TarFilter filter) {
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax(a);
  if (filter == TarFilter::kGzip) archive_write_add_filter_gzip(a);
  if (filter == TarFilter::kZstd) archive_write_add_filter_zstd(a);
  archive_write_set_bytes_in_last_block(a, 1);
  Check(a, archive_write_open(a, &out, nullptr, AppendCb, nullptr), "open");
  for (const TarEntry& t : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, t.path.c_str());
    archive_entry_set_perm(e, t.mode);
    archive_entry_set_uid(e, t.uid);
    archive_entry_set_gid(e, t.gid);
    archive_entry_set_mtime(e, t.mtime, 0);
    for (const auto& [k, v] : t.xattrs) archive_entry_xattr_add_entry(e, k.c_str(), v.data(), v.size());
    switch (t.type) {
      case '0':
        archive_entry_set_filetype(e, AE_IFREG);
        if (t.sparse_size >= 0) {
          archive_entry_set_size(e, t.sparse_size);
          for (auto [off, len] : t.extents) archive_entry_sparse_add_entry(e, off, len);
        } else {
          archive_entry_set_size(e, static_cast<la_int64_t>(t.data.size()));
        }
        break;
      case '5': archive_entry_set_filetype(e, AE_IFDIR); break;
      case '2':
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_symlink(e, t.link.c_str());
        break;
      case '1':
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_hardlink(e, t.link.c_str());
        archive_entry_set_size(e, 0);
        break;
      case '3': archive_entry_set_filetype(e, AE_IFCHR); archive_entry_set_rdevmajor(e, t.major); archive_entry_set_rdevminor(e, t.minor); break;
      case '4': archive_entry_set_filetype(e, AE_IFBLK); archive_entry_set_rdevmajor(e, t.major); archive_entry_set_rdevminor(e, t.minor); break;
      case '6': archive_entry_set_filetype(e, AE_IFIFO); break;
      default: throw std::runtime_error("bad type");
    }
    Check(a, archive_write_header(a, e), "header");
    if (t.type == '0' && !t.data.empty()) {
      std::string logical = t.data;
      if (t.sparse_size >= 0) {
        // libarchive's pax writer takes the whole logical content and
        // drops the holes named by the sparse map.
        logical.assign(static_cast<size_t>(t.sparse_size), '\0');
        size_t pos = 0;
        for (auto [off, len] : t.extents) {
          logical.replace(static_cast<size_t>(off), static_cast<size_t>(len), t.data.substr(pos, static_cast<size_t>(len)));
          pos += static_cast<size_t>(len);
        }
      }
      if (archive_write_data(a, logical.data(), logical.size()) < 0) Check(a, ARCHIVE_FATAL, "data");
    }
    archive_entry_free(e);
  }
  Check(a, archive_write_close(a), "close");
  archive_write_free(a);
  return out;
}

std::string RawHeader(const std::string& name, char typeflag, const std::string& size_field,
                      const std::string& linkname) {
  std::string h(512, '\0');
  std::memcpy(&h[0], name.data(), std::min<size_t>(name.size(), 100));
  std::memcpy(&h[100], "0000644", 7);
  std::memcpy(&h[108], "0000000", 7);
  std::memcpy(&h[116], "0000000", 7);
  std::memcpy(&h[124], size_field.data(), std::min<size_t>(size_field.size(), 11));
  std::memcpy(&h[136], "14531206400", 11);
  h[156] = typeflag;
  std::memcpy(&h[157], linkname.data(), std::min<size_t>(linkname.size(), 100));
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  char chk[8];
  std::snprintf(chk, sizeof chk, "%06o", sum);
  std::memcpy(&h[148], chk, 7);
  h[154] = '\0';
  h[155] = ' ';
  return h;
}

std::string RawPaxHeader(const std::map<std::string, std::string>& records) {
  std::string body;
  for (const auto& [k, v] : records) {
    std::string rec = " " + k + "=" + v + "\n";
    size_t len = rec.size();
    // The length prefix counts itself.
    size_t total = len + std::to_string(len).size();
    if (std::to_string(total).size() != std::to_string(len).size()) ++total;
    body += std::to_string(total) + rec;
  }
  char size[12];
  std::snprintf(size, sizeof size, "%011o", static_cast<unsigned>(body.size()));
  return RawHeader("PaxHeaders/x", 'x', size) + Pad512(body);
}

std::vector<std::pair<std::string, std::string>> TarEntryNames(const std::string& tar) {
  std::vector<std::pair<std::string, std::string>> out;
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  archive_read_open_memory(a, tar.data(), tar.size());
  struct archive_entry* e;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    const char* h = archive_entry_hardlink(e);
    out.emplace_back(archive_entry_pathname(e), h ? h : "");
  }
  archive_read_free(a);
  return out;
}

std::string TarEnd() { return std::string(1024, '\0'); }

std::string Pad512(const std::string& data) {
  std::string out = data;
  out.resize((data.size() + 511) / 512 * 512, '\0');
  return out;
}

std::string ReadFileOrEmpty(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  if (ok) *ok = static_cast<bool>(in);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFileOrDie(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path);
  out << data;
}

namespace {
std::string Xattrs(const std::string& path) {
  std::vector<char> names(65536);
  ssize_t n = ::llistxattr(path.c_str(), names.data(), names.size());
  if (n <= 0) return "";
  std::vector<std::string> attrs;
  for (const char* p = names.data(); p < names.data() + n; p += std::strlen(p) + 1) {
    std::vector<char> value(65536);
    ssize_t v = ::lgetxattr(path.c_str(), p, value.data(), value.size());
    attrs.push_back(std::string(p) + "=" + (v >= 0 ? std::string(value.data(), static_cast<size_t>(v)) : "?"));
  }
  std::sort(attrs.begin(), attrs.end());
  std::string out;
  for (const std::string& a : attrs) out += " xattr " + a;
  return out;
}

void Walk(const std::string& dir, const std::string& rel, std::vector<std::string>& out, bool links_and_xattrs) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    std::string p = dir + "/" + n;
    std::string r = rel.empty() ? n : rel + "/" + n;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) continue;
    // A directory's st_size depends on the order its entries were created.
    std::string line = r + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_uid) + ":" +
                       std::to_string(st.st_gid) + " " +
                       (S_ISDIR(st.st_mode) ? std::string("-") : std::to_string(st.st_size));
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) line += " dev " + std::to_string(st.st_rdev);
    if (S_ISREG(st.st_mode)) line += " " + graph::Sha256Digest(ReadFileOrEmpty(p));
    if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      ssize_t n2 = ::readlink(p.c_str(), buf, sizeof buf);
      if (n2 > 0) line += " -> " + std::string(buf, static_cast<size_t>(n2));
    }
    if (links_and_xattrs) {
      if (!S_ISDIR(st.st_mode)) line += " nlink " + std::to_string(st.st_nlink);
      line += Xattrs(p);
    }
    out.push_back(line);
    if (S_ISDIR(st.st_mode)) Walk(p, r, out, links_and_xattrs);
  }
}
}  // namespace

std::string FirstDifference(const std::string& a, const std::string& b) {
  std::istringstream x(a), y(b);
  std::string la, lb;
  for (int n = 1;; ++n) {
    bool ea = !std::getline(x, la), eb = !std::getline(y, lb);
    if (ea && eb) return "";
    if (ea || eb || la != lb) {
      return "line " + std::to_string(n) + ": \"" + (ea ? "<end>" : la) + "\" vs \"" + (eb ? "<end>" : lb) + "\"";
    }
  }
}

std::string TreeFingerprint(const std::string& dir, bool links_and_xattrs) {
  std::vector<std::string> lines;
  Walk(dir, "", lines, links_and_xattrs);
  std::string out;
  for (const std::string& l : lines) out += l + "\n";
  return out;
}

}  // namespace testsupport

// Drives an NBD server through libnbd's C API: every command and flag fleece
// offers, and the option-haggling calls, with each result checked.
//
//   libnbd_client SOCKET RW_EXPORT RW_FILE RO_EXPORT RO_FILE
//
// RW_FILE/RO_FILE are the files behind the exports, read directly to compare
// bytes. RW_EXPORT must start as a copy of make_image's layout (lib.sh): in
// 1 MiB chunks, chunk 3 is a hole and chunk 0 holds data in its first
// 960 KiB. Exits 0 when every check passed; prints each failure.
#include <libnbd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

int failures = 0;

#define CHECK(cond, ...)                                               \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "FAIL line %d: %s: ", __LINE__, #cond);     \
      std::fprintf(stderr, __VA_ARGS__);                               \
      std::fprintf(stderr, " [libnbd: %s]\n", nbd_get_error() ? nbd_get_error() : ""); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

constexpr uint64_t MiB = 1 << 20;

std::vector<char> read_file(const std::string& path, uint64_t off, size_t len) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> buf(len);
  f.seekg(static_cast<std::streamoff>(off));
  f.read(buf.data(), static_cast<std::streamsize>(len));
  return buf;
}

std::vector<char> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<char> v(n);
  for (auto& c : v) c = static_cast<char>(rng());
  return v;
}

bool all_zero(const std::vector<char>& v) {
  for (char c : v)
    if (c) return false;
  return true;
}

struct Handle {
  nbd_handle* h = nbd_create();
  ~Handle() { nbd_close(h); }
  operator nbd_handle*() const { return h; }
};

// ---- callbacks -------------------------------------------------------------

int collect_string(void* user, const char* name, const char* /*description*/) {
  static_cast<std::vector<std::string>*>(user)->push_back(name);
  return 0;
}

int collect_context(void* user, const char* name) {
  static_cast<std::vector<std::string>*>(user)->push_back(name);
  return 0;
}

struct Chunks {
  int data = 0, hole = 0, error = 0;
  uint64_t covered = 0;
};

int count_chunk(void* user, const void* /*buf*/, size_t count, uint64_t /*offset*/,
                unsigned status, int* /*error*/) {
  auto* c = static_cast<Chunks*>(user);
  if (status == LIBNBD_READ_DATA) ++c->data, c->covered += count;
  else if (status == LIBNBD_READ_HOLE) ++c->hole, c->covered += count;
  else ++c->error;
  return 0;
}

struct Extents {
  std::vector<std::pair<uint32_t, uint32_t>> list;  // (length, flags)
};

int collect_extents(void* user, const char* metacontext, uint64_t /*offset*/,
                    uint32_t* entries, size_t n, int* /*error*/) {
  if (std::strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0) return 0;
  auto* e = static_cast<Extents*>(user);
  for (size_t i = 0; i + 1 < n; i += 2) e->list.emplace_back(entries[i], entries[i + 1]);
  return 0;
}

Extents block_status(nbd_handle* h, uint64_t len, uint64_t off, uint32_t flags) {
  Extents e;
  int r = nbd_block_status(h, len, off, {collect_extents, &e, nullptr}, flags);
  CHECK(r == 0, "block_status(%llu, %llu)", (unsigned long long)off, (unsigned long long)len);
  return e;
}

// Flags of the extent that covers `off` relative to a block_status at `base`.
uint32_t flags_at(const Extents& e, uint64_t base, uint64_t off) {
  uint64_t pos = base;
  for (auto [len, flags] : e.list) {
    if (off < pos + len) return flags;
    pos += len;
  }
  return 0xffffffff;
}

// ---- the checks --------------------------------------------------------------

void check_listing(const char* sock, const std::string& rw, const std::string& ro) {
  Handle h;
  nbd_set_opt_mode(h, true);
  CHECK(nbd_connect_unix(h, sock) == 0, "connect in opt mode");
  CHECK(nbd_aio_is_negotiating(h), "not negotiating in opt mode");

  std::vector<std::string> names;
  CHECK(nbd_opt_list(h, {collect_string, &names, nullptr}) >= 0, "opt_list");
  bool has_rw = false, has_ro = false;
  for (auto& n : names) has_rw |= n == rw, has_ro |= n == ro;
  CHECK(has_rw && has_ro, "opt_list lacks an export (%zu names)", names.size());

  // Meta contexts: base:allocation is listed for the writable export, and
  // the query "base:" lists it too (a wildcard for LIST).
  CHECK(nbd_set_export_name(h, rw.c_str()) == 0, "set_export_name");
  std::vector<std::string> ctx;
  CHECK(nbd_opt_list_meta_context(h, {collect_context, &ctx, nullptr}) >= 0, "opt_list_meta_context");
  bool base = false;
  for (auto& c : ctx) base |= c == LIBNBD_CONTEXT_BASE_ALLOCATION;
  CHECK(base, "base:allocation not listed (%zu contexts)", ctx.size());

  CHECK(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0, "add_meta_context");
  CHECK(nbd_add_meta_context(h, "nosuch:context") == 0, "add_meta_context");
  ctx.clear();
  int n = nbd_opt_list_meta_context(h, {collect_context, &ctx, nullptr});
  CHECK(n == 1 && ctx.size() == 1 && ctx[0] == LIBNBD_CONTEXT_BASE_ALLOCATION,
        "listing base:allocation + an unknown one gave %d", n);

  // opt_info on the read-only export, then on a missing one, then GO.
  CHECK(nbd_set_export_name(h, ro.c_str()) == 0, "set_export_name");
  CHECK(nbd_opt_info(h) == 0, "opt_info(%s)", ro.c_str());
  CHECK(nbd_is_read_only(h) == 1, "opt_info: read-only export not read-only");
  CHECK(nbd_get_size(h) > 0, "opt_info: size");
  CHECK(nbd_set_export_name(h, "no-such-export") == 0, "set_export_name");
  CHECK(nbd_opt_info(h) == -1, "opt_info of a missing export succeeded");
  CHECK(nbd_aio_is_negotiating(h), "still negotiating after a failed INFO");
  CHECK(nbd_set_export_name(h, rw.c_str()) == 0, "set_export_name");
  CHECK(nbd_opt_go(h) == 0, "opt_go(%s)", rw.c_str());
  CHECK(nbd_aio_is_ready(h), "ready after GO");
  CHECK(nbd_is_read_only(h) == 0, "writable export read-only");
  CHECK(nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1, "base:allocation not negotiated");
  CHECK(nbd_shutdown(h, 0) == 0, "shutdown");
}

void check_commands(const char* sock, const std::string& rw, const std::string& file) {
  Handle h;
  CHECK(nbd_set_export_name(h, rw.c_str()) == 0, "set_export_name");
  CHECK(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0, "add_meta_context");
  CHECK(nbd_connect_unix(h, sock) == 0, "connect %s", sock);
  CHECK(nbd_get_structured_replies_negotiated(h) == 1, "structured replies not negotiated");

  const int64_t size = nbd_get_size(h);
  std::ifstream probe(file, std::ios::binary | std::ios::ate);
  CHECK(size == static_cast<int64_t>(probe.tellg()), "get_size %lld", (long long)size);

  // Capabilities fleece offers on a writable raw export.
  CHECK(nbd_can_flush(h) == 1, "can_flush");
  CHECK(nbd_can_fua(h) == 1, "can_fua");
  CHECK(nbd_can_trim(h) == 1, "can_trim");
  CHECK(nbd_can_zero(h) == 1, "can_zero");
  CHECK(nbd_can_df(h) == 1, "can_df");
  CHECK(nbd_can_multi_conn(h) == 1, "can_multi_conn");
  CHECK(nbd_can_cache(h) == 1, "can_cache");
  CHECK(nbd_is_read_only(h) == 0, "is_read_only");
  const int fast_zero = nbd_can_fast_zero(h);
  CHECK(fast_zero == 0 || fast_zero == 1, "can_fast_zero");

  const int64_t bmin = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
  const int64_t bpref = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
  const int64_t bmax = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
  CHECK(bmin >= 1 && bmin <= 65536 && (bmin & (bmin - 1)) == 0, "min block %lld", (long long)bmin);
  CHECK(bpref >= 512 && bpref >= bmin && (bpref & (bpref - 1)) == 0, "preferred block %lld", (long long)bpref);
  CHECK(bmax >= (int64_t)MiB && bmax >= bpref, "max block %lld", (long long)bmax);

  // Plain reads match the file; reads with DF and structured chunks.
  std::vector<char> buf(2 * MiB);
  CHECK(nbd_pread(h, buf.data(), buf.size(), 0, 0) == 0, "pread");
  CHECK(buf == read_file(file, 0, buf.size()), "pread 0..2M differs from file");

  // Chunk 3 (3..4 MiB) is a hole: without DF the server may send it as
  // OFFSET_HOLE; with DF exactly one data chunk covers the request.
  Chunks c;
  buf.assign(MiB + 65536, 1);
  CHECK(nbd_pread_structured(h, buf.data(), buf.size(), 3 * MiB - 65536,
                             {count_chunk, &c, nullptr}, 0) == 0, "pread_structured");
  CHECK(c.covered == buf.size() && c.error == 0, "chunks cover %llu of %zu", (unsigned long long)c.covered, buf.size());
  CHECK(c.hole >= 1, "no OFFSET_HOLE chunk for a 1 MiB hole (data %d)", c.data);
  CHECK(buf == read_file(file, 3 * MiB - 65536, buf.size()), "structured read differs");
  Chunks df;
  buf.assign(65536, 1);
  CHECK(nbd_pread_structured(h, buf.data(), buf.size(), 3 * MiB - 32768,
                             {count_chunk, &df, nullptr}, LIBNBD_CMD_FLAG_DF) == 0, "pread DF");
  CHECK(df.data + df.hole == 1 && df.error == 0, "DF read: %d data + %d hole chunks", df.data, df.hole);
  CHECK(df.data == 1, "DF read over data and hole must be one data chunk");
  CHECK(buf == read_file(file, 3 * MiB - 32768, buf.size()), "DF read differs");

  // Writes: plain, FUA, unaligned; read back and compare with the file.
  auto w1 = random_bytes(256 * 1024, 1);
  CHECK(nbd_pwrite(h, w1.data(), w1.size(), 5 * MiB, 0) == 0, "pwrite");
  auto w2 = random_bytes(4096, 2);
  CHECK(nbd_pwrite(h, w2.data(), w2.size(), 6 * MiB, LIBNBD_CMD_FLAG_FUA) == 0, "pwrite FUA");
  auto w3 = random_bytes(1000, 3);
  CHECK(nbd_pwrite(h, w3.data(), w3.size(), 7 * MiB + 333, 0) == 0, "unaligned pwrite");
  CHECK(nbd_flush(h, 0) == 0, "flush");
  CHECK(read_file(file, 5 * MiB, w1.size()) == w1, "pwrite not in file after flush");
  CHECK(read_file(file, 6 * MiB, w2.size()) == w2, "FUA pwrite not in file");
  CHECK(read_file(file, 7 * MiB + 333, w3.size()) == w3, "unaligned pwrite not in file");
  buf.assign(w3.size(), 0);
  CHECK(nbd_pread(h, buf.data(), buf.size(), 7 * MiB + 333, 0) == 0 && buf == w3, "read back unaligned");

  // WRITE_ZEROES with NO_HOLE: zeroes, and the range stays allocated.
  CHECK(nbd_zero(h, 65536, 5 * MiB, LIBNBD_CMD_FLAG_NO_HOLE) == 0, "zero NO_HOLE");
  CHECK(all_zero(read_file(file, 5 * MiB, 65536)), "zero NO_HOLE left data");
  auto e = block_status(h, 65536, 5 * MiB, 0);
  CHECK(!(flags_at(e, 5 * MiB, 5 * MiB) & LIBNBD_STATE_HOLE), "NO_HOLE zero became a hole");
  // WRITE_ZEROES allowing a hole, with FUA.
  CHECK(nbd_zero(h, 65536, 5 * MiB + 65536, LIBNBD_CMD_FLAG_FUA) == 0, "zero FUA");
  CHECK(all_zero(read_file(file, 5 * MiB + 65536, 65536)), "zero left data");
  buf.assign(131072, 1);
  CHECK(nbd_pread(h, buf.data(), buf.size(), 5 * MiB, 0) == 0 && all_zero(buf), "zeroed range reads non-zero");
  // FAST_ZERO: success (then zeroes) or ENOTSUP, as can_fast_zero allows.
  if (fast_zero == 1) {
    auto w4 = random_bytes(65536, 4);
    CHECK(nbd_pwrite(h, w4.data(), w4.size(), 9 * MiB, 0) == 0, "pwrite");
    int r = nbd_zero(h, 65536, 9 * MiB, LIBNBD_CMD_FLAG_FAST_ZERO);
    CHECK(r == 0 || nbd_get_errno() == ENOTSUP, "FAST_ZERO failed with errno %d", nbd_get_errno());
    if (r == 0) CHECK(all_zero(read_file(file, 9 * MiB, 65536)), "FAST_ZERO left data");
    else CHECK(read_file(file, 9 * MiB, 65536) == w4, "failed FAST_ZERO changed data");
    std::printf("fast zero: %s\n", r == 0 ? "done" : "ENOTSUP");
  }

  // TRIM: succeeds; the trimmed whole chunk reads back as zeroes from a raw file.
  CHECK(nbd_trim(h, MiB, 8 * MiB, 0) == 0, "trim");
  CHECK(nbd_trim(h, 65536, 10 * MiB, LIBNBD_CMD_FLAG_FUA) == 0, "trim FUA");
  buf.assign(MiB, 1);
  CHECK(nbd_pread(h, buf.data(), buf.size(), 8 * MiB, 0) == 0, "pread trimmed");
  CHECK(buf == read_file(file, 8 * MiB, MiB), "trimmed range: NBD and file disagree");

  // CACHE: a hint, succeeds.
  CHECK(nbd_cache(h, 2 * MiB, 0, 0) == 0, "cache");

  // BLOCK_STATUS: REQ_ONE returns exactly one extent within the request.
  e = block_status(h, 4 * MiB, 0, LIBNBD_CMD_FLAG_REQ_ONE);
  CHECK(e.list.size() == 1, "REQ_ONE gave %zu extents", e.list.size());
  if (!e.list.empty()) {
    CHECK(e.list[0].first > 0 && e.list[0].first <= 4 * MiB, "REQ_ONE extent length %u", e.list[0].first);
    CHECK(!(e.list[0].second & LIBNBD_STATE_HOLE), "offset 0 is data, reported hole");
  }
  e = block_status(h, MiB, 3 * MiB, LIBNBD_CMD_FLAG_REQ_ONE);
  CHECK(e.list.size() == 1 && e.list[0].first == MiB &&
            e.list[0].second == (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO),
        "hole chunk 3: %zu extents, first (%u, %u)", e.list.size(),
        e.list.empty() ? 0 : e.list[0].first, e.list.empty() ? 0 : e.list[0].second);
  // Without REQ_ONE (asking again where a reply stops short): data and
  // holes where the file has them.
  e = Extents{};
  for (uint64_t pos = 0; pos < 4 * MiB;) {
    auto part = block_status(h, 4 * MiB - pos, pos, 0);
    if (part.list.empty()) break;
    for (auto x : part.list) e.list.push_back(x), pos += x.first;
  }
  CHECK(!(flags_at(e, 0, 0) & LIBNBD_STATE_HOLE), "0: data reported as hole");
  CHECK(flags_at(e, 0, MiB - 4096) & LIBNBD_STATE_HOLE, "960K..1M: hole reported as data");
  CHECK(flags_at(e, 0, 3 * MiB + 4096) == (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO), "3M: hole flags");

  // Errors with the client's own checks off, so the server has to judge.
  nbd_set_strict_mode(h, 0);
  buf.assign(4096, 0);
  CHECK(nbd_pread(h, buf.data(), 4096, size, 0) == -1 && nbd_get_errno() == EINVAL,
        "read past the end: errno %d, want EINVAL", nbd_get_errno());
  CHECK(nbd_pwrite(h, buf.data(), 4096, size - 2048, 0) == -1 && nbd_get_errno() == ENOSPC,
        "write past the end: errno %d, want ENOSPC", nbd_get_errno());
  CHECK(nbd_zero(h, 4096, size, 0) == -1 && nbd_get_errno() == ENOSPC,
        "zero past the end: errno %d, want ENOSPC", nbd_get_errno());
  CHECK(nbd_trim(h, 4096, size, 0) == -1 && nbd_get_errno() == EINVAL,
        "trim past the end: errno %d, want EINVAL", nbd_get_errno());
  CHECK(nbd_block_status(h, 4096, size, {collect_extents, &e, nullptr}, 0) == -1 &&
            nbd_get_errno() == EINVAL,
        "block_status past the end: errno %d, want EINVAL", nbd_get_errno());
  // Still in sync after the errors.
  CHECK(nbd_pread(h, buf.data(), 4096, 6 * MiB, 0) == 0 && std::vector<char>(buf.begin(), buf.end()) == w2,
        "read after errors");
  CHECK(nbd_shutdown(h, 0) == 0, "shutdown");
}

void check_read_only(const char* sock, const std::string& ro, const std::string& file) {
  Handle h;
  CHECK(nbd_set_export_name(h, ro.c_str()) == 0, "set_export_name");
  CHECK(nbd_connect_unix(h, sock) == 0, "connect");
  CHECK(nbd_is_read_only(h) == 1, "is_read_only");
  CHECK(nbd_can_trim(h) == 0 && nbd_can_zero(h) == 0, "read-only export offers trim/zero");
  auto before = read_file(file, 0, 65536);
  nbd_set_strict_mode(h, 0);
  std::vector<char> buf(65536, 7);
  CHECK(nbd_pwrite(h, buf.data(), buf.size(), 0, 0) == -1 && nbd_get_errno() == EPERM,
        "write to read-only: errno %d, want EPERM", nbd_get_errno());
  CHECK(nbd_pread(h, buf.data(), buf.size(), 0, 0) == 0 && buf == before, "read-only read");
  CHECK(read_file(file, 0, 65536) == before, "read-only file changed");
  CHECK(nbd_shutdown(h, 0) == 0, "shutdown");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s SOCKET RW_EXPORT RW_FILE RO_EXPORT RO_FILE\n", argv[0]);
    return 2;
  }
  check_listing(argv[1], argv[2], argv[4]);
  check_commands(argv[1], argv[2], argv[3]);
  check_read_only(argv[1], argv[4], argv[5]);
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("libnbd_client: all checks passed\n");
  return 0;
}

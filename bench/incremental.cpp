// incremental URI BITMAP OUT EXTENTS: an incremental backup client. Reads the
// qemu:dirty-bitmap:BITMAP block status of the export at URI, copies only the
// dirty extents into OUT (a file of the export's size, each extent at its own
// offset, the rest left a hole) and lists them in EXTENTS, one "OFFSET LENGTH"
// a line. Prints "BYTES EXTENTS". Exits non-zero on any error, or if the
// server does not offer the context.
//
// Like nbdcopy it opens 4 connections when the server advertises multi-conn
// (else 1), all connecting at once, and keeps up to 16 reads of at most
// 4 MiB in flight across them; the block status walk goes over the first.
// CONNECTIONS=N in the environment overrides the count.
//
// bench/bitmap.sh times it against nbdcopy of a full backup and checks the
// restore (full backup + these extents) against the disk.
#include <libnbd.h>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

constexpr uint64_t kMaxRead = 4 << 20;
constexpr int kDepth = 16;
constexpr int kConnections = 4;

struct Slot {
  std::unique_ptr<char[]> buf;  // uninitialised, grown to the largest read
  uint64_t capacity = 0, offset = 0, length = 0;
  nbd_handle* handle = nullptr;
  bool busy = false, done = false;
  int error = 0;
};

struct Status {
  const std::string* context;
  std::vector<std::pair<uint64_t, uint64_t>>* dirty;  // merged runs
  uint64_t next;                                      // where the reply ends
};

int on_complete(void* user_data, int* error) {
  auto* slot = static_cast<Slot*>(user_data);
  slot->done = true;
  slot->error = *error;
  return 1;
}

int on_extents(void* user_data, const char* context, uint64_t offset, uint32_t* entries, size_t n, int* /*error*/) {
  auto* st = static_cast<Status*>(user_data);
  if (*st->context != context) return 0;
  for (size_t i = 0; i + 1 < n; i += 2) {
    const uint64_t len = entries[i];
    if (entries[i + 1] & 1) {
      auto& d = *st->dirty;
      if (!d.empty() && d.back().first + d.back().second == offset) {
        d.back().second += len;
      } else {
        d.emplace_back(offset, len);
      }
    }
    offset += len;
  }
  st->next = offset;
  return 0;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "incremental: %s: %s\n", what, nbd_get_error() ? nbd_get_error() : std::strerror(errno));
  std::exit(1);
}

// One poll(2) round over every handle that has something to do.
void poll_all(const std::vector<nbd_handle*>& handles) {
  std::vector<pollfd> fds;
  for (nbd_handle* h : handles) {
    const unsigned dir = nbd_aio_get_direction(h);
    short events = 0;
    if (dir & LIBNBD_AIO_DIRECTION_READ) events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE) events |= POLLOUT;
    fds.push_back({nbd_aio_get_fd(h), events, 0});
  }
  if (::poll(fds.data(), fds.size(), -1) == -1 && errno != EINTR) die("poll");
  for (size_t i = 0; i < handles.size(); ++i) {
    const short ev = fds[i].revents;
    if ((ev & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read(handles[i]) == -1) die("notify_read");
    if ((ev & POLLOUT) && nbd_aio_notify_write(handles[i]) == -1) die("notify_write");
  }
}

// Connects every handle at once; returns when all are ready.
void connect_all(const std::vector<nbd_handle*>& handles, const char* uri, const std::string& context) {
  for (nbd_handle* h : handles) {
    if (nbd_add_meta_context(h, context.c_str()) == -1) die("add_meta_context");
    if (nbd_aio_connect_uri(h, uri) == -1) die("connect");
  }
  for (;;) {
    bool all_ready = true;
    for (nbd_handle* h : handles) {
      if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) die("connect");
      all_ready = all_ready && nbd_aio_is_ready(h);
    }
    if (all_ready) return;
    poll_all(handles);
  }
}

std::vector<std::pair<uint64_t, uint64_t>> dirty_runs(nbd_handle* h, const std::string& context, uint64_t size) {
  std::vector<std::pair<uint64_t, uint64_t>> dirty;
  for (uint64_t off = 0; off < size;) {
    Status st{&context, &dirty, off};
    const uint64_t count = std::min<uint64_t>(size - off, uint64_t(1) << 31);
    if (nbd_block_status(h, count, off, nbd_extent_callback{on_extents, &st, nullptr}, 0) == -1) die("block_status");
    if (st.next <= off) die("block status made no progress");
    off = st.next;
  }
  if (!dirty.empty() && dirty.back().first + dirty.back().second > size) {
    dirty.back().second = size - dirty.back().first;
  }
  return dirty;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: incremental URI BITMAP OUT EXTENTS\n");
    return 2;
  }
  const std::string context = std::string("qemu:dirty-bitmap:") + argv[2];
  const char* env = std::getenv("CONNECTIONS");
  const int wanted = env ? std::max(1, std::atoi(env)) : kConnections;
  std::vector<nbd_handle*> handles(wanted);
  for (nbd_handle*& h : handles) {
    if (!(h = nbd_create())) die("nbd_create");
  }
  connect_all(handles, argv[1], context);
  nbd_handle* h = handles[0];
  if (nbd_can_meta_context(h, context.c_str()) != 1) die("the server does not offer the bitmap's context");
  if (nbd_can_multi_conn(h) != 1) {  // one connection only, as nbdcopy does
    for (size_t i = 1; i < handles.size(); ++i) nbd_close(handles[i]);
    handles.resize(1);
  }
  const int64_t ssize = nbd_get_size(h);
  if (ssize < 0) die("export size");
  const uint64_t size = static_cast<uint64_t>(ssize);
  const int out = ::open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (out < 0 || ::ftruncate(out, static_cast<off_t>(size)) != 0) die("output file");

  const std::vector<std::pair<uint64_t, uint64_t>> dirty = dirty_runs(h, context, size);

  // Reads of at most kMaxRead, kDepth in flight spread over the connections,
  // each written out when done.
  std::vector<std::pair<uint64_t, uint64_t>> reads;
  uint64_t bytes = 0;
  for (auto [off, len] : dirty) {
    bytes += len;
    for (uint64_t at = off; at < off + len; at += kMaxRead) reads.emplace_back(at, std::min(kMaxRead, off + len - at));
  }
  std::vector<Slot> slots(kDepth);
  for (size_t i = 0; i < slots.size(); ++i) slots[i].handle = handles[i % handles.size()];
  size_t next = 0, in_flight = 0;
  auto issue = [&](Slot& s) {
    s.offset = reads[next].first;
    s.length = reads[next].second;
    ++next;
    if (s.capacity < s.length) {
      s.buf.reset(new char[s.length]);
      s.capacity = s.length;
    }
    s.busy = true;
    s.done = false;
    if (nbd_aio_pread(s.handle, s.buf.get(), s.length, s.offset, nbd_completion_callback{on_complete, &s, nullptr},
                      0) == -1) {
      die("aio_pread");
    }
    ++in_flight;
  };
  for (Slot& s : slots) {
    if (next < reads.size()) issue(s);
  }
  while (in_flight > 0) {
    poll_all(handles);
    for (Slot& s : slots) {
      if (!s.busy || !s.done) continue;
      if (s.error) {
        errno = s.error;
        die("read");
      }
      if (::pwrite(out, s.buf.get(), s.length, static_cast<off_t>(s.offset)) != static_cast<ssize_t>(s.length)) {
        die("write");
      }
      s.busy = false;
      --in_flight;
      if (next < reads.size()) issue(s);
    }
  }
  if (::close(out) != 0) die("close");
  for (nbd_handle* each : handles) {
    nbd_shutdown(each, 0);
    nbd_close(each);
  }

  FILE* list = std::fopen(argv[4], "w");
  if (!list) die("extents file");
  for (auto [off, len] : dirty) {
    std::fprintf(list, "%llu %llu\n", static_cast<unsigned long long>(off), static_cast<unsigned long long>(len));
  }
  if (std::fclose(list) != 0) die("extents file");
  std::printf("%llu %zu\n", static_cast<unsigned long long>(bytes), dirty.size());
  return 0;
}

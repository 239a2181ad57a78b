// randread URI SECONDS QD IMAGE: 4 KiB reads at random 4 KiB-aligned offsets
// over one libnbd connection, QD requests in flight, for SECONDS after a
// one-second warm-up (like fio's ramp_time). Prints "IOPS REQUESTS".
//
// bench/tls.sh uses it for the 4k random-read row because fio's nbd engine
// cannot speak TLS; the same binary runs the plaintext row too, so the
// TLS/plaintext ratio compares like with like. The URI may be nbds+unix://
// with tls-certificates=DIR. One read in 256 is compared with IMAGE (the
// file the server exports), so a server that answers with the wrong bytes
// fails the run instead of looking fast. Exits non-zero on any error.
#include <libnbd.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace {

constexpr size_t kBlock = 4096;

struct Slot {
  std::vector<char> buf = std::vector<char>(kBlock);
  uint64_t offset = 0;
  bool done = true;
  int error = 0;
};

int on_complete(void* user_data, int* error) {
  auto* slot = static_cast<Slot*>(user_data);
  slot->done = true;
  slot->error = *error;
  return 1;  // retire the command
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "randread: %s: %s\n", what, nbd_get_error() ? nbd_get_error() : std::strerror(errno));
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: randread URI SECONDS QD IMAGE\n");
    return 2;
  }
  const char* uri = argv[1];
  const double seconds = std::atof(argv[2]);
  const int qd = std::atoi(argv[3]);
  const int image = ::open(argv[4], O_RDONLY);
  if (image < 0 || seconds <= 0 || qd <= 0) die("bad arguments");

  nbd_handle* h = nbd_create();
  if (!h) die("nbd_create");
  nbd_set_uri_allow_local_file(h, true);  // tls-certificates=DIR
  if (nbd_connect_uri(h, uri) == -1) die("connect");
  const int64_t size = nbd_get_size(h);
  if (size < static_cast<int64_t>(kBlock)) die("export size");
  const uint64_t blocks = static_cast<uint64_t>(size) / kBlock;

  std::mt19937_64 rng(42);
  std::vector<Slot> slots(static_cast<size_t>(qd));
  std::vector<char> expect(kBlock);
  uint64_t completed = 0, counted = 0, checked = 0;

  using clock = std::chrono::steady_clock;
  const auto count_from = clock::now() + std::chrono::seconds(1);
  const auto stop = count_from + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));

  auto issue = [&](Slot& s) {
    s.offset = (rng() % blocks) * kBlock;
    s.done = false;
    if (nbd_aio_pread(h, s.buf.data(), kBlock, s.offset, nbd_completion_callback{on_complete, &s, nullptr}, 0) == -1) {
      die("aio_pread");
    }
  };
  for (Slot& s : slots) issue(s);
  int busy = qd;
  while (busy > 0) {
    if (nbd_poll(h, -1) == -1) die("poll");
    const auto now = clock::now();
    for (Slot& s : slots) {
      if (!s.done || s.offset == UINT64_MAX) continue;
      // A read that finished in this poll: count it, check one in 256,
      // then reuse the slot until the time is up.
      if (s.error) {
        errno = s.error;
        die("read");
      }
      if (completed++ % 256 == 0) {
        if (::pread(image, expect.data(), kBlock, static_cast<off_t>(s.offset)) != static_cast<ssize_t>(kBlock)) {
          die("pread of the image");
        }
        if (std::memcmp(expect.data(), s.buf.data(), kBlock) != 0) {
          std::fprintf(stderr, "randread: wrong bytes at offset %llu\n", static_cast<unsigned long long>(s.offset));
          return 1;
        }
        ++checked;
      }
      if (now >= count_from && now < stop) ++counted;
      if (now < stop) {
        issue(s);
      } else {
        s.offset = UINT64_MAX;  // drained
        --busy;
      }
    }
  }
  nbd_shutdown(h, 0);
  nbd_close(h);
  if (checked == 0) {
    std::fprintf(stderr, "randread: no read was checked against the image\n");
    return 1;
  }
  std::printf("%.0f %llu\n", static_cast<double>(counted) / seconds, static_cast<unsigned long long>(counted));
  return 0;
}

// The embedding API's fleeces and dirty bitmaps, through the public header
// only: a fleece of an embedded disk read by a real NBD client (libnbd)
// is the disk as it was at the start while the host writes; a bitmap added
// through the API is marked by host writes and NBD writes; a fleece's
// frozen bitmap is offered on its export and merges back; refusals.
#include <fleece/fleece.hpp>

#include <doctest/doctest.h>

#ifdef FLEECE_TEST_LIBNBD
#include <libnbd.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

namespace fs = std::filesystem;

namespace {

constexpr uint64_t K = 1024, M = 1024 * K;
constexpr uint64_t kDiskSize = 4 * M;

struct Dir {
  std::string path = [] {
    char tmpl[] = "/tmp/fleece-embed-fleece.XXXXXX";
    return std::string(::mkdtemp(tmpl));
  }();
  ~Dir() { fs::remove_all(path); }
};

std::vector<std::byte> pattern(uint64_t size, unsigned seed) {
  std::vector<std::byte> out(size);
  std::mt19937 rng(seed);
  for (auto& b : out) b = std::byte(rng() & 0xff);
  return out;
}

void write_file(const std::string& path, const std::vector<std::byte>& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
  REQUIRE(f.good());
}

std::vector<std::string> store_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".fleece-") != std::string::npos && name.ends_with(".qcow2")) out.push_back(name);
  }
  return out;
}

// A libnbd client of one export over the engine's Unix socket.
class Client {
 public:
  Client(const std::string& socket, const std::string& export_name, const char* context = nullptr)
      : h_(nbd_create()) {
    REQUIRE(h_);
    REQUIRE(nbd_set_export_name(h_, export_name.c_str()) == 0);
    if (context) REQUIRE(nbd_add_meta_context(h_, context) == 0);
    REQUIRE_MESSAGE(nbd_connect_unix(h_, socket.c_str()) == 0, nbd_get_error());
  }
  ~Client() {
    nbd_shutdown(h_, 0);
    nbd_close(h_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  std::vector<std::byte> read(uint64_t offset, uint64_t length) {
    std::vector<std::byte> out(length);
    REQUIRE_MESSAGE(nbd_pread(h_, out.data(), length, offset, 0) == 0, nbd_get_error());
    return out;
  }
  // The errno of a failed read, 0 if it succeeded.
  int read_errno(uint64_t offset, uint64_t length) {
    std::vector<std::byte> out(length);
    return nbd_pread(h_, out.data(), length, offset, 0) == 0 ? 0 : nbd_get_errno();
  }
  void write(uint64_t offset, const std::vector<std::byte>& data) {
    REQUIRE_MESSAGE(nbd_pwrite(h_, data.data(), data.size(), offset, 0) == 0, nbd_get_error());
  }
  // [offset, length) ranges whose `context` flags are non-zero.
  std::vector<std::pair<uint64_t, uint64_t>> flagged(const char* context) {
    struct Walk {
      const char* context;
      std::vector<std::pair<uint64_t, uint64_t>> out;
    } walk{context, {}};
    nbd_extent_callback cb{};
    cb.user_data = &walk;
    cb.callback = [](void* user, const char* meta, uint64_t offset, uint32_t* entries, size_t n, int*) {
      auto* w = static_cast<Walk*>(user);
      if (std::strcmp(meta, w->context) != 0) return 0;
      for (size_t i = 0; i + 1 < n; i += 2) {
        if (entries[i + 1]) w->out.emplace_back(offset, entries[i]);
        offset += entries[i];
      }
      return 0;
    };
    // One call: fleece answers for the whole range asked (a small disk).
    REQUIRE_MESSAGE(nbd_block_status(h_, kDiskSize, 0, cb, 0) == 0, nbd_get_error());
    return walk.out;
  }

 private:
  nbd_handle* h_;
};

struct Fixture {
  Dir dir;
  std::string image = dir.path + "/vda.img";
  std::string socket = dir.path + "/nbd.sock";
  std::vector<std::byte> original = pattern(kDiskSize, 7);

  Fixture() { write_file(image, original); }

  fleece::EngineOptions options() const {
    fleece::EngineOptions o;
    o.listen = {"unix:" + socket};
    o.threads = 2;
    o.log_level = fleece::LogLevel::off;
    return o;
  }
};

const fleece::BitmapInfo* find_bitmap(const std::vector<fleece::BitmapInfo>& list, const std::string& name) {
  for (const auto& b : list) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

// The disk "vda", exported writable as "vda".
fleece::Disk open_exported(fleece::Engine& engine, const std::string& image) {
  fleece::Error error;
  fleece::Disk disk = engine.open_disk({.name = "vda", .path = image}, &error);
  REQUIRE_MESSAGE(disk, error.message);
  REQUIRE_FALSE(engine.add_export({.name = "vda", .disk = "vda", .writable = true}));
  return disk;
}

}  // namespace

TEST_CASE("embed: a fleece of an embedded disk, read over NBD, is the disk at its start") {
  Fixture fx;
  fleece::Engine engine(fx.options());
  fleece::Error error;
  fleece::Disk disk = open_exported(engine, fx.image);

  // Nothing runs before start(): refused, nothing created.
  fleece::FleeceInfo info = engine.start_fleece({.id = "f1", .disks = {"vda"}}, &error);
  CHECK(error.code == std::errc::resource_unavailable_try_again);
  CHECK(info.id.empty());
  CHECK(engine.add_bitmap({.disk = "vda", .name = "b0"}).code == std::errc::resource_unavailable_try_again);
  engine.start();

  // b0 records from here; a host write before the fleece lands in b0's frozen half.
  REQUIRE_FALSE(engine.add_bitmap({.disk = "vda", .name = "b0"}));
  const auto before = pattern(64 * K, 11);
  REQUIRE_FALSE(disk.write(3 * M, before));
  std::copy(before.begin(), before.end(), fx.original.begin() + 3 * M);

  info = engine.start_fleece({.id = "f1", .disks = {"vda"}, .bitmaps = {{"vda", "b0"}}}, &error);
  REQUIRE_MESSAGE(!error, error.message);
  CHECK(info.id == "f1");
  REQUIRE(info.disks.size() == 1);
  CHECK(info.disks[0].disk == "vda");
  CHECK(info.disks[0].export_name == "vda@f1");
  CHECK(info.disks[0].cluster_size == 64 * K);
  CHECK(info.disks[0].granularity == 4 * K);
  CHECK(fs::exists(info.disks[0].store));
  CHECK(fs::path(info.disks[0].store).parent_path() == fs::path(fx.dir.path));
  CHECK(info.on_cbw_error == fleece::OnCbwError::break_snapshot);

  // The host writes after the point in time (first touches: copied aside).
  const auto after = pattern(256 * K, 12);
  REQUIRE_FALSE(disk.write(0, after));
  REQUIRE_FALSE(disk.write(3 * M + 4 * K, std::span(after).first(8 * K)));
  REQUIRE_FALSE(disk.flush());
  {
    // The live disk has the new bytes...
    std::vector<std::byte> live(256 * K);
    REQUIRE_FALSE(disk.read(0, live));
    CHECK(live == after);
    // ...and the frozen view, read by a real client, has the old ones, every byte.
    Client view(fx.socket, "vda@f1", "qemu:dirty-bitmap:b0");
    CHECK(view.read(0, kDiskSize) == fx.original);
    // The frozen half of b0 is offered on it: the write before the point in time.
    CHECK(view.flagged("qemu:dirty-bitmap:b0") == std::vector<std::pair<uint64_t, uint64_t>>{{3 * M, 64 * K}});

    const auto listed = engine.fleeces();
    REQUIRE(listed.size() == 1);
    REQUIRE(listed[0].disks.size() == 1);
    const auto& member = listed[0].disks[0];
    CHECK(member.preserved_bytes == 256 * K + 8 * K);  // 4 KiB copy units: what was overwritten
    CHECK(member.read_bytes == kDiskSize);
    REQUIRE(member.clients.size() == 1);
    CHECK(member.clients[0].read_bytes == kDiskSize);
    CHECK(member.clients[0].export_name == "vda@f1");
  }

  // The bitmaps: b0 starts afresh at the point in time, its frozen half is b0@f1.
  auto bitmaps = engine.bitmaps("vda");
  REQUIRE(find_bitmap(bitmaps, "b0"));
  REQUIRE(find_bitmap(bitmaps, "b0@f1"));
  CHECK(find_bitmap(bitmaps, "b0@f1")->frozen);
  CHECK(find_bitmap(bitmaps, "b0@f1")->dirty_bytes == 64 * K);
  CHECK(find_bitmap(bitmaps, "b0")->dirty_bytes == 256 * K + 64 * K);  // [0, 256K) and the cluster at 3M
  CHECK(find_bitmap(bitmaps, "b0")->recording);

  // Refusals, in QMP's words.
  engine.start_fleece({.id = "f1", .disks = {"vda"}}, &error);
  CHECK(error.code == std::errc::invalid_argument);
  CHECK(error.message.find("already exists") != std::string::npos);
  engine.start_fleece({.id = "f9", .disks = {"nope"}}, &error);
  CHECK(error.code == std::errc::no_such_device_or_address);
  engine.start_fleece({.id = "9bad", .disks = {"vda"}}, &error);
  CHECK(error.code == std::errc::invalid_argument);
  engine.start_fleece({.id = "f9", .disks = {"vda"}, .cbw_timeout = std::chrono::milliseconds(-1)}, &error);
  CHECK(error.message.find("cbw-timeout") != std::string::npos);
  CHECK(engine.stop_fleece("never").message.find("not found") != std::string::npos);
  CHECK(engine.remove_bitmap("vda", "b0@f1").message.find("in use") != std::string::npos);  // offered on vda@f1
  CHECK(engine.fleeces().size() == 1);

  // Merging the frozen half back (a failed backup) marks the cluster at 3M in b0 again.
  REQUIRE_FALSE(engine.clear_bitmap("vda", "b0"));
  CHECK(find_bitmap(engine.bitmaps("vda"), "b0")->dirty_bytes == 0);
  REQUIRE_FALSE(engine.merge_bitmaps("vda", "b0", {{"vda", "b0@f1"}}));
  CHECK(find_bitmap(engine.bitmaps("vda"), "b0")->dirty_bytes == 64 * K);

  const std::string store = info.disks[0].store;
  REQUIRE_FALSE(engine.stop_fleece("f1"));
  CHECK(engine.fleeces().empty());
  CHECK_FALSE(fs::exists(store));
  for (const auto& e : engine.exports()) CHECK(e.name != "vda@f1");
  // The frozen half is an ordinary (disabled, read-only) bitmap now: removable.
  REQUIRE_FALSE(engine.remove_bitmap("vda", "b0@f1"));
  CHECK_FALSE(find_bitmap(engine.bitmaps("vda"), "b0@f1"));

  // A fleece left open when the engine finishes has its store deleted.
  info = engine.start_fleece({.id = "f2", .disks = {"vda"}, .on_cbw_error = fleece::OnCbwError::break_guest_write,
                              .max_store_bytes = 16 * M},
                             &error);
  REQUIRE_MESSAGE(!error, error.message);
  CHECK(engine.fleeces()[0].on_cbw_error == fleece::OnCbwError::break_guest_write);
  CHECK(engine.fleeces()[0].max_store_bytes == 16 * M);
  CHECK(store_files(fx.dir.path).size() == 1);
  engine.stop();
  engine.wait();
  CHECK(store_files(fx.dir.path).empty());
  CHECK(engine.stop_fleece("f2").code == std::errc::operation_canceled);
}

TEST_CASE("embed: a bitmap added through the API records host writes and NBD writes") {
  Fixture fx;
  fleece::Engine engine(fx.options());
  fleece::Error error;
  fleece::Disk disk = open_exported(engine, fx.image);
  engine.start();

  REQUIRE_FALSE(engine.add_bitmap({.disk = "vda", .name = "b1", .granularity = 4 * K}));
  REQUIRE_FALSE(engine.add_bitmap({.disk = "vda", .name = "off", .disabled = true}));
  CHECK(engine.add_bitmap({.disk = "vda", .name = "b1"}).message.find("already exists") != std::string::npos);
  CHECK(engine.add_bitmap({.disk = "vda", .name = "x", .granularity = 1000}).message.find("Granularity") !=
        std::string::npos);
  CHECK(engine.add_bitmap({.disk = "nope", .name = "x"}).code == std::errc::invalid_argument);
  CHECK(engine.bitmaps("nope").empty());

  REQUIRE_FALSE(disk.write(1 * M, pattern(8 * K, 3)));  // the host
  {
    Client nbd(fx.socket, "vda");
    nbd.write(2 * M + 4 * K, pattern(4 * K, 4));  // a client
  }
  auto list = engine.bitmaps("vda");
  REQUIRE(list.size() == 2);
  CHECK(list[0].name == "b1");
  CHECK(list[0].granularity == 4 * K);
  CHECK(list[0].dirty_bytes == 12 * K);
  CHECK(list[0].recording);
  CHECK_FALSE(list[0].frozen);
  CHECK(list[1].name == "off");
  CHECK(list[1].dirty_bytes == 0);
  CHECK_FALSE(list[1].recording);

  // Exported read-only with the bitmap: exactly the two written ranges.
  {
    REQUIRE_FALSE(engine.disable_bitmap("vda", "b1"));
    // A fleece freezes only enabled bitmaps.
    engine.start_fleece({.id = "g", .disks = {"vda"}, .bitmaps = {{"vda", "b1"}}}, &error);
    CHECK(error.message.find("disabled") != std::string::npos);
    REQUIRE_FALSE(engine.enable_bitmap("vda", "b1"));
    auto info = engine.start_fleece({.id = "g", .disks = {"vda"}, .bitmaps = {{"vda", "b1"}}}, &error);
    REQUIRE_MESSAGE(!error, error.message);
    Client view(fx.socket, "vda@g", "qemu:dirty-bitmap:b1");
    CHECK(view.flagged("qemu:dirty-bitmap:b1") ==
          std::vector<std::pair<uint64_t, uint64_t>>{{1 * M, 8 * K}, {2 * M + 4 * K, 4 * K}});
    CHECK(view.read_errno(0, 4 * K) == 0);
  }
  REQUIRE_FALSE(engine.stop_fleece("g"));
  REQUIRE_FALSE(engine.remove_bitmap("vda", "b1"));
  CHECK(engine.remove_bitmap("vda", "b1").message.find("not found") != std::string::npos);
  engine.stop();
  engine.wait();
}

TEST_CASE("embed: fleeces on the host's io_context; stale stores swept when a disk is opened") {
  Fixture fx;
  // A store a killed process left beside the image (no lock held), and one a live owner holds.
  const std::string stale = fx.dir.path + "/vda.fleece-999998-old.qcow2";
  const std::string held = fx.dir.path + "/vda.fleece-999999-other.qcow2";
  std::ofstream(stale) << "x";
  std::ofstream(held) << "x";
  int lock_fd = ::open(held.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(lock_fd >= 0);
  REQUIRE(::flock(lock_fd, LOCK_EX | LOCK_NB) == 0);

  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  {
    fleece::Engine engine(fx.options(), io);
    fleece::Error error;
    fleece::Disk disk = engine.open_disk({.name = "vda", .path = fx.image}, &error);
    REQUIRE_MESSAGE(disk, error.message);
    CHECK_FALSE(fs::exists(stale));
    CHECK(fs::exists(held));
    engine.start();
    auto info = engine.start_fleece({.id = "h", .disks = {"vda"}}, &error);
    REQUIRE_MESSAGE(!error, error.message);
    REQUIRE_FALSE(disk.write(0, pattern(64 * K, 5)));
    {
      Client view(fx.socket, "vda@h");
      CHECK(view.read(0, 64 * K) == std::vector<std::byte>(fx.original.begin(), fx.original.begin() + 64 * K));
    }
    REQUIRE_FALSE(engine.stop_fleece("h"));
    engine.stop();
    engine.wait();
  }
  work.reset();
  runner.join();
  ::close(lock_fd);
  CHECK(store_files(fx.dir.path) == std::vector<std::string>{"vda.fleece-999999-other.qcow2"});
}

#else
TEST_CASE("embed fleece tests need libnbd" * doctest::skip()) {}
#endif

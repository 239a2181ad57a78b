// BackingChain::open against chains made by qemu-img: the bytes at every
// depth, depths as qemu-img map reports them, and the errors for loops,
// missing files and absurd depth.
#include "cow/backing_chain.hpp"

#include "tests/unit/cow/qcow2_doctest_support.hpp"
#include "util/log.hpp"

#include <doctest/doctest.h>

#include <fmt/format.h>

#include <regex>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::test;

namespace {

constexpr uint64_t kMiB = 1 << 20;

std::shared_ptr<BackingChain> open_ok(const std::string& path, std::string format = "qcow2",
                                      ChainOpenOptions o = {}) {
  std::string why;
  auto c = run(BackingChain::open(path, format, o, &why));
  INFO(why);
  REQUIRE(c);
  return *c;
}

std::string open_error(const std::string& path, ChainOpenOptions o = {}) {
  std::string why;
  auto c = run(BackingChain::open(path, "qcow2", o, &why));
  REQUIRE(!c);
  return why;
}

std::vector<std::byte> read_dev(block::Device& d, uint64_t off, uint64_t len) {
  std::vector<std::byte> v(len);
  REQUIRE(!run(d.read(off, v)));
  return v;
}

// raw base (1s in MiB 0, 2s in MiB 3) <- mid.qcow2 (2s in MiB 1, zeroes over
// MiB 3) <- top.qcow2 (3s in MiB 2, 64 KiB zero cluster at 3.5 MiB).
struct QemuChain {
  TempDir dir;
  std::string base = dir.file("base.img"), mid = dir.file("mid.qcow2"),
              top = dir.file("top.qcow2");
  QemuChain() {
    log::set_level(log::Level::error);
    sh_ok(fmt::format("qemu-img create -q -f raw '{}' 5M", base));
    sh_ok(fmt::format("qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 2 3M 1M' '{}'", base));
    sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -b base.img -F raw mid.qcow2",
                      dir.path.string()));
    sh_ok(fmt::format("qemu-io -c 'write -P 2 1M 1M' -c 'write -z 3M 512k' '{}'", mid));
    sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2",
                      dir.path.string()));
    sh_ok(fmt::format("qemu-io -c 'write -P 3 2M 1M' -c 'write -z 3584k 64k' '{}'", top));
  }
};

struct MapEntry {
  uint64_t start, length;
  uint32_t depth;
  bool present;
};

std::vector<MapEntry> qemu_map(const std::string& path) {
  auto [rc, out] = shell(fmt::format("qemu-img map --output=json '{}'", path));
  REQUIRE(rc == 0);
  std::vector<MapEntry> v;
  std::regex re(
      R"re("start": (\d+), "length": (\d+), "depth": (\d+), "present": (true|false))re");
  for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it)
    v.push_back({std::stoull((*it)[1]), std::stoull((*it)[2]), uint32_t(std::stoul((*it)[3])),
                 (*it)[4] == "true"});
  REQUIRE(!v.empty());
  return v;
}

}  // namespace

TEST_CASE("chain: raw <- qcow2 <- qcow2 made by qemu-img reads the right bytes at each depth") {
  QemuChain q;
  auto chain = open_ok(q.top);
  auto ls = chain->layers();
  REQUIRE(ls.size() == 3);
  CHECK(ls[0].path == q.top);
  CHECK(ls[0].format == "qcow2");
  CHECK(!ls[0].read_only);
  CHECK(ls[1].path == q.mid);
  CHECK(ls[1].read_only);
  CHECK(ls[1].qcow2 != nullptr);
  CHECK(ls[2].path == q.base);
  CHECK(ls[2].format == "raw");
  CHECK(ls[2].read_only);
  CHECK(ls[2].device->capabilities().read_only);
  CHECK(ls[0].backing_name == "mid.qcow2");
  CHECK(ls[0].backing_format == "qcow2");

  auto dev = chain->device();
  CHECK(dev->size() == 5 * kMiB);
  CHECK(read_dev(*dev, 0, kMiB) == filled(kMiB, 1));
  CHECK(read_dev(*dev, kMiB, kMiB) == filled(kMiB, 2));
  CHECK(read_dev(*dev, 2 * kMiB, kMiB) == filled(kMiB, 3));
  CHECK(read_dev(*dev, 3 * kMiB, 512 * 1024) == filled(512 * 1024, 0));     // mid's zeroes
  CHECK(read_dev(*dev, 3648 * 1024, 64 * 1024) == filled(64 * 1024, 2));    // base
  CHECK(read_dev(*dev, 3584 * 1024, 64 * 1024) == filled(64 * 1024, 0));    // top's zeroes
  CHECK(read_dev(*dev, 4 * kMiB, kMiB) == filled(kMiB, 0));                 // base hole
  // The same file through qemu.
  const std::string flat = q.dir.file("flat.raw");
  sh_ok(fmt::format("qemu-img convert -O raw '{}' '{}'", q.top, flat));
  CHECK(read_dev(*dev, 0, 5 * kMiB) == read_file(flat));

  // Writes go to the top only.
  auto before_mid = read_file(q.mid);
  auto d = pattern(4096, 7);
  REQUIRE(!run(dev->write(kMiB + 4096, d, {})));
  REQUIRE(!run(dev->flush()));
  CHECK(read_file(q.mid) == before_mid);
  CHECK(read_dev(*dev, kMiB + 4096, 4096) == d);
  // The middle layer itself refuses writes.
  CHECK(run(ls[1].device->write(0, d, {})));
}

TEST_CASE("chain: depth_of matches qemu-img map depth") {
  QemuChain q;
  for (const std::string& image : {q.top, q.mid}) {
    auto chain = open_ok(image);
    for (const MapEntry& e : qemu_map(image)) {
      for (uint64_t off : {e.start, e.start + e.length - 1}) {
        auto depth = run(chain->depth_of(off));
        REQUIRE(depth);
        INFO(image << " offset " << off);
        CHECK(*depth == (e.present ? e.depth + 1 : 0));
      }
    }
  }
  // A qcow2 base: unallocated everywhere has depth 0.
  TempDir dir;
  sh_ok(fmt::format("qemu-img create -q -f qcow2 '{}' 2M", dir.file("b.qcow2")));
  sh_ok(fmt::format("qemu-io -c 'write -P 9 0 64k' '{}'", dir.file("b.qcow2")));
  sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2",
                    dir.path.string()));
  sh_ok(fmt::format("qemu-io -c 'write -P 8 1M 64k' '{}'", dir.file("t.qcow2")));
  auto chain = open_ok(dir.file("t.qcow2"));
  for (const MapEntry& e : qemu_map(dir.file("t.qcow2"))) {
    auto depth = run(chain->depth_of(e.start));
    REQUIRE(depth);
    INFO("offset " << e.start);
    CHECK(*depth == (e.present ? e.depth + 1 : 0));
  }
  CHECK(*run(chain->depth_of(0)) == 2);
  CHECK(*run(chain->depth_of(kMiB)) == 1);
  CHECK(*run(chain->depth_of(512 * 1024)) == 0);
}

TEST_CASE("chain: describe nests like query-block's backing-image") {
  QemuChain q;
  auto chain = open_ok(q.top);
  auto info = chain->describe();
  CHECK(info.filename == q.top);
  CHECK(info.format == "qcow2");
  CHECK(info.virtual_size == 5 * kMiB);
  CHECK(info.cluster_size == 65536);
  CHECK(!info.read_only);
  CHECK(info.backing_filename == "mid.qcow2");
  CHECK(info.full_backing_filename == q.mid);
  CHECK(info.backing_filename_format == "qcow2");
  REQUIRE(info.backing_image);
  CHECK(info.backing_image->filename == q.mid);
  CHECK(info.backing_image->read_only);
  REQUIRE(info.backing_image->backing_image);
  const auto& base = *info.backing_image->backing_image;
  CHECK(base.filename == q.base);
  CHECK(base.format == "raw");
  CHECK(base.cluster_size == 0);
  CHECK(base.backing_image == nullptr);
  CHECK(base.backing_filename.empty());
}

TEST_CASE("chain: find a layer by path, other spelling or recorded name") {
  QemuChain q;
  auto chain = open_ok(q.top);
  CHECK(chain->find(q.top) == std::optional<std::size_t>(0));
  CHECK(chain->find(q.mid) == std::optional<std::size_t>(1));
  CHECK(chain->find(q.dir.path.string() + "/./base.img") == std::optional<std::size_t>(2));
  CHECK(chain->find("mid.qcow2") == std::optional<std::size_t>(1));
  CHECK(!chain->find("nope.qcow2"));
  CHECK(!chain->find(""));
}

TEST_CASE("chain: a raw image alone and a probed top") {
  TempDir dir;
  const std::string raw = dir.file("disk.raw");
  write_file(raw, pattern(65536, 3));
  auto chain = open_ok(raw, "");
  CHECK(chain->length() == 1);
  CHECK(chain->layers()[0].format == "raw");
  CHECK(*run(chain->depth_of(0)) == 1);
  QemuChain q;
  auto probed = open_ok(q.top, "");
  CHECK(probed->layers()[0].format == "qcow2");
  CHECK(probed->length() == 3);
}

TEST_CASE("chain: a backing file without a recorded format is probed") {
  QemuChain q;
  {  // the same link without a recorded format
    auto img = run(open_image(q.top, "qcow2", false, false, nullptr));
    REQUIRE(img.has_value());
    REQUIRE(!run(img->qcow2->set_backing_file("mid.qcow2", "")));
    REQUIRE(!run(img->qcow2->flush()));
  }
  auto chain = open_ok(q.top);
  CHECK(chain->layers()[0].backing_format.empty());
  CHECK(chain->layers()[1].format == "qcow2");
  CHECK(chain->layers()[2].format == "raw");  // mid records raw for its base
}

TEST_CASE("chain: loops, missing files, foreign formats and absurd depth are refused") {
  TempDir dir;
  auto p = dir.path.string();
  sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 a.qcow2 1M && "
                    "qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2 && "
                    "qemu-img rebase -u -b b.qcow2 -F qcow2 a.qcow2",
                    p));
  auto loop = open_error(dir.file("b.qcow2"));
  INFO(loop);
  CHECK(loop.find("loop") != std::string::npos);
  CHECK(loop.find("b.qcow2") != std::string::npos);

  // A file naming itself.
  sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 s.qcow2 1M && "
                    "qemu-img rebase -u -b s.qcow2 -F qcow2 s.qcow2",
                    p));
  CHECK(open_error(dir.file("s.qcow2")).find("loop") != std::string::npos);

  // A missing backing file: the message names it and the image naming it.
  sh_ok(fmt::format("cd '{}' && qemu-img create -q -f raw gone.img 1M && "
                    "qemu-img create -q -f qcow2 -b gone.img -F raw m.qcow2 && rm gone.img",
                    p));
  auto missing = open_error(dir.file("m.qcow2"));
  INFO(missing);
  CHECK(missing.find(dir.file("gone.img")) != std::string::npos);
  CHECK(missing.find("m.qcow2") != std::string::npos);
  CHECK(missing.find("No such file") != std::string::npos);

  // A missing top.
  CHECK(open_error(dir.file("absent.qcow2")).find("absent.qcow2") != std::string::npos);

  // A backing format fleece does not open.
  sh_ok(fmt::format("cd '{}' && qemu-img create -q -f raw v.img 1M && "
                    "qemu-img create -q -f qcow2 -b v.img -F raw f.qcow2 && "
                    "qemu-img rebase -u -b v.img -F vmdk f.qcow2",
                    p));
  auto foreign = open_error(dir.file("f.qcow2"));
  INFO(foreign);
  CHECK(foreign.find("vmdk") != std::string::npos);

  // Depth: a chain of 5 opens with max_depth 5, not with 4.
  sh_ok(fmt::format("cd '{}' && qemu-img create -q -f raw d0.img 1M", p));
  for (int i = 1; i < 5; ++i)
    sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -b {} -F {} d{}.qcow2", p,
                      i == 1 ? std::string("d0.img") : fmt::format("d{}.qcow2", i - 1),
                      i == 1 ? "raw" : "qcow2", i));
  CHECK(open_ok(dir.file("d4.qcow2"), "qcow2", {.max_depth = 5})->length() == 5);
  auto deep = open_error(dir.file("d4.qcow2"), {.max_depth = 4});
  INFO(deep);
  CHECK(deep.find("deeper") != std::string::npos);
  CHECK(deep.find("d0.img") != std::string::npos);
}

TEST_CASE("chain: a backing file in another directory, named relative to its overlay") {
  TempDir dir;
  auto p = dir.path.string();
  sh_ok(fmt::format("mkdir -p '{0}/bases' '{0}/vms' && qemu-img create -q -f raw '{0}/bases/b.img' 1M"
                    " && qemu-io -f raw -c 'write -P 5 0 64k' '{0}/bases/b.img'"
                    " && cd '{0}/vms' && qemu-img create -q -f qcow2 -b ../bases/b.img -F raw "
                    "o.qcow2",
                    p));
  // Opened from another working directory: the name is relative to vms/.
  auto chain = open_ok(p + "/vms/o.qcow2");
  REQUIRE(chain->length() == 2);
  CHECK(chain->layers()[1].path == p + "/bases/b.img");
  CHECK(read_dev(*chain->device(), 0, 65536) == filled(65536, 5));
  CHECK(backing_name_for(p + "/vms/o.qcow2", p + "/bases/b.img") == p + "/bases/b.img");
  CHECK(backing_name_for(p + "/vms/o.qcow2", p + "/vms/x.img") == "x.img");
}

// Qcow2Image against the real qemu-img / qemu-io: files fleece writes must
// pass `qemu-img check` and read the same through qemu, and files qemu
// writes must read the same through fleece.
#include "cow/qcow2_image.hpp"
#include "tests/unit/cow/qcow2_doctest_support.hpp"

#include <doctest/doctest.h>

#include <fmt/format.h>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::test;

namespace {

void check_with_qemu_img(const std::string& path) {
  auto [rc, out] = shell("qemu-img check -f qcow2 '" + path + "'");
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("No errors were found") != std::string::npos);
  CHECK(out.find("leaked") == std::string::npos);
}

}  // namespace

TEST_CASE("qcow2 written by fleece passes qemu-img check and converts to what fleece reads") {
  TempDir dir;
  const uint64_t size = 3 * 1024 * 1024 + 4096;
  auto base_bytes = pattern(size, 7);
  write_file(dir.file("base.raw"), base_bytes);
  for (uint32_t cs : {65536u, 4096u, 512u}) {
    CAPTURE(cs);
    auto file = std::make_shared<GrowingFile>();
    auto r = run(Qcow2Image::create(file, {size, cs, dir.file("base.raw"), "raw"}));
    REQUIRE(r.has_value());
    auto img = *r;
    img->set_backing(std::make_shared<GrowingFile>(base_bytes));
    // Whole clusters, partial writes (copying from the backing), zeroes,
    // discards, and a discarded cluster reused.
    const uint64_t n = img->guest_clusters();
    std::mt19937 rng(cs);
    for (int i = 0; i < 60; ++i) {
      const uint64_t g = rng() % n;
      switch (rng() % 5) {
        case 0:
          if ((g + 1) * cs <= size) REQUIRE(!run(img->write_cluster(g, pattern(cs, rng()))));
          break;
        case 1: {
          const uint64_t off = rng() % (size - 1000);
          REQUIRE(!run(img->write(off, pattern(1 + rng() % 3000, rng()), {})));
          break;
        }
        case 2: REQUIRE(!run(img->zero_cluster(g))); break;
        case 3: REQUIRE(!run(img->discard_cluster(g))); break;
        case 4: REQUIRE(!run(img->write_zeroes(rng() % (size - 9000), 1 + rng() % 9000, {}))); break;
      }
    }
    REQUIRE(!run(img->flush()));
    const auto ours = read_all(*img);
    const std::string path = dir.file(fmt::format("store-{}.qcow2", cs));
    write_file(path, file->bytes());
    check_with_qemu_img(path);

    auto [irc, info] = shell("qemu-img info '" + path + "'");
    INFO(info);
    CHECK(irc == 0);
    CHECK(info.find("backing file: " + dir.file("base.raw")) != std::string::npos);
    CHECK(info.find("backing file format: raw") != std::string::npos);
    CHECK(info.find(fmt::format("cluster_size: {}", cs)) != std::string::npos);

    // Re-pointing the backing link keeps the image valid for qemu.
    write_file(dir.file("other.raw"), base_bytes);
    REQUIRE(!run(img->set_backing_file(dir.file("other.raw"), "raw")));
    write_file(path, file->bytes());
    auto [irc2, info2] = shell("qemu-img info '" + path + "'");
    INFO(info2);
    CHECK(info2.find("backing file: " + dir.file("other.raw")) != std::string::npos);
    check_with_qemu_img(path);

    const std::string raw = dir.file("converted.raw");
    auto [crc, cout_] = shell("qemu-img convert -f qcow2 -O raw '" + path + "' '" + raw + "'");
    INFO(cout_);
    REQUIRE(crc == 0);
    CHECK(read_file(raw) == ours);
  }
}

TEST_CASE("qcow2 refcount table growth and many refcount blocks stay consistent") {
  TempDir dir;
  // 512-byte clusters: one refcount block covers 256 clusters and the first
  // refcount table 64 blocks, so 24000 clusters need a bigger table.
  const uint32_t cs = 512;
  const uint64_t size = 24000ull * cs;
  auto file = std::make_shared<GrowingFile>();
  auto r = run(Qcow2Image::create(file, {size, cs, {}, {}}));
  REQUIRE(r.has_value());
  auto img = *r;
  for (uint64_t g = 0; g < img->guest_clusters(); ++g) {
    auto data = filled(cs, uint8_t(g * 7));
    data[0] = std::byte(g >> 8);
    REQUIRE(!run(img->write_cluster(g, data)));
  }
  for (uint64_t g = 0; g < img->guest_clusters(); g += 3) REQUIRE(!run(img->discard_cluster(g)));
  REQUIRE(!run(img->flush()));
  const auto ours = read_all(*img);
  const std::string path = dir.file("big.qcow2");
  write_file(path, file->bytes());
  check_with_qemu_img(path);
  auto [crc, out] = shell("qemu-img convert -f qcow2 -O raw '" + path + "' '" +
                          dir.file("big.raw") + "'");
  REQUIRE(crc == 0);
  CHECK(read_file(dir.file("big.raw")) == ours);
  // And fleece reads its own file back.
  auto again = run(Qcow2Image::open(file));
  REQUIRE(again.has_value());
  CHECK(read_all(**again) == ours);
  CHECK((*again)->data_bytes_in_use() == img->data_bytes_in_use());
}

TEST_CASE("qcow2 made and written by qemu reads the same through fleece") {
  TempDir dir;
  const uint64_t size = 2 * 1024 * 1024;
  auto base_bytes = pattern(size, 99);
  write_file(dir.file("base.raw"), base_bytes);
  for (uint32_t cs : {65536u, 4096u}) {
    CAPTURE(cs);
    const std::string path = dir.file(fmt::format("q{}.qcow2", cs));
    auto [rc, out] = shell(fmt::format(
        "qemu-img create -f qcow2 -o cluster_size={},backing_file='{}',backing_fmt=raw '{}' {}",
        cs, dir.file("base.raw"), path, size));
    INFO(out);
    REQUIRE(rc == 0);
    auto [wrc, wout] = shell(fmt::format(
        "qemu-io -f qcow2 -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 100000 3000' "
        "-c 'write -z 196608 65536' -c 'write -P 0x12 1048576 131072' "
        "-c 'discard 1048576 65536' '{}'",
        path));
    INFO(wout);
    REQUIRE(wrc == 0);
    auto file = std::make_shared<GrowingFile>(read_file(path));
    std::string why;
    auto r = run(Qcow2Image::open(file, {}, &why));
    INFO(why);
    REQUIRE(r.has_value());
    auto img = *r;
    CHECK(img->backing_file() == dir.file("base.raw"));
    CHECK(img->backing_format() == "raw");
    CHECK(img->cluster_size() == cs);
    img->set_backing(std::make_shared<GrowingFile>(base_bytes));
    auto ours = read_all(*img);
    CHECK(std::all_of(ours.begin(), ours.begin() + 65536,
                      [](std::byte b) { return b == std::byte(0xab); }));
    auto [crc, cout_] = shell("qemu-img convert -f qcow2 -O raw '" + path + "' '" +
                              dir.file("q.raw") + "'");
    REQUIRE(crc == 0);
    CHECK(read_file(dir.file("q.raw")) == ours);

    // fleece writes to qemu's file; qemu still accepts it.
    REQUIRE(!run(img->write(300000, pattern(70000, 5), {})));
    REQUIRE(!run(img->discard_cluster(0)));
    REQUIRE(!run(img->flush()));
    ours = read_all(*img);
    write_file(path, file->bytes());
    check_with_qemu_img(path);
    shell("qemu-img convert -f qcow2 -O raw '" + path + "' '" + dir.file("q.raw") + "'");
    CHECK(read_file(dir.file("q.raw")) == ours);
  }
}

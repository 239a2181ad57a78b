// Hostile qcow2 files: each bad field gives an error that names it, and
// thousands of random mutations give errors or valid reads, never a crash
// or an access outside the file (run this under ASan).
#include "cow/qcow2_format.hpp"
#include "cow/qcow2_image.hpp"
#include "tests/unit/cow/qcow2_test_support.hpp"
#include "util/errors.hpp"

#include <doctest/doctest.h>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::qcow2;
using namespace fleece::cow::test;

namespace {

constexpr uint32_t kCs = 4096;
constexpr uint64_t kSize = 64 * kCs;

// A small valid image with data, zero clusters, a backing name and format.
std::vector<std::byte> valid_image() {
  auto file = std::make_shared<GrowingFile>();
  auto img = run(Qcow2Image::create(file, {kSize, kCs, "base.raw", "raw"}));
  REQUIRE(img.has_value());
  for (uint64_t g : {0, 1, 5, 20, 63}) REQUIRE(!run((*img)->write_cluster(g, pattern(kCs, g))));
  REQUIRE(!run((*img)->zero_cluster(7)));
  REQUIRE(!run((*img)->discard_cluster(1)));
  REQUIRE(!run((*img)->flush()));
  return file->bytes();
}

struct Opened {
  std::error_code ec;
  std::string why;
  std::shared_ptr<Qcow2Image> img;
};

Opened try_open(std::vector<std::byte> bytes, bool read_only = false) {
  Opened o;
  auto r = run(Qcow2Image::open(std::make_shared<GrowingFile>(std::move(bytes)),
                                {.read_only = read_only}, &o.why));
  if (r) o.img = *r;
  else o.ec = r.error();
  return o;
}

void put32(std::vector<std::byte>& b, std::size_t off, uint32_t v) { store_be32(b.data() + off, v); }
void put64(std::vector<std::byte>& b, std::size_t off, uint64_t v) { store_be64(b.data() + off, v); }

void expect_refusal(std::vector<std::byte> bytes, Errc e, const std::string& words) {
  auto o = try_open(std::move(bytes));
  CAPTURE(o.why);
  CHECK(o.ec == e);
  CHECK(o.why.find(words) != std::string::npos);
}

}  // namespace

TEST_CASE("qcow2 hostile headers are refused with a message naming the problem") {
  const auto good = valid_image();
  REQUIRE(try_open(good).img);
  auto b = good;

  b = good; put32(b, 0, 0x12345678);
  expect_refusal(b, Errc::corrupt_image, "magic");
  b = good; put32(b, 4, 4);
  expect_refusal(b, Errc::unsupported_feature, "version 4");
  b = good; put32(b, 20, 22);
  expect_refusal(b, Errc::corrupt_image, "cluster_bits");
  b = good; put32(b, 20, 8);
  expect_refusal(b, Errc::corrupt_image, "cluster_bits");
  b = good; put64(b, 72, kIncompatCorrupt);
  expect_refusal(b, Errc::unsupported_feature, "corrupt");
  b = good; put64(b, 72, kIncompatExternalData);
  expect_refusal(b, Errc::unsupported_feature, "external data file");
  b = good; put64(b, 72, kIncompatCompression);
  expect_refusal(b, Errc::unsupported_feature, "compression type");
  b = good; put64(b, 72, kIncompatExtendedL2);
  expect_refusal(b, Errc::unsupported_feature, "extended L2");
  b = good; put64(b, 72, uint64_t{1} << 10);
  expect_refusal(b, Errc::unsupported_feature, "bit 10");
  b = good; put32(b, 32, 1);
  expect_refusal(b, Errc::unsupported_feature, "encryption");
  b = good; put32(b, 96, 7);
  expect_refusal(b, Errc::corrupt_image, "refcount_order");
  b = good; put32(b, 100, 100);
  expect_refusal(b, Errc::corrupt_image, "header_length");
  b = good; put32(b, 36, 0);  // L1 too small for the virtual size
  expect_refusal(b, Errc::corrupt_image, "L1 table has 0 entries");
  b = good; put64(b, 40, 1 << 30);
  expect_refusal(b, Errc::corrupt_image, "L1 table");
  b = good; put64(b, 40, 100);
  expect_refusal(b, Errc::corrupt_image, "L1 table offset");
  b = good; put64(b, 48, uint64_t{1} << 40);
  expect_refusal(b, Errc::corrupt_image, "refcount table");
  b = good; put32(b, 56, 0);
  expect_refusal(b, Errc::corrupt_image, "refcount table");
  b = good; put64(b, 48, load_be64(good.data() + 40));  // same place as L1
  expect_refusal(b, Errc::corrupt_image, "overlap");
  b = good; put32(b, 16, 5000);  // backing name length
  expect_refusal(b, Errc::corrupt_image, "backing file name");
  // The first extension (backing format) claims to be longer than the area.
  b = good; put32(b, 112 + 4, 100000);
  expect_refusal(b, Errc::corrupt_image, "overruns");
  // A refcount table entry pointing outside the file.
  b = good;
  {
    const uint64_t rt = load_be64(good.data() + 48);
    put64(b, rt, uint64_t{1} << 40);
    expect_refusal(b, Errc::corrupt_image, "refcount table entry 0");
  }
  // Metadata with refcount 0 would be handed out as free space.
  b = good;
  {
    const uint64_t rt = load_be64(good.data() + 48);
    const uint64_t block = load_be64(good.data() + rt);
    store_be16(b.data() + block, 0);  // the header's refcount
    expect_refusal(b, Errc::corrupt_image, "header");
  }
  // Too small to be anything.
  expect_refusal(std::vector<std::byte>(50), Errc::corrupt_image, "too small");
  // A truncated file: the tables are gone.
  b = good; b.resize(3 * kCs);
  CHECK(try_open(b).ec);
}

TEST_CASE("qcow2 dirty images open read-only and say why") {
  auto b = valid_image();
  put64(b, 72, kIncompatDirty);
  auto o = try_open(b);
  REQUIRE(o.img);
  CHECK(o.img->dirty());
  CHECK(o.img->capabilities().read_only);
  std::vector<std::byte> buf(kCs);
  CHECK(run(o.img->write(0, buf, {})) == Errc::unsupported_feature);
  CHECK(!run(o.img->read(0, buf)));
  CHECK(buf == pattern(kCs, 0));
}

TEST_CASE("qcow2 bad L1 and L2 entries fail reads of that range only") {
  const auto good = valid_image();
  const uint64_t l1 = load_be64(good.data() + 40);
  const uint64_t l2 = load_be64(good.data() + l1) & kEntryOffsetMask;
  auto b = good;
  put64(b, l2 + 5 * 8, (uint64_t{1} << 40) | kEntryCopied);  // cluster 5 beyond the file
  auto o = try_open(b);
  REQUIRE(o.img);
  std::vector<std::byte> buf(kCs);
  CHECK(run(o.img->read(5 * kCs, buf)) == Errc::corrupt_image);
  CHECK(!run(o.img->read(0, buf)));
  CHECK(buf == pattern(kCs, 0));
  b = good;
  put64(b, l2 + 5 * 8, kL2Compressed | 12345);
  o = try_open(b);
  REQUIRE(o.img);
  CHECK(run(o.img->read(5 * kCs, buf)) == Errc::unsupported_feature);
  b = good;
  put64(b, l1, 777 | kEntryCopied);  // unaligned L2 table
  o = try_open(b);
  REQUIRE(o.img);
  CHECK(run(o.img->read(0, buf)) == Errc::corrupt_image);
}

TEST_CASE("qcow2 random mutations never crash") {
  const auto good = valid_image();
  const uint64_t l1 = load_be64(good.data() + 40);
  const uint64_t rt = load_be64(good.data() + 48);
  const uint64_t block = load_be64(good.data() + rt);
  const uint64_t l2 = load_be64(good.data() + l1) & kEntryOffsetMask;
  struct Region {
    uint64_t start, len;
  };
  const Region regions[] = {{0, 160}, {0, 512}, {l1, 16}, {rt, 16}, {block, 64}, {l2, 512}};
  std::mt19937 rng(2024);
  int opened = 0;
  for (int i = 0; i < 3000; ++i) {
    auto b = good;
    const int edits = 1 + int(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      const Region& r = regions[rng() % std::size(regions)];
      const uint64_t at = r.start + rng() % r.len;
      switch (rng() % 4) {
        case 0: b[at] = std::byte(rng()); break;
        case 1: b[at] ^= std::byte(1u << (rng() % 8)); break;
        case 2:  // an aligned 64-bit field set to a boundary value
          if (at - at % 8 + 8 <= b.size()) {
            const uint64_t vals[] = {0, 1, ~uint64_t{0}, uint64_t{1} << 63, kCs, b.size(),
                                     b.size() - kCs, uint64_t(rng()) << 12};
            put64(b, at - at % 8, vals[rng() % std::size(vals)]);
          }
          break;
        case 3:
          if (rng() % 8 == 0) b.resize(rng() % b.size());
          break;
      }
    }
    auto o = try_open(b, rng() % 2 == 0);
    if (!o.img) {
      CHECK(!o.why.empty());
      continue;
    }
    ++opened;
    auto& img = *o.img;
    const uint64_t n = std::min<uint64_t>(img.size(), 4 << 20);
    std::vector<std::byte> buf(n);
    (void)run(img.read(0, buf));
    std::vector<block::Extent> ex;
    (void)run(img.block_status(0, n, ex));
    if (!img.capabilities().read_only && img.guest_clusters() > 0) {
      std::vector<std::byte> data(img.cluster_size(), std::byte(0x5a));
      const uint64_t g = rng() % img.guest_clusters();
      (void)run(img.write_cluster(g, data));
      (void)run(img.discard_cluster(rng() % img.guest_clusters()));
      (void)run(img.flush());
      (void)run(img.read(0, buf));
    }
  }
  MESSAGE("mutated images that opened: " << opened << " of 3000");
  CHECK(opened > 0);
}

TEST_CASE("qcow2 a refcount block far beyond the file does not stall open") {
  auto b = valid_image();
  const uint64_t rt = load_be64(b.data() + 48);
  // A second block, at refcount-table index 200 (clusters 409600+), whose
  // last entry is in use: the image "ends" near 1.6 GiB.
  const uint64_t block = b.size();
  b.resize(b.size() + kCs);
  put64(b, rt + 200 * 8, block);
  store_be16(b.data() + block + kCs - 2, 1);
  // It holds its own refcount? No: the refcount of `block` is in block 0.
  const uint64_t block0 = load_be64(b.data() + rt);
  store_be16(b.data() + block0 + (block / kCs) * 2, 1);
  auto o = try_open(b);
  CAPTURE(o.why);
  REQUIRE(o.img);
  std::vector<std::byte> data(kCs, std::byte(1));
  CHECK(!run(o.img->write_cluster(30, data)));
  CHECK(!run(o.img->flush()));
}

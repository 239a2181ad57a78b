// Qcow2Image with extended L2 entries (subclusters), as fleece's stores use
// it: random subcluster writes, zeroes and discards checked against a model
// after every step, then the file checked and read by qemu-img.
#include "cow/qcow2_image.hpp"
#include "tests/unit/cow/qcow2_test_support.hpp"
#include "util/errors.hpp"

#include <doctest/doctest.h>

#include <random>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::test;

namespace {

constexpr uint32_t kCs = 65536;
constexpr uint32_t kScs = kCs / 32;
// Not a whole number of clusters, nor of subclusters: the tail is short.
// (Whole sectors: QEMU rounds a qcow2's virtual size down to 512 bytes.)
constexpr uint64_t kSize = 9 * uint64_t{kCs} + 5 * kScs + 512;

std::shared_ptr<Qcow2Image> make_extended(std::shared_ptr<GrowingFile> file, uint64_t size,
                                          uint32_t cs = kCs) {
  Qcow2CreateOptions o;
  o.virtual_size = size;
  o.cluster_size = cs;
  o.backing_file = "base.raw";
  o.backing_format = "raw";
  o.extended_l2 = true;
  auto r = run(Qcow2Image::create(std::move(file), o));
  REQUIRE(r.has_value());
  return *r;
}

std::vector<std::byte> read_all(Qcow2Image& img) {
  std::vector<std::byte> out(img.size());
  REQUIRE(!run(img.read(0, out)));
  return out;
}

// The model: bytes as read, and each subcluster's kind.
struct Model {
  std::vector<std::byte> bytes;
  std::vector<Qcow2ClusterKind> kind;
  uint64_t data_subclusters() const {
    return uint64_t(std::count(kind.begin(), kind.end(), Qcow2ClusterKind::data));
  }
};

void check_against(Qcow2Image& img, const Model& m) {
  CHECK(read_all(img) == m.bytes);
  CHECK(img.data_bytes_in_use() == m.data_subclusters() * kScs);
  for (uint64_t s = 0; s < m.kind.size(); ++s) {
    auto k = img.cached_subcluster_kind(s * kScs);
    REQUIRE(k.has_value());
    CAPTURE(s);
    CHECK(*k == m.kind[s]);
  }
  // block_status: this image's subclusters at depth 1, the backing's below.
  std::vector<block::Extent> ex;
  uint64_t pos = 0;
  while (pos < img.size()) {
    ex.clear();
    REQUIRE(!run(img.block_status(pos, img.size() - pos, ex)));
    REQUIRE(!ex.empty());
    for (const auto& e : ex) {
      for (uint64_t p = pos; p < pos + e.length; p += kScs - p % kScs) {
        const auto k = m.kind[p / kScs];
        CAPTURE(p);
        if (k == Qcow2ClusterKind::data) CHECK((e.flags == 0 && e.depth == 1));
        if (k == Qcow2ClusterKind::zero) CHECK(e.depth == 1);
        if (k == Qcow2ClusterKind::unallocated) CHECK(e.depth != 1);
      }
      pos += e.length;
    }
  }
}

}  // namespace

TEST_CASE("qcow2 extended L2: random subcluster writes, zeroes and discards match a model") {
  auto file = std::make_shared<GrowingFile>();
  auto img = make_extended(file, kSize);
  CHECK(img->extended_l2());
  CHECK(img->subcluster_size() == kScs);
  auto base_bytes = pattern(kSize, 5);
  img->set_backing(std::make_shared<GrowingFile>(base_bytes));
  const uint64_t empty_file = img->file_bytes_in_use();

  Model m{base_bytes, std::vector<Qcow2ClusterKind>((kSize + kScs - 1) / kScs,
                                                    Qcow2ClusterKind::unallocated)};
  const uint64_t subclusters = m.kind.size();
  std::mt19937 rng(11);
  for (int step = 0; step < 300; ++step) {
    // A run of subclusters inside one cluster.
    const uint64_t first = rng() % subclusters;
    const uint64_t cluster_end = std::min<uint64_t>(subclusters, (first / 32 + 1) * 32);
    const uint64_t n = 1 + rng() % (cluster_end - first);
    const uint64_t off = first * kScs, len = std::min<uint64_t>(n * kScs, kSize - off);
    const int op = int(rng() % 4);
    CAPTURE(step);
    CAPTURE(op);
    CAPTURE(first);
    CAPTURE(n);
    if (op <= 1) {
      auto data = pattern(len, uint32_t(step) + 100);
      REQUIRE(!run(img->write_subclusters(off, data)));
      std::copy(data.begin(), data.end(), m.bytes.begin() + std::ptrdiff_t(off));
      std::fill_n(m.kind.begin() + std::ptrdiff_t(first), n, Qcow2ClusterKind::data);
    } else {
      if (op == 2)
        REQUIRE(!run(img->zero_subclusters(off, len)));
      else
        REQUIRE(!run(img->discard_subclusters(off, len)));
      std::fill_n(m.bytes.begin() + std::ptrdiff_t(off), len, std::byte{0});
      std::fill_n(m.kind.begin() + std::ptrdiff_t(first), n, Qcow2ClusterKind::zero);
    }
    if (step % 25 == 0 || step == 299) check_against(*img, m);
  }
  REQUIRE(!run(img->flush()));

  // A host cluster goes back once none of its subclusters is allocated.
  for (uint64_t c = 0; c * kCs < kSize; ++c) {
    const uint64_t len = std::min<uint64_t>(kCs, kSize - c * kCs);
    REQUIRE(!run(img->discard_subclusters(c * kCs, len)));
  }
  CHECK(img->data_bytes_in_use() == 0);
  // Only L2 tables are left beyond the empty image's clusters.
  CHECK(img->file_bytes_in_use() == empty_file + kCs);
  REQUIRE(!run(img->write_subclusters(3 * kCs + 4 * kScs, pattern(2 * kScs, 9))));
  CHECK(img->data_bytes_in_use() == 2 * kScs);
  CHECK(img->file_bytes_in_use() == empty_file + 2 * kCs);
}

TEST_CASE("qcow2 extended L2: qemu-img checks the file and reads it through its backing") {
  if (shell("command -v qemu-img").first != 0) {
    MESSAGE("qemu-img not installed: skipped");
    return;
  }
  TempDir dir;
  auto file = std::make_shared<GrowingFile>();
  auto img = make_extended(file, kSize);
  auto base_bytes = pattern(kSize, 6);
  img->set_backing(std::make_shared<GrowingFile>(base_bytes));
  auto expect = base_bytes;
  // Data in subclusters 0-1 and 30-31 of cluster 0, zeroes in 4-5 of
  // cluster 2 (no host cluster), data then half-zeroed in cluster 5, the
  // short tail written, everything else from the backing file.
  auto put = [&](uint64_t off, uint64_t len, uint32_t seed) {
    auto d = pattern(len, seed);
    REQUIRE(!run(img->write_subclusters(off, d)));
    std::copy(d.begin(), d.end(), expect.begin() + std::ptrdiff_t(off));
  };
  auto zero = [&](uint64_t off, uint64_t len) {
    REQUIRE(!run(img->zero_subclusters(off, len)));
    std::fill_n(expect.begin() + std::ptrdiff_t(off), len, std::byte{0});
  };
  put(0, 2 * kScs, 1);
  put(30 * kScs, 2 * kScs, 2);
  zero(2 * uint64_t{kCs} + 4 * kScs, 2 * kScs);
  put(5 * uint64_t{kCs}, kCs, 3);
  zero(5 * uint64_t{kCs} + 8 * kScs, 16 * kScs);
  put(9 * uint64_t{kCs} + 4 * kScs, kSize - (9 * uint64_t{kCs} + 4 * kScs), 4);
  REQUIRE(!run(img->flush()));

  write_file(dir.file("base.raw"), base_bytes);
  write_file(dir.file("st.qcow2"), file->bytes());
  auto [irc, info] = shell("qemu-img info '" + dir.file("st.qcow2") + "'");
  INFO(info);
  CHECK(irc == 0);
  CHECK(info.find("extended l2: true") != std::string::npos);
  auto [crc, check] = shell("qemu-img check -f qcow2 '" + dir.file("st.qcow2") + "'");
  INFO(check);
  CHECK(crc == 0);
  auto [rc, out] = shell("qemu-img convert -f qcow2 -O raw '" + dir.file("st.qcow2") + "' '" +
                         dir.file("st.raw") + "'");
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(read_file(dir.file("st.raw")) == expect);
  CHECK(read_all(*img) == expect);
}

TEST_CASE("qcow2 extended L2: a discard inside a host cluster still in use trims its bytes") {
  auto file = std::make_shared<GrowingFile>();
  auto img = make_extended(file, kSize);
  const uint64_t at = 2 * uint64_t{kCs};
  auto data = pattern(8 * kScs, 4);
  REQUIRE(!run(img->write_subclusters(at, data)));  // subclusters 0-7 of cluster 2
  file->trims.clear();
  REQUIRE(!run(img->discard_subclusters(at + 2 * kScs, 2 * kScs)));
  REQUIRE(file->trims.size() == 1);
  const uint64_t host_trimmed = file->trims[0].first;
  CHECK(file->trims[0].second == 2 * kScs);
  CHECK(host_trimmed % kCs == 2 * kScs);  // the subclusters' place in their host cluster
  CHECK(img->data_bytes_in_use() == 6 * kScs);
  std::vector<std::byte> got(8 * kScs);
  REQUIRE(!run(img->read(at, got)));
  auto expect = data;
  std::fill_n(expect.begin() + 2 * kScs, 2 * kScs, std::byte{0});
  CHECK(got == expect);
  // The rest of the host cluster was not touched.
  auto raw = file->bytes();
  const uint64_t host = host_trimmed - 2 * kScs;
  CHECK(std::equal(data.begin(), data.begin() + 2 * kScs, raw.begin() + std::ptrdiff_t(host)));
  CHECK(std::equal(data.begin() + 4 * kScs, data.end(), raw.begin() + std::ptrdiff_t(host + 4 * kScs)));
  // The last subclusters: the host cluster goes whole, nothing to trim.
  file->trims.clear();
  REQUIRE(!run(img->discard_subclusters(at, kCs)));
  CHECK(file->trims.empty());
  CHECK(img->data_bytes_in_use() == 0);
}

TEST_CASE("qcow2 extended L2: what it refuses") {
  auto file = std::make_shared<GrowingFile>();
  Qcow2CreateOptions small;
  small.virtual_size = kSize;
  small.cluster_size = 8192;  // subclusters of 256 bytes: QEMU refuses them
  small.extended_l2 = true;
  CHECK(run(Qcow2Image::create(file, small)).error() == std::errc::invalid_argument);

  auto img = make_extended(file, kSize);
  auto cluster = pattern(kCs, 1);
  // The whole-cluster and byte-range write paths are for standard images.
  CHECK(run(img->write_cluster(0, cluster)) == Errc::unsupported_feature);
  CHECK(run(img->zero_cluster(0)) == Errc::unsupported_feature);
  CHECK(run(img->write(0, cluster, {})) == Errc::unsupported_feature);
  CHECK(run(img->write_zeroes(0, kCs, {})) == Errc::unsupported_feature);
  CHECK(run(img->trim(0, kCs, {})) == Errc::unsupported_feature);
  CHECK(run(img->map_cluster(0)).error() == Errc::unsupported_feature);
  CHECK(!img->cached_mapping(0).has_value());
  CHECK(!img->file_range(0, kCs).has_value());
  // Subcluster ranges: aligned, inside one cluster, inside the disk.
  auto two = pattern(2 * kScs, 2);
  CHECK(run(img->write_subclusters(100, two)) == std::errc::invalid_argument);
  CHECK(run(img->write_subclusters(31 * kScs, two)) == std::errc::invalid_argument);
  CHECK(run(img->write_subclusters(kSize, two)) == std::errc::invalid_argument);
  CHECK(run(img->zero_subclusters(kScs, kScs + 1)) == std::errc::invalid_argument);
  CHECK(run(img->zero_subclusters(0, 0)) == std::errc::invalid_argument);
  CHECK(img->data_bytes_in_use() == 0);

  // fleece writes such images but does not open them.
  REQUIRE(!run(img->flush()));
  std::string why;
  auto again = run(Qcow2Image::open(file, {}, &why));
  CHECK(again.error() == Errc::unsupported_feature);
  CHECK(why.find("extended L2") != std::string::npos);
}

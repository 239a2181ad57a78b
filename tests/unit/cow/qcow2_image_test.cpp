// Qcow2Image over memory: create, cluster API, Device API, reopen.
#include "cow/qcow2_format.hpp"
#include "cow/qcow2_image.hpp"
#include "tests/unit/cow/qcow2_test_support.hpp"
#include "util/errors.hpp"

#include <doctest/doctest.h>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::test;
using block::Task;

namespace {

constexpr uint64_t kMiB = 1 << 20;

std::shared_ptr<Qcow2Image> must_create(std::shared_ptr<GrowingFile> file, uint64_t size,
                                        uint32_t cs = 65536, std::string backing = {},
                                        std::string fmt = {}) {
  auto r = run(Qcow2Image::create(file, {size, cs, backing, fmt}));
  REQUIRE(r.has_value());
  return *r;
}

std::shared_ptr<Qcow2Image> must_open(std::shared_ptr<block::Device> file) {
  std::string why;
  auto r = run(Qcow2Image::open(file, {}, &why));
  INFO(why);
  REQUIRE(r.has_value());
  return *r;
}

std::vector<std::byte> read_all(block::Device& d, uint64_t off, uint64_t len) {
  std::vector<std::byte> out(len);
  auto ec = run(d.read(off, out));
  REQUIRE(!ec);
  return out;
}

Qcow2ClusterKind kind_of(Qcow2Image& img, uint64_t g) {
  auto m = run(img.map_cluster(g));
  REQUIRE(m.has_value());
  return m->kind;
}

}  // namespace

TEST_CASE("qcow2 create writes a v3 header that parses back") {
  auto file = std::make_shared<GrowingFile>();
  auto img = must_create(file, 10 * kMiB + 5, 65536, "base.raw", "raw");
  CHECK(img->size() == 10 * kMiB + 5);
  CHECK(img->cluster_size() == 65536);
  auto bytes = file->bytes();
  std::string why;
  auto h = parse_qcow2_header(bytes, bytes.size(), &why);
  REQUIRE(h.has_value());
  CHECK(h->version == 3);
  CHECK(h->cluster_bits == 16);
  CHECK(h->size == 10 * kMiB + 5);
  CHECK(h->refcount_order == 4);
  CHECK(h->backing_file == "base.raw");
  CHECK(h->backing_format == "raw");
  CHECK(h->incompatible_features == 0);
  CHECK(h->compatible_features == 0);
  CHECK(h->l1_size >= h->min_l1_size());
  CHECK(h->refcount_table_offset == 65536);
  // Header, refcount table, refcount block, L1: nothing else.
  CHECK(img->file_bytes_in_use() == 4 * 65536);
  CHECK(img->data_bytes_in_use() == 0);
  for (uint64_t g = 0; g < img->guest_clusters(); ++g)
    CHECK(kind_of(*img, g) == Qcow2ClusterKind::unallocated);
  // Without a backing device attached, unallocated reads as zeroes.
  CHECK(read_all(*img, 0, 3 * 65536) == filled(3 * 65536, 0));
}

TEST_CASE("qcow2 whole-cluster write, zero, discard, and reuse of freed clusters") {
  auto file = std::make_shared<GrowingFile>();
  auto img = must_create(file, 4 * kMiB);
  const uint32_t cs = img->cluster_size();
  auto a = pattern(cs, 1), b = pattern(cs, 2);
  REQUIRE(!run(img->write_cluster(3, a)));
  REQUIRE(!run(img->write_cluster(5, b)));
  auto m3 = run(img->map_cluster(3));
  REQUIRE(m3.has_value());
  CHECK(m3->kind == Qcow2ClusterKind::data);
  CHECK(m3->host_offset % cs == 0);
  CHECK(img->data_bytes_in_use() == 2 * cs);
  CHECK(read_all(*img, 3 * cs, cs) == a);
  CHECK(read_all(*img, 5 * cs, cs) == b);
  // The data is where the mapping says, byte for byte, in the file.
  auto fb = file->bytes();
  CHECK(std::equal(a.begin(), a.end(), fb.begin() + m3->host_offset));

  // Overwriting a private cluster reuses it.
  auto c = pattern(cs, 3);
  REQUIRE(!run(img->write_cluster(3, c)));
  CHECK(run(img->map_cluster(3))->host_offset == m3->host_offset);
  CHECK(read_all(*img, 3 * cs, cs) == c);

  REQUIRE(!run(img->zero_cluster(7)));
  CHECK(kind_of(*img, 7) == Qcow2ClusterKind::zero);
  CHECK(read_all(*img, 7 * cs, cs) == filled(cs, 0));

  REQUIRE(!run(img->discard_cluster(3)));
  CHECK(kind_of(*img, 3) == Qcow2ClusterKind::zero);
  CHECK(read_all(*img, 3 * cs, cs) == filled(cs, 0));
  CHECK(img->data_bytes_in_use() == cs);
  // The freed data cluster is the next one handed out.
  REQUIRE(!run(img->write_cluster(9, a)));
  CHECK(run(img->map_cluster(9))->host_offset == m3->host_offset);
  CHECK(read_all(*img, 9 * cs, cs) == a);

  // Reopen from the file after a flush: the same content.
  REQUIRE(!run(img->flush()));
  auto again = must_open(file);
  CHECK(kind_of(*again, 3) == Qcow2ClusterKind::zero);
  CHECK(kind_of(*again, 5) == Qcow2ClusterKind::data);
  CHECK(kind_of(*again, 7) == Qcow2ClusterKind::zero);
  CHECK(kind_of(*again, 9) == Qcow2ClusterKind::data);
  CHECK(kind_of(*again, 1) == Qcow2ClusterKind::unallocated);
  CHECK(read_all(*again, 5 * cs, cs) == b);
  CHECK(read_all(*again, 9 * cs, cs) == a);
  CHECK(again->data_bytes_in_use() == 2 * cs);
  CHECK(again->file_bytes_in_use() == img->file_bytes_in_use());
}

TEST_CASE("qcow2 reads fall through to the backing device; partial writes copy from it") {
  auto file = std::make_shared<GrowingFile>();
  const uint32_t cs = 4096;
  auto img = must_create(file, 1 * kMiB, cs, "live.raw", "raw");
  auto base_bytes = pattern(1 * kMiB, 42);
  auto base = std::make_shared<GrowingFile>(base_bytes);
  img->set_backing(base);
  CHECK(read_all(*img, 0, kMiB) == base_bytes);

  // A partial write: the rest of the cluster comes from the backing.
  auto piece = filled(100, 0xee);
  REQUIRE(!run(img->write(2 * cs + 10, piece, {})));
  auto expect = base_bytes;
  std::fill_n(expect.begin() + 2 * cs + 10, 100, std::byte(0xee));
  CHECK(kind_of(*img, 2) == Qcow2ClusterKind::data);
  // Changing the backing afterwards does not change the copied cluster.
  auto other = std::make_shared<GrowingFile>(filled(kMiB, 0x11));
  img->set_backing(other);
  auto got = read_all(*img, 0, kMiB);
  CHECK(std::equal(got.begin() + 2 * cs, got.begin() + 3 * cs, expect.begin() + 2 * cs));
  CHECK(got[0] == std::byte(0x11));
  img->set_backing(base);

  // Zero clusters never fall through.
  REQUIRE(!run(img->write_zeroes(4 * cs, 2 * cs, {})));
  std::fill_n(expect.begin() + 4 * cs, 2 * cs, std::byte(0));
  // trim rounds inward: only cluster 8 of [8*cs - 1, 9*cs + 1).
  REQUIRE(!run(img->trim(8 * cs - 1, cs + 2, {})));
  std::fill_n(expect.begin() + 8 * cs, cs, std::byte(0));
  CHECK(kind_of(*img, 7) == Qcow2ClusterKind::unallocated);
  CHECK(kind_of(*img, 8) == Qcow2ClusterKind::zero);
  // Partial zeroing of an unallocated cluster with a backing copies it.
  REQUIRE(!run(img->write_zeroes(10 * cs + 5, 7, {})));
  std::fill_n(expect.begin() + 10 * cs + 5, 7, std::byte(0));
  CHECK(read_all(*img, 0, kMiB) == expect);
  // ...but a fast-only one refuses instead.
  CHECK(run(img->write_zeroes(12 * cs + 5, 7, {.fast_only = true})) ==
        std::errc::operation_not_supported);

  // A backing shorter than the image reads as zeroes past its end.
  img->set_backing(std::make_shared<GrowingFile>(filled(cs + 3, 0x77)));
  auto tail = read_all(*img, 0, 2 * cs);
  CHECK(tail[0] == std::byte(0x77));
  CHECK(tail[cs + 2] == std::byte(0x77));
  CHECK(tail[cs + 3] == std::byte(0));
}

TEST_CASE("qcow2 block_status reports this image at depth 1 and the backing below") {
  auto file = std::make_shared<GrowingFile>();
  const uint32_t cs = 4096;
  auto img = must_create(file, 64 * cs, cs);
  REQUIRE(!run(img->write_cluster(1, pattern(cs, 1))));
  REQUIRE(!run(img->zero_cluster(2)));
  std::vector<block::Extent> ex;
  REQUIRE(!run(img->block_status(0, 64 * cs, ex)));
  REQUIRE(ex.size() == 4);
  CHECK(ex[0].length == cs);
  CHECK(ex[0].flags == (block::kExtentHole | block::kExtentZero));
  CHECK(ex[0].depth == 0);
  CHECK(ex[1].length == cs);
  CHECK(ex[1].flags == 0);
  CHECK(ex[1].depth == 1);
  CHECK(ex[2].flags == (block::kExtentHole | block::kExtentZero));
  CHECK(ex[2].depth == 1);
  CHECK(ex[3].length == 61 * cs);
  CHECK(ex[3].depth == 0);

  img->set_backing(std::make_shared<GrowingFile>(filled(64 * cs, 1)));
  ex.clear();
  REQUIRE(!run(img->block_status(0, 64 * cs, ex)));
  REQUIRE(ex.size() == 4);
  CHECK(ex[0].depth == 2);
  CHECK(ex[0].flags == 0);
  CHECK(ex[3].depth == 2);
}

TEST_CASE("qcow2 refuses writes it cannot do and bad ranges") {
  auto file = std::make_shared<GrowingFile>();
  auto img = must_create(file, 1 * kMiB, 4096);
  std::vector<std::byte> buf(4096);
  CHECK(run(img->read(kMiB - 10, buf)) == std::errc::invalid_argument);
  CHECK(run(img->write_cluster(256, buf)) == std::errc::invalid_argument);
  CHECK(run(img->write_cluster(0, std::span(buf).first(100))) == std::errc::invalid_argument);
  REQUIRE(!run(img->flush()));
  auto ro = run(Qcow2Image::open(file, {.read_only = true}));
  REQUIRE(ro.has_value());
  CHECK((*ro)->capabilities().read_only);
  CHECK(run((*ro)->write(0, buf, {})) == std::errc::read_only_file_system);
}

TEST_CASE("qcow2 write errors leave the image consistent") {
  auto file = std::make_shared<GrowingFile>();
  const uint32_t cs = 4096;
  auto img = must_create(file, 64 * cs, cs);
  const auto before = img->file_bytes_in_use();
  file->fail_writes = true;
  CHECK(run(img->write_cluster(3, pattern(cs, 1))) == std::errc::io_error);
  CHECK(kind_of(*img, 3) == Qcow2ClusterKind::unallocated);
  CHECK(run(img->flush()) == std::errc::io_error);
  file->fail_writes = false;
  REQUIRE(!run(img->write_cluster(3, pattern(cs, 2))));
  REQUIRE(!run(img->flush()));
  auto again = must_open(file);
  CHECK(read_all(*again, 3 * cs, cs) == pattern(cs, 2));
  // The L2 table and one data cluster; the failed allocation was returned.
  CHECK(again->file_bytes_in_use() == before + 2 * cs);
}

TEST_CASE("qcow2 cached mappings, short last cluster, backing link rewrite") {
  auto file = std::make_shared<GrowingFile>();
  const uint32_t cs = 4096;
  auto img = must_create(file, 10 * cs + 100, cs, "old.raw", "raw");
  CHECK(img->guest_clusters() == 11);
  REQUIRE(!run(img->write_cluster(2, pattern(cs, 2))));
  REQUIRE(!run(img->zero_cluster(3)));
  CHECK(img->cached_mapping(2)->kind == Qcow2ClusterKind::data);
  CHECK(img->cached_mapping(3)->kind == Qcow2ClusterKind::zero);
  CHECK(img->cached_mapping(4)->kind == Qcow2ClusterKind::unallocated);
  CHECK(!img->cached_mapping(11).has_value());

  // The last cluster holds 100 bytes: write_cluster takes exactly those.
  auto tail = pattern(100, 9);
  REQUIRE(!run(img->write_cluster(10, tail)));
  CHECK(run(img->write_cluster(10, pattern(99, 9))) == std::errc::invalid_argument);
  CHECK(read_all(*img, 10 * cs, 100) == tail);

  REQUIRE(!run(img->set_backing_file("a-much-longer-name-than-before.qcow2", "qcow2")));
  CHECK(img->backing_file() == "a-much-longer-name-than-before.qcow2");
  REQUIRE(!run(img->set_backing_file("", "")));
  REQUIRE(!run(img->set_backing_file("new.qcow2", "qcow2")));
  REQUIRE(!run(img->flush()));  // the link is durable already; the clusters need this
  auto again = must_open(file);
  // Opened images fill the L2 cache as they are used.
  CHECK(!again->cached_mapping(2).has_value());
  CHECK(again->backing_file() == "new.qcow2");
  CHECK(again->backing_format() == "qcow2");
  CHECK(read_all(*again, 2 * cs, cs) == pattern(cs, 2));
  CHECK(read_all(*again, 10 * cs, 100) == tail);
  CHECK(again->cached_mapping(2)->kind == Qcow2ClusterKind::data);
}

TEST_CASE("qcow2 backing link rewrite with writes pending: the header alone goes out, by FUA") {
  // block-commit relinks the overlay the guest is writing: forcing out all
  // of its dirty data and tables to make the link durable is not needed.
  auto file = std::make_shared<GrowingFile>();
  const uint32_t cs = 4096;
  auto img = must_create(file, 64 * cs, cs, "old.raw", "raw");
  REQUIRE(!run(img->write_cluster(5, pattern(cs, 5))));
  REQUIRE(!run(img->flush()));
  REQUIRE(!run(img->write_cluster(6, pattern(cs, 6))));  // its L2 entry awaits a flush
  const uint64_t flushes = file->flushes, fua = file->fua_writes;
  REQUIRE(!run(img->set_backing_file("new.raw", "raw")));
  CHECK(file->flushes == flushes);
  CHECK(file->fua_writes == fua + 1);
  auto linked = must_open(file);  // what a crash now would leave
  CHECK(linked->backing_file() == "new.raw");
  CHECK(read_all(*linked, 5 * cs, cs) == pattern(cs, 5));

  REQUIRE(!run(img->flush()));
  auto flushed = must_open(file);
  CHECK(flushed->backing_file() == "new.raw");
  CHECK(read_all(*flushed, 6 * cs, cs) == pattern(cs, 6));
}

TEST_CASE("qcow2 on a file that demands O_DIRECT alignment") {
  auto file = std::make_shared<GrowingFile>();
  file->min_block = 4096;
  const uint32_t cs = 65536;
  auto img = must_create(file, 8 * kMiB, cs, "base", "raw");
  CHECK(img->capabilities().min_block == 4096);
  auto base = std::make_shared<GrowingFile>(pattern(8 * kMiB, 3));
  img->set_backing(base);
  Qcow2Bytes a(cs), b(8192);
  std::fill_n(a.data(), cs, std::byte(0x31));
  std::fill_n(b.data(), 8192, std::byte(0x32));
  REQUIRE(!run(img->write_cluster(4, a.span())));
  REQUIRE(!run(img->write(cs * 6 + 4096, b.span(), {})));   // copy-on-write from the backing
  REQUIRE(!run(img->write(cs * 4 + 8192, b.span(), {})));   // in place
  REQUIRE(!run(img->discard_cluster(5)));
  REQUIRE(!run(img->flush()));
  auto again = must_open(file);
  again->set_backing(base);
  Qcow2Bytes out(8 * cs);
  REQUIRE(!run(again->read(0, out.span())));
  auto expect = base->bytes();
  expect.resize(8 * cs);
  std::fill_n(expect.begin() + 4 * cs, cs, std::byte(0x31));
  std::fill_n(expect.begin() + 4 * cs + 8192, 8192, std::byte(0x32));
  std::fill_n(expect.begin() + 5 * cs, cs, std::byte(0));
  std::fill_n(expect.begin() + 6 * cs + 4096, 8192, std::byte(0x32));
  CHECK(std::equal(expect.begin(), expect.end(), out.data()));
}

// Qcow2Image against a model: random operations (partial and whole-cluster
// writes, zeroes, trims, discards, flushes, reopens) on an image backed by a
// random disk must always read exactly what a flat byte array says; the
// result must pass qemu-img check. Then concurrent writers on two threads.
#include "cow/qcow2_image.hpp"
#include "tests/unit/cow/qcow2_test_support.hpp"

#include <doctest/doctest.h>

#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include <thread>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::test;

TEST_CASE("qcow2 random operations match a flat model") {
  TempDir dir;
  for (uint32_t cs : {4096u, 512u}) {
    CAPTURE(cs);
    const uint64_t size = 1024 * 1024 - 3 * 512;  // the last cluster is partial for 4 KiB
    auto base_bytes = pattern(size, 11);
    auto base = std::make_shared<GrowingFile>(base_bytes);
    auto file = std::make_shared<GrowingFile>();
    auto created = run(Qcow2Image::create(file, {size, cs, "base.raw", "raw"}));
    REQUIRE(created.has_value());
    std::shared_ptr<Qcow2Image> img = *created;
    img->set_backing(base);
    std::vector<std::byte> model = base_bytes;
    std::mt19937_64 rng(cs * 31 + 7);
    const uint64_t n = img->guest_clusters();

    for (int step = 0; step < 1500; ++step) {
      CAPTURE(step);
      const int op = int(rng() % 100);
      if (op < 30) {  // any write
        const uint64_t off = rng() % size;
        const uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, 3 * cs);
        auto data = pattern(len, uint32_t(rng()));
        REQUIRE(!run(img->write(off, data, {.fua = rng() % 10 == 0})));
        std::copy(data.begin(), data.end(), model.begin() + off);
      } else if (op < 45) {  // whole cluster
        const uint64_t g = rng() % n;
        if ((g + 1) * cs > size) continue;
        auto data = pattern(cs, uint32_t(rng()));
        REQUIRE(!run(img->write_cluster(g, data)));
        std::copy(data.begin(), data.end(), model.begin() + g * cs);
      } else if (op < 55) {  // write_zeroes, any range
        const uint64_t off = rng() % size;
        const uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, 4 * cs);
        REQUIRE(!run(img->write_zeroes(off, len, {.may_trim = rng() % 2 == 0})));
        std::fill_n(model.begin() + off, len, std::byte(0));
      } else if (op < 62) {  // trim: whole clusters inside the range only
        const uint64_t off = rng() % size;
        const uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, 4 * cs);
        REQUIRE(!run(img->trim(off, len, {})));
        const uint64_t first = (off + cs - 1) / cs;
        const uint64_t end = off + len;
        const uint64_t stop = end == size ? (end + cs - 1) / cs : end / cs;
        for (uint64_t g = first; g < stop; ++g)
          std::fill(model.begin() + g * cs, model.begin() + std::min(size, (g + 1) * cs),
                    std::byte(0));
      } else if (op < 70) {
        const uint64_t g = rng() % n;
        REQUIRE(!run(img->zero_cluster(g)));
        std::fill(model.begin() + g * cs, model.begin() + std::min(size, (g + 1) * cs),
                  std::byte(0));
      } else if (op < 80) {
        const uint64_t g = rng() % n;
        REQUIRE(!run(img->discard_cluster(g)));
        std::fill(model.begin() + g * cs, model.begin() + std::min(size, (g + 1) * cs),
                  std::byte(0));
      } else if (op < 83) {
        REQUIRE(!run(img->flush()));
      } else if (op < 85) {  // reopen from the file
        REQUIRE(!run(img->flush()));
        const auto in_use = img->data_bytes_in_use();
        std::string why;
        auto r = run(Qcow2Image::open(file, {}, &why));
        INFO(why);
        REQUIRE(r.has_value());
        img = *r;
        img->set_backing(base);
        CHECK(img->data_bytes_in_use() == in_use);
      } else {  // read a random range and compare
        const uint64_t off = rng() % size;
        const uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, 5 * cs);
        std::vector<std::byte> got(len);
        REQUIRE(!run(img->read(off, got)));
        REQUIRE(std::equal(got.begin(), got.end(), model.begin() + off));
      }
    }
    std::vector<std::byte> all(size);
    REQUIRE(!run(img->read(0, all)));
    CHECK(all == model);
    // Data clusters in use match what the L2 tables map.
    uint64_t data = 0;
    for (uint64_t g = 0; g < n; ++g)
      if (run(img->map_cluster(g))->kind == Qcow2ClusterKind::data) ++data;
    CHECK(img->data_bytes_in_use() == data * cs);

    REQUIRE(!run(img->flush()));
    const std::string path = dir.file("model.qcow2");
    write_file(path, file->bytes());
    write_file(dir.file("base.raw"), base_bytes);
    auto [rc, out] = shell("qemu-img check -f qcow2 '" + path + "'");
    INFO(out);
    CHECK(out.find("No errors were found") != std::string::npos);
    auto [crc, cout_] = shell("cd '" + dir.path.string() + "' && qemu-img convert -f qcow2 -O raw '" +
                              path + "' '" + dir.file("model.raw") + "'");
    INFO(cout_);
    REQUIRE(crc == 0);
    CHECK(read_file(dir.file("model.raw")) == model);
  }
}

TEST_CASE("qcow2 concurrent writers on two threads never tear or corrupt a cluster") {
  TempDir dir;
  const uint32_t cs = 4096;
  const uint64_t clusters = 48;
  auto file = std::make_shared<GrowingFile>();
  auto created = run(Qcow2Image::create(file, {clusters * cs, cs, {}, {}}));
  REQUIRE(created.has_value());
  auto img = *created;
  file->yield_each_op = true;

  boost::asio::io_context io;
  std::atomic<int> torn{0}, errors{0}, done{0};
  const int workers = 32;
  for (int w = 0; w < workers; ++w) {
    boost::asio::co_spawn(
        io,
        [&, w]() -> boost::asio::awaitable<void> {
          std::mt19937 rng(w);
          std::vector<std::byte> buf(2 * cs);
          for (int i = 0; i < 200; ++i) {
            const uint64_t g = rng() % (clusters - 1);
            std::error_code ec;
            switch (rng() % 6) {
              case 0:
              case 1: {  // two whole clusters in one write, one value
                std::fill(buf.begin(), buf.end(), std::byte(1 + rng() % 250));
                ec = co_await img->write(g * cs, buf, {});
                break;
              }
              case 2:
                std::fill_n(buf.begin(), cs, std::byte(1 + rng() % 250));
                ec = co_await img->write_cluster(g, std::span(buf).first(cs));
                break;
              case 3: ec = co_await img->discard_cluster(g); break;
              case 4: ec = co_await img->zero_cluster(g); break;
              case 5: {
                ec = co_await img->read(g * cs, buf);
                for (int c = 0; c < 2; ++c)
                  if (!std::all_of(buf.begin() + c * cs, buf.begin() + (c + 1) * cs,
                                   [&](std::byte b) { return b == buf[c * cs]; }))
                    ++torn;
                break;
              }
            }
            if (ec) ++errors;
            if (i % 50 == 0) {
              if (co_await img->flush()) ++errors;
            }
          }
          ++done;
        },
        boost::asio::detached);
  }
  std::thread t([&] { io.run(); });
  io.run();
  t.join();
  CHECK(done == workers);
  CHECK(torn == 0);
  CHECK(errors == 0);

  REQUIRE(!run(img->flush()));
  std::vector<std::byte> all(clusters * cs);
  REQUIRE(!run(img->read(0, all)));
  for (uint64_t g = 0; g < clusters; ++g)
    CHECK(std::all_of(all.begin() + g * cs, all.begin() + (g + 1) * cs,
                      [&](std::byte b) { return b == all[g * cs]; }));
  auto again = run(Qcow2Image::open(file));
  REQUIRE(again.has_value());
  std::vector<std::byte> reread(clusters * cs);
  REQUIRE(!run((*again)->read(0, reread)));
  CHECK(reread == all);
  const std::string path = dir.file("conc.qcow2");
  write_file(path, file->bytes());
  auto [rc, out] = shell("qemu-img check -f qcow2 '" + path + "'");
  INFO(out);
  CHECK(out.find("No errors were found") != std::string::npos);
}

// A host taking an incremental-backup point in time of its guest's disk
// without a QMP socket: the README's embedding example, kept compiling.
//
//   fleece_example_backup SOCKET IMAGE
//
// Opens IMAGE (raw) as "vda", adds a dirty bitmap, starts a fleece that
// freezes the disk and the bitmap at one instant, writes on as the guest,
// prints the NBD URI a backup client reads the frozen view from and what
// the fleece holds, then stops it. Exit status 0 on success.
#include <fleece/fleece.hpp>

#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SOCKET IMAGE\n", argv[0]);
    return 2;
  }
  const std::string socket = argv[1];
  try {
    fleece::Engine engine({.listen = {"unix:" + socket}});
    fleece::Error error;
    fleece::Disk vda = engine.open_disk({.name = "vda", .path = argv[2]}, &error);
    if (!vda) {
      std::fprintf(stderr, "%s\n", error.message.c_str());
      return 1;
    }
    engine.start();

    // Changes since the last backup are recorded from here on.
    if (auto e = engine.add_bitmap({.disk = "vda", .name = "since-last", .persistent = true})) {
      std::fprintf(stderr, "%s\n", e.message.c_str());
      return 1;
    }
    // One point in time: the disk (exported read-only as vda@b1) and the
    // bitmap (its frozen half offered there as qemu:dirty-bitmap:since-last).
    fleece::FleeceInfo fleece = engine.start_fleece(
        {.id = "b1", .disks = {"vda"}, .bitmaps = {{"vda", "since-last"}}}, &error);
    if (error) {
      std::fprintf(stderr, "%s\n", error.message.c_str());
      return 1;
    }
    std::printf("backup from nbd+unix:///%s?socket=%s (writes paused %lld us)\n",
                fleece.disks[0].export_name.c_str(), socket.c_str(),
                static_cast<long long>(fleece.write_pause.count()));

    std::vector<std::byte> block(4096, std::byte{0x5a});
    vda.write(0, block);  // the guest goes on; the old block is copied aside

    for (const auto& f : engine.fleeces()) {
      for (const auto& d : f.disks) {
        std::printf("%s: %llu bytes preserved in %s\n", d.export_name.c_str(),
                    static_cast<unsigned long long>(d.preserved_bytes), d.store.c_str());
      }
    }
    // Backup done: drop the frozen half (or merge it back into since-last if it failed).
    if (auto e = engine.stop_fleece("b1")) std::fprintf(stderr, "%s\n", e.message.c_str());
    if (auto e = engine.remove_bitmap("vda", "since-last@b1")) std::fprintf(stderr, "%s\n", e.message.c_str());
    engine.stop();
    engine.wait();
  } catch (const fleece::StartupError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

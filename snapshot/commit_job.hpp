// CommitJob: block-commit below the active layer, live.
//
// Merges `top` and every layer between it and `base` into `base` while the
// guest keeps writing the active layer (2012 QEMU design, see
// notes/fleecing-commit-nbd.md part B.1):
//
//  1. base is reopened read-write (a raw base smaller than top is grown
//     first; a smaller qcow2 base is refused).
//  2. The image is walked in steps (512 KiB). For each step the top layer's
//     own chain view (top's Device, never the active one) says, by
//     block_status depth, which bytes live above base and at or below top;
//     those are read through top and written into base (zero runs as
//     write_zeroes). pace() runs between steps: rate limit, pause, cancel.
//  3. base is flushed; the header of the layer above top (the overlay) is
//     rewritten to name base and synced; then the overlay reads from base
//     and the layers between leave the chain (their files stay on disk for
//     the user to delete). base is reopened read-only again.
//
// Why the guest never sees a change: the layers top..above-base are
// read-only during the job and base only receives what they already shadow,
// so every view through them is unchanged; at the switch base holds exactly
// top's view, so the overlay reads the same before and after. Cancel or an
// error leaves the chain as it was (base holds extra data still shadowed
// above), and base is flushed and reopened read-only.
//
// create() refuses, with a message: top == the active layer ("Top image as
// the active layer is currently unsupported": take a snapshot first, then
// commit the layer below it), top or base not in the chain, base not below
// top, and a second job on the same chain.
#pragma once

#include "cow/backing_chain.hpp"
#include "snapshot/block_job.hpp"
#include "util/result.hpp"

#include <memory>
#include <string>

namespace fleece::snapshot {

struct CommitJobOptions {
  std::string job_id;
  std::string device;        // the disk's name, for messages and info()
  std::string top;           // a layer by path or recorded name ("" = the active one)
  std::string base;          // "" = the bottom of the chain
  uint64_t speed = 0;        // bytes per second, 0 = unlimited
  std::string backing_file;  // what the overlay's header will name; "" = base's path
                             // (bare name when in the overlay's directory)
  uint64_t step = 512 * 1024;
};

class CommitJob final : public BlockJob {
 public:
  static Result<std::shared_ptr<CommitJob>> create(boost::asio::any_io_executor executor,
                                                   std::shared_ptr<cow::BackingChain> chain,
                                                   CommitJobOptions options,
                                                   BlockJobEvents events,
                                                   std::string* why = nullptr);
  ~CommitJob() override;

  const std::string& top_path() const { return top_; }
  const std::string& base_path() const { return base_; }

 private:
  CommitJob(boost::asio::any_io_executor executor, std::shared_ptr<cow::BackingChain> chain,
            CommitJobOptions options, BlockJobEvents events, std::string top, std::string base);

  block::Task<std::error_code> run() override;
  block::Task<std::error_code> open_base_writable();
  block::Task<std::error_code> copy(std::shared_ptr<block::Device> top,
                                    std::shared_ptr<block::Device> base, uint32_t span,
                                    uint64_t len);
  block::Task<std::error_code> relink();
  block::Task<void> close_base();

  std::shared_ptr<cow::BackingChain> chain_;
  CommitJobOptions options_;
  std::string top_, base_;  // layer paths
  bool base_writable_ = false;
};

}  // namespace fleece::snapshot

// FleeceGroup: one point in time over several disks (what QMP fleece-start
// and fleece-stop drive).
//
// start() closes the write gate of every member's CbwFilter (new guest
// writes wait, in-flight ones drain), installs a snapshot on each with the
// store the caller created for it (a throwaway image backed by that disk),
// and opens every gate again. A guest write is therefore wholly before the
// point in time on every disk or wholly after it; gate_closed_for() says how
// long the guests were held. If any install fails, the snapshots already
// installed are removed before the gates open and the error is returned:
// nothing is half started.
//
// at_point_in_time (optional) runs once every snapshot is installed and
// before the gates open: whatever it does (freezing dirty bitmaps) happens
// at the point in time. An error from it fails start() like a failed
// install. The caller keeps the function alive until start() completes.
//
// stop() removes every member's snapshot (its views read as gone from then
// on; each store goes once no older snapshot reads through it). Destroying
// a started group without stop() leaves the snapshots installed.
#pragma once

#include "cow/cbw_filter.hpp"
#include "snapshot/frozen_view.hpp"
#include "util/result.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fleece::snapshot {

class FleeceGroup {
 public:
  struct Member {
    std::string device;
    std::shared_ptr<cow::CbwFilter> filter;
    std::shared_ptr<cow::ClusterStore> store;
  };
  struct Installed {
    std::string device;
    std::shared_ptr<cow::CbwFilter> filter;
    cow::SnapshotId snapshot = 0;
    std::shared_ptr<FrozenView> view;
  };

  static block::Task<Result<std::unique_ptr<FleeceGroup>>> start(std::string id,
                                                                 std::vector<Member> members,
                                                                 cow::SnapshotPolicy policy,
                                                                 const std::function<std::error_code()>* at_point_in_time = nullptr);
  block::Task<std::error_code> stop();

  const std::string& id() const { return id_; }
  const std::vector<Installed>& members() const { return members_; }
  std::chrono::microseconds gate_closed_for() const { return gate_closed_for_; }
  bool stopped() const { return stopped_; }

 private:
  FleeceGroup(std::string id, std::vector<Installed> members, std::chrono::microseconds closed)
      : id_(std::move(id)), members_(std::move(members)), gate_closed_for_(closed) {}

  std::string id_;
  std::vector<Installed> members_;
  std::chrono::microseconds gate_closed_for_{0};
  bool stopped_ = false;
};

}  // namespace fleece::snapshot

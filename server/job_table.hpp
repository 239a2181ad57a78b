// JobTable: the block jobs a server runs, by job id (QMP query-block-jobs,
// block-job-*).
//
//   auto job = CommitJob::create(ex, chain, options, jobs.wrap(id, events));
//   if (auto ec = jobs.add(*job)) ...   // errc::file_exists: the id is taken
//   (*job)->start();
//   ...
//   jobs.cancel_all();                  // at shutdown
//   co_await jobs.wait_idle(5s);
//
// A job leaves the table when it concludes, before its completed/cancelled
// event reaches the caller's handler (QEMU's auto-dismiss): whoever gets
// BLOCK_JOB_COMPLETED and then asks query-block-jobs no longer sees it.
// That is what wrap() arranges; a job added without it stays until
// remove().
//
// Thread-safe; wait_idle() polls on the caller's executor.
#pragma once

#include "snapshot/block_job.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace fleece::server {

class JobTable {
 public:
  std::error_code add(std::shared_ptr<snapshot::BlockJob> job);  // errc::file_exists
  void remove(std::string_view id);
  bool contains(std::string_view id) const;
  std::shared_ptr<snapshot::BlockJob> find(std::string_view id) const;
  std::vector<std::shared_ptr<snapshot::BlockJob>> list() const;  // in id order
  std::size_t size() const;

  // Events that first take job `id` out of this table, then call `inner`.
  // The table must outlive the job (the server owns both).
  snapshot::BlockJobEvents wrap(std::string id, snapshot::BlockJobEvents inner);

  void cancel_all();
  // Returns once the table is empty or `limit` has passed.
  boost::asio::awaitable<void> wait_idle(std::chrono::milliseconds limit);

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<snapshot::BlockJob>, std::less<>> jobs_;
};

}  // namespace fleece::server

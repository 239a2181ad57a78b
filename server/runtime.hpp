// Runtime: N shards, each an io_context run by exactly one thread.
//
// Connections are spread round-robin over the shards and stay on theirs, so
// a connection's coroutines never run concurrently with each other and need
// no locks. Each context is created with concurrency hint 1 (one thread runs
// it; posting from other threads stays safe).
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

namespace fleece::server {

class Runtime {
 public:
  explicit Runtime(unsigned shards);
  ~Runtime();  // stop() + join()

  size_t size() const { return shards_.size(); }
  boost::asio::io_context& shard(size_t i) { return *shards_[i]->io; }
  boost::asio::io_context& next_shard();  // round-robin

  void start();    // one thread per shard
  void release();  // let run() return once a shard has no more work
  void stop();     // abandon whatever is left
  void join();

 private:
  struct Shard {
    std::unique_ptr<boost::asio::io_context> io;
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
    std::thread thread;
  };
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<size_t> next_{0};
};

}  // namespace fleece::server

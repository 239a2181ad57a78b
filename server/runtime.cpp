#include "server/runtime.hpp"

#include "util/log.hpp"

#include <pthread.h>

#include <exception>
#include <string>

namespace fleece::server {

Runtime::Runtime(unsigned shards) {
  if (shards == 0) shards = 1;
  for (unsigned i = 0; i < shards; ++i) {
    auto shard = std::make_unique<Shard>();
    shard->io = std::make_unique<boost::asio::io_context>(1);
    shard->work.emplace(shard->io->get_executor());
    shards_.push_back(std::move(shard));
  }
}

Runtime::~Runtime() {
  stop();
  join();
}

boost::asio::io_context& Runtime::next_shard() {
  return *shards_[next_.fetch_add(1, std::memory_order_relaxed) % shards_.size()]->io;
}

void Runtime::start() {
  for (size_t i = 0; i < shards_.size(); ++i) {
    Shard* shard = shards_[i].get();
    shard->thread = std::thread([shard, i] {
      std::string name = "fleece-io" + std::to_string(i);
      pthread_setname_np(pthread_self(), name.c_str());
      for (;;) {
        try {
          shard->io->run();
          break;
        } catch (const std::exception& e) {
          // A bug in one handler must not take the whole server down silently.
          FLEECE_LOG_ERROR("server", "shard {}: unhandled exception: {}", i, e.what());
        }
      }
    });
  }
}

void Runtime::release() {
  for (auto& shard : shards_) shard->work.reset();
}

void Runtime::stop() {
  for (auto& shard : shards_) {
    shard->work.reset();
    shard->io->stop();
  }
}

void Runtime::join() {
  for (auto& shard : shards_) {
    if (shard->thread.joinable() && shard->thread.get_id() != std::this_thread::get_id()) {
      shard->thread.join();
    }
  }
}

}  // namespace fleece::server

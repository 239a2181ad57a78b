#include "tls/server_context.hpp"

#include "tls/credentials.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <mutex>

namespace fleece::tls {

std::string PeerIdentity::describe() const {
  switch (kind) {
    case Kind::x509: return fmt::format("x509 '{}'", name);
    case Kind::psk: return fmt::format("psk '{}'", name);
    case Kind::none: break;
  }
  return "anonymous";
}

struct ServerContext::Impl {
  ServerConfig config;
  mutable std::mutex mutex;
  std::shared_ptr<const Credentials> current;  // guarded by mutex
  uint64_t generation = 0;                     // guarded by mutex
};

ServerContext::ServerContext(ServerConfig config) : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
  impl_->generation = 1;
  impl_->current = std::make_shared<const Credentials>(impl_->config, impl_->generation);
  FLEECE_LOG_INFO("tls", "credentials: {}", impl_->current->summary());
}

ServerContext::~ServerContext() = default;

std::shared_ptr<const Credentials> ServerContext::current() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->current;
}

ReloadOutcome ServerContext::reload() {
  // Build outside the lock: reading files must not stall new connections.
  uint64_t next;
  {
    std::lock_guard lock(impl_->mutex);
    next = impl_->generation + 1;
  }
  ReloadOutcome outcome;
  try {
    auto fresh = std::make_shared<const Credentials>(impl_->config, next);
    std::lock_guard lock(impl_->mutex);
    if (next <= impl_->generation) next = impl_->generation + 1;  // a concurrent reload won; stay monotonic
    impl_->generation = next;
    impl_->current = std::move(fresh);
    outcome.ok = true;
    outcome.message = fmt::format("reloaded: {}", impl_->current->summary());
    outcome.generation = next;
    FLEECE_LOG_INFO("tls", "credentials generation {} {}; connections already open keep theirs", next,
                    outcome.message);
  } catch (const ConfigError& e) {
    outcome.message = e.what();
    outcome.generation = generation();
    FLEECE_LOG_ERROR("tls", "reload failed, keeping the current credentials: {}", e.what());
  }
  return outcome;
}

const ServerConfig& ServerContext::config() const { return impl_->config; }

uint64_t ServerContext::generation() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->generation;
}

std::string ServerContext::describe() const { return current()->summary(); }

}  // namespace fleece::tls

#include "server/job_table.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace fleece::server {

namespace asio = boost::asio;

std::error_code JobTable::add(std::shared_ptr<snapshot::BlockJob> job) {
  std::lock_guard lock(mutex_);
  const std::string& id = job->id();
  if (jobs_.contains(id)) return std::make_error_code(std::errc::file_exists);
  jobs_.emplace(id, std::move(job));
  return {};
}

void JobTable::remove(std::string_view id) {
  std::shared_ptr<snapshot::BlockJob> gone;  // released outside the lock
  std::lock_guard lock(mutex_);
  if (auto it = jobs_.find(id); it != jobs_.end()) {
    gone = std::move(it->second);
    jobs_.erase(it);
  }
}

bool JobTable::contains(std::string_view id) const {
  std::lock_guard lock(mutex_);
  return jobs_.find(id) != jobs_.end();
}

std::shared_ptr<snapshot::BlockJob> JobTable::find(std::string_view id) const {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<snapshot::BlockJob>> JobTable::list() const {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<snapshot::BlockJob>> out;
  for (const auto& [id, job] : jobs_) out.push_back(job);
  return out;
}

std::size_t JobTable::size() const {
  std::lock_guard lock(mutex_);
  return jobs_.size();
}

snapshot::BlockJobEvents JobTable::wrap(std::string id, snapshot::BlockJobEvents inner) {
  snapshot::BlockJobEvents out;
  out.completed = [this, id, f = std::move(inner.completed)](const snapshot::BlockJobInfo& info) {
    remove(id);
    if (f) f(info);
  };
  out.cancelled = [this, id, f = std::move(inner.cancelled)](const snapshot::BlockJobInfo& info) {
    remove(id);
    if (f) f(info);
  };
  out.error = std::move(inner.error);
  return out;
}

void JobTable::cancel_all() {
  for (auto& job : list()) job->cancel();
}

asio::awaitable<void> JobTable::wait_idle(std::chrono::milliseconds limit) {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  boost::system::error_code ec;
  while (size() > 0 && std::chrono::steady_clock::now() < deadline) {
    tick.expires_after(std::chrono::milliseconds(10));
    co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

}  // namespace fleece::server

#include "snapshot/fleece_group.hpp"

#include "util/log.hpp"

#include <set>

namespace fleece::snapshot {

using block::Task;

Task<Result<std::unique_ptr<FleeceGroup>>> FleeceGroup::start(std::string id,
                                                              std::vector<Member> members,
                                                              cow::SnapshotPolicy policy,
                                                              const std::function<std::error_code()>* at_point_in_time) {
  if (members.empty()) co_return std::make_error_code(std::errc::invalid_argument);
  std::set<const cow::CbwFilter*> distinct;
  for (auto& m : members) {
    if (!m.filter || !m.store || !distinct.insert(m.filter.get()).second ||
        !cow::CbwFilter::empty_store(*m.store))
      co_return std::make_error_code(std::errc::invalid_argument);  // one snapshot per disk, empty stores
  }

  // The snapshots' bitmaps are made before the guest is held.
  std::vector<cow::CbwFilter::Prepared> prepared;
  for (auto& m : members) prepared.push_back(cow::CbwFilter::prepare(m.store, policy));

  const auto t0 = std::chrono::steady_clock::now();
  for (auto& m : members) co_await m.filter->close_gate();
  const auto closed_at = std::chrono::steady_clock::now();

  std::vector<Installed> installed;
  std::error_code failure;
  for (size_t i = 0; i < members.size(); ++i) {
    auto& m = members[i];
    auto sid = co_await m.filter->add_snapshot(std::move(prepared[i]));
    if (!sid) {
      failure = sid.error();
      FLEECE_LOG_WARN("fleece", "fleece {}: installing on {} failed: {}", id, m.device,
                      failure.message());
      break;
    }
    installed.push_back(Installed{m.device, m.filter, *sid,
                                  std::make_shared<FrozenView>(m.filter, *sid)});
  }
  if (!failure && at_point_in_time && *at_point_in_time) {
    failure = (*at_point_in_time)();
    if (failure) FLEECE_LOG_WARN("fleece", "fleece {}: at the point in time: {}", id, failure.message());
  }
  if (failure) {
    for (auto& i : installed) co_await i.filter->remove_snapshot(i.snapshot);
  }
  for (auto& m : members) m.filter->open_gate();
  const auto opened_at = std::chrono::steady_clock::now();
  if (failure) co_return failure;

  auto held = std::chrono::duration_cast<std::chrono::microseconds>(opened_at - t0);
  FLEECE_LOG_INFO("fleece", "fleece {} started on {} disk(s); writes held {} us ({} us draining)",
                  id, installed.size(), held.count(),
                  std::chrono::duration_cast<std::chrono::microseconds>(closed_at - t0).count());
  co_return std::unique_ptr<FleeceGroup>(new FleeceGroup(std::move(id), std::move(installed), held));
}

Task<std::error_code> FleeceGroup::stop() {
  if (stopped_) co_return std::error_code{};
  stopped_ = true;
  std::error_code first;
  for (auto& m : members_) {
    auto ec = co_await m.filter->remove_snapshot(m.snapshot);
    if (ec && !first) first = ec;
  }
  FLEECE_LOG_INFO("fleece", "fleece {} stopped", id_);
  co_return first;
}

}  // namespace fleece::snapshot

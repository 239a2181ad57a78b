// Checks shared by the qcow2, chain and commit tests; they REQUIRE, so they
// live apart from qcow2_test_support.hpp, which does not depend on doctest.
#pragma once

#include "tests/unit/cow/qcow2_test_support.hpp"

#include <doctest/doctest.h>

namespace fleece::cow::test {

// Runs a shell command and requires it to succeed (its output on failure).
inline void sh_ok(const std::string& cmd) {
  auto [rc, out] = shell(cmd);
  INFO(cmd);
  INFO(out);
  REQUIRE(rc == 0);
}

// The whole device, read on a private event loop.
inline std::vector<std::byte> read_all(block::Device& d) {
  std::vector<std::byte> v(d.size());
  REQUIRE(!run(d.read(0, v)));
  return v;
}

}  // namespace fleece::cow::test

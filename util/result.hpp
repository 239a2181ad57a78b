// Result<T>: a value or a std::error_code, the way errors cross layers in fleece.
//
// Boost.System's result<> is used rather than a home-grown expected<>:
// C++20 has no std::expected, and Boost is already a dependency.
#pragma once

#include <boost/system/result.hpp>
#include <system_error>

namespace fleece {

template <class T>
using Result = boost::system::result<T, std::error_code>;

}  // namespace fleece

#include "tls/allow_list.hpp"
#include "tls/config.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

using fleece::tls::AllowList;
using fleece::tls::ConfigError;

TEST_CASE("authz: an empty list allows everyone, even without identity") {
  AllowList all;
  CHECK_FALSE(all.restricts());
  CHECK(all.allows(""));
  CHECK(all.allows("CN=x"));
}

TEST_CASE("authz: ';' separates DNs with commas inside, globs match, spaces are trimmed") {
  auto list = AllowList::parse(" CN=backup1,O=Example,C=GB ; alice;CN=nbd-*,O=Example,C=GB");
  CHECK(list.patterns() == std::vector<std::string>{"CN=backup1,O=Example,C=GB", "alice", "CN=nbd-*,O=Example,C=GB"});
  CHECK(list.allows("CN=backup1,O=Example,C=GB"));
  CHECK(list.allows("alice"));
  CHECK(list.allows("CN=nbd-7,O=Example,C=GB"));
  CHECK_FALSE(list.allows("CN=backup1,O=Other,C=GB"));
  CHECK_FALSE(list.allows("CN=backup1"));
  CHECK_FALSE(list.allows("bob"));
  CHECK_FALSE(list.allows(""));
}

TEST_CASE("authz: @FILE has one entry per line with comments") {
  char path[] = "/tmp/fleece-authz-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << "# who may back up\nCN=backup1,O=Example,C=GB\n\n  bob  \n";
  auto list = AllowList::parse(std::string("@") + path);
  CHECK(list.patterns() == std::vector<std::string>{"CN=backup1,O=Example,C=GB", "bob"});
  std::ofstream(path) << "# nobody\n";
  CHECK_THROWS_WITH_AS(AllowList::parse(std::string("@") + path),
                       (std::string("--tls-authz '") + path + "': no entries (one DN or PSK identity per line)").c_str(),
                       ConfigError);
  std::remove(path);
  CHECK_THROWS_WITH_AS(AllowList::parse("@/nonexistent/authz"), "--tls-authz '/nonexistent/authz': no such file",
                       ConfigError);
  CHECK_THROWS_AS(AllowList::parse(" ; "), ConfigError);
}

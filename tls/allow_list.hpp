// --tls-authz: the peers allowed in once their handshake succeeded.
//
// An entry is an X.509 subject DN, as RFC 4514 prints it with the most
// specific part first ("CN=backup1,O=Example,C=GB", the form QEMU's and
// libvirt's authz lists use), or a PSK identity ("alice"). Entries may be
// shell globs ("CN=backup*,O=Example,C=GB"), matched with fnmatch().
//
// Syntax of LIST: DNs contain commas, so entries are separated by ';'
// ("CN=a,O=X;CN=b,O=X;alice"), or LIST is "@FILE": one entry per line, blank
// lines and lines starting with '#' skipped. Spaces around entries are
// trimmed. An empty list (no --tls-authz) allows everyone who completes the
// handshake; a list that is given but has no entry is an error.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fleece::tls {

class AllowList {
 public:
  AllowList() = default;  // allows everyone
  // Throws ConfigError (unreadable @FILE, no entries).
  static AllowList parse(std::string_view spec);

  bool restricts() const { return !patterns_.empty(); }
  // Whether a peer of this name (DN or PSK identity) may connect. An empty
  // name (a peer without identity) passes only an unrestricted list.
  bool allows(std::string_view name) const;
  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  std::vector<std::string> patterns_;
};

}  // namespace fleece::tls

#pragma once
// Test certificates made with the openssl CLI, in a temporary directory for the whole
// run: a CA and two server certificates it signed, `server` for DNS:localhost and
// IP:127.0.0.1, `other` for a name no test connects to. EC P-256 keys: generating all of
// them takes about 0.1 s. Throws std::runtime_error naming the failed command.

#include <string>

namespace stargazer::test {

struct tls_material {
  std::string dir;
  std::string ca_cert, ca_key;
  std::string server_cert, server_key;
  std::string other_cert, other_key;

  tls_material();
  ~tls_material();
  tls_material(const tls_material&) = delete;
  tls_material& operator=(const tls_material&) = delete;

private:
  void issue(const std::string& cn, const std::string& san, int serial, const std::string& key,
             const std::string& cert) const;
};

// The run's certificates, made on first use.
const tls_material& certificates();

// Runs `command` through the shell; returns its exit status, output (stdout and stderr)
// in `out`.
int shell(const std::string& command, std::string& out);

}  // namespace stargazer::test

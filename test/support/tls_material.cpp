#include "tls_material.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace stargazer::test {

namespace {

void run(const std::string& command) {
  std::string out;
  if (const int status = shell(command, out); status != 0)
    throw std::runtime_error("failed (" + std::to_string(status) + "): " + command + "\n" + out);
}

}  // namespace

int shell(const std::string& command, std::string& out) {
  out.clear();
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  return ::pclose(pipe);
}

tls_material::tls_material() {
  std::string out;
  if (shell("command -v openssl", out) != 0)
    throw std::runtime_error("the openssl command is needed to make test certificates (apt-get install openssl)");
  std::string templ = (std::filesystem::temp_directory_path() / "sg-tls-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir = templ;
  ca_cert = dir + "/ca.crt";
  ca_key = dir + "/ca.key";
  server_cert = dir + "/server.crt";
  server_key = dir + "/server.key";
  other_cert = dir + "/other.crt";
  other_key = dir + "/other.key";
  try {
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
        " -subj '/CN=Stargazer Test CA' -keyout '" + ca_key + "' -out '" + ca_cert + "'");
    issue("localhost", "DNS:localhost,IP:127.0.0.1", 2, server_key, server_cert);
    issue("redis.example.invalid", "DNS:redis.example.invalid", 3, other_key, other_cert);
    run("openssl verify -CAfile '" + ca_cert + "' '" + server_cert + "' '" + other_cert + "'");
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    throw;
  }
}

tls_material::~tls_material() {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

void tls_material::issue(const std::string& cn, const std::string& san, int serial, const std::string& key,
                         const std::string& cert) const {
  const auto csr = cert + ".csr";
  const auto ext = cert + ".ext";
  std::ofstream(ext) << "subjectAltName=" << san << "\n";
  run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=" + cn +
      "' -keyout '" + key + "' -out '" + csr + "'");
  run("openssl x509 -req -days 2 -set_serial " + std::to_string(serial) + " -in '" + csr + "' -CA '" + ca_cert +
      "' -CAkey '" + ca_key + "' -extfile '" + ext + "' -out '" + cert + "'");
}

const tls_material& certificates() {
  static const tls_material material;
  return material;
}

}  // namespace stargazer::test

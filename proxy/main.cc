// nerava-proxy: a replication-aware PostgreSQL and Redis proxy, run as a sidecar.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "nerava/config/config.h"
#include "proxy/server.h"

int main(int argc, char** argv) {
  CLI::App app{"nerava-proxy: replication-aware PostgreSQL and Redis proxy"};
  std::string config_path;
  std::string check_path;
  app.add_option("--config", config_path, "YAML config file")->check(CLI::ExistingFile);
  app.add_option("--check-config", check_path, "validate a config file and exit");
  app.set_version_flag("--version", "nerava-proxy 0.1.0");
  CLI11_PARSE(app, argc, argv);

  if (!check_path.empty()) {
    auto config = nerava::config::LoadFile(check_path);
    if (!config.ok()) {
      std::cerr << config.status().message() << "\n";
      return 1;
    }
    std::cout << "config OK: " << check_path << "\n";
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << "nerava-proxy: --config FILE is required (see --help)\n";
    return 2;
  }
  auto config = nerava::config::LoadFile(config_path);
  if (!config.ok()) {
    std::cerr << config.status().message() << "\n";
    return 1;
  }
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(config->log_level));
  // A client closing its socket mid-write must not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  nerava::proxy::Server server(std::move(*config));
  return server.Run();
}

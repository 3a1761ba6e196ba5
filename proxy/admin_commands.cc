#include "proxy/admin_commands.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

namespace nerava::proxy {
namespace {

using nlohmann::json;
using routing::NodeState;
using routing::Protocol;

constexpr std::string_view kHelp =
    "commands (each accepts --json):\n"
    "  status         one line per node: protocol, node, region, role, up, lag, connections\n"
    "  show nodes     everything the monitor knows about every node\n"
    "  show clients   connected clients\n"
    "  show config    the effective config, passwords masked\n"
    "  switch-primary <node|region> [--promote] [--timeout S]\n"
    "                 planned switchover: hold writes, let write work finish, [promote the\n"
    "                 target after it caught up], move writes, release them (default 10 s)\n"
    "  pause [writes|all]   hold new writes (or everything) until `resume`\n"
    "  resume         release what `pause` holds\n"
    "  help           this text\n";

std::vector<std::string> Words(std::string_view line) {
  std::vector<std::string> words;
  size_t pos = 0;
  while (pos < line.size()) {
    while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
    size_t end = pos;
    while (end < line.size() && line[end] != ' ' && line[end] != '\t') ++end;
    if (end > pos) words.emplace_back(line.substr(pos, end - pos));
    pos = end;
  }
  return words;
}

std::string Fixed(double value, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", digits, value);
  return buffer;
}

std::string Iso8601(std::chrono::system_clock::time_point time) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buffer;
}

// A left-aligned text table with a header row.
std::string Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

double Connections(Metrics* metrics, Protocol protocol, const std::string& node) {
  return metrics ? metrics->BackendConnections(protocol, node).Value() : 0;
}

// Invalid UTF-8 (a server's error text) is replaced rather than thrown on.
std::string Dump(const json& value) {
  return value.dump(2, ' ', false, json::error_handler_t::replace);
}

json OptionalJson(const std::optional<double>& value) { return value ? json(*value) : json(); }
json OptionalJson(const std::optional<uint64_t>& value) { return value ? json(*value) : json(); }

AdminReply Status(const AdminSources& sources, bool as_json) {
  const routing::TopologySnapshot snapshot = sources.topology->Get();
  std::vector<std::vector<std::string>> rows = {
      {"PROTOCOL", "NODE", "REGION", "ROLE", "UP", "LAG S", "LAG BYTES", "CONNECTIONS"}};
  json nodes = json::array();
  for (Protocol protocol : {Protocol::kPostgres, Protocol::kRedis}) {
    const routing::ProtocolTopology& topology = snapshot->Get(protocol);
    for (size_t i = 0; i < topology.nodes.size(); ++i) {
      const NodeState& node = topology.nodes[i];
      const double connections = Connections(sources.metrics, protocol, node.name);
      const bool chosen = topology.primary == static_cast<int>(i);
      nodes.push_back({{"protocol", routing::ProtocolName(protocol)},
                       {"node", node.name},
                       {"region", node.region},
                       {"role", routing::RoleName(node.role)},
                       {"primary", chosen},
                       {"up", node.up},
                       {"lag_seconds", OptionalJson(node.lag_seconds)},
                       {"lag_bytes", OptionalJson(node.lag_bytes)},
                       {"connections", static_cast<int64_t>(connections)}});
      rows.push_back({routing::ProtocolName(protocol), node.name, node.region,
                      std::string(routing::RoleName(node.role)) + (chosen ? "*" : ""),
                      node.up ? "yes" : "no", node.lag_seconds ? Fixed(*node.lag_seconds, 3) : "-",
                      node.lag_bytes ? std::to_string(*node.lag_bytes) : "-",
                      std::to_string(static_cast<int64_t>(connections))});
    }
  }
  json primaries = json::object();
  std::string footer = "(* = the primary in use)\n";
  for (Protocol protocol : {Protocol::kPostgres, Protocol::kRedis}) {
    const routing::ProtocolTopology& topology = snapshot->Get(protocol);
    const char* name = routing::ProtocolName(protocol);
    const NodeState* primary = topology.Primary();
    std::string mode = "open";
    if (sources.gates) {
      const WriteGate& gate =
          protocol == Protocol::kPostgres ? sources.gates->postgres : sources.gates->redis;
      if (gate.mode() == WriteGate::Mode::kHoldWrites) mode = "holding writes";
      if (gate.mode() == WriteGate::Mode::kHoldAll) mode = "holding everything";
    }
    primaries[name] = {{"primary", primary ? json(primary->name) : json()},
                       {"split_brain", topology.split_brain},
                       {"gate", mode}};
    if (topology.nodes.empty()) continue;
    footer += std::string(name) + ": primary " + (primary ? primary->name : "none") +
              (topology.split_brain ? " (SPLIT BRAIN: several nodes say they are primary)" : "") +
              (mode == "open" ? "" : ", " + mode) + "\n";
  }
  if (as_json) {
    return {true, Dump({{"generation", snapshot->generation},
                        {"nodes", nodes},
                        {"protocols", primaries}})};
  }
  return {true, Table(rows) + footer};
}

AdminReply ShowNodes(const AdminSources& sources, bool as_json) {
  const routing::TopologySnapshot snapshot = sources.topology->Get();
  const auto now = std::chrono::steady_clock::now();
  json nodes = json::array();
  std::string text;
  for (Protocol protocol : {Protocol::kPostgres, Protocol::kRedis}) {
    const routing::ProtocolTopology& topology = snapshot->Get(protocol);
    for (size_t i = 0; i < topology.nodes.size(); ++i) {
      const NodeState& node = topology.nodes[i];
      std::optional<double> since_success;
      if (node.last_success != std::chrono::steady_clock::time_point{}) {
        since_success = std::chrono::duration<double>(now - node.last_success).count();
      }
      json entry = {
          {"protocol", routing::ProtocolName(protocol)},
          {"node", node.name},
          {"region", node.region},
          {"host", node.host},
          {"port", node.port},
          {"role", routing::RoleName(node.role)},
          {"primary", topology.primary == static_cast<int>(i)},
          {"up", node.up},
          {"consecutive_failures", node.consecutive_failures},
          {"last_error", node.last_error},
          {"seconds_since_success", OptionalJson(since_success)},
          {"position", node.position},
          {"received_position", node.received_position},
          {"timeline", node.timeline},
          {"lag_seconds", OptionalJson(node.lag_seconds)},
          {"lag_bytes", OptionalJson(node.lag_bytes)},
          {"connections", static_cast<int64_t>(Connections(sources.metrics, protocol, node.name))}};
      text += std::string(routing::ProtocolName(protocol)) + " " + node.name + "\n";
      for (const auto& [key, value] : entry.items()) {
        if (key == "protocol" || key == "node") continue;
        text += "  " + key + ": " + (value.is_string() ? value.get<std::string>() : value.dump()) +
                "\n";
      }
      nodes.push_back(std::move(entry));
    }
  }
  if (as_json) return {true, Dump({{"generation", snapshot->generation}, {"nodes", nodes}})};
  return {true, text};
}

AdminReply ShowClients(const AdminSources& sources, bool as_json) {
  std::vector<ClientInfo> clients;
  if (sources.clients) clients = sources.clients->List();
  const auto now = std::chrono::system_clock::now();
  json out = json::array();
  std::vector<std::vector<std::string>> rows = {{"ID", "PROTOCOL", "LISTENER", "PEER", "USER",
                                                 "DATABASE", "NODE", "STATE", "LAST ROUTE",
                                                 "CONNECTED", "AGE S"}};
  for (const ClientInfo& client : clients) {
    const double age = std::chrono::duration<double>(now - client.connected_at).count();
    out.push_back({{"id", client.id},
                   {"protocol", client.protocol},
                   {"listener", client.listener},
                   {"peer", client.peer},
                   {"user", client.user},
                   {"database", client.database},
                   {"node", client.node},
                   {"state", client.state},
                   {"last_route", client.route},
                   {"connected_at", Iso8601(client.connected_at)},
                   {"age_seconds", age}});
    rows.push_back({std::to_string(client.id), client.protocol, client.listener, client.peer,
                    client.user, client.database, client.node, client.state,
                    client.route.empty() ? "-" : client.route, Iso8601(client.connected_at), Fixed(age, 1)});
  }
  if (as_json) return {true, Dump({{"clients", out}})};
  return {true, Table(rows)};
}

// YAML to JSON for `show config --json`: maps, lists, and scalars (plain integers and booleans
// typed, everything else a string).
json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& item : node) out[item.first.as<std::string>()] = YamlToJson(item.second);
      return out;
    }
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) out.push_back(YamlToJson(item));
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string& text = node.Scalar();
      if (node.Tag() != "!") {  // quoted scalars stay strings
        if (text == "true" || text == "false") return text == "true";
        if (!text.empty() && text.size() < 19 &&
            std::all_of(text.begin() + (text[0] == '-' ? 1 : 0), text.end(),
                        [](char c) { return c >= '0' && c <= '9'; }) &&
            text != "-") {
          return std::stoll(text);
        }
      }
      return text;
    }
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      break;
  }
  return nullptr;
}

AdminReply ShowConfig(const AdminSources& sources, bool as_json) {
  if (!sources.config) return {false, "no config available"};
  const std::string yaml = config::DumpMasked(*sources.config);
  if (!as_json) return {true, yaml};
  try {
    return {true, Dump(YamlToJson(YAML::Load(yaml)))};
  } catch (const std::exception& e) {  // yaml-cpp reports with exceptions
    return {false, std::string("cannot convert the config to JSON: ") + e.what()};
  }
}

AdminReply SwitchPrimary(const std::vector<std::string>& words, const AdminSources& sources,
                         bool as_json) {
  if (!sources.switchover) return {false, "switchover is not available in this process"};
  std::string target;
  bool promote = false;
  double timeout_s = 10;
  for (size_t i = 1; i < words.size(); ++i) {
    if (words[i] == "--promote") {
      promote = true;
    } else if (words[i] == "--timeout" && i + 1 < words.size()) {
      char* end = nullptr;
      timeout_s = std::strtod(words[++i].c_str(), &end);
      if (end == words[i].c_str() || *end != '\0' || !(timeout_s > 0) || timeout_s > 3600) {
        return {false, "--timeout wants seconds between 0 and 3600, not \"" + words[i] + "\""};
      }
    } else if (!words[i].empty() && words[i][0] == '-') {
      return {false, "switch-primary: unknown option \"" + words[i] + "\""};
    } else if (target.empty()) {
      target = words[i];
    } else {
      return {false, "switch-primary takes one node or region, not \"" + words[i] + "\" too"};
    }
  }
  if (target.empty()) return {false, "usage: switch-primary <node|region> [--promote] [--timeout S]"};
  auto reports = sources.switchover->SwitchPrimary(
      target, promote,
      std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  if (!reports.ok()) return {false, std::string(reports.status().message())};
  bool ok = true;
  json list = json::array();
  std::string text;
  for (const SwitchReport& report : *reports) {
    ok = ok && report.ok;
    list.push_back({{"protocol", routing::ProtocolName(report.protocol)},
                    {"from", report.from},
                    {"to", report.to},
                    {"ok", report.ok},
                    {"promoted", report.promoted},
                    {"writes_held_ms", report.writes_held_ms},
                    {"aborted", report.aborted},
                    {"steps", report.steps},
                    {"error", report.error}});
    text += std::string(routing::ProtocolName(report.protocol)) + ": " +
            (report.from.empty() ? "none" : report.from) + " -> " + report.to + ": " +
            (report.ok ? "done" : "FAILED: " + report.error) + ", writes held " +
            Fixed(report.writes_held_ms, 1) + " ms\n";
    for (const auto& step : report.steps) text += "  - " + step + "\n";
  }
  if (as_json) return {ok, ok ? Dump(list) : list.dump()};
  return {ok, text};
}

AdminReply Dispatch(std::string_view line, const AdminSources& sources) {
  std::vector<std::string> words = Words(line);
  const bool as_json = std::erase(words, "--json") > 0;
  const std::string command = [&] {
    std::string joined;
    for (const auto& word : words) joined += (joined.empty() ? "" : " ") + word;
    return joined;
  }();
  if (command == "status") return Status(sources, as_json);
  if (command == "show nodes") return ShowNodes(sources, as_json);
  if (command == "show clients") return ShowClients(sources, as_json);
  if (command == "show config") return ShowConfig(sources, as_json);
  if (command == "help" || command.empty()) return {true, std::string(kHelp)};
  if (!words.empty() && words[0] == "switch-primary") return SwitchPrimary(words, sources, as_json);
  if (!words.empty() && (words[0] == "pause" || words[0] == "resume")) {
    if (!sources.switchover) return {false, "pause/resume is not available in this process"};
    absl::Status done;
    if (command == "resume") {
      done = sources.switchover->Resume();
    } else if (command == "pause" || command == "pause writes") {
      done = sources.switchover->Pause(WriteGate::Mode::kHoldWrites);
    } else if (command == "pause all") {
      done = sources.switchover->Pause(WriteGate::Mode::kHoldAll);
    } else {
      return {false, "usage: pause [writes|all] | resume"};
    }
    if (!done.ok()) return {false, std::string(done.message())};
    return {true, command == "resume" ? "writes released\n" : "holding new " +
                                                                  std::string(command == "pause all" ? "requests" : "writes") +
                                                                  " until `resume`\n"};
  }
  if (!words.empty() && words[0] == "show") {
    if (words.size() == 1) return {false, "show what? expected nodes, clients or config"};
    return {false,
            "unknown show target \"" + command.substr(5) + "\": expected nodes, clients or config"};
  }
  return {false, "unknown command \"" + command + "\" (try \"help\")"};
}

}  // namespace

AdminReply RunAdminCommand(std::string_view line, const AdminSources& sources) {
  try {
    return Dispatch(line, sources);
  } catch (const std::exception& e) {  // JSON and allocation errors: an answer, not a crash
    return {false, std::string("internal error: ") + e.what()};
  }
}

}  // namespace nerava::proxy

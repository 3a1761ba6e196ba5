// FunctionPolicy: which called functions force a statement to the primary (DESIGN §4).
#include <algorithm>
#include <cctype>
#include <string>

#include "nerava/routing/sql_classifier.h"

namespace nerava::routing {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "schema.name" (or "catalog.schema.name") into schema and bare name.
void Split(std::string_view name, std::string_view& schema, std::string_view& bare) {
  size_t dot = name.rfind('.');
  if (dot == std::string_view::npos) {
    schema = {};
    bare = name;
    return;
  }
  bare = name.substr(dot + 1);
  std::string_view rest = name.substr(0, dot);
  size_t dot2 = rest.rfind('.');
  schema = dot2 == std::string_view::npos ? rest : rest.substr(dot2 + 1);
}

}  // namespace

// Functions that fail or misbehave on a hot standby although pg_proc does not mark them volatile
// (checked against PostgreSQL 15: txid_current and pg_current_xact_id are stable and assign a
// transaction id; the *_if_assigned variants are stable and would silently return NULL on a
// standby; pg_walfile_name* are immutable and refuse to run during recovery), plus volatile ones
// that can never work on a standby, so that an allowlist entry cannot send them there.
// clang-format off
const std::vector<std::string_view>& FunctionPolicy::BuiltinWriteList() {
  static const auto* list = new std::vector<std::string_view>{
      "txid_current", "txid_current_if_assigned", "pg_current_xact_id",
      "pg_current_xact_id_if_assigned", "pg_walfile_name", "pg_walfile_name_offset",
      "pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
      "pg_switch_wal", "pg_create_restore_point", "nextval", "setval", "pg_notify",
      "lo_creat", "lo_create", "lo_import", "lo_unlink", "lo_put", "lo_from_bytea", "lowrite",
      "lo_truncate", "lo_truncate64",
  };
  return *list;
}
// clang-format on

// Every function PostgreSQL 15 marks volatile in pg_catalog (from pg_proc, minus trigger,
// handler and binary-upgrade functions nobody calls in a query), plus the usual extension
// generators (uuid-ossp, pgcrypto). Used only until the monitor has loaded pg_proc.
// clang-format off
const std::vector<std::string_view>& FunctionPolicy::BuiltinVolatileFallback() {
  static const auto* list = new std::vector<std::string_view>{
    "amvalidate", "bernoulli", "brin_desummarize_range", "brin_summarize_new_values",
    "brin_summarize_range", "clock_timestamp", "current_query", "currtid2", "currval",
    "cursor_to_xml", "cursor_to_xmlschema", "dsnowball_init", "dsnowball_lexize",
    "gen_random_bytes", "gen_random_uuid", "gen_salt", "gin_clean_pending_list", "lastval",
    "lo_close", "lo_creat", "lo_create", "lo_export", "lo_from_bytea", "lo_get", "lo_import",
    "lo_lseek", "lo_lseek64", "lo_open", "lo_put", "lo_tell", "lo_tell64", "lo_truncate",
    "lo_truncate64", "lo_unlink", "loread", "lowrite", "nextval", "pg_advisory_lock",
    "pg_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
    "pg_backup_start", "pg_backup_stop", "pg_blocking_pids", "pg_cancel_backend",
    "pg_collation_actual_version", "pg_control_checkpoint", "pg_control_init",
    "pg_control_recovery", "pg_control_system", "pg_copy_logical_replication_slot",
    "pg_copy_physical_replication_slot", "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot", "pg_create_restore_point", "pg_current_logfile",
    "pg_current_wal_flush_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_lsn",
    "pg_database_collation_actual_version", "pg_database_size", "pg_drop_replication_slot",
    "pg_export_snapshot", "pg_extension_config_dump", "pg_get_backend_memory_contexts",
    "pg_get_multixact_members", "pg_get_shmem_allocations", "pg_get_wal_replay_pause_state",
    "pg_get_wal_resource_managers", "pg_hba_file_rules", "pg_ident_file_mappings",
    "pg_import_system_collations", "pg_indexes_size", "pg_is_in_recovery",
    "pg_is_wal_replay_paused", "pg_isolation_test_session_is_blocked", "pg_jit_available",
    "pg_last_committed_xact", "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp", "pg_lock_status", "pg_log_backend_memory_contexts",
    "pg_logical_emit_message", "pg_logical_slot_get_binary_changes", "pg_logical_slot_get_changes",
    "pg_logical_slot_peek_binary_changes", "pg_logical_slot_peek_changes",
    "pg_ls_archive_statusdir", "pg_ls_dir", "pg_ls_logdir", "pg_ls_logicalmapdir",
    "pg_ls_logicalsnapdir", "pg_ls_replslotdir", "pg_ls_tmpdir", "pg_ls_waldir", "pg_nextoid",
    "pg_notification_queue_usage", "pg_notify", "pg_partition_ancestors", "pg_partition_tree",
    "pg_prepared_xact", "pg_promote", "pg_read_binary_file", "pg_read_file", "pg_read_file_old",
    "pg_relation_size", "pg_reload_conf", "pg_replication_origin_advance",
    "pg_replication_origin_create", "pg_replication_origin_drop", "pg_replication_origin_progress",
    "pg_replication_origin_session_is_setup", "pg_replication_origin_session_progress",
    "pg_replication_origin_session_reset", "pg_replication_origin_session_setup",
    "pg_replication_origin_xact_reset", "pg_replication_origin_xact_setup",
    "pg_replication_slot_advance", "pg_rotate_logfile", "pg_rotate_logfile_old",
    "pg_safe_snapshot_blocking_pids", "pg_sequence_last_value", "pg_show_all_file_settings",
    "pg_show_replication_origin_status", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
    "pg_stat_clear_snapshot", "pg_stat_file", "pg_stat_force_next_flush",
    "pg_stat_get_recovery_prefetch", "pg_stat_get_xact_blocks_fetched",
    "pg_stat_get_xact_blocks_hit", "pg_stat_get_xact_function_calls",
    "pg_stat_get_xact_function_self_time", "pg_stat_get_xact_function_total_time",
    "pg_stat_get_xact_numscans", "pg_stat_get_xact_tuples_deleted",
    "pg_stat_get_xact_tuples_fetched", "pg_stat_get_xact_tuples_hot_updated",
    "pg_stat_get_xact_tuples_inserted", "pg_stat_get_xact_tuples_returned",
    "pg_stat_get_xact_tuples_updated", "pg_stat_have_stats", "pg_stat_reset",
    "pg_stat_reset_replication_slot", "pg_stat_reset_shared",
    "pg_stat_reset_single_function_counters", "pg_stat_reset_single_table_counters",
    "pg_stat_reset_slru", "pg_stat_reset_subscription_stats", "pg_stop_making_pinned_objects",
    "pg_switch_wal", "pg_table_size", "pg_tablespace_size", "pg_terminate_backend",
    "pg_total_relation_size", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared", "pg_wal_replay_pause",
    "pg_wal_replay_resume", "pg_xact_commit_timestamp", "pg_xact_commit_timestamp_origin",
    "pg_xact_status", "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "random",
    "set_config", "setseed", "setval", "system", "timeofday", "ts_rewrite", "ts_stat",
    "txid_status", "unique_key_recheck", "uuid_generate_v1", "uuid_generate_v1mc",
    "uuid_generate_v4",
  };
  return *list;
}
// clang-format on

FunctionPolicy::FunctionPolicy() {
  for (std::string_view name : BuiltinVolatileFallback()) Add("pg_catalog", name, true);
}

void FunctionPolicy::Add(std::string_view schema, std::string_view name, bool is_volatile) {
  std::string bare = Lower(name);
  std::string qualified = Lower(schema);
  qualified.append(".").append(bare);
  // Overloads and case variants share an entry: volatile if any of them is.
  by_name_[bare] |= is_volatile;
  by_qualified_[qualified] |= is_volatile;
}

void FunctionPolicy::SetVolatile(
    const std::vector<std::pair<std::string, std::string>>& proname_nspname) {
  by_name_.clear();
  by_qualified_.clear();
  for (const auto& [proname, nspname] : proname_nspname) Add(nspname, proname, true);
  loaded_ = true;
  complete_ = false;
}

void FunctionPolicy::SetCatalog(const std::vector<CatalogFunction>& functions) {
  by_name_.clear();
  by_qualified_.clear();
  for (const CatalogFunction& f : functions) Add(f.schema, f.name, f.volatility == 'v');
  loaded_ = true;
  complete_ = true;
}

void FunctionPolicy::SetAllowlist(const std::vector<std::string>& names) {
  allowlist_.clear();
  for (const std::string& name : names) allowlist_.insert(Lower(name));
}

bool FunctionPolicy::RequiresPrimary(std::string_view name) const {
  // Names from the classifier are lower-case unless quoted; fold only when needed.
  std::string folded;
  if (std::any_of(name.begin(), name.end(),
                  [](char c) { return std::isupper(static_cast<unsigned char>(c)) != 0; })) {
    folded = Lower(name);
    name = folded;
  }
  std::string_view schema;
  std::string_view bare;
  Split(name, schema, bare);
  if (schema.empty() || schema == "pg_catalog") {
    const auto& writes = BuiltinWriteList();
    if (std::find(writes.begin(), writes.end(), bare) != writes.end()) return true;
  }
  std::string qualified;
  if (!schema.empty()) {
    qualified.reserve(schema.size() + 1 + bare.size());
    qualified.append(schema).append(".").append(bare);
  }
  if (!allowlist_.empty()) {
    if (allowlist_.contains(AbslView(bare))) return false;
    if (!schema.empty() && allowlist_.contains(qualified)) return false;
  }
  const auto& map = schema.empty() ? by_name_ : by_qualified_;
  auto it = schema.empty() ? map.find(AbslView(bare)) : map.find(qualified);
  if (it != map.end()) return it->second;
  return complete_;  // unknown to a loaded catalog: it may be anything, so the primary
}

const std::string* FunctionPolicy::FirstRequiringPrimary(
    const std::vector<std::string>& functions) const {
  for (const std::string& name : functions) {
    if (RequiresPrimary(name)) return &name;
  }
  return nullptr;
}

}  // namespace nerava::routing

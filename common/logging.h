// Logging goes through spdlog; daemons log to stderr (journald picks it up under systemd).
#pragma once

#include "spdlog/spdlog.h"

#define LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
#define LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)

#include <string>

namespace dpinfer {

// Every log line starts with the time, `who` (e.g. "worker 3") and the level.
inline void SetLogPrefix(const std::string& who) {
  ::spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [" + who + "] [%l] %v");
}

}  // namespace dpinfer

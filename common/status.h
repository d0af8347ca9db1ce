// Error plumbing shared by every module: absl::Status is the error value (see DESIGN.md, "Errors
// are values"); these macros keep call sites short without hiding the early return.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DPINFER_CONCAT_INNER(a, b) a##b
#define DPINFER_CONCAT(a, b) DPINFER_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status _dpinfer_status = (expr);   \
    if (!_dpinfer_status.ok()) return _dpinfer_status; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(DPINFER_CONCAT(_dpinfer_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

// Broken invariants (programming errors, never bad input) abort with the location.
#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)
#define CHECK_OK(expr)                                                                   \
  do {                                                                                   \
    ::absl::Status _dpinfer_s = (expr);                                                  \
    if (!_dpinfer_s.ok()) {                                                              \
      std::fprintf(stderr, "%s:%d: CHECK_OK failed: %s\n", __FILE__, __LINE__,           \
                   _dpinfer_s.ToString().c_str());                                       \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

#pragma once

// The server-side Lua script that decides Floodgate transactions in Redis, and its SHA1 (what
// EVALSHA names it by). The script's arguments: script_args.h. Immutable; thread-safe.

#include <string_view>

namespace floodgate::redis_store {

// Returns the script's source.
std::string_view TransactionScript();
// Returns the script's SHA1 in lowercase hex (as SCRIPT LOAD returns it).
std::string_view TransactionScriptSha();

}  // namespace floodgate::redis_store

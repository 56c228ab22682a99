# Shared by the bench scripts; source it: `. "$here/bench/lib.sh"`.
#
# A node is started on port 0 and its ports are read from the line `floodgate serve` prints
# once it listens: "floodgate: listening http=P grpc=Q config=PATH" (src/server/main.cc; the
# tests read the same line, testing/server_process.cc).

# fg_start_node ERR_FILE COMMAND...: runs COMMAND (a `floodgate serve ...` command line, with
# any prefix such as taskset, and --http/--grpc 127.0.0.1:0) in the background with stderr to
# ERR_FILE and waits up to 30 s for its listening line. Sets fg_pid, fg_http and fg_grpc; returns
# non-zero when the node printed no listening line.
fg_start_node() {
  local err=$1 line=""
  shift
  exec 3< <(exec "$@" 2>"$err")
  fg_pid=$!
  read -r -t 30 line <&3 || true
  fg_http=$(fg_listening_port http "$line")
  fg_grpc=$(fg_listening_port grpc "$line")
  [ -n "$fg_http" ]
}

# fg_listening_port http|grpc LINE: the port named in a listening line.
fg_listening_port() { sed -n "s/.*\<$1=\([0-9]*\).*/\1/p" <<<"$2"; }

# kv LINE KEY: the value of KEY=... in LINE (the load tools print key=value summaries).
kv() { sed -n "s/.*\<$2=\([^ ]*\).*/\1/p" <<<"$1" | head -1; }

# median: the median of the numbers on stdin, one per line or separated by spaces; prints
# nothing when there are none.
median() {
  tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1}
    END{if (!NR) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

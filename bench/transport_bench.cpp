// Transport benchmark: KV-page RMA put bandwidth (1-64 MiB, first put to flush completion; into
// a region the peer registered with register_memory and into one it got from allocate_memory) and
// 1 KiB active-message round-trip latency over the project's UcxTransport between two processes
// on this host (the bench spawns itself as the peer with --peer), on UCX shared memory (TLS
// "sm,tcp", error mode NONE) and tcp (TLS "tcp", mode PEER). Baselines come from ucx_perftest run
// by bench/transport_bench.sh in the same run and passed in with --baselines FILE.
// Single-threaded apart from each transport's progress thread; completions signal a Waiter.
#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "transport/ucx/ucx_transport.hpp"

extern char** environ;

namespace {

namespace tr = sy::transport;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr tr::AmId ping_id = 1;  // parent -> peer, 1 KiB payload
constexpr tr::AmId pong_id = 2;  // peer -> parent, the same payload back
constexpr std::size_t region_bytes = std::size_t{64} << 20;  // the largest KV page
constexpr std::size_t am_bytes = 1024;

// --idle-ms: the progress thread's longest sleep (UcxOptions::max_idle_wait), on both sides.
int idle_ms = 100;
// --busy-poll-us: the progress thread's busy-poll window (UcxOptions::busy_poll), both sides;
// -1 keeps the UcxOptions default.
int busy_poll_us = -1;

tr::ucx::UcxOptions options_for(const std::string& tls, const std::string& name) {
  tr::ucx::UcxOptions o;
  o.max_idle_wait = std::chrono::milliseconds(idle_ms);
  if (busy_poll_us >= 0) o.busy_poll = std::chrono::microseconds(busy_poll_us);
  if (tls == "sm") {
    o.error_mode = tr::ucx::ErrorMode::none;  // shared memory needs mode NONE
    o.config = {{"TLS", "sm,tcp"}, {"NET_DEVICES", "lo"}};  // the listener path needs tcp
  } else if (tls == "tcp") {
    o.error_mode = tr::ucx::ErrorMode::peer;
    o.config = {{"TLS", "tcp"}, {"NET_DEVICES", "lo"}};
  } else {
    throw std::invalid_argument("unknown --tls '" + tls + "' (sm or tcp)");
  }
  o.name = name;
  return o;
}

std::string to_hex(tr::Bytes bytes) {
  std::string hex;
  for (std::byte b : bytes) {
    char two[3];
    std::snprintf(two, sizeof two, "%02x", static_cast<unsigned>(b));
    hex += two;
  }
  return hex;
}

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> bytes(hex.size() / 2);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::byte>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  return bytes;
}

// Counts completions (or arrivals) from the progress thread; the bench thread waits for a total.
class Waiter {
 public:
  void add(bool ok) {
    std::lock_guard lock(mutex_);
    ++count_;
    failed_ += ok ? 0 : 1;
    cv_.notify_all();
  }
  tr::Completion completion() {
    return [this](const tr::Status& s) { add(s.ok()); };
  }
  // Waits until `n` events in total arrived; throws after `timeout` or on any failure.
  void wait_for(std::size_t n, std::chrono::milliseconds timeout, const char* what) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return count_ >= n; })) {
      throw std::runtime_error(std::string(what) + ": timed out");
    }
    if (failed_ != 0) {
      throw std::runtime_error(std::string(what) + ": an operation failed");
    }
  }
  std::size_t count() {
    std::lock_guard lock(mutex_);
    return count_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t count_ = 0;
  std::size_t failed_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The peer: listens, serves two 64 MiB regions (a std::vector passed to register_memory, and one
// from allocate_memory: UCX shared memory), echoes AM 1 back as AM 2, and leaves when
// the parent closes (or dies: PDEATHSIG; or 120 s pass).

int run_peer(const std::string& tls) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  tr::ucx::UcxTransport transport(options_for(tls, "bench_peer"));
  transport.listen("127.0.0.1:0");
  std::vector<std::byte> region(region_bytes, std::byte{0});
  auto registered = transport.register_memory(region.data(), region.size());
  auto allocated = transport.allocate_memory(region_bytes);

  // Ping-pong keeps one echo in flight; a ring of buffers covers a late send completion.
  constexpr std::size_t ring = 64;
  std::vector<std::vector<std::byte>> echo(ring, std::vector<std::byte>(am_bytes));
  std::size_t next = 0;
  transport.set_handler(ping_id, [&](tr::PeerId from, tr::Bytes header, tr::Bytes payload) {
    auto& buffer = echo[next++ % ring];
    buffer.assign(payload.begin(), payload.end());
    transport.send(from, pong_id, header, buffer, {});
  });
  Waiter gone;
  transport.on_peer_failure([&](tr::PeerId, const tr::PeerDown&) { gone.add(true); });

  std::printf("READY %s %llu %s %llu %s\n", transport.local_address().c_str(),
              static_cast<unsigned long long>(registered->remote_address()),
              to_hex(registered->packed_key()).c_str(),
              static_cast<unsigned long long>(allocated->remote_address()),
              to_hex(allocated->packed_key()).c_str());
  std::fflush(stdout);
  try {
    gone.wait_for(1, 120s, "peer");
  } catch (const std::exception&) {
  }
  registered.reset();
  allocated.reset();
  transport.close(1s);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The parent side.

class Child {
 public:
  Child(const std::string& self, const std::string& tls) {
    std::vector<std::string> env_strings{"UCX_WARN_UNUSED_ENV_VARS=n"};
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    std::vector<char*> envp;
    for (auto& entry : env_strings) envp.push_back(entry.data());
    envp.push_back(nullptr);
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    std::string flag = "--peer", arg = tls, idle = std::to_string(idle_ms),
                busy = std::to_string(busy_poll_us);
    char* argv[] = {const_cast<char*>(self.c_str()), flag.data(), arg.data(), idle.data(),
                    busy.data(), nullptr};
    const int rc = posix_spawn(&pid_, self.c_str(), &actions, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    out_ = fds[0];
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error("posix_spawn " + self + ": " + std::strerror(rc));
    }
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  std::string read_line(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::string line;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return "";
      pollfd fd{out_, POLLIN, 0};
      if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
      char c = 0;
      if (::read(out_, &c, 1) != 1) return "";
      if (c == '\n') return line;
      line += c;
    }
  }
  // Waits up to `timeout` for a polite exit; the destructor kills otherwise.
  void reap(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (pid_ > 0 && Clock::now() < deadline) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      ::usleep(10000);
    }
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

struct Stats {
  double median = 0, min = 0, max = 0;
  std::size_t n = 0;
};

Stats summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back(), v.size()};
}

struct Row {
  std::string tls, test, size;
  Stats ours;
  std::string unit;
  double baseline = 0;  // 0: none given
  bool higher_is_better = true;
};

struct Config {
  std::vector<std::string> tls{"sm", "tcp"};
  int window = 1;            // puts in flight before the flush
  double seconds = 1.0;      // per put size, at least `min_reps` batches
  int min_reps = 5;
  int lat_iters = 20000;     // round trips per latency row (tcp: a quarter)
  std::map<std::string, double> baselines;  // "tls test size" -> GB/s or round-trip µs
};

// Bandwidth in GB/s (1e9 B/s) per batch of `window` puts of `size` bytes, each batch timed from
// the first put to the flush completion.
Stats bench_put(tr::Transport& t, tr::PeerId peer, std::vector<std::byte>& local,
                std::uint64_t remote, const std::vector<std::byte>& key, std::size_t size,
                const Config& cfg) {
  std::vector<double> gbps;
  double total = 0;
  for (int rep = -1; rep < cfg.min_reps || (total < cfg.seconds && gbps.size() < 50); ++rep) {
    Waiter w;
    const auto start = Clock::now();
    for (int i = 0; i < cfg.window; ++i) {
      const std::size_t offset = (static_cast<std::size_t>(i) * size) % region_bytes;
      t.put(peer, local.data() + offset, size, remote + offset, key, w.completion());
    }
    t.flush(peer, w.completion());
    w.wait_for(static_cast<std::size_t>(cfg.window) + 1, 60s, "put");
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (rep < 0) continue;  // warm-up (rkey unpack, first touch)
    total += s;
    gbps.push_back(static_cast<double>(size) * cfg.window / s * 1e-9);
  }
  return summarize(gbps);
}

// Round trips of a 1 KiB AM in µs. from_handler = false: the bench thread sends and waits for the
// echo (two thread hops per round trip: command queue in, handler -> waiter out). true: the pong
// handler sends the next ping on the progress thread (the transport's own path only).
Stats bench_am(tr::Transport& t, tr::PeerId peer, int iters, bool from_handler) {
  std::vector<std::byte> payload(am_bytes, std::byte{0x5a});
  const int warm = std::max(100, iters / 20);
  const int total = warm + iters;
  std::vector<Clock::time_point> stamps(static_cast<std::size_t>(total) + 1);
  std::atomic<int> sent{0};
  Waiter arrived;
  t.set_handler(pong_id, [&](tr::PeerId from, tr::Bytes, tr::Bytes) {
    if (from_handler) {
      const int k = sent.load(std::memory_order_relaxed);
      stamps[static_cast<std::size_t>(k)] = Clock::now();
      if (k < total) {
        sent.store(k + 1, std::memory_order_relaxed);
        t.send(from, ping_id, {}, payload, {});
      }
    }
    arrived.add(true);
  });
  std::vector<double> us;
  if (from_handler) {
    stamps[0] = Clock::now();
    sent.store(1);
    t.send(peer, ping_id, {}, payload, {});
    arrived.wait_for(static_cast<std::size_t>(total), 120s, "am ping-pong");
    for (int k = warm; k < total; ++k) {
      us.push_back(std::chrono::duration<double, std::micro>(stamps[k + 1] - stamps[k]).count());
    }
  } else {
    for (int k = 0; k < total; ++k) {
      const auto start = Clock::now();
      t.send(peer, ping_id, {}, payload, {});
      arrived.wait_for(static_cast<std::size_t>(k) + 1, 10s, "am round trip");
      if (k >= warm) {
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      }
    }
  }
  t.set_handler(pong_id, {});
  return summarize(us);
}

void run_transport(const std::string& self, const std::string& tls, const Config& cfg,
                   std::vector<Row>& rows) {
  Child child(self, tls);
  const std::string ready = child.read_line(20s);
  if (ready.rfind("READY ", 0) != 0) throw std::runtime_error("peer (" + tls + ") said '" + ready + "'");
  std::istringstream fields(ready.substr(6));
  std::string address, key_hex, alloc_key_hex;
  unsigned long long remote = 0, alloc_remote = 0;
  fields >> address >> remote >> key_hex >> alloc_remote >> alloc_key_hex;
  const std::vector<std::byte> key = from_hex(key_hex);
  const std::vector<std::byte> alloc_key = from_hex(alloc_key_hex);

  tr::ucx::UcxTransport t(options_for(tls, "bench"));
  const tr::PeerId peer = t.connect(address, 10s);
  std::vector<std::byte> local(region_bytes);
  for (std::size_t i = 0; i < local.size(); ++i) local[i] = static_cast<std::byte>(i * 7 + 3);
  auto registered = t.register_memory(local.data(), local.size());

  auto base = [&](const std::string& test, const std::string& size) {
    auto it = cfg.baselines.find(tls + " " + test + " " + size);
    return it == cfg.baselines.end() ? 0.0 : it->second;
  };
  // Target region: "registered" = the peer's std::vector via register_memory (UCX emulates puts
  // into it with active messages on sm), "allocated" = the peer's allocate_memory region (UCX
  // shared memory on sm: a direct copy, as ucx_perftest's own UCX-allocated buffers).
  for (const bool into_allocated : {false, true}) {
    for (std::size_t mib : {1, 4, 16, 64}) {
      const Stats s = into_allocated
                          ? bench_put(t, peer, local, alloc_remote, alloc_key, mib << 20, cfg)
                          : bench_put(t, peer, local, remote, key, mib << 20, cfg);
      const std::string size = std::to_string(mib) + " MiB";
      const std::string test = (cfg.window == 1 ? std::string("put+flush")
                                                : "put x" + std::to_string(cfg.window) + "+flush") +
                               (into_allocated ? " -> allocated" : " -> registered");
      rows.push_back({tls, test, size, s, "GB/s", base("put", std::to_string(mib << 20)), true});
      std::fprintf(stderr, "%s %s %s: %.2f GB/s\n", tls.c_str(), test.c_str(), size.c_str(),
                   s.median);
    }
  }
  const int iters = tls == "tcp" ? cfg.lat_iters / 4 : cfg.lat_iters;
  for (bool from_handler : {false, true}) {
    const Stats s = bench_am(t, peer, iters, from_handler);
    rows.push_back({tls, from_handler ? "am rtt, from handler" : "am rtt, caller thread", "1 KiB", s,
                    "µs", base("am_rtt", "1024"), false});
    std::fprintf(stderr, "%s am rtt (%s): %.2f us\n", tls.c_str(), from_handler ? "handler" : "caller",
                 s.median);
  }
  registered.reset();
  t.close(2s);
  child.reap(3s);
}

void print(const std::vector<Row>& rows, const Config& cfg) {
  std::printf("\nmedian (min-max); put: GB/s (1e9 B/s), %d put(s) per flush, each batch timed first put to "
              "flush completion;\nam rtt: 1 KiB round trip in µs; ucx_perftest ucp_am_lat prints one-way "
              "(half round trip): shown doubled.\nratio = ours / ucx_perftest for GB/s, ucx_perftest / ours "
              "for µs (1.00 = as fast as ucx_perftest)\n\n",
              cfg.window);
  std::printf("| transport | test | size | ours | unit | n | ucx_perftest | ratio |\n"
              "|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    char ours[96], basecol[32] = "-", ratio[32] = "-";
    std::snprintf(ours, sizeof ours, "%.2f (%.2f-%.2f)", r.ours.median, r.ours.min, r.ours.max);
    if (r.baseline > 0) {
      std::snprintf(basecol, sizeof basecol, "%.2f", r.baseline);
      std::snprintf(ratio, sizeof ratio, "**%.2f**",
                    r.higher_is_better ? r.ours.median / r.baseline : r.baseline / r.ours.median);
    }
    std::printf("| %s | %s | %s | %s | %s | %zu | %s | %s |\n", r.tls.c_str(), r.test.c_str(),
                r.size.c_str(), ours, r.unit.c_str(), r.ours.n, basecol, ratio);
  }
}

// Baseline file lines: "<tls> put <bytes> <GB/s>" and "<tls> am_rtt 1024 <round-trip µs>".
std::map<std::string, double> read_baselines(const std::string& path) {
  std::map<std::string, double> out;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::string tls, test, size;
  double value = 0;
  while (in >> tls >> test >> size >> value) out[tls + " " + test + " " + size] = value;
  return out;
}

int usage() {
  std::fprintf(stderr,
               "usage: transport_bench [--tls sm|tcp]... [--window N] [--seconds S] [--iters N] "
               "[--idle-ms N] [--busy-poll-us N] [--baselines FILE] [--quick]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 4 && args[0] == "--peer") {
      idle_ms = std::stoi(args[2]);
      busy_poll_us = std::stoi(args[3]);
      return run_peer(args[1]);
    }
    Config cfg;
    std::vector<std::string> tls;
    for (std::size_t i = 0; i < args.size(); ++i) {
      const bool has_value = i + 1 < args.size();
      if (args[i] == "--tls" && has_value) {
        tls.push_back(args[++i]);
      } else if (args[i] == "--window" && has_value) {
        cfg.window = std::max(1, std::stoi(args[++i]));
      } else if (args[i] == "--seconds" && has_value) {
        cfg.seconds = std::stod(args[++i]);
      } else if (args[i] == "--iters" && has_value) {
        cfg.lat_iters = std::max(100, std::stoi(args[++i]));
      } else if (args[i] == "--baselines" && has_value) {
        cfg.baselines = read_baselines(args[++i]);
      } else if (args[i] == "--idle-ms" && has_value) {
        idle_ms = std::max(1, std::stoi(args[++i]));
      } else if (args[i] == "--busy-poll-us" && has_value) {
        busy_poll_us = std::max(0, std::stoi(args[++i]));
      } else if (args[i] == "--quick") {
        cfg.seconds = 0.2;
        cfg.min_reps = 3;
        cfg.lat_iters = 2000;
      } else {
        return usage();
      }
    }
    if (!tls.empty()) cfg.tls = tls;
    for (const auto& name : cfg.tls) options_for(name, "check");  // reject a bad --tls early
    std::vector<Row> rows;
    for (const auto& name : cfg.tls) run_transport("/proc/self/exe", name, cfg, rows);
    print(rows, cfg);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "transport_bench: %s\n", e.what());
    return 1;
  }
}

// switchyard local: a whole cluster on this machine, one `switchyard serve` child process per
// [[node]] of a config (--config FILE), or of one generated on the fly (--prefill N --decode N
// [--model DIR], loopback, free ports, written to a temp dir). The supervisor:
// - starts each child in its own process group with PR_SET_PDEATHSIG=SIGTERM (a killed supervisor
//   leaves no orphans), stdin from /dev/null, stdout/stderr through pipes it forwards as "[node] ...";
// - sets UCX_NET_DEVICES=lo UCX_TLS=tcp UCX_WARN_UNUSED_ENV_VARS=n for them unless already set;
// - waits (bounded) until every child printed "node NAME ready", then prints where things listen;
// - on SIGTERM/SIGINT sends SIGTERM to every child, waits (bounded), SIGKILLs stragglers, exit 0;
// - when a child dies before ready, or the router dies, or the last node of a role, it reports
//   its exit status and stderr tail, stops the others the same way and exits 1; a lost worker
//   whose role other nodes still host is reported and the cluster goes on (DESIGN "Failure":
//   its requests failed with a retryable error, new ones go to the others).
// Metrics: it writes a Prometheus scrape config listing every node's /metrics address next to the
// config it uses (prometheus.yml beside a generated config, STEM.prometheus.yml beside a given one,
// so a user's own prometheus.yml is never overwritten) and prints its path.
// Single-threaded (a poll loop over the children's pipes and a signalfd), so fork() is safe.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "actors/config/cluster_config.hpp"
#include "apps/switchyard/commands.hpp"

namespace sy::apps {
namespace {

namespace cfg = sy::actors::config;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct LocalArgs {
  std::string config;
  std::string model;
  int prefill = 1;
  int decode = 1;
  int expert_hosts = 0;       // generated config: expert host nodes (0: experts run in the workers)
  int redundant_experts = 0;  // generated config: [experts] redundant
  bool no_overlap = false;    // generated config: [experts] overlap = false
  int rebalance_interval = 0;  // generated config: a controller on the router node, [balance] interval_s
  std::int64_t max_seq_len = 0;  // generated config: [model] max_seq_len
  int rpc_port = 7433;     // generated config: the cluster API's port on 127.0.0.1 (0: any free one)
  int http_port = 8000;    // generated config: the HTTP API's port on 127.0.0.1 (0: any free one)
  std::int64_t kv_pages = 0;   // generated config: [decode] kv_pages (0: the default)
  std::int64_t max_batch = 0;  // generated config: [decode] max_batch (0: the default)
  bool mtp = false;
  std::string backend;
  std::string write_config;
  double ready_timeout_s = 0;
  double stop_timeout_s = 10;
};

void say(const std::string& line) {
  std::fputs(("switchyard local: " + line + "\n").c_str(), stdout);
  std::fflush(stdout);
}
void warn(const std::string& line) { std::fputs(("switchyard local: " + line + "\n").c_str(), stderr); }

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// The kernel's ephemeral port range (what bind to port 0 and outgoing connections get).
std::pair<int, int> ephemeral_port_range() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int lo = 32768, hi = 60999;
  in >> lo >> hi;
  return {lo, hi};
}

// `count` distinct free TCP ports on 127.0.0.1 (bound together, then released). Chosen at random
// below the ephemeral range when there is room, so that between now and the nodes binding them
// no other process is handed one of them for a port-0 bind or an outgoing connection.
std::vector<std::uint16_t> free_ports(std::size_t count) {
  const int ephemeral_lo = ephemeral_port_range().first;
  constexpr int kLowest = 10000;
  const bool below = ephemeral_lo - kLowest > 1000;
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(kLowest, std::max(kLowest, ephemeral_lo - 1));
  std::vector<int> fds;
  std::vector<std::uint16_t> ports;
  for (int attempts = 0; ports.size() < count; ++attempts) {
    if (attempts > 1000 + static_cast<int>(count) * 100) {
      throw std::runtime_error(fmt::format("no {} free ports on 127.0.0.1 below {}", count, ephemeral_lo));
    }
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail_errno("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(below ? pick(rng) : 0));
    socklen_t len = sizeof(addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(fd);
      if (below) continue;  // taken: try another
      fail_errno("finding a free port on 127.0.0.1");
    }
    fds.push_back(fd);
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

cfg::ClusterConfig generate_config(const LocalArgs& a) {
  if (a.prefill < 1 || a.decode < 1) {
    throw std::invalid_argument(fmt::format("--prefill and --decode must be >= 1 (got {} and {})", a.prefill, a.decode));
  }
  if (!a.model.empty() && !std::filesystem::is_directory(a.model)) {
    throw std::invalid_argument(fmt::format("--model {}: not a folder", a.model));
  }
  cfg::ClusterConfig c;
  c.cluster.name = "local";
  c.model.path = a.model.empty() ? "" : std::filesystem::absolute(a.model).string();
  if (a.rpc_port < 0 || a.rpc_port > 65535) throw std::invalid_argument(fmt::format("--rpc-port {}: not a port", a.rpc_port));
  if (a.http_port < 0 || a.http_port > 65535) {
    throw std::invalid_argument(fmt::format("--http-port {}: not a port", a.http_port));
  }
  if (a.kv_pages < 0 || a.max_batch < 0) throw std::invalid_argument("--kv-pages and --max-batch must be >= 1");
  if (a.kv_pages > 0) c.decode.kv_pages = static_cast<std::uint32_t>(a.kv_pages);
  if (a.max_batch > 0) c.decode.max_batch = static_cast<std::uint32_t>(a.max_batch);
  c.decode.mtp = a.mtp;
  c.model.backend = a.backend;
  if (a.expert_hosts < 0 || a.redundant_experts < 0) {
    throw std::invalid_argument("--expert-hosts and --redundant-experts must be >= 0");
  }
  if (a.redundant_experts > 0 && a.expert_hosts == 0) {
    throw std::invalid_argument("--redundant-experts needs --expert-hosts (replicas live on expert hosts)");
  }
  c.experts.redundant = static_cast<std::uint32_t>(a.redundant_experts);
  c.experts.overlap = !a.no_overlap;
  if (a.max_seq_len < 0) throw std::invalid_argument("--max-seq-len must be >= 0");
  c.model.max_seq_len = static_cast<std::uint32_t>(a.max_seq_len);
  const std::size_t n = 1 + static_cast<std::size_t>(a.prefill + a.decode + a.expert_hosts);
  const auto ports = free_ports(2 * n + 2);
  c.api.rpc.port = a.rpc_port == 0 ? ports[2 * n] : static_cast<std::uint16_t>(a.rpc_port);
  c.api.http.port = a.http_port == 0 ? ports[2 * n + 1] : static_cast<std::uint16_t>(a.http_port);
  auto add = [&](std::string name, cfg::Role role) {
    cfg::NodeConfig node;
    node.name = std::move(name);
    node.transport_port = ports[2 * c.nodes.size()];
    node.metrics_port = ports[2 * c.nodes.size() + 1];
    node.roles = {role};
    c.nodes.push_back(std::move(node));
  };
  add("router", cfg::Role::router);
  // The expert hosts report token counts to load_stats, which sits with the router.
  if (a.expert_hosts > 0) c.nodes.back().roles.push_back(cfg::Role::load_stats);
  if (a.rebalance_interval > 0) {
    if (a.expert_hosts == 0) throw std::invalid_argument("--rebalance-interval needs --expert-hosts");
    c.nodes.back().roles.push_back(cfg::Role::controller);
    c.balance.interval_s = static_cast<std::uint32_t>(a.rebalance_interval);
  }
  for (int i = 0; i < a.prefill; ++i) add(fmt::format("prefill{}", i), cfg::Role::prefill);
  for (int i = 0; i < a.decode; ++i) add(fmt::format("decode{}", i), cfg::Role::decode);
  for (int i = 0; i < a.expert_hosts; ++i) add(fmt::format("expert{}", i), cfg::Role::expert_host);
  return c;
}

std::string write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error(fmt::format("cannot write {}", path));
  return path;
}

// A Prometheus scrape config for every node's metrics endpoint (1 s scrapes: a local cluster is
// for watching things happen).
std::string prometheus_config(const cfg::ClusterConfig& c, const std::string& config_path) {
  std::string out = fmt::format(
      "# Written by `switchyard local` for cluster \"{}\" ({}).\n"
      "# Run: prometheus --config.file=THIS --storage.tsdb.path=DIR --web.listen-address=127.0.0.1:9090\n"
      "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      "scrape_configs:\n  - job_name: switchyard\n    static_configs:\n",
      c.cluster.name, config_path);
  for (const cfg::NodeConfig& n : c.nodes) {
    out += fmt::format("      - targets: ['{}:{}']  # {}\n        labels: {{cluster: '{}'}}\n", n.host, n.metrics_port,
                       n.name, c.cluster.name);
  }
  return out;
}

std::string write_prometheus_config(const cfg::ClusterConfig& c, const std::string& config_path, bool generated) {
  const std::filesystem::path config(config_path);
  const std::filesystem::path out =
      config.parent_path() / (generated ? std::string("prometheus.yml") : config.stem().string() + ".prometheus.yml");
  return write_text(out.string(), prometheus_config(c, config_path));
}

struct Child {
  const cfg::NodeConfig* node = nullptr;
  pid_t pid = -1;
  int out_fd = -1;  // its stdout (the ready line), forwarded to ours
  int err_fd = -1;  // its stderr, forwarded to ours and kept as a tail
  std::string out_partial, err_partial;
  std::deque<std::string> err_tail;
  bool ready = false;
  bool exited = false;
  int status = 0;       // wait status, once exited
  bool reported = false;  // its exit was told to the user
};

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  }
  return fmt::format("ended with wait status {}", status);
}

class Supervisor {
 public:
  Supervisor(const cfg::ClusterConfig& cluster, std::string config_path, milliseconds stop_timeout)
      : cluster_(cluster), config_path_(std::move(config_path)), stop_timeout_(stop_timeout) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGCHLD}) sigaddset(&set, s);
    if (sigprocmask(SIG_BLOCK, &set, &old_mask_) != 0) fail_errno("sigprocmask");
    signal_fd_ = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (signal_fd_ < 0) fail_errno("signalfd");
  }
  ~Supervisor() {
    try {
      stop_all();  // never leave children behind, whatever happened
    } catch (const std::exception& e) {
      warn(fmt::format("stopping the nodes: {}", e.what()));
    }
    for (Child& c : children_) close_fds(c);
    ::close(signal_fd_);
    sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  int run(milliseconds ready_timeout) {
    start_all();
    const auto deadline = Clock::now() + ready_timeout;
    while (!all_ready()) {
      if (stop_signal_) return stop_and_report(fmt::format("{} before the cluster was ready", *stop_signal_));
      if (Child* dead = first_dead()) return fail_on(*dead, "before the cluster was ready");
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        std::string missing;
        for (const Child& c : children_) {
          if (!c.ready) missing += (missing.empty() ? "" : ", ") + c.node->name;
        }
        warn(fmt::format("timed out after {:.3g} s waiting for nodes {} to be ready",
                         std::chrono::duration<double>(ready_timeout).count(), missing));
        stop_all();
        return 1;
      }
      pump(std::min(left, milliseconds(500)));
    }
    print_ready();
    while (true) {
      if (stop_signal_) return stop_and_report(*stop_signal_);
      for (Child& c : children_) {
        if (!c.exited || c.reported) continue;
        // The router is the front door, and a role with no node left cannot serve anything:
        // then the cluster stops. A lost worker with peers of its role left is survivable (its
        // requests failed with a retryable error; new ones go to the others).
        if (c.node->has_role(cfg::Role::router) || !role_survives(c)) return fail_on(c, "while the cluster was running");
        c.reported = true;
        std::string tail;
        for (const std::string& l : c.err_tail) tail += "\n    " + l;
        warn(fmt::format("node {} (pid {}) {}; the cluster goes on without it. Its last stderr lines:{}", c.node->name,
                         c.pid, describe_exit(c.status), tail.empty() ? " (none)" : tail));
      }
      pump(milliseconds(1000));
    }
  }

 private:
  void start_all() {
    char exe[4096];
    const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len <= 0) fail_errno("readlink /proc/self/exe");
    exe[len] = '\0';
    // UCX for processes on one machine (TOOLCHAIN.md); an explicit environment wins.
    ::setenv("UCX_NET_DEVICES", "lo", 0);
    ::setenv("UCX_TLS", "tcp", 0);
    ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 0);
    children_.reserve(cluster_.nodes.size());
    for (const cfg::NodeConfig& node : cluster_.nodes) {
      children_.push_back(Child{});
      Child& c = children_.back();
      c.node = &node;
      spawn(c, exe);
      say(fmt::format("started {} pid {} (roles {}; transport {})", node.name, c.pid, cfg::join_roles(node.roles),
                      node.transport_address()));
    }
  }

  void spawn(Child& c, const char* exe) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) fail_errno("pipe2");
    // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
    std::vector<std::string> argv_text = {exe, "serve", "--config", config_path_, "--node", c.node->name};
    std::vector<char*> argv;
    for (std::string& s : argv_text) argv.push_back(s.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) fail_errno("fork");
    if (pid == 0) {
      ::setpgid(0, 0);                        // its own group: a terminal's Ctrl-C reaches us only
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);     // a killed supervisor leaves no orphans
      if (::getppid() != parent) ::_exit(1);  // the supervisor died before prctl
      const int null = ::open("/dev/null", O_RDONLY);
      if (null >= 0) ::dup2(null, STDIN_FILENO);
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the mask survives exec; serve needs SIGTERM
      ::execv(exe, argv.data());
      static const char msg[] = "switchyard local: exec of the serve child failed\n";
      [[maybe_unused]] const auto ignored = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here, so the group exists before we ever signal it
    ::close(out[1]);
    ::close(err[1]);
    c.pid = pid;
    c.out_fd = out[0];
    c.err_fd = err[0];
  }

  bool all_ready() const {
    for (const Child& c : children_) {
      if (!c.ready) return false;
    }
    return true;
  }

  // Whether every role of the dead child is still hosted by a live node.
  bool role_survives(const Child& dead) const {
    for (const cfg::Role role : dead.node->roles) {
      bool hosted = false;
      for (const Child& c : children_) hosted = hosted || (!c.exited && c.node->has_role(role));
      if (!hosted) return false;
    }
    return true;
  }

  Child* first_dead() {
    for (Child& c : children_) {
      if (c.exited) return &c;
    }
    return nullptr;
  }

  // Waits up to `timeout` for output, signals or exits, and handles what came.
  void pump(milliseconds timeout) {
    std::vector<pollfd> fds{{signal_fd_, POLLIN, 0}};
    std::vector<std::pair<Child*, bool>> owners{{nullptr, false}};  // (child, is stderr)
    for (Child& c : children_) {
      if (c.out_fd >= 0) {
        fds.push_back({c.out_fd, POLLIN, 0});
        owners.emplace_back(&c, false);
      }
      if (c.err_fd >= 0) {
        fds.push_back({c.err_fd, POLLIN, 0});
        owners.emplace_back(&c, true);
      }
    }
    const int n = ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
    if (n < 0 && errno != EINTR) fail_errno("poll");
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents != 0) read_from(*owners[i].first, owners[i].second);
    }
    if (fds[0].revents != 0) read_signals();
    reap();
  }

  void read_signals() {
    signalfd_siginfo info{};
    while (::read(signal_fd_, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
      if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) {
        if (!stop_signal_) stop_signal_ = info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
      }
    }
  }

  void reap() {
    while (true) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;
      for (Child& c : children_) {
        if (c.pid != pid) continue;
        drain(c);  // its last words
        c.exited = true;
        c.status = status;
      }
    }
  }

  // Reads what is available on one pipe; forwards complete lines.
  void read_from(Child& c, bool is_err) {
    int& fd = is_err ? c.err_fd : c.out_fd;
    if (fd < 0) return;
    char buf[4096];
    const ssize_t got = ::read(fd, buf, sizeof(buf));
    if (got <= 0) {
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
      ::close(fd);
      fd = -1;
      flush_partial(c, is_err);
      return;
    }
    std::string& partial = is_err ? c.err_partial : c.out_partial;
    partial.append(buf, static_cast<std::size_t>(got));
    std::size_t nl;
    while ((nl = partial.find('\n')) != std::string::npos) {
      line(c, is_err, partial.substr(0, nl));
      partial.erase(0, nl + 1);
    }
  }

  void flush_partial(Child& c, bool is_err) {
    std::string& partial = is_err ? c.err_partial : c.out_partial;
    if (!partial.empty()) line(c, is_err, partial);
    partial.clear();
  }

  // Reads a child's pipes to the end (it has exited, so they end soon; bounded anyway).
  void drain(Child& c) {
    const auto until = Clock::now() + milliseconds(500);
    for (bool is_err : {false, true}) {
      int& fd = is_err ? c.err_fd : c.out_fd;
      while (fd >= 0 && Clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) break;
        read_from(c, is_err);
      }
    }
  }

  void line(Child& c, bool is_err, const std::string& text) {
    if (is_err) {
      std::fputs(fmt::format("[{}] {}\n", c.node->name, text).c_str(), stderr);
      c.err_tail.push_back(text);
      if (c.err_tail.size() > 20) c.err_tail.pop_front();
      return;
    }
    std::fputs(fmt::format("[{}] {}\n", c.node->name, text).c_str(), stdout);
    std::fflush(stdout);
    if (text.rfind(fmt::format("node {} ready", c.node->name), 0) == 0) c.ready = true;
  }

  void print_ready() {
    say(fmt::format("cluster \"{}\" ready: {} nodes (config {})", cluster_.cluster.name, children_.size(), config_path_));
    for (const Child& c : children_) {
      say(fmt::format("  {:<10} pid {:<7} transport {:<21} metrics {}:{:<6} roles {}", c.node->name, c.pid,
                      c.node->transport_address(), c.node->host, c.node->metrics_port, cfg::join_roles(c.node->roles)));
    }
    say(fmt::format("  api: rpc {} (try: yardctl --address {} generate --prompt \"Hello\")", cluster_.api.rpc.to_string(),
                    cluster_.api.rpc.to_string()));
    say(fmt::format("  api: http http://{}/v1 (OpenAI-compatible)", cluster_.api.http.to_string()));

    say("Ctrl-C or SIGTERM stops the cluster");
  }

  int fail_on(Child& dead, const std::string& when) {
    dead.reported = true;
    std::string tail;
    for (const std::string& l : dead.err_tail) tail += "\n    " + l;
    warn(fmt::format("node {} (pid {}) {} {}; its last stderr lines:{}", dead.node->name, dead.pid,
                     describe_exit(dead.status), when, tail.empty() ? " (none)" : tail));
    warn("stopping the other nodes");
    stop_all();
    return 1;
  }

  int stop_and_report(const std::string& why) {
    say(fmt::format("{}: stopping {} nodes", why, children_.size()));
    const bool clean = stop_all();
    say(clean ? "all nodes stopped" : "stopped, not all cleanly (see above)");
    return clean ? 0 : 1;
  }

  // SIGTERM to every live child, wait (bounded), SIGKILL stragglers, reap all. Returns whether
  // every child exited with status 0 on SIGTERM. Idempotent.
  bool stop_all() {
    for (Child& c : children_) {
      if (!c.exited && c.pid > 0) ::kill(-c.pid, SIGTERM);
    }
    const auto deadline = Clock::now() + stop_timeout_;
    while (Clock::now() < deadline && any_running()) pump(milliseconds(100));
    bool clean = true;
    for (Child& c : children_) {
      if (c.exited || c.pid <= 0) continue;
      warn(fmt::format("node {} (pid {}) did not stop within {:.3g} s; killing it", c.node->name, c.pid,
                       std::chrono::duration<double>(stop_timeout_).count()));
      ::kill(-c.pid, SIGKILL);
      int status = 0;
      ::waitpid(c.pid, &status, 0);
      drain(c);
      c.exited = true;
      c.status = status;
      clean = false;
    }
    for (Child& c : children_) {
      if (c.reported || c.pid <= 0) continue;
      c.reported = true;
      if (!(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)) {
        clean = false;
        warn(fmt::format("node {} (pid {}) {}", c.node->name, c.pid, describe_exit(c.status)));
      }
    }
    return clean;
  }

  bool any_running() const {
    for (const Child& c : children_) {
      if (!c.exited && c.pid > 0) return true;
    }
    return false;
  }

  static void close_fds(Child& c) {
    for (int* fd : {&c.out_fd, &c.err_fd}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }

  const cfg::ClusterConfig& cluster_;
  const std::string config_path_;
  const milliseconds stop_timeout_;
  std::vector<Child> children_;
  int signal_fd_ = -1;
  sigset_t old_mask_{};
  std::optional<std::string> stop_signal_;
};

// The cluster API's admin calls need a token (DESIGN.md "Interfaces and defaults"). For a generated
// config without one in the environment, makes one for this run, hands it to the nodes through the
// environment and leaves it (mode 0600) beside the config for the operator. Returns that file.
std::string make_admin_token(const std::string& config_path) {
  std::random_device random;
  std::string token;
  for (int i = 0; i < 4; ++i) token += fmt::format("{:08x}", random());
  ::setenv("SY_ADMIN_TOKEN", token.c_str(), 1);
  const std::string file = (std::filesystem::path(config_path).parent_path() / "admin-token").string();
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail_errno("open " + file);
  const std::string line = token + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!written) fail_errno("write " + file);
  return file;
}

int run_local(const LocalArgs& a) {
  const bool generate = a.config.empty();
  if (!generate && !a.model.empty()) throw std::invalid_argument("give either --config or --model/--prefill/--decode");
  cfg::ClusterConfig cluster;
  std::string path;
  if (generate) {
    cluster = generate_config(a);
    if (!a.write_config.empty()) {
      path = write_text(a.write_config, cfg::to_toml(cluster));
    } else {
      std::string dir = (std::filesystem::temp_directory_path() / "switchyard-local-XXXXXX").string();
      if (::mkdtemp(dir.data()) == nullptr) fail_errno("mkdtemp " + dir);
      path = write_text(dir + "/cluster.toml", cfg::to_toml(cluster));
    }
    cluster = cfg::load_cluster_config(path);  // what the children will read, checked once here
    if (!a.write_config.empty()) {
      say(fmt::format("wrote {} ({} nodes)", path, cluster.nodes.size()));
      say(fmt::format("wrote prometheus scrape config {}", write_prometheus_config(cluster, path, true)));
      return 0;
    }
    say(fmt::format("generated config {} ({} nodes)", path, cluster.nodes.size()));
  } else {
    path = std::filesystem::absolute(a.config).string();
    cluster = cfg::load_cluster_config(path);
    say(fmt::format("config {} ({} nodes)", path, cluster.nodes.size()));
  }
  say(fmt::format("prometheus scrape config {}", write_prometheus_config(cluster, path, generate)));
  const char* token = std::getenv("SY_ADMIN_TOKEN");
  if (generate && (token == nullptr || *token == '\0')) {
    const std::string file = make_admin_token(path);
    say(fmt::format("admin token in {} (export SY_ADMIN_TOKEN=$(cat {}) for yardctl rebalance, drain, ...)", file, file));
  }
  const milliseconds ready_timeout(static_cast<std::int64_t>(
      1000 * (a.ready_timeout_s > 0 ? a.ready_timeout_s : cluster.cluster.peer_timeout_s + 15.0)));
  Supervisor supervisor(cluster, path, milliseconds(static_cast<std::int64_t>(1000 * a.stop_timeout_s)));
  return supervisor.run(ready_timeout);
}

}  // namespace

void add_local_command(CLI::App& app, CommandTable& commands) {
  auto args = std::make_shared<LocalArgs>();
  CLI::App* cmd = app.add_subcommand("local", "Run a whole cluster on this machine, one process per node");
  cmd->add_option("--config", args->config, "Cluster TOML file; without it a config is generated");
  cmd->add_option("--model", args->model, "Model folder for a generated config");
  cmd->add_option("--prefill", args->prefill, "Prefill nodes in a generated config")->capture_default_str();
  cmd->add_option("--decode", args->decode, "Decode nodes in a generated config")->capture_default_str();
  cmd->add_option("--expert-hosts", args->expert_hosts,
                  "Generated config: expert host nodes running the routed experts (0: in the workers)")
      ->capture_default_str();
  cmd->add_option("--redundant-experts", args->redundant_experts,
                  "Generated config: redundant expert replicas per MoE layer (EPLB slots)")
      ->capture_default_str();
  cmd->add_option("--max-seq-len", args->max_seq_len, "Generated config: context per request (0: the model's)");
  cmd->add_option("--rebalance-interval", args->rebalance_interval,
                  "Generated config: run the rebalancing controller (on the router node) every S seconds");
  cmd->add_flag("--no-overlap", args->no_overlap,
                "Generated config: no two-micro-batch overlap of expert communication with attention");
  cmd->add_option("--rpc-port", args->rpc_port, "Generated config: cluster API port on 127.0.0.1 (0: any free)")
      ->capture_default_str();
  cmd->add_option("--http-port", args->http_port, "Generated config: HTTP API port on 127.0.0.1 (0: any free)")
      ->capture_default_str();
  cmd->add_option("--kv-pages", args->kv_pages, "Generated config: KV pages per layer pool on each decode node");
  cmd->add_option("--max-batch", args->max_batch, "Generated config: running requests per decode node");
  cmd->add_flag("--mtp", args->mtp, "Generated config: MTP self-speculative decoding for greedy requests");
  cmd->add_option("--backend", args->backend, "Generated config: kernel backend (ref | cpu; default: the fastest)");
  cmd->add_option("--write-config", args->write_config,
                  "Only write the generated config (free loopback ports) to this file and exit");
  cmd->add_option("--ready-timeout", args->ready_timeout_s,
                  "Seconds to wait for every node to be ready (default: peer_timeout_s + 15)");
  cmd->add_option("--stop-timeout", args->stop_timeout_s, "Seconds to wait after SIGTERM before SIGKILL")
      ->capture_default_str();
  commands.add(cmd, [args] { return run_local(*args); });
}

}  // namespace sy::apps

// The one real multi-process test: a child process (transport_echo_peer) listens over UCX tcp,
// echoes AMs and serves a registered region; this process connects, does AM round trips and a
// put/get against the child's memory, then SIGKILLs the child and must see on_peer_failure
// within 5 s (error mode PEER). The child's stdout is a pipe read with poll() timeouts.
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "transport/tests/test_util.hpp"
#include "transport/ucx/ucx_transport.hpp"

extern char** environ;

namespace sy::transport {
namespace {

using namespace std::chrono_literals;
using testing::Awaited;
using testing::FailureLog;
using testing::Mailbox;
using testing::pattern;

// A spawned child with its stdout on a pipe; SIGKILLed and reaped on destruction.
class Child {
 public:
  // Starts `path` with this process's environment plus `extra_env` ("NAME=value").
  Child(const char* path, const std::vector<std::string>& extra_env) {
    std::vector<std::string> env_strings(extra_env);
    for (char** e = environ; *e != nullptr; ++e) {
      env_strings.emplace_back(*e);  // later duplicates lose: getenv takes the first
    }
    std::vector<char*> envp;
    for (auto& entry : env_strings) {
      envp.push_back(entry.data());
    }
    envp.push_back(nullptr);
    int fds[2];
    if (::pipe(fds) != 0) {
      throw std::runtime_error("pipe failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    char* argv[] = {const_cast<char*>(path), nullptr};
    const int rc = posix_spawn(&pid_, path, &actions, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    out_ = fds[0];
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error(std::string("posix_spawn ") + path + ": " + std::strerror(rc));
    }
  }
  ~Child() {
    kill();
    if (out_ >= 0) {
      ::close(out_);
    }
  }
  // One line of the child's stdout, or "" when none came within `timeout`.
  std::string read_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string line;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return "";
      }
      pollfd fd{out_, POLLIN, 0};
      if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) {
        continue;
      }
      char c = 0;
      if (::read(out_, &c, 1) != 1) {
        return "";  // the child closed stdout (died)
      }
      if (c == '\n') {
        return line;
      }
      line += c;
    }
  }
  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> bytes(hex.size() / 2);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::byte>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  return bytes;
}

TEST(MultiProcess, EchoPutGetThenSigkilledPeerIsReportedWithin5s) {
  // The child's environment: it loads UCX afresh, so the warning switch takes effect there (in
  // this already-running process setenv would come too late).
  Child child(SY_TRANSPORT_ECHO_PEER,
              {"UCX_WARN_UNUSED_ENV_VARS=n", "UCX_NET_DEVICES=lo", "UCX_TLS=tcp"});
  const std::string ready = child.read_line(15s);
  ASSERT_EQ(ready.rfind("READY ", 0), 0u) << "child said: '" << ready << "'";
  std::istringstream fields(ready.substr(6));
  std::string address, key_hex;
  unsigned long long region_address = 0;
  fields >> address >> region_address >> key_hex;
  const auto key = from_hex(key_hex);
  ASSERT_FALSE(key.empty());

  ucx::UcxOptions options;
  options.error_mode = ucx::ErrorMode::peer;
  options.config = {{"TLS", "tcp"}, {"NET_DEVICES", "lo"}};
  options.name = "parent";
  ucx::UcxTransport transport(options);
  Mailbox echoes;
  FailureLog failures;
  transport.set_handler(2, echoes.handler(2));
  transport.on_peer_failure(failures.handler());
  const PeerId child_peer = transport.connect(address, 5s);

  // AM round trips, one of them large.
  constexpr int rounds = 10;
  std::vector<std::vector<std::byte>> payloads;
  for (int i = 0; i < rounds; ++i) {
    payloads.push_back(pattern(i == 5 ? std::size_t{2} << 20 : 1000, 20 + i));
  }
  testing::Completions sent;
  for (int i = 0; i < rounds; ++i) {
    const std::string header = "ping " + std::to_string(i);
    transport.send(child_peer, 1, testing::as_bytes(header), payloads[i], sent.completion());
  }
  ASSERT_TRUE(sent.wait_for(rounds, 15s));
  EXPECT_EQ(sent.failed(), 0u);
  ASSERT_TRUE(echoes.wait_for(rounds, 15s));
  const auto messages = echoes.messages();
  for (int i = 0; i < rounds; ++i) {
    EXPECT_EQ(messages[i].header_text(), "ping " + std::to_string(i));
    EXPECT_TRUE(messages[i].payload == payloads[i]) << "echo " << i << " payload differs";
  }

  // RMA against the child's memory: read its initial bytes, overwrite, read back.
  constexpr std::size_t size = std::size_t{1} << 20;
  std::vector<std::byte> read(size);
  Awaited first_get;
  transport.get(child_peer, read.data(), size, region_address, key, first_get.completion());
  ASSERT_TRUE(first_get.wait().ok());
  for (std::size_t i = 0; i < size; i += 4099) {
    ASSERT_EQ(read[i], static_cast<std::byte>((i * 7 + 3) & 0xff)) << "byte " << i;
  }
  const auto written = pattern(size, 30);
  Awaited put, flushed, second_get;
  transport.put(child_peer, written.data(), size, region_address, key, put.completion());
  transport.flush(child_peer, flushed.completion());
  ASSERT_TRUE(put.wait().ok());
  ASSERT_TRUE(flushed.wait().ok());
  transport.get(child_peer, read.data(), size, region_address, key, second_get.completion());
  ASSERT_TRUE(second_get.wait().ok());
  EXPECT_TRUE(read == written);

  // Death.
  const auto killed_at = std::chrono::steady_clock::now();
  child.kill();
  ASSERT_TRUE(failures.wait_for(1, 5s)) << "no peer failure within 5 s of SIGKILL";
  const auto noticed_after = std::chrono::steady_clock::now() - killed_at;
  EXPECT_LT(noticed_after, 5s);
  const auto event = failures.events().at(0);
  EXPECT_EQ(event.first, child_peer);
  EXPECT_FALSE(event.second.graceful) << event.second.reason;
  Awaited after;
  transport.send(child_peer, 1, {}, payloads[0], after.completion());
  EXPECT_EQ(after.wait().code, Errc::peer_failed);
  transport.close(2s);
}

}  // namespace
}  // namespace sy::transport

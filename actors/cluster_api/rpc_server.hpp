// The Cap'n Proto server of the cluster API (schemas/cluster.capnp): answers Cluster.generate and
// Cluster.status on a GenerationService, and the operator calls (expertLoad, placement, history,
// balancing, planRebalance, and Admin's after admin(token)) on an OperatorService; the long ones
// (rounds, drains) answer from the service's thread through a kj cross-thread fulfiller. Its kj event loop runs on its own thread; a generate
// call hands the service a sink whose token batches cross to that loop (a mutex-guarded buffer
// plus a kj cross-thread wake-up) and are pushed to the client's TokenSink under Cap'n Proto
// stream flow control, coalescing tokens while a push is in flight. A cancelled call (client
// dropped it, or disconnected) cancels the request in the service, which frees its KV pages.
// Borrows the service, which must outlive the server. Public methods: any one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "actors/cluster_api/generation_service.hpp"
#include "actors/cluster_api/operator_service.hpp"

namespace sy::actors::cluster_api {

struct RpcServerOptions {
  // "HOST:PORT" (port 0: any free one; a missing port means 7433) or "unix:/path" (a stale
  // socket file is removed first). Loopback by default (DESIGN.md: bind to loopback unless
  // configured otherwise).
  std::string listen = "127.0.0.1:7433";
  // The token Cluster.admin(token) must present to get the mutating calls; empty: none
  // configured, and admin() is always refused.
  std::string admin_token;
  // TLS (kj-tls over OpenSSL): PEM files of the certificate chain and its private key; both or
  // neither (plain TCP). Clients then verify the server against the certificate's names.
  std::string tls_cert_file;
  std::string tls_key_file;
};

class RpcServer {
 public:
  // Binds and starts serving before it returns. Throws std::runtime_error naming the address
  // when it cannot be parsed or bound, or the TLS file that cannot be read or used; no thread is
  // left running then.
  // `operators` (may be null: the operator calls then answer "unavailable") must outlive the server.
  RpcServer(GenerationService& service, RpcServerOptions options, OperatorService* operators = nullptr);
  ~RpcServer();  // stop()
  RpcServer(const RpcServer&) = delete;
  RpcServer& operator=(const RpcServer&) = delete;

  // Where clients connect: "HOST:PORT" with the port actually bound, or "unix:/path".
  const std::string& address() const { return address_; }

  // First step of a shutdown: closes the listening socket and refuses new generate calls on
  // open connections (DISCONNECTED, "shutting down"); calls in flight go on. Idempotent.
  void stop_accepting();
  // Generate calls in flight (submitted and not yet answered or cancelled).
  std::int64_t active_calls() const;
  // Closes every connection (calls still in flight are cancelled, and with them their requests
  // in the service) and joins the loop thread. Idempotent.
  void stop();

  struct Shared;  // state the loop thread and callers share (rpc_server.cpp)

 private:
  std::string address_;
  std::shared_ptr<Shared> shared_;
  std::thread loop_;
};

}  // namespace sy::actors::cluster_api

# The control plane: how node processes introduce themselves, report liveness and load, and are
# drained or stopped. A node (`switchyard serve --node N`) hosts any set of roles (DESIGN.md
# "Roles"); these messages are per node, not per role.
#
#   node  ── NodeHello ──► peer        (first message on every new connection, both directions)
#   node  ── NodeReady ──► peers       (its roles finished loading and accept work)
#   node  ── Heartbeat ──► peers       (periodically; silence means the node is suspect)
#   worker ─ WorkerLoad ─► routers, controller (KV pages and queue depths, periodically)
#   controller/operator ── Drain / Shutdown ──► node;  node ── Ack ──► sender
#
# The transport already detects a peer that closes or dies (Transport::on_peer_failure); the
# heartbeat catches a peer that is connected but wedged.
@0xa042d0a85fd0cccd;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sy::schemas");

using Common = import "common.capnp";

# What a node process does (DESIGN.md "Roles").
enum Role {
  router @0;
  prefill @1;
  decode @2;
  expertHost @3;
  loadStats @4;
  controller @5;
}

# Who a node is. Sent by each side first on a new connection, before any other message; a peer
# whose protocolVersion it does not speak is told so (Ack ok = false) and disconnected.
# Header-borne.
struct NodeHello {
  node @0 :Common.NodeRef;
  # Its own name and listen address. Required.

  roles @1 :List(Role);
  # [r] roles this node hosts, 1..limits::max_roles, no role twice.

  pid @2 :UInt32;
  # Operating-system process id, for operators (logs, `kill`); never used for identity. >= 1.

  protocolVersion @3 :UInt16;
  # schemas::wire_version of the sender's build (the version in every frame's prefix), >= 1.

  incarnation @4 :UInt64;
  # Random per process start, non-zero: tells a restarted node from the old one under the same
  # name, so its old requests and reservations are recognised as lost.
}

# The node's roles have loaded (weights, KV pools) and accept work. Peers route nothing to a node
# before it. Header-borne.
struct NodeReady {
  incarnation @0 :UInt64;  # as in the sender's NodeHello, non-zero
  roles @1 :List(Role);    # [r] roles now serving, 1..limits::max_roles, each among its hello's roles
}

# Liveness. Sent every heartbeat interval (configured; 1 s by default) to every peer. Header-borne.
struct Heartbeat {
  monotonicMs @0 :UInt64;
  # The sender's steady clock in milliseconds. Only compared with the same sender's earlier
  # beats (intervals, stalls), never with the receiver's clock.

  sequence @1 :UInt64;
  # Beats sent by this incarnation, starting at 1; a gap means lost or reordered beats.
}

# A worker's current load, for the router's worker choice (DESIGN step 1: free KV pages and running
# count) and the controller. Sent by prefill and decode nodes every load interval and when it
# changes a lot. Header-borne. Counts are for the whole node.
struct WorkerLoad {
  monotonicMs @0 :UInt64;  # sender's steady clock when measured (same rules as Heartbeat)
  freeKvPages @1 :UInt32;  # pages free in each layer pool (decode; 0 for prefill-only nodes)
  totalKvPages @2 :UInt32; # pages in each layer pool; freeKvPages <= totalKvPages
  runningRequests @3 :UInt32;  # requests in the running batch (decode) or being prefilled
  waitingRequests @4 :UInt32;  # admitted requests waiting for a batch slot or pages
  queueDepth @5 :UInt32;       # messages queued for the worker's actor (backpressure signal)
}

# Stop taking new work, finish what is running. Sent by the controller or an operator tool; the
# node answers with Ack (same sequence) at once, reports WorkerLoad as usual while running
# requests finish, and then stays connected and idle until Shutdown. Routers stop choosing a
# node once they learn it drains (from the controller). Header-borne.
struct Drain {
  sequence @0 :UInt64;  # chosen by the sender, non-zero, echoed in Ack

  graceMs @1 :UInt32;
  # Milliseconds to let running requests finish; then they fail with RequestFailed workerLost
  # (retryable). 0 = wait indefinitely.

  reason @2 :Text;  # for logs; UTF-8, at most limits::max_message_bytes; may be empty
}

# Leave: close the transport politely and exit. A node that is not drained fails its requests
# (workerLost, retryable) first. Header-borne.
struct Shutdown {
  sequence @0 :UInt64;  # chosen by the sender, non-zero, echoed in Ack
  graceMs @1 :UInt32;   # milliseconds allowed for a clean exit before the sender stops waiting
  reason @2 :Text;      # for logs; UTF-8, at most limits::max_message_bytes; may be empty
}

# The answer to a message that asks for one (Drain, Shutdown, a refused NodeHello). Header-borne.
struct Ack {
  kind @0 :UInt16;
  # schemas::MessageKind of the message answered (its AM id); must be a known kind.

  sequence @1 :UInt64;
  # The answered message's sequence (0 for a NodeHello, which has none).

  ok @2 :Bool;
  # False when the node refused or could not comply; message says why.

  message @3 :Text;  # UTF-8, at most limits::max_message_bytes; may be empty
}

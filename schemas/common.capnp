# Types that more than one schema file uses. Every file in schemas/ describes bytes that cross a
# process; schemas/wire.hpp frames each root struct (an 8-byte prefix naming its kind and the
# wire version, then the Cap'n Proto flat array) and validates it on decode.
#
# Conventions for every file here (they are the specification; code checks them in wire.cpp):
# - Ordinals are never reused or renumbered. A field that is no longer used keeps its ordinal and
#   is renamed `obsoleteXxx`; new fields take the next ordinal.
# - Lengths are in the unit the comment names (tokens, pages, bytes, milliseconds). Times that
#   cross machines are durations (`...Ms`, relative to receipt), never absolute clock readings,
#   except where a comment says the value is only compared with the same sender's earlier values.
# - Request ids (UInt64) are assigned by the router that admitted the request, unique for the
#   router's lifetime; 0 is never a valid id.
# - Token ids are Int32 (the engine's type); a valid id is >= 0. Whether it is < the model's
#   vocabulary size is checked by the receiver that knows the model, not by the wire layer.
# - Every list has a bound (schemas/wire.hpp, `limits`); a message over a bound is rejected whole.
@0xba257a39fde23536;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sy::schemas");

# How one node names another: by its configured name (stable across restarts, used in logs and
# metric labels) and by the transport address a peer can connect to. PeerIds are local to one
# transport and never cross a process, so messages that point at a third node carry a NodeRef.
struct NodeRef {
  name @0 :Text;
  # The node's configured name (`switchyard serve --node NAME`). 1..64 bytes of [A-Za-z0-9._-].
  # Set by the node itself (NodeHello) and copied by whoever refers to it.

  address @1 :Text;
  # Where its transport listens (Transport::local_address(): ucx "IP:PORT", loopback a name).
  # 1..256 bytes of printable ASCII.
}

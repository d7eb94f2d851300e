# Expert parallelism (DESIGN.md "Roles", "Placement, epochs, migration"): what prefill and decode
# workers say to the expert hosts at every MoE layer, and what the hosts report about load.
#
#   worker      ── ExpertDispatch ──► expert host  (one per host per MoE layer per step: the rows
#                                                   routed to that host's slots, FP8 + scales)
#   expert host ── ExpertCombine ───► worker       (the slots' expert outputs, BF16, same order)
#   expert host ── ExpertLoadReport ► load_stats   (tokens per layer x logical expert, a period)
#
# Placement (which physical slot holds which logical expert, which host holds which slot) is
# computed the same way on every node from the cluster config at start-up (epoch 1) and, later,
# installed by the controller with a higher epoch. Every dispatch carries the epoch it was routed
# with; a host refuses rows for slots it does not hold in that epoch (the worker then re-routes).
#
# The combine happens on the worker, in top-k rank order (model/moe.hpp), so outputs never
# depend on which replica ran a row or in which order hosts answered. Tensors travel inside the
# message as Data (carriage `payload`: UCX uses rendezvous for large ones).
@0xc3d1a2b9e4f50617;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sy::schemas");

# How activation rows are encoded in ExpertDispatch.activations.
enum ActivationDtype {
  fp8e4m3 @0;  # [rows, hidden] e4m3 bytes + scales: [rows, hidden / 128] fp32, one per 1x128 tile
               # (numerics fp8act: exactly what act_quant produced on the worker)
  fp32 @1;     # [rows, hidden] fp32 little-endian, no scales (numerics dequant)
}

# How expert outputs are encoded in ExpertCombine.outputs.
enum OutputDtype {
  bf16 @0;  # [rows, hidden] bfloat16 little-endian (numerics fp8act: DeepEP's combine dtype)
  fp32 @1;  # [rows, hidden] fp32 little-endian (numerics dequant)
}

# The rows one worker routes to one expert host for one MoE layer. Rows are grouped by physical
# slot: the first slotRows[0] rows go to slots[0], the next slotRows[1] to slots[1], and so on.
# Owner: prefill or decode (sender); expert host (receiver). Carriage: payload.
struct ExpertDispatch {
  batchId @0 :UInt64;
  # Chosen by the worker, non-zero, unique per (worker, layer call); echoed in ExpertCombine.

  layer @1 :UInt16;
  # Checkpoint layer index of the MoE layer (MTP layers included), < limits::max_layers.

  epoch @2 :UInt64;
  # The placement epoch the rows were routed with (>= 1).

  hidden @3 :UInt32;
  # Row width (config hidden_size; 7168 at V3), 128..limits::max_hidden_size, a multiple of 128.

  slots @4 :List(UInt32);
  # [s] physical slot ids in this layer, each < limits::max_expert_slots, no id twice; s >= 1.

  slotRows @5 :List(UInt32);
  # [s] rows for each slot (>= 1 each); their sum is `rows` (<= limits::max_dispatch_rows).

  dtype @6 :ActivationDtype;

  activations @7 :Data;
  # rows * hidden bytes (fp8e4m3) or rows * hidden * 4 bytes (fp32).

  scales @8 :Data;
  # fp8e4m3: rows * hidden / 128 fp32 values (4 bytes each); fp32: empty.
}

# The answer to one ExpertDispatch: the outputs of every row, in the dispatch's row order, or why
# the host could not run them (then the worker re-routes the rows to other replicas or fails the
# step). Owner: expert host (sender); worker (receiver). Carriage: payload.
struct ExpertCombine {
  batchId @0 :UInt64;  # ExpertDispatch.batchId, non-zero
  layer @1 :UInt16;    # echoed
  epoch @2 :UInt64;    # echoed
  rows @3 :UInt32;     # rows answered; equals the dispatch's rows when `error` is empty
  dtype @4 :OutputDtype;

  outputs @5 :Data;
  # rows * hidden * 2 bytes (bf16) or rows * hidden * 4 bytes (fp32); empty with an error.

  error @6 :Text;
  # Empty on success; else for people, e.g. "expert host e1: slot 17 of layer 3 is not held in
  # epoch 2". UTF-8, at most limits::max_message_bytes.
}

# Tokens an expert host ran per (layer, logical expert) over one period. Owner: expert host
# (sender); load_stats (receiver), which sums them over a sliding window. Carriage: payload.
struct ExpertLoadReport {
  host @0 :Text;            # the reporting node's name (NodeRef.name rules)
  periodStartMs @1 :UInt64; # sender's steady clock at the start of the period
  periodEndMs @2 :UInt64;   # and at its end (>= start)
  layers @3 :UInt16;        # checkpoint layers the table covers (rows), 1..limits::max_layers
  experts @4 :UInt32;       # logical experts per layer (columns), 1..limits::max_expert_slots

  tokens @5 :List(UInt64);
  # [layers * experts] row-major: token rows run on logical expert e of layer l in the period
  # (every replica counted). Layers without routed experts hold zeros.
}

# What a placement message asks of its receiver (the migration protocol, DESIGN.md "Placement,
# epochs, migration"; the controller sends, hosts and workers answer with PlacementAck).
enum PlacementPhase {
  stage @0;    # expert hosts: prepare the experts this placement gives you (read their weights in)
               # while serving the current epoch; nothing changes for workers yet
  commit @1;   # hosts: serve this epoch too (beside the current one); workers: route with it from
               # your next layer call on
  release @2;  # hosts: drop every epoch before this one (every worker switched)
  abort @3;    # hosts: forget this staged epoch (the round failed; the current one stands)
}

# A placement and the protocol step to apply to it. Owner: controller (sender); expert hosts and
# workers (receivers). Carriage: payload (phy2log is layers x slots).
struct PlacementUpdate {
  epoch @0 :UInt64;       # >= 1; a new placement has a higher epoch than every earlier one
  phase @1 :PlacementPhase;
  experts @2 :UInt32;     # logical routed experts per MoE layer, 1..limits::max_expert_slots
  slots @3 :UInt32;       # physical slots per MoE layer, experts..limits::max_expert_slots
  hosts @4 :List(Text);   # expert host names (NodeRef.name rules); a host's index is its id
  hostOfSlot @5 :List(UInt16);  # [slots]: each < hosts length
  layers @6 :UInt16;      # checkpoint layers the table covers, 1..limits::max_layers
  phy2log @7 :List(Int32);
  # [layers * slots] row-major: the logical expert of each slot, in [0, experts); a layer without
  # routed experts has every entry -1.
}

# The answer to a PlacementUpdate. Owner: expert host or worker (sender); controller (receiver).
# Carriage: header.
struct PlacementAck {
  epoch @0 :UInt64;
  phase @1 :PlacementPhase;
  ok @2 :Bool;
  message @3 :Text;  # why not ok, for people; UTF-8, at most limits::max_message_bytes
}

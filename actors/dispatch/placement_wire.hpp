// The wire form of an expert placement (schemas/expert.capnp PlacementUpdate): what the controller
// sends the expert hosts and workers at each step of a migration, and how they read it back.
#pragma once

#include "balance/placement.hpp"
#include "schemas/expert.capnp.h"

namespace sy::actors::dispatch {

void set_placement(schemas::PlacementUpdate::Builder out, const balance::ExpertPlacement& placement,
                   schemas::PlacementPhase phase);
// The placement a (validated) update carries.
balance::ExpertPlacement placement_of(schemas::PlacementUpdate::Reader in);

}  // namespace sy::actors::dispatch

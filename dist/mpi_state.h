// Internal to dist/: the MPI state of a World and the one wait loop every MPI collective goes through: MPI_Testall
// polled with a growing sleep against the deadline. On a timeout or an MPI error the ranks hold a roll call on a
// communicator of their own (each sends to every other and waits a short grace period), so that the error names
// the rank that is missing rather than only "timed out".
#pragma once

#include <mpi.h>

#include <string_view>
#include <vector>

#include "dist/world.h"

namespace freehold::dist {

struct World::Mpi {
  MPI_Comm comm = MPI_COMM_NULL;       // collectives (a duplicate of MPI_COMM_WORLD, errors returned)
  MPI_Comm roll_call = MPI_COMM_NULL;  // the roll call after a failure; nothing else uses it
  bool finalize = false;               // we initialised MPI, so we finalise it

  // Waits for `requests` until the World's deadline; on a timeout or error: roll call, then World::fail_lost.
  void wait(World& world, std::vector<MPI_Request>& requests, std::string_view what);
  // Ranks that did not answer a roll call within `grace_s` seconds.
  std::vector<int> roll_call_missing(int rank, int size, double grace_s);
};

// Checks an MPI return code where it is called (STYLE.md habit 7).
void check_mpi(int rc, std::string_view call);

}  // namespace freehold::dist

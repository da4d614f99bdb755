// `ebb drain`: the client side of /drain, for a preStop exec hook.
#pragma once

namespace ebb {
int drain_main(int argc, char** argv);
}

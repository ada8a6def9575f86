#pragma once
// Interrupt handling for programs that run pipelines.

#include "mq/export.hpp"

namespace mq {

// Handles SIGINT, SIGTERM and SIGHUP: a thread of its own removes the temporary files
// and directories of runs in progress and exits with status 130, so an interrupted run
// leaves nothing partial. Call once from main(); libmq installs nothing by itself.
MQ_API void install_interrupt_cleanup();

}  // namespace mq

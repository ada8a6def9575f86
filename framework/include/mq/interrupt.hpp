#pragma once
// Interrupt handling for programs that run pipelines.

#include "mq/export.hpp"

namespace mq {

// Installs SIGINT, SIGTERM and SIGHUP handlers that remove the temporary files of runs in
// progress and exit with status 130, so an interrupted run leaves nothing partial.
// Call once from main(); libmq installs no handler by itself.
MQ_API void install_interrupt_cleanup();

}  // namespace mq

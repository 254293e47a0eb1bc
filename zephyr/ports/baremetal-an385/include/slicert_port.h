/*
 * SliceRT bare-metal port for QEMU mps2-an385: the inline arch helpers are those of the
 * Cortex-M3 bare-metal port (PRIMASK masking, PendSV switch requests, SysTick registers).
 */
#include "../../baremetal-cm3/include/slicert_port.h"

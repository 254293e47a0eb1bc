/*
 * SliceRT bare-metal port for QEMU mps2-an386 (Cortex-M4 with FPU): the inline arch
 * helpers are those of the Cortex-M3 bare-metal port (PRIMASK masking, PendSV switch
 * requests, SysTick registers); the M4 runs the same ARMv7-M system architecture.
 */
#include "../../baremetal-cm3/include/slicert_port.h"

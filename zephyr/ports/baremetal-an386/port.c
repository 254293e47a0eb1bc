/*
 * SliceRT bare-metal Cortex-M4 port for QEMU mps2-an386 (Arm MPS2, FPGA image AN386:
 * the AN385 system with a Cortex-M4F). The board is the AN385's (the same CMSDK
 * peripherals, memory map, 25 MHz SYSCLK and IRQ numbers), so this is the an385 port
 * (ports/baremetal-an385/port.c: dual-timer IRQ load, SysTick slices, DWT timebase),
 * plus what the FPU needs:
 *  - the FPU is enabled at reset (CPACR CP10/CP11 full access) and FPCCR keeps the M4's
 *    reset setting ASPEN = LSPEN = 1: automatic state preservation with lazy stacking
 *    (startup.S, before any C runs);
 *  - PendSV saves and restores s16-s31 of a task whose frame is an FP frame (EXC_RETURN
 *    bit 4 clear) and keeps each task's EXC_RETURN in its saved context (startup.S), so
 *    the RT task's initial context gets one (slicert_m4_port_init, below).
 */
#include "../baremetal-an385/port.c"

#define EXC_RETURN_THREAD_PSP 0xFFFFFFFDu /* thread mode, PSP, integer frame */

void slicert_m4_port_init(void);

/* Called by Reset_Handler after slicert_port_early_init: the RT task's initial context
 * (r4-r11 over the hardware frame, cm3_baremetal.h) gets the EXC_RETURN word that the
 * M4 PendSV pops below r4 (an integer frame: the task has no FP context yet). */
void slicert_m4_port_init(void)
{
	uint32_t *sp = slicert_core.tasks[SLICERT_TASK_RT].sp;

	*--sp = EXC_RETURN_THREAD_PSP;
	slicert_core.tasks[SLICERT_TASK_RT].sp = sp;
}

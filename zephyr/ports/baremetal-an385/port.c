/*
 * SliceRT bare-metal Cortex-M3 port for QEMU mps2-an385 (Arm MPS2, FPGA image AN385).
 *
 *  - clock: QEMU's AN385 SYSCLK is fixed at 25 MHz (a 40 ns period; nothing to program);
 *    the cycle plugin makes one period one modelled cycle, so every SysTick, dual-timer
 *    and DWT tick is one modelled cycle at any SLICERT_SYSCLK_HZ (runner.cpu_mhz)
 *  - timebase: the DWT cycle counter, SysTick: the slice timer (CLKSOURCE=1), PendSV:
 *    the context switch, semihosting: seed, output, exit (ports/common/cm3_baremetal.h)
 *  - CMSDK APB dual timer, timer 1 (0x40002000, IRQ 10), 32-bit periodic: the simulated
 *    IRQ load. Not the CMSDK APB timer 0 (0x40000000, IRQ 8): its RELOAD register also
 *    restarts the count, so a jittered schedule could not be programmed without drift;
 *    the dual timer's background load (BGLOAD) sets the next reload value without
 *    touching the running count, like the GPTM's TAILR on lm3s6965evb.
 *
 * Priorities (3 bits in QEMU's NVIC): SysTick and the dual timer share 0x20, PendSV 0xE0.
 *
 * QEMU's dual timer (a ptimer, wrap-after-one-period policy) counts LOAD ticks to the
 * first expiry after it is enabled, then BGLOAD + 1 ticks per period. QEMU also
 * stretches any ptimer period shorter than 10 us of virtual time (250 ticks here) to
 * 10 us: the host rejects IRQ-load intervals and slices below 250 cycles on this board.
 */
#include "slicert/runtime.h"
#include "slicert/semihost.h"

/* ---- CMSDK APB dual timer, timer 1 ---- */
#define DUALTIMER_BASE 0x40002000u
#define DT1_LOAD SLICERT_REG32(DUALTIMER_BASE + 0x00u)
#define DT1_CONTROL SLICERT_REG32(DUALTIMER_BASE + 0x08u)
#define DT1_INTCLR SLICERT_REG32(DUALTIMER_BASE + 0x0Cu)
#define DT1_BGLOAD SLICERT_REG32(DUALTIMER_BASE + 0x18u)
#define DT_CTRL_SIZE32 (1u << 1)
#define DT_CTRL_INTEN (1u << 5)
#define DT_CTRL_PERIODIC (1u << 6)
#define DT_CTRL_ENABLE (1u << 7)
#define DT_CTRL_CFG (DT_CTRL_SIZE32 | DT_CTRL_INTEN | DT_CTRL_PERIODIC) /* prescale 1 */
#define IRQ_DUALTIMER 10u

/* ---- hooks of the shared half (ports/common/cm3_baremetal.h) ---- */
#define SLICERT_IRQLOAD_IRQ IRQ_DUALTIMER
#define SLICERT_IRQLOAD_HANDLER DualTimer_Handler
#define SLICERT_IRQLOAD_ACK() (DT1_INTCLR = 1u)
#define SLICERT_IRQLOAD_SET_FIRST(t) (DT1_LOAD = (t))
#define SLICERT_IRQLOAD_SET_NEXT(t) (DT1_BGLOAD = (t) - 1u)
#define SLICERT_IRQLOAD_EN_REG DT1_CONTROL
#define SLICERT_IRQLOAD_EN_VAL (DT_CTRL_CFG | DT_CTRL_ENABLE)
#define SLICERT_IRQLOAD_DISABLE() (DT1_CONTROL = DT_CTRL_CFG)

/* ---------------- boot ---------------- */

static void board_clock_init(void)
{
}

static void board_timer_init(void)
{
	DT1_CONTROL = DT_CTRL_CFG; /* stopped; 32-bit, periodic, interrupt enabled */
	DT1_INTCLR = 1u;
}

#include "../common/cm3_baremetal.h"

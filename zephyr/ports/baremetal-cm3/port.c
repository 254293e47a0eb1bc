/*
 * SliceRT bare-metal Cortex-M3 port for QEMU lm3s6965evb (Stellaris LM3S6965).
 *
 *  - clock: the modelled core runs at SLICERT_SYSCLK_HZ (runner.cpu_mhz); QEMU's board
 *    clock is set to 50 MHz (RCC SYSDIV=3, a 20 ns period) and the cycle plugin makes
 *    one period one modelled cycle, so every timer tick is one modelled cycle
 *  - timebase: the DWT cycle counter (DEMCR.TRCENA + DWT_CTRL.CYCCNTENA, as on silicon)
 *  - SysTick: the slice timer (period = SLICERT_SLICE_US; off when slicing is off)
 *  - GPTM Timer0A (IRQ 19), 32-bit periodic: the simulated IRQ load
 *  - PendSV: context switch kernel thread <-> RT task (both PSP, thread mode)
 *  - semihosting: seed from SYS_GET_CMDLINE, output on ":tt", SYS_EXIT_EXTENDED
 *
 * Priorities (3 bits on this part): SysTick and Timer0A share 0x20 (they never nest,
 * which keeps the timebase read in the IRQ-load ISR exact), PendSV 0xE0 (lowest).
 */
#include "slicert/runtime.h"
#include "slicert/semihost.h"

/* ---- Stellaris registers ---- */
#define SYSCTL_RIS SLICERT_REG32(0x400FE050u)
#define SYSCTL_RCC SLICERT_REG32(0x400FE060u)
#define SYSCTL_RCGC1 SLICERT_REG32(0x400FE104u)
#define RCC_SYSDIV_SHIFT 23
#define RCC_SYSDIV_MASK (0xFu << RCC_SYSDIV_SHIFT)
#define RCC_USESYSDIV (1u << 22)
#define RCC_PWRDN (1u << 13)
#define RCC_BYPASS (1u << 11)
#define RIS_PLLLRIS (1u << 6)

#define GPTM0_BASE 0x40030000u
#define GPTM0_CFG SLICERT_REG32(GPTM0_BASE + 0x00u)
#define GPTM0_TAMR SLICERT_REG32(GPTM0_BASE + 0x04u)
#define GPTM0_CTL SLICERT_REG32(GPTM0_BASE + 0x0Cu)
#define GPTM0_IMR SLICERT_REG32(GPTM0_BASE + 0x18u)
#define GPTM0_ICR SLICERT_REG32(GPTM0_BASE + 0x24u)
#define GPTM0_TAILR SLICERT_REG32(GPTM0_BASE + 0x28u)
#define GPTM_TAMR_PERIODIC 2u
#define GPTM_CTL_TAEN 1u
#define GPTM_INT_TATO 1u
#define IRQ_TIMER0A 19u

/* QEMU lm3s6965evb: the system clock period is 5 * (SYSDIV + 1) ns; SYSDIV 3 = 20 ns.
 * The cycle plugin counts one period per modelled cycle, whatever the period: the
 * setting only keeps the board like the 50 MHz part it models. */
#define BOARD_SYSDIV 3u

/* ---- hooks of the shared half (ports/common/cm3_baremetal.h) ---- */
#define SLICERT_IRQLOAD_IRQ IRQ_TIMER0A
#define SLICERT_IRQLOAD_HANDLER Timer0A_Handler
#define SLICERT_IRQLOAD_ACK() (GPTM0_ICR = GPTM_INT_TATO)
/* QEMU's periodic GPTM fires every TAILR ticks, reloading with the TAILR current at
 * each expiry (no drift): first interval and reload interval are both TAILR */
#define SLICERT_IRQLOAD_SET_FIRST(t) (GPTM0_TAILR = (t))
#define SLICERT_IRQLOAD_SET_NEXT(t) (GPTM0_TAILR = (t))
#define SLICERT_IRQLOAD_EN_REG GPTM0_CTL
#define SLICERT_IRQLOAD_EN_VAL GPTM_CTL_TAEN
#define SLICERT_IRQLOAD_DISABLE() (GPTM0_CTL = 0)

/* ---------------- boot ---------------- */

static void board_clock_init(void)
{
	uint32_t rcc = SYSCTL_RCC;
	uint32_t i;

	/* Datasheet order: bypass the PLL, power it, set SYSDIV, wait for lock, use it. */
	rcc = (rcc | RCC_BYPASS) & ~RCC_USESYSDIV;
	SYSCTL_RCC = rcc;
	rcc = (rcc & ~(RCC_PWRDN | RCC_SYSDIV_MASK)) | RCC_USESYSDIV |
	      (BOARD_SYSDIV << RCC_SYSDIV_SHIFT);
	SYSCTL_RCC = rcc;
	for (i = 0; i < 1000u && (SYSCTL_RIS & RIS_PLLLRIS) == 0u; i++) {
	}
	SYSCTL_RCC = rcc & ~RCC_BYPASS;
}

static void board_timer_init(void)
{
	SYSCTL_RCGC1 |= 1u << 16; /* Timer0 clock gate */
	GPTM0_CTL = 0;
	GPTM0_CFG = 0; /* 32-bit timer */
	GPTM0_TAMR = GPTM_TAMR_PERIODIC;
	GPTM0_ICR = GPTM_INT_TATO;
	GPTM0_IMR = GPTM_INT_TATO;
}

#include "../common/cm3_baremetal.h"

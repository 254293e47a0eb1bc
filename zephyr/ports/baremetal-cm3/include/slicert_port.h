/*
 * SliceRT bare-metal Cortex-M3 port (QEMU lm3s6965evb): inline arch helpers.
 * Interrupt masking uses PRIMASK (cpsid i): the masked sections are a few dozen
 * instructions (yield decision, PendSV, payload emission) and are what makes IRQ
 * latency vary, as on a real kernel.
 */
#ifndef SLICERT_PORT_H_
#define SLICERT_PORT_H_

#include <stdint.h>

#define SLICERT_REG32(addr) (*(volatile uint32_t *)(addr))

/* System control block / SysTick */
#define SLICERT_SCB_ICSR SLICERT_REG32(0xE000ED04u)
#define SLICERT_ICSR_PENDSVSET (1u << 28)
#define SLICERT_ICSR_PENDSTSET (1u << 26)
#define SLICERT_ICSR_PENDSTCLR (1u << 25)
#define SLICERT_SCB_SHPR3 SLICERT_REG32(0xE000ED20u)
#define SLICERT_SYST_CSR SLICERT_REG32(0xE000E010u)
#define SLICERT_SYST_RVR SLICERT_REG32(0xE000E014u)
#define SLICERT_SYST_CVR SLICERT_REG32(0xE000E018u)

static inline __attribute__((always_inline)) uint32_t slicert_port_irq_lock(void)
{
	uint32_t key;

	__asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(key) : : "memory");
	return key;
}

static inline __attribute__((always_inline)) void slicert_port_irq_unlock(uint32_t key)
{
	__asm__ volatile("msr primask, %0" : : "r"(key) : "memory");
}

static inline __attribute__((always_inline)) void slicert_port_request_switch(void)
{
	SLICERT_SCB_ICSR = SLICERT_ICSR_PENDSVSET;
}

/* PendSV is taken as soon as interrupts are unmasked: nothing to do here. */
static inline __attribute__((always_inline)) void slicert_port_switch_point(void)
{
}

static inline __attribute__((always_inline)) uint32_t slicert_port_rt_block(uint32_t key)
{
	slicert_port_request_switch();
	slicert_port_irq_unlock(key); /* PendSV switches to the kernel thread here */
	return slicert_port_irq_lock();
}

#endif /* SLICERT_PORT_H_ */

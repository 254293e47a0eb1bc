/*
 * SliceRT bare-metal port for QEMU mps2-an385 (Arm MPS2 FPGA image AN385, Cortex-M3,
 * 32 external IRQs): vector table; reset, PendSV, HardFault and the default handlers
 * are the Cortex-M3 ports' (ports/common/cm3_handlers.S).
 */
	.syntax unified
	.thumb

	.section .vectors, "a", %progbits
	.global slicert_vectors
	.type slicert_vectors, %object
slicert_vectors:
	.word __isr_stack_top          /*  0 initial MSP (ISR stack) */
	.word Reset_Handler            /*  1 */
	.word NMI_Handler              /*  2 (the CMSDK watchdog on AN385) */
	.word HardFault_Handler        /*  3 */
	.word HardFault_Handler        /*  4 MemManage (escalates) */
	.word HardFault_Handler        /*  5 BusFault */
	.word HardFault_Handler        /*  6 UsageFault */
	.word 0, 0, 0, 0               /*  7-10 reserved */
	.word Default_Handler          /* 11 SVCall */
	.word Default_Handler          /* 12 DebugMon */
	.word 0                        /* 13 reserved */
	.word PendSV_Handler           /* 14 PendSV: context switch */
	.word SysTick_Handler          /* 15 SysTick: slice timer */
	.rept 10
	.word Default_Handler          /* IRQ 0..9 (UARTs, APB timers 0/1 at IRQ 8/9) */
	.endr
	.word DualTimer_Handler        /* IRQ 10: CMSDK dual timer, the simulated IRQ load */
	.rept 32 - 11
	.word Default_Handler          /* IRQ 11..31 */
	.endr
	.size slicert_vectors, . - slicert_vectors

#include "../common/cm3_handlers.S"

/*
 * SliceRT bare-metal Cortex-M3 port: vector table, reset, PendSV context switch,
 * HardFault entry. QEMU lm3s6965evb (Stellaris LM3S6965: 64 external IRQs).
 */
	.syntax unified
	.thumb

	.section .vectors, "a", %progbits
	.global slicert_vectors
	.type slicert_vectors, %object
slicert_vectors:
	.word __isr_stack_top          /*  0 initial MSP (ISR stack) */
	.word Reset_Handler            /*  1 */
	.word NMI_Handler              /*  2 */
	.word HardFault_Handler        /*  3 */
	.word HardFault_Handler        /*  4 MemManage (escalates) */
	.word HardFault_Handler        /*  5 BusFault */
	.word HardFault_Handler        /*  6 UsageFault */
	.word 0, 0, 0, 0               /*  7-10 reserved */
	.word Default_Handler          /* 11 SVCall */
	.word Default_Handler          /* 12 DebugMon */
	.word 0                        /* 13 reserved */
	.word PendSV_Handler           /* 14 PendSV: context switch */
	.word SysTick_Handler          /* 15 SysTick: slice timer + timebase */
	.rept 19
	.word Default_Handler          /* IRQ 0..18 */
	.endr
	.word Timer0A_Handler          /* IRQ 19: GPTM Timer0A, the simulated IRQ load */
	.rept 64 - 20
	.word Default_Handler          /* IRQ 20..63 */
	.endr
	.size slicert_vectors, . - slicert_vectors

#include "../common/cm3_handlers.S"

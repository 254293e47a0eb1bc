/*
 * SliceRT bare-metal port for QEMU mps2-an386 (Arm MPS2 FPGA image AN386: Cortex-M4 with
 * FPU, the AN385's 32 external IRQs and CMSDK peripherals): the AN385's vector table, and
 * the Cortex-M3 ports' handlers (ports/common/cm3_handlers.S) with two M4 changes:
 *  - Reset enables the FPU (CPACR) and sets FPCCR to the M4's reset value ASPEN | LSPEN
 *    (lazy stacking) before any C code runs (C built for the hard-float ABI);
 *  - PendSV handles an FP context: a task whose frame is an FP frame (EXC_RETURN bit 4
 *    clear: the task had used the FPU) also has s16-s31 saved; its s0-s15 and FPSCR are
 *    in the hardware frame (stacked lazily, when the handler's first FP instruction
 *    runs). Each task's EXC_RETURN is saved with its context, below r4-r11.
 */
	.syntax unified
	.thumb
	.fpu fpv4-sp-d16

	.section .vectors, "a", %progbits
	.global slicert_vectors
	.type slicert_vectors, %object
slicert_vectors:
	.word __isr_stack_top          /*  0 initial MSP (ISR stack) */
	.word Reset_Handler            /*  1 */
	.word NMI_Handler              /*  2 (the CMSDK watchdog) */
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

	.text

#define CPACR 0xE000ED88               /* CP10, CP11 access: bits 20-23 */
#define FPCCR 0xE000EF34
#define FPCCR_ASPEN_LSPEN 0xC0000000   /* automatic + lazy state preservation */

/* Reset: FPU on, C init on the MSP, then the kernel thread runs main() on the PSP. */
	.global Reset_Handler
	.type Reset_Handler, %function
	.thumb_func
Reset_Handler:
	cpsid i
	ldr  r0, =CPACR
	ldr  r1, [r0]
	orr  r1, r1, #(0xF << 20)      /* CP10, CP11: full access */
	str  r1, [r0]
	ldr  r0, =FPCCR
	mov  r1, #FPCCR_ASPEN_LSPEN
	str  r1, [r0]
	dsb
	isb
	bl   slicert_port_early_init   /* .data/.bss, stacks, seed, clock, priorities */
	bl   slicert_m4_port_init      /* the RT task's initial EXC_RETURN */
	ldr  r0, =__kernel_stack_top
	msr  psp, r0
	movs r0, #2                    /* CONTROL.SPSEL = 1: thread mode uses the PSP; FPCA 0 */
	msr  control, r0
	isb
	cpsie i
	bl   slicert_trace_base + 2 * 14   /* boot */
	bl   main
	b    slicert_port_exit         /* main's return value is the exit code */
	.size Reset_Handler, . - Reset_Handler

/*
 * PendSV: switch between the kernel thread and the RT task (both thread mode, PSP).
 * PendSV has the lowest priority, so it only ever preempts thread mode on the PSP:
 * EXC_RETURN is 0xFFFFFFFD (integer frame) or 0xFFFFFFED (FP frame). It is kept in r3
 * (the trace stubs are a single `bx lr`) and saved below r4-r11 on the outgoing stack,
 * under s16-s31 when the frame is an FP frame. Saving s16-s31 is the handler's first FP
 * instruction: with lazy stacking pending, the core stacks s0-s15 and FPSCR into the
 * reserved space of the hardware frame right then. Branches, not IT blocks, skip the FP
 * part of an integer frame (the cycle model costs an instruction in an IT block as
 * executed: qemu/cycle_model.md).
 */
	.global PendSV_Handler
	.type PendSV_Handler, %function
	.thumb_func
PendSV_Handler:
	mov  r3, lr                    /* EXC_RETURN */
	bl   slicert_trace_base + 2 * 4    /* pendsv_enter */
	cpsid i
	mrs  r0, psp
	tst  r3, #0x10                 /* bit 4 clear: FP frame */
	bne  1f
	vstmdb r0!, {s16-s31}
1:	stmdb r0!, {r3-r11}            /* EXC_RETURN, r4-r11 */
	bl   slicert_port_switch       /* r0: outgoing sp -> r0: incoming sp; payload lanes */
	ldmia r0!, {r3-r11}
	tst  r3, #0x10
	bne  2f
	vldmia r0!, {s16-s31}
2:	msr  psp, r0
	bl   slicert_trace_base + 2 * 5    /* pendsv_exit (payload: task switched to) */
	cpsie i
	bx   r3
	.size PendSV_Handler, . - PendSV_Handler

/* HardFault (and escalated faults): r0 = faulting stack pointer, r1 = EXC_RETURN. */
	.global HardFault_Handler
	.type HardFault_Handler, %function
	.thumb_func
HardFault_Handler:
	cpsid i
	tst  lr, #4
	ite  eq
	mrseq r0, msp
	mrsne r0, psp
	mov  r1, lr
	ldr  r2, =__isr_stack_top      /* the fault may be an MSP overflow: get a sane MSP */
	mov  sp, r2
	b    slicert_port_fault
	.size HardFault_Handler, . - HardFault_Handler

	.global NMI_Handler
	.type NMI_Handler, %function
	.thumb_func
NMI_Handler:
	movs r0, #2
	b    slicert_port_exit
	.size NMI_Handler, . - NMI_Handler

	.global Default_Handler
	.type Default_Handler, %function
	.thumb_func
Default_Handler:
	movs r0, #1                    /* unexpected exception: runtime assertion */
	b    slicert_port_exit
	.size Default_Handler, . - Default_Handler

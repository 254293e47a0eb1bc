/*
 * Reset, PendSV context switch, HardFault, NMI and default handlers of the bare-metal
 * Cortex-M3 ports (ports/baremetal-cm3, ports/baremetal-an385): included by each port's
 * startup.S right after its vector table (the vector table is the board's; this part is
 * the same on every board).
 */
	.text

/* Reset: C init on the MSP, then the kernel thread runs main() on the PSP. */
	.global Reset_Handler
	.type Reset_Handler, %function
	.thumb_func
Reset_Handler:
	cpsid i
	bl   slicert_port_early_init   /* .data/.bss, stacks, seed, clock, priorities */
	ldr  r0, =__kernel_stack_top
	msr  psp, r0
	movs r0, #2                    /* CONTROL.SPSEL = 1: thread mode uses the PSP */
	msr  control, r0
	isb
	cpsie i
	bl   slicert_trace_base + 2 * 14   /* boot */
	bl   main
	b    slicert_port_exit         /* main's return value is the exit code */
	.size Reset_Handler, . - Reset_Handler

/*
 * PendSV: switch between the kernel thread and the RT task (both thread mode, PSP).
 * The hardware stacked r0-r3, r12, lr, pc, xpsr on the outgoing task's PSP; we push
 * r4-r11 below them. pendsv_enter is the very first instruction; it overwrites lr
 * (EXC_RETURN), which is always 0xFFFFFFFD here: PendSV has the lowest priority, so
 * it only ever preempts thread mode on the PSP (no FPU on the M3).
 */
	.global PendSV_Handler
	.type PendSV_Handler, %function
	.thumb_func
PendSV_Handler:
	bl   slicert_trace_base + 2 * 4    /* pendsv_enter */
	cpsid i
	mrs  r0, psp
	stmdb r0!, {r4-r11}
	bl   slicert_port_switch       /* r0: outgoing sp -> r0: incoming sp; payload lanes */
	ldmia r0!, {r4-r11}
	msr  psp, r0
	bl   slicert_trace_base + 2 * 5    /* pendsv_exit (payload: task switched to) */
	cpsie i
	mvn  lr, #2                    /* EXC_RETURN 0xFFFFFFFD: thread mode, PSP */
	bx   lr
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

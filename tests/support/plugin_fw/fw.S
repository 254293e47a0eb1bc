/*
 * Hand-written test firmware for qemu/slicert_cycles.c (Cortex-M3, lm3s6965evb).
 *
 * - vector table and reset handler (copies .data, clears .bss, calls main);
 * - the trace stub section at 0x3E000: 128 event stubs + 4 x 256 payload-lane stubs,
 *   each a single `bx lr` (docs/contracts.md);
 * - fw_loop(n): a counted loop with a fixed instruction mix (one MMIO load per
 *   iteration, to exercise -icount I/O re-translation), between events 0 and 1;
 * - fw_mix(buf): straight-line code covering the instruction classes, between events
 *   20 and 21 (the `@ cost=` annotations are the former cm3-v1 table; the cm3-v2 rules
 *   are checked one by one in tests/test_cycle_model.py);
 * - SysTick_Handler: emits events 6 (irq_enter) and 7 (irq_exit), counts ticks;
 * - fw_spin(n): a 4-instruction loop (bench / long runs).
 */
    .syntax unified
    .cpu cortex-m3
    .thumb

    .equ TRACE_BASE, 0x3E000
    .equ SYST_CVR, 0xE000E018

/* ---------------------------------------------------------------- vectors */
    .section .vectors, "a"
    .align 2
    .global vectors
vectors:
    .word _estack
    .word Reset_Handler
    .word Fault_Handler         /* NMI */
    .word Fault_Handler         /* HardFault */
    .word Fault_Handler         /* MemManage */
    .word Fault_Handler         /* BusFault */
    .word Fault_Handler         /* UsageFault */
    .word 0, 0, 0, 0
    .word Fault_Handler         /* SVCall */
    .word Fault_Handler         /* DebugMon */
    .word 0
    .word Fault_Handler         /* PendSV */
    .word SysTick_Handler       /* SysTick */

/* ------------------------------------------------------------ trace stubs */
    .section .slicert_trace, "ax"
    .global slicert_trace_stubs
    .thumb_func
slicert_trace_stubs:
    .rept 128                   /* event id i at TRACE_BASE + 2*i */
    bx lr
    .endr
    .rept 4 * 256               /* lane l, byte b at TRACE_BASE + 0x100 + l*0x200 + 2*b */
    bx lr
    .endr

    .equ EV_KERNEL_START, TRACE_BASE + 2 * 0 + 1
    .equ EV_KERNEL_END, TRACE_BASE + 2 * 1 + 1
    .equ EV_IRQ_ENTER, TRACE_BASE + 2 * 6 + 1
    .equ EV_IRQ_EXIT, TRACE_BASE + 2 * 7 + 1
    .equ EV_MIX_BEGIN, TRACE_BASE + 2 * 20 + 1
    .equ EV_MIX_END, TRACE_BASE + 2 * 21 + 1

/* ------------------------------------------------------------------- code */
    .text

    .global Reset_Handler
    .thumb_func
Reset_Handler:
    ldr r0, =_sdata
    ldr r1, =_edata
    ldr r2, =_sidata
1:  cmp r0, r1
    bhs 2f
    ldr r3, [r2], #4
    str r3, [r0], #4
    b 1b
2:  ldr r0, =_sbss
    ldr r1, =_ebss
    movs r3, #0
3:  cmp r0, r1
    bhs 4f
    str r3, [r0], #4
    b 3b
4:  bl main
    b .

    .thumb_func
Fault_Handler:
    movs r0, #2                 /* exit code 2 = hard fault (contracts.md) */
    bl fw_exit
    b .

/* The event stubs are called with bl/blx to their thumb address. */
    .macro EVENT addr
    bl \addr - 1
    .endm

/* uint32_t fw_loop(uint32_t n, uint32_t *buf): 6 instructions per iteration. */
    .global fw_loop
    .thumb_func
fw_loop:
    push {r4-r7, lr}
    mov r5, r1
    ldr r7, =SYST_CVR
    mov r4, r0
    EVENT EV_KERNEL_START
@ LOOP_BEGIN
    mov r0, r4                  @ cost=1
    movs r1, #0                 @ cost=1
1:  ldr r6, [r7]                @ cost=2 n=LOOP   (MMIO: SysTick current value)
    adds r1, r1, #1             @ cost=1 n=LOOP
    mul r2, r1, r1              @ cost=1 n=LOOP
    str r2, [r5]                @ cost=2 n=LOOP
    subs r0, r0, #1             @ cost=1 n=LOOP
    bne 1b                      @ cost=2 cbr n=LOOP
    EVENT EV_KERNEL_END         @ cost=3 br
@ LOOP_END
    ldr r0, [r5]
    pop {r4-r7, pc}
    .ltorg

/* void fw_mix(uint32_t *buf): buf has >= 8 words. Region: MIX_BEGIN .. MIX_END */
    .global fw_mix
    .thumb_func
fw_mix:
    push {r4-r7, lr}
    mov r5, r0
    movs r1, #7
    movs r2, #3
    movs r3, #0
    EVENT EV_MIX_BEGIN
@ MIX_BEGIN
    adds r1, r1, #1             @ cost=1
    add.w r3, r1, r2, lsl #2    @ cost=1
    eor.w r3, r3, r1            @ cost=1
    lsls r3, r3, #1             @ cost=1
    mov r0, r3                  @ cost=1
    cmp r0, r1                  @ cost=1
    ubfx r0, r3, #2, #5         @ cost=1
    clz r0, r3                  @ cost=1
    movw r0, #0x1234            @ cost=1
    movt r0, #0x5678            @ cost=1
    sxtb r0, r0                 @ cost=1
    bic r0, r0, #0xff           @ cost=1
    rsbs r4, r1, #0             @ cost=1
    mul r0, r1, r2              @ cost=1
    muls r0, r1, r0             @ cost=1
    mla r0, r1, r2, r0          @ cost=2
    mls r0, r1, r2, r0          @ cost=2
    umull r6, r7, r1, r2        @ cost=4
    smull r6, r7, r1, r2        @ cost=4
    umlal r6, r7, r1, r2        @ cost=5
    smlal r6, r7, r1, r2        @ cost=5
    udiv r0, r3, r2             @ cost=7
    sdiv r0, r3, r2             @ cost=7
    str r1, [r5]                @ cost=2
    strb r2, [r5, #4]           @ cost=2
    strh r2, [r5, #6]           @ cost=2
    strd r1, r2, [r5, #8]       @ cost=3
    str.w r3, [r5, #16]         @ cost=2
    ldr r0, [r5]                @ cost=2
    ldrb r0, [r5, #4]           @ cost=2
    ldrsh r0, [r5, #6]          @ cost=2
    ldrd r6, r7, [r5, #8]       @ cost=3
    ldr r0, =0x11223344         @ cost=2
    stm r5, {r1, r2, r3}        @ cost=4
    ldm r5, {r1, r2, r3}        @ cost=4
    push {r1, r2}               @ cost=3
    pop {r1, r2}                @ cost=3
    push.w {r1, r2, r3, r4}     @ cost=5
    pop.w {r1, r2, r3, r4}      @ cost=5
    cmp r1, r1                  @ cost=1
    it eq                       @ cost=1
    moveq r0, #1                @ cost=1
    ite ne                      @ cost=1
    addne r0, r0, #1            @ cost=1
    subeq r0, r0, #1            @ cost=1
    nop                         @ cost=1
    mrs r0, basepri             @ cost=1
    msr basepri, r0             @ cost=1
    dmb                         @ cost=2
    dsb                         @ cost=2
    isb                         @ cost=3
    b 5f                        @ cost=3 br
    .thumb_func
mix_leaf:
    bx lr                       @ cost=3 br n=2
5:  bl mix_leaf                 @ cost=3 br
    ldr r3, =mix_leaf           @ cost=2
    blx r3                      @ cost=3 br
    cbz r1, 6f                  @ cost=2 cbr      (not taken: r1 != 0)
    cbnz r1, 6f                 @ cost=2 cbr      (taken)
    nop
6:  cmp r1, #0                  @ cost=1
    beq 7f                      @ cost=2 cbr      (not taken)
    bne.w 7f                    @ cost=2 cbr      (taken)
    nop
7:  movs r0, #0                 @ cost=1
    tbb [pc, r0]                @ cost=4 br
8:  .byte (9f - 8b) / 2, 0
9:  mov r3, r1                  @ cost=1
    EVENT EV_MIX_END            @ cost=3 br
@ MIX_END
    str r3, [r5, #20]
    pop {r4-r7, pc}
    .ltorg

/* void fw_spin(uint32_t n): 4 instructions per iteration, no memory access. */
    .global fw_spin
    .thumb_func
fw_spin:
    movs r1, #0
1:  adds r1, r1, #3
    eors r1, r1, r0
    subs r0, r0, #1
    bne 1b
    bx lr

/* SysTick: irq_enter / irq_exit events around a tick counter update. */
    .global SysTick_Handler
    .thumb_func
SysTick_Handler:
    push {r4, lr}
    EVENT EV_IRQ_ENTER
    ldr r0, =fw_ticks
    ldr r1, [r0]
    adds r1, r1, #1
    str r1, [r0]
    EVENT EV_IRQ_EXIT
    pop {r4, pc}
    .ltorg

/* Semihosting call: r0 = operation, r1 = parameter block. */
    .global fw_semihost
    .thumb_func
fw_semihost:
    bkpt 0xab
    bx lr

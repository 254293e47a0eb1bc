/*
 * slicert_cycles: SliceRT-Farm TCG plugin (QEMU plugin API v1, QEMU 7.2).
 *
 * - Modelled Cortex-M3 cycles and retired instructions, counted exactly per
 *   instruction with inline adds (no helper calls), one pair per segment of
 *   instructions that always retire together (see "translation"). The
 *   cost of each instruction is decided once, at translation time, by a small
 *   table-driven Thumb/Thumb-2 (ARMv7-M) decoder on the instruction bytes
 *   (qemu_plugin_insn_data); the table is documented in qemu/cycle_model.md
 *   (CYCLE_MODEL_VERSION below).
 * - verify=1 also classifies every translated instruction from the capstone text
 *   of qemu_plugin_insn_disas() (the plugin's former classifier) and lists the
 *   disagreements as comments in the output header. Not for production runs: QEMU
 *   7.2 opens and closes a capstone handle for every qemu_plugin_insn_disas() call.
 * - Trace events: the firmware calls one-instruction stubs (`bx lr`) placed at
 *   trace_base (event id at +2*id) and trace_base+0x100 (payload byte lanes,
 *   +0x100 + lane*0x200 + byte*2). Only those addresses get an exec callback,
 *   which stamps the event with the counters (see docs/contracts.md).
 * - At exit, writes one text file (header, `E id cycles insns payload` lines,
 *   `T cycles insns`), once.
 *
 * Usage:
 *   -plugin libslicert_cycles.so,trace_base=0x3e000,out=FILE[,ws=N][,handler=0xADDR ...]
 *           [,verify=1]
 *
 * Deliberately glib-free: builds with `gcc -O2 -shared -fPIC -Wall -Werror`
 * against QEMU's include/qemu/qemu-plugin.h only. Strings returned by
 * qemu_plugin_insn_disas() (verify=1) are g_malloc'ed; since glib 2.46 g_free() is
 * free().
 *
 * Determinism: run QEMU with -icount shift=0,align=off,sleep=off and one vCPU.
 * The counters are plain globals: with -icount QEMU runs TCG single-threaded.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

#define SLICERT_PLUGIN_VERSION "1.1.0"
#define CYCLE_MODEL_VERSION "cm3-v1"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* ---- cycle model cm3-v1 (keep in sync with qemu/cycle_model.md) ---------- */
#define C_ALU 1          /* data processing, shifts, compare, extend, bitfield */
#define C_MUL 1          /* MUL (32-bit result) */
#define C_MLA 2          /* MLA, MLS */
#define C_LMUL 4         /* UMULL, SMULL (3-5 on silicon) */
#define C_LMLA 5         /* UMLAL, SMLAL (4-7 on silicon) */
#define C_DIV 7          /* SDIV, UDIV (2-12 on silicon, early termination) */
#define C_LDR 2          /* LDR/LDRB/LDRH/LDRSx/LDREX, single load */
#define C_STR 2          /* STR/STRB/STRH/STREX, single store */
#define C_PIPE_REFILL 2  /* P: pipeline refill after a taken branch (1-3) */
#define C_EXC_ENTRY 12   /* exception entry (stacking + vector fetch) */
#define C_BARRIER 2      /* DMB, DSB (1 + B) */
#define C_ISB (1 + C_PIPE_REFILL)

#define TRACE_SPAN 0x900u        /* events 0x000-0x0ff, lanes 0x100-0x8ff */
#define TRACE_LANES_OFF 0x100u
#define TRACE_LANE_SPAN 0x200u
#define MAX_EVENTS (4u * 1024u * 1024u)
#define MAX_HANDLERS 64

typedef struct {
    uint64_t cycles;
    uint64_t insns;
    uint32_t payload;
    uint32_t id;
} Event;

/* Counters (inline adds, see "translation"). Modelled cycles = insns + extra_cycles. */
static uint64_t insns;          /* retired instructions */
static uint64_t extra_cycles;   /* modelled cycles beyond 1 per instruction */
static uint32_t pending_payload;

static Event *events;
static size_t n_events, cap_events;
static uint64_t dropped_events;
static uint64_t unclassified;   /* translated instructions with no table entry */

static uint64_t trace_base = 0x3e000;
static char *out_path;
static unsigned ws;             /* flash wait states per taken-branch refill */
static uint64_t handlers[MAX_HANDLERS];
static int n_handlers;

/* ---- event recording ------------------------------------------------------ */

static void record_event(uint32_t id)
{
    if (n_events == cap_events) {
        size_t ncap = cap_events ? cap_events * 2 : 4096;
        Event *ne;
        if (ncap > MAX_EVENTS) {
            ncap = MAX_EVENTS;
        }
        if (n_events >= ncap ||
            !(ne = realloc(events, ncap * sizeof(Event)))) {
            dropped_events++;
            pending_payload = 0;
            return;
        }
        events = ne;
        cap_events = ncap;
    }
    events[n_events].cycles = insns + extra_cycles;
    events[n_events].insns = insns;
    events[n_events].payload = pending_payload;
    events[n_events].id = id;
    n_events++;
    pending_payload = 0;
}

/* Exec callback on a trace stub; udata = offset from trace_base. */
static void vcpu_trace_stub(unsigned int vcpu_index, void *udata)
{
    uint32_t off = (uint32_t)(uintptr_t)udata;

    (void)vcpu_index;
    if (off < TRACE_LANES_OFF) {
        record_event(off / 2);
    } else {
        uint32_t lane = (off - TRACE_LANES_OFF) / TRACE_LANE_SPAN;
        uint32_t byte = ((off - TRACE_LANES_OFF) % TRACE_LANE_SPAN) / 2;
        pending_payload |= byte << (8 * lane);
    }
}

/* ---- instruction classes and their cost (cm3-v1 table) -------------------------- */

enum cls {
    K_UNKNOWN,      /* not in the table: cost 1, counted as `unclassified` */
    K_ALU, K_MUL, K_MLA, K_LMUL, K_LMLA, K_DIV, K_LDR, K_LDRD, K_STR, K_STRD,
    K_LDM, K_STM, K_B, K_BL, K_BX, K_CBZ, K_TBB, K_IT, K_NOP, K_SYS,
    K_BARRIER, K_ISB, K_SVC,
    K_COUNT
};

static const char *const cls_names[K_COUNT] = {
    "unknown", "alu", "mul", "mla", "lmul", "lmla", "div", "ldr", "ldrd", "str", "strd",
    "ldm", "stm", "b", "bl", "bx", "cbz", "tbb", "it", "nop", "sys",
    "barrier", "isb", "svc",
};

/* What the cost of one instruction depends on. */
typedef struct {
    uint8_t cls;    /* enum cls */
    uint8_t n;      /* LDM/STM: registers in the list */
    bool cond;      /* has its own condition field (B<cond>): averaged refill */
    bool pc;        /* writes the PC: ALU/LDR destination, PC in an LDM list */
} Class;

/* Modelled cost of a classified instruction (ws = flash wait states). */
static uint64_t class_cost(const Class *c, unsigned ws_)
{
    unsigned refill = C_PIPE_REFILL + ws_;         /* taken branch: P + ws */
    unsigned cond_refill = (refill + 1) / 2;       /* conditional: average */
    unsigned br = c->cond ? cond_refill : refill;

    switch ((enum cls)c->cls) {
    case K_ALU:
        return c->pc ? 1 + br : C_ALU;
    case K_MUL:
        return C_MUL;
    case K_MLA:
        return C_MLA;
    case K_LMUL:
        return C_LMUL;
    case K_LMLA:
        return C_LMLA;
    case K_DIV:
        return C_DIV;
    case K_LDR:
        return c->pc ? C_LDR + br : C_LDR;
    case K_LDRD:
    case K_STRD:
        return 3;                                  /* 1 + N, N = 2 */
    case K_STR:
        return C_STR;
    case K_LDM:
        return 1 + (c->n ? c->n : 1) + (c->pc ? br : 0);
    case K_STM:
        return 1 + (c->n ? c->n : 1);
    case K_B:
    case K_BL:
    case K_BX:
        return 1 + br;
    case K_CBZ:
        return 1 + cond_refill;                    /* always conditional */
    case K_TBB:
        return 2 + refill;
    case K_IT:
    case K_NOP:
    case K_SYS:
    case K_SVC:
        return 1;
    case K_BARRIER:
        return C_BARRIER;
    case K_ISB:
        return C_ISB;
    case K_UNKNOWN:
    case K_COUNT:
        break;
    }
    return 1;
}

/* ---- classification from the instruction bytes (the normal path) -----------------
 *
 * A first-match table over the Thumb / Thumb-2 encodings of ARMv7-M (ARM DDI 0403,
 * A5.2 16-bit and A5.3 32-bit encodings). 16-bit instructions are matched on the
 * halfword, 32-bit ones on (hw1 << 16) | hw2. `x` says how to read the operands that
 * the cost depends on. Reserved encodings and those of other profiles or extensions
 * (DSP, FP, coprocessor, ...) fall through to K_UNKNOWN, as capstone's mnemonics for
 * them are not in the table either.
 *
 * It reproduces the former capstone-text classifier (below) exactly, also where that
 * one is odd: capstone's validity checks (encodings it does not decode are
 * `unclassified`), its text of UNPREDICTABLE forms (`cmp.w pc, r0` reads as a PC
 * write) and its "trap" for udf #254. Checked against capstone over every 16- and
 * 32-bit Thumb encoding (tests/support/decoder_check.c). Like capstone (one at a time),
 * it does not track IT blocks: an instruction inside one is costed as if its
 * condition passed (see cycle_model.md).
 */

enum xop {
    X_NONE,
    X_COND16,       /* B<cond> T1: conditional */
    X_COND32,       /* B<cond>.W T3: conditional; cond 111x is not a branch */
    X_PC_HI,        /* 16-bit ADD/MOV (high registers): Rd = D:Rd, PC if 15 */
    X_LIST8,        /* 16-bit LDM/STM: n = registers in bits 7:0 */
    X_LIST9,        /* PUSH/POP: n = registers in bits 7:0 + bit 8 (LR / PC) */
    X_LIST16,       /* 32-bit LDM/STM: n = registers in hw2, PC = bit 15 */
    X_PC_RT,        /* 32-bit load: Rt = hw2[15:12] */
    X_PC_RD,        /* 32-bit data processing: Rd = hw2[11:8] */
    X_DP,           /* 32-bit AND..RSB: op = hw1[8:5]; Rd = PC unless TST/TEQ/CMN/CMP */
    X_SAT,          /* SSAT/USAT; the `sh` + zero shift form is SSAT16/USAT16 (DSP) */
    X_MLA,          /* MLA, or MUL when Ra = 1111 */
    X_HINT16,       /* NOP YIELD WFE WFI SEV; other hint numbers are unallocated */
    X_HINT32,       /* the same, 32-bit encoding (hw2[7:0]) */
    X_SYSM,         /* MSR/MRS: special register SYSm = hw2[7:0] */
    X_LS,           /* 32-bit single load/store: addressing form, Rt = PC */
};

typedef struct {
    uint32_t mask, match;
    uint8_t cls;
    uint8_t x;      /* enum xop */
} Pattern;

static const Pattern thumb16[] = {
    /* misc 1011 xxxx (A5.2.5) */
    {0xFF0F, 0xBF00, K_NOP, X_HINT16},      /* nop yield wfe wfi sev */
    {0xFF00, 0xBF00, K_IT, X_NONE},         /* it (mask != 0) */
    {0xFF00, 0xBE00, K_NOP, X_NONE},        /* bkpt */
    {0xF500, 0xB100, K_CBZ, X_NONE},        /* cbz, cbnz */
    {0xFE00, 0xB400, K_STM, X_LIST9},       /* push {..., lr} */
    {0xFE00, 0xBC00, K_LDM, X_LIST9},       /* pop {..., pc} */
    {0xFF00, 0xB200, K_ALU, X_NONE},        /* sxth sxtb uxth uxtb */
    {0xFF00, 0xB000, K_ALU, X_NONE},        /* add/sub sp, sp, #imm */
    {0xFFE8, 0xB660, K_SYS, X_NONE},        /* cpsie, cpsid */
    {0xFFC0, 0xBA80, K_UNKNOWN, X_NONE},    /* (hlt, v8) */
    {0xFF00, 0xBA00, K_ALU, X_NONE},        /* rev rev16 revsh */
    {0xF000, 0xB000, K_UNKNOWN, X_NONE},
    /* conditional branch, svc, udf (A5.2.6) */
    {0xFFFF, 0xDEFE, K_UNKNOWN, X_NONE},    /* (capstone: "trap") */
    {0xFF00, 0xDE00, K_NOP, X_NONE},        /* udf */
    {0xFF00, 0xDF00, K_SVC, X_NONE},        /* svc */
    {0xF000, 0xD000, K_B, X_COND16},        /* b<cond> */
    {0xF800, 0xE000, K_B, X_NONE},          /* b */
    {0xF800, 0xC000, K_STM, X_LIST8},       /* stm rn!, {...} */
    {0xF800, 0xC800, K_LDM, X_LIST8},       /* ldm rn(!), {...} */
    {0xF000, 0xA000, K_ALU, X_NONE},        /* adr; add rd, sp, #imm */
    /* single loads and stores (A5.2.4) */
    {0xF800, 0x9000, K_STR, X_NONE},        /* str rt, [sp, #imm] */
    {0xF800, 0x9800, K_LDR, X_NONE},        /* ldr rt, [sp, #imm] */
    {0xF800, 0x8000, K_STR, X_NONE},        /* strh imm */
    {0xF800, 0x8800, K_LDR, X_NONE},        /* ldrh imm */
    {0xE800, 0x6000, K_STR, X_NONE},        /* str, strb imm */
    {0xE800, 0x6800, K_LDR, X_NONE},        /* ldr, ldrb imm */
    {0xFE00, 0x5000, K_STR, X_NONE},        /* str reg */
    {0xFE00, 0x5200, K_STR, X_NONE},        /* strh reg */
    {0xFE00, 0x5400, K_STR, X_NONE},        /* strb reg */
    {0xF000, 0x5000, K_LDR, X_NONE},        /* ldrsb ldr ldrh ldrb ldrsh reg */
    {0xF800, 0x4800, K_LDR, X_NONE},        /* ldr rt, [pc, #imm] */
    /* special data processing, branch and exchange (A5.2.3) */
    {0xFF80, 0x4700, K_BX, X_NONE},         /* bx rm */
    {0xFF87, 0x4780, K_BX, X_NONE},         /* blx rm */
    {0xFF00, 0x4700, K_UNKNOWN, X_NONE},
    {0xFF00, 0x4600, K_ALU, X_PC_HI},       /* mov rd, rm (mov pc, lr) */
    {0xFF00, 0x4500, K_ALU, X_PC_HI},       /* cmp rn, rm (high registers) */
    {0xFF00, 0x4400, K_ALU, X_PC_HI},       /* add rdn, rm (add pc, rm) */
    /* data processing (A5.2.2), shift/add/sub/mov/cmp (A5.2.1) */
    {0xFFC0, 0x4340, K_MUL, X_NONE},        /* muls */
    {0xFC00, 0x4000, K_ALU, X_NONE},
    {0xC000, 0x0000, K_ALU, X_NONE},
};

static const Pattern thumb32[] = {
    /* load/store multiple (A5.3.5) */
    {0xFFD00000, 0xE8800000, K_STM, X_LIST16},      /* stm.w rn(!) */
    {0xFFD00000, 0xE8900000, K_LDM, X_LIST16},      /* ldm.w rn(!), pop.w */
    {0xFFD00000, 0xE9000000, K_STM, X_LIST16},      /* stmdb, push.w */
    {0xFFD00000, 0xE9100000, K_LDM, X_LIST16},      /* ldmdb */
    /* load/store exclusive, dual, table branch (A5.3.6) */
    {0xFFF00000, 0xE8400000, K_STR, X_NONE},        /* strex */
    {0xFFF00F00, 0xE8500F00, K_LDR, X_PC_RT},       /* ldrex */
    {0xFFF00000, 0xE8500000, K_UNKNOWN, X_NONE},
    {0xFFF0FFE0, 0xE8D0F000, K_TBB, X_NONE},        /* tbb, tbh */
    {0xFFF00FEF, 0xE8D00F4F, K_LDR, X_PC_RT},       /* ldrexb, ldrexh */
    {0xFFF00FE0, 0xE8C00F40, K_STR, X_NONE},        /* strexb, strexh */
    {0xFFE00000, 0xE8C00000, K_UNKNOWN, X_NONE},    /* (ldrexd, strexd: not v7-M) */
    {0xFE500000, 0xE8400000, K_STRD, X_NONE},       /* strd */
    {0xFE500000, 0xE8500000, K_LDRD, X_NONE},       /* ldrd */
    /* data processing, shifted register (A5.3.11) */
    {0xFE000000, 0xEA000000, K_ALU, X_DP},
    /* coprocessor (A5.3.18): no FPU on the Cortex-M3 */
    {0xEC000000, 0xEC000000, K_UNKNOWN, X_NONE},
    /* branches and miscellaneous control (A5.3.4) */
    {0xF800D000, 0xF000D000, K_BL, X_NONE},         /* bl */
    {0xF800D000, 0xF0009000, K_B, X_NONE},          /* b.w */
    {0xF800D000, 0xF000C000, K_UNKNOWN, X_NONE},    /* (blx imm: not v7-M) */
    {0xFFE0D000, 0xF3808000, K_SYS, X_SYSM},        /* msr */
    {0xFFFFFF00, 0xF3AF8000, K_NOP, X_HINT32},      /* nop.w yield.w wfe.w wfi.w sev.w */
    {0xFFFFFFFF, 0xF3BF8F2F, K_NOP, X_NONE},        /* clrex */
    {0xFFFFFFE0, 0xF3BF8F40, K_BARRIER, X_NONE},    /* dsb, dmb */
    {0xFFFFFFF0, 0xF3BF8F60, K_ISB, X_NONE},        /* isb */
    {0xFFE0D000, 0xF3E08000, K_SYS, X_SYSM},        /* mrs */
    {0xFFF0F000, 0xF7F0A000, K_NOP, X_NONE},        /* udf.w */
    {0xFB80D000, 0xF3808000, K_UNKNOWN, X_NONE},
    {0xF800D000, 0xF0008000, K_B, X_COND32},        /* b<cond>.w */
    /* data processing, modified immediate (A5.3.1) */
    {0xFA008000, 0xF0000000, K_ALU, X_DP},
    /* data processing, plain binary immediate (A5.3.3) */
    {0xFBF08000, 0xF2000000, K_ALU, X_PC_RD},       /* addw, adr.w */
    {0xFBF08000, 0xF2400000, K_ALU, X_PC_RD},       /* movw */
    {0xFBF08000, 0xF2A00000, K_ALU, X_PC_RD},       /* subw, adr.w */
    {0xFBF08000, 0xF2C00000, K_ALU, X_PC_RD},       /* movt */
    {0xFBD08020, 0xF3000020, K_UNKNOWN, X_NONE},
    {0xFBD08000, 0xF3000000, K_ALU, X_SAT},         /* ssat (ssat16) */
    {0xFBF08000, 0xF3400000, K_ALU, X_PC_RD},       /* sbfx */
    {0xFFF08020, 0xF3600000, K_ALU, X_PC_RD},       /* bfi, bfc */
    {0xFBD08000, 0xF3800000, K_ALU, X_SAT},         /* usat (usat16) */
    {0xFBF08000, 0xF3C00000, K_ALU, X_PC_RD},       /* ubfx */
    /* store single, load byte/halfword/word, memory hints (A5.3.7-10) */
    {0xFF700000, 0xF8000000, K_STR, X_LS},          /* strb strbt */
    {0xFF700000, 0xF8200000, K_STR, X_LS},          /* strh strht */
    {0xFF700000, 0xF8400000, K_STR, X_LS},          /* str strt */
    {0xFE700000, 0xF8100000, K_LDR, X_LS},          /* ldrb ldrsb ldrbt ldrsbt pld pli */
    {0xFE700000, 0xF8300000, K_LDR, X_LS},          /* ldrh ldrsh ldrht ldrsht */
    {0xFF700000, 0xF8500000, K_LDR, X_LS},          /* ldr ldrt; ldr pc, ... */
    /* data processing, register (A5.3.12) */
    {0xFF80F0F0, 0xFA00F000, K_ALU, X_PC_RD},       /* lsl lsr asr ror (register) */
    {0xFFEFF080, 0xFA0FF080, K_ALU, X_PC_RD},       /* sxth, uxth */
    {0xFFEFF080, 0xFA4FF080, K_ALU, X_PC_RD},       /* sxtb, uxtb */
    {0xFFF0F0C0, 0xFA90F080, K_ALU, X_PC_RD},       /* rev rev16 rbit revsh */
    {0xFFF0F0F0, 0xFAB0F080, K_ALU, X_PC_RD},       /* clz */
    /* multiply, multiply-accumulate, long multiply, divide (A5.3.16-17) */
    {0xFFF000F0, 0xFB000000, K_MLA, X_MLA},         /* mla; mul (ra = 1111) */
    {0xFFF000F0, 0xFB000010, K_MLA, X_NONE},        /* mls */
    {0xFFF000F0, 0xFB800000, K_LMUL, X_NONE},       /* smull */
    {0xFFF0F0F0, 0xFB90F0F0, K_DIV, X_NONE},        /* sdiv */
    {0xFFF000F0, 0xFBA00000, K_LMUL, X_NONE},       /* umull */
    {0xFFF0F0F0, 0xFBB0F0F0, K_DIV, X_NONE},        /* udiv */
    {0xFFF000F0, 0xFBC00000, K_LMLA, X_NONE},       /* smlal */
    {0xFFF000F0, 0xFBE00000, K_LMLA, X_NONE},       /* umlal */
};

/* DP opcodes hw1[8:5] valid in ARMv7-M (bit 0) and the compare ones (bit 1). */
static const uint8_t dp_ops[16] = {
    3, 1, 1, 1, 3, 0, 0, 0, 3, 0, 1, 1, 0, 3, 1, 0,
    /* and/tst bic orr orn eor/teq - pkh - add/cmn - adc sbc - sub/cmp rsb - */
};

/*
 * 32-bit single loads/stores: hw1 = 1111 100 S U size L Rn, hw2 = Rt ...
 * U = 1: [Rn, #imm12]. U = 0: hw2[11:6] = 000000 [Rn, Rm, lsl #k], or hw2[11] = 1 with
 * PUW (hw2[10:8]) = 100 [Rn, #-imm8], 110 (ldrt...), 1x1 pre-indexed, 0x1 post-indexed
 * (PUW 000 and 010 are undefined). Rn = PC: literal load (stores undefined).
 * Rt = PC: for byte loads these are PLD/PLI except the indexed and unprivileged
 * forms; for halfword loads PLDW (not ARMv7-M: capstone's mnemonic is not in the
 * table) or unallocated; otherwise a load into the PC.
 */
static void decode_ls(uint32_t w, Class *c)
{
    bool store = !(w & 0x100000), imm12 = (w & 0x800000) != 0;
    bool sign = (w & 0x1000000) != 0, lit = !store && (w >> 16 & 15) == 15;
    unsigned size = w >> 21 & 3, puw = w >> 8 & 7;
    bool hint_form;                 /* the forms that are PLD/PLI with Rt = PC */

    if (store && (w >> 16 & 15) == 15) {
        c->cls = K_UNKNOWN;
        return;
    }
    if (!imm12 && !lit) {
        if (!(w & 0x800) ? (w & 0x7C0) != 0 : (puw == 0 || puw == 2)) {
            c->cls = K_UNKNOWN;
            return;
        }
    }
    if (store || (w >> 12 & 15) != 15) {
        return;
    }
    hint_form = imm12 || (!(w & 0x800) && !(w & 0x7C0)) || ((w & 0x800) && puw == 4);
    if (size == 0) {                                /* ldrb, ldrsb */
        c->pc = !(lit || hint_form);
    } else if (size == 1 && lit) {                  /* ldrh pc, [pc, #-imm]: "pld" */
        if (sign || hint_form) {
            c->cls = K_UNKNOWN;
        }
    } else if (size == 1) {                         /* ldrh, ldrsh */
        if (hint_form) {
            c->cls = K_UNKNOWN;
        } else {
            c->pc = true;
        }
    } else {
        c->pc = true;                               /* ldr pc, ... */
    }
}

static void decode_thumb(const uint8_t *p, size_t len, Class *c)
{
    uint32_t hw1, w;
    const Pattern *t, *end;
    unsigned rd, sysm;

    /*
     * The length comes from the first halfword, not from `len`: QEMU 7.2 appends the
     * halfword after an instruction near the end of a (1 KiB) guest page to its data
     * (the Thumb translator peeks at it to see whether the next instruction crosses
     * the page), so `len` can be 4 for a 16-bit and 6 for a 32-bit instruction.
     */
    memset(c, 0, sizeof(*c));
    if (len < 2) {
        return;
    }
    hw1 = (uint32_t)p[0] | (uint32_t)p[1] << 8;
    if ((hw1 & 0xE000) == 0xE000 && (hw1 & 0x1800) != 0) {
        if (len < 4) {
            return;
        }
        w = hw1 << 16 | (uint32_t)p[2] | (uint32_t)p[3] << 8;
        t = thumb32;
        end = thumb32 + sizeof(thumb32) / sizeof(thumb32[0]);
    } else {
        w = hw1;
        t = thumb16;
        end = thumb16 + sizeof(thumb16) / sizeof(thumb16[0]);
    }
    for (; t < end && (w & t->mask) != t->match; t++) {
    }
    if (t == end) {
        return;
    }
    c->cls = t->cls;
    switch ((enum xop)t->x) {
    case X_NONE:
        break;
    case X_COND16:
        c->cond = true;
        break;
    case X_COND32:
        c->cond = true;             /* cond 111x was matched before (misc control) */
        break;
    case X_PC_HI:
        c->pc = ((w >> 4 & 8) | (w & 7)) == 15;
        break;
    case X_LIST8:
        c->n = (uint8_t)__builtin_popcount(w & 0xFF);
        if (c->n == 0) {
            c->cls = K_UNKNOWN;     /* empty list */
        }
        break;
    case X_LIST9:
        c->n = (uint8_t)__builtin_popcount(w & 0x1FF);
        if (c->n == 0) {
            c->cls = K_UNKNOWN;     /* push {}, pop {} */
        }
        c->pc = c->cls == K_LDM && (w & 0x100);
        break;
    case X_LIST16:
        c->n = (uint8_t)__builtin_popcount(w & 0xFFFF);
        c->pc = (w & 0x8000) != 0;
        if (c->n == 0 || (c->cls == K_STM && (w & 0xA000))) {
            c->cls = K_UNKNOWN;     /* empty; SP or PC stored */
        } else if ((w & 0xFFFF0000) == 0xE8BD0000 &&
                   ((w & 0x2000) || (w & 0xC000) == 0xC000)) {
            c->cls = K_UNKNOWN;     /* pop.w with SP, or with both LR and PC */
        }
        break;
    case X_PC_RT:
        c->pc = (w >> 12 & 15) == 15;
        break;
    case X_PC_RD:
        c->pc = (w >> 8 & 15) == 15;
        break;
    case X_DP:
        rd = w >> 8 & 15;
        switch (dp_ops[w >> 21 & 15]) {
        case 0:
            c->cls = K_UNKNOWN;
            break;
        case 3:                     /* S = 1, Rd = 1111: tst teq cmn cmp */
            if (rd == 15 && (w & 0x100000)) {
                /* the text classifier's reading of "cmp.w pc, ..." (UNPREDICTABLE) */
                c->pc = (w >> 16 & 15) == 15;
            } else {
                c->pc = rd == 15;
            }
            break;
        default:
            c->pc = rd == 15;
            break;
        }
        break;
    case X_SAT:
        if ((w & 0x200000) && (w & 0x70C0) == 0) {
            c->cls = K_UNKNOWN;     /* ssat16, usat16 */
        }
        c->pc = (w >> 8 & 15) == 15;
        break;
    case X_MLA:
        if ((w >> 12 & 15) == 15) {
            c->cls = K_MUL;
        }
        break;
    case X_HINT16:
        if ((w >> 4 & 15) > 4) {
            c->cls = K_UNKNOWN;
        }
        break;
    case X_HINT32:
        if ((w & 0xFF) > 4) {
            c->cls = K_UNKNOWN;     /* dbg, unallocated hints */
        }
        break;
    case X_SYSM:
        sysm = w & 0xFF;
        if (!(sysm <= 9 && sysm != 4) && !(sysm >= 16 && sysm <= 20) &&
            !((sysm == 0x20 || sysm == 0x30) && !(w & 0x2000))) {
            c->cls = K_UNKNOWN;
        }
        break;
    case X_LS:
        decode_ls(w, c);
        break;
    }
}

/* ---- classification from capstone text (verify=1 only) -----------------------------
 *
 * The plugin's former classifier (cm3-v1 was defined with it): parses the text that
 * qemu_plugin_insn_disas() returns. Kept to cross-check the byte decoder (verify=1);
 * QEMU 7.2 opens and closes a capstone handle for every call, which made translation
 * ~4 us per instruction.
 */

typedef struct {
    const char *name;
    enum cls cls;
    bool s_ok;      /* may take an `s` (flag setting) suffix */
} Mnem;

/* Thumb / Thumb-2 mnemonics of ARMv7-M (capstone spelling, lower case). */
static const Mnem mnems[] = {
    /* data processing */
    {"adc", K_ALU, 1}, {"add", K_ALU, 1}, {"addw", K_ALU, 0}, {"adr", K_ALU, 0},
    {"and", K_ALU, 1}, {"asr", K_ALU, 1}, {"bfc", K_ALU, 0}, {"bfi", K_ALU, 0},
    {"bic", K_ALU, 1}, {"clz", K_ALU, 0}, {"cmn", K_ALU, 0}, {"cmp", K_ALU, 0},
    {"eor", K_ALU, 1}, {"lsl", K_ALU, 1}, {"lsr", K_ALU, 1}, {"mov", K_ALU, 1},
    {"movw", K_ALU, 0}, {"movt", K_ALU, 0}, {"mvn", K_ALU, 1}, {"neg", K_ALU, 1},
    {"orn", K_ALU, 1}, {"orr", K_ALU, 1}, {"rbit", K_ALU, 0}, {"rev", K_ALU, 0},
    {"rev16", K_ALU, 0}, {"revsh", K_ALU, 0}, {"ror", K_ALU, 1}, {"rrx", K_ALU, 1},
    {"rsb", K_ALU, 1}, {"sbc", K_ALU, 1}, {"sbfx", K_ALU, 0}, {"ssat", K_ALU, 0},
    {"sub", K_ALU, 1}, {"subw", K_ALU, 0}, {"sxtb", K_ALU, 0}, {"sxth", K_ALU, 0},
    {"teq", K_ALU, 0}, {"tst", K_ALU, 0}, {"ubfx", K_ALU, 0}, {"usat", K_ALU, 0},
    {"uxtb", K_ALU, 0}, {"uxth", K_ALU, 0},
    /* multiply / divide */
    {"mul", K_MUL, 1}, {"mla", K_MLA, 0}, {"mls", K_MLA, 0},
    {"umull", K_LMUL, 1}, {"smull", K_LMUL, 1},
    {"umlal", K_LMLA, 1}, {"smlal", K_LMLA, 1},
    {"sdiv", K_DIV, 0}, {"udiv", K_DIV, 0},
    /* loads and stores */
    {"ldr", K_LDR, 0}, {"ldrb", K_LDR, 0}, {"ldrh", K_LDR, 0}, {"ldrsb", K_LDR, 0},
    {"ldrsh", K_LDR, 0}, {"ldrt", K_LDR, 0}, {"ldrbt", K_LDR, 0}, {"ldrht", K_LDR, 0},
    {"ldrsbt", K_LDR, 0}, {"ldrsht", K_LDR, 0}, {"ldrex", K_LDR, 0},
    {"ldrexb", K_LDR, 0}, {"ldrexh", K_LDR, 0}, {"ldrd", K_LDRD, 0},
    {"str", K_STR, 0}, {"strb", K_STR, 0}, {"strh", K_STR, 0}, {"strt", K_STR, 0},
    {"strbt", K_STR, 0}, {"strht", K_STR, 0}, {"strex", K_STR, 0},
    {"strexb", K_STR, 0}, {"strexh", K_STR, 0}, {"strd", K_STRD, 0},
    {"pld", K_LDR, 0}, {"pli", K_LDR, 0},
    {"ldm", K_LDM, 0}, {"ldmia", K_LDM, 0}, {"ldmfd", K_LDM, 0}, {"ldmdb", K_LDM, 0},
    {"ldmea", K_LDM, 0}, {"pop", K_LDM, 0},
    {"stm", K_STM, 0}, {"stmia", K_STM, 0}, {"stmea", K_STM, 0}, {"stmdb", K_STM, 0},
    {"stmfd", K_STM, 0}, {"push", K_STM, 0},
    /* branches */
    {"b", K_B, 0}, {"bl", K_BL, 0}, {"bx", K_BX, 0}, {"blx", K_BX, 0},
    {"cbz", K_CBZ, 0}, {"cbnz", K_CBZ, 0}, {"tbb", K_TBB, 0}, {"tbh", K_TBB, 0},
    /* system */
    {"nop", K_NOP, 0}, {"yield", K_NOP, 0}, {"wfi", K_NOP, 0}, {"wfe", K_NOP, 0},
    {"sev", K_NOP, 0}, {"bkpt", K_NOP, 0}, {"udf", K_NOP, 0}, {"clrex", K_NOP, 0},
    {"mrs", K_SYS, 0}, {"msr", K_SYS, 0}, {"cpsid", K_SYS, 0}, {"cpsie", K_SYS, 0},
    {"dmb", K_BARRIER, 0}, {"dsb", K_BARRIER, 0}, {"isb", K_ISB, 0},
    {"svc", K_SVC, 0},
};

static const char *const conds[] = {
    "eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc",
    "hi", "ls", "ge", "lt", "gt", "le", "al",
};

static bool is_cond(const char *s)
{
    for (size_t i = 0; i < sizeof(conds) / sizeof(conds[0]); i++) {
        if (strcmp(s, conds[i]) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * Match a mnemonic as <base>[s][<cond>]. Sets *cond when a condition suffix
 * (other than `al`) is present. Returns NULL when unknown.
 */
static const Mnem *lookup_mnemonic(const char *m, bool *cond)
{
    size_t mlen = strlen(m);

    for (size_t i = 0; i < sizeof(mnems) / sizeof(mnems[0]); i++) {
        const Mnem *e = &mnems[i];
        size_t n = strlen(e->name);
        const char *rest;

        if (n > mlen || strncmp(m, e->name, n) != 0) {
            continue;
        }
        rest = m + n;
        if (*rest == 's' && e->s_ok) {
            if (rest[1] == 0 || is_cond(rest + 1)) {
                rest++;
            }
        }
        if (*rest == 0) {
            *cond = false;
            return e;
        }
        if (is_cond(rest)) {
            *cond = strcmp(rest, "al") != 0;
            return e;
        }
    }
    return NULL;
}

/* Number of registers in the first {...} list of the operand text. */
static unsigned count_reglist(const char *ops, bool *has_pc)
{
    const char *p = strchr(ops, '{');
    unsigned n = 0;

    *has_pc = false;
    if (!p) {
        return 0;
    }
    p++;
    while (*p && *p != '}') {
        char tok[16];
        size_t k = 0;
        while (*p == ' ' || *p == ',') {
            p++;
        }
        while (*p && *p != ',' && *p != '}' && *p != ' ' && k + 1 < sizeof(tok)) {
            tok[k++] = *p++;
        }
        tok[k] = 0;
        if (k == 0) {
            continue;
        }
        if (strcmp(tok, "pc") == 0 || strcmp(tok, "r15") == 0) {
            *has_pc = true;
        }
        /* ranges such as r4-r7 */
        if (tok[0] == 'r' && strchr(tok, '-')) {
            int a = atoi(tok + 1);
            const char *b = strchr(tok, '-') + 1;
            int bb = (*b == 'r') ? atoi(b + 1) : a;
            n += (bb >= a) ? (unsigned)(bb - a + 1) : 1;
            if (bb >= 15) {
                *has_pc = true;
            }
        } else {
            n++;
        }
    }
    return n;
}

/* First operand (destination) is the PC? */
static bool dest_is_pc(const char *ops)
{
    while (*ops == ' ') {
        ops++;
    }
    return (strncmp(ops, "pc", 2) == 0 && (ops[2] == ',' || ops[2] == 0 || ops[2] == ' '))
        || (strncmp(ops, "r15", 3) == 0 && (ops[3] == ',' || ops[3] == 0 || ops[3] == ' '));
}

/* Class of one instruction from its capstone text (the former classifier). */
static void classify_text(const char *text, Class *c)
{
    char m[24];
    size_t k = 0;
    const char *ops;
    const Mnem *e;
    bool cond = false, pc = false;
    unsigned n;

    memset(c, 0, sizeof(*c));
    while (*text == ' ') {
        text++;
    }
    while (text[k] && !isspace((unsigned char)text[k]) && k + 1 < sizeof(m)) {
        m[k] = (char)tolower((unsigned char)text[k]);
        k++;
    }
    m[k] = 0;
    ops = text + k;
    /* width qualifiers: .w / .n */
    if (k > 2 && m[k - 2] == '.' && (m[k - 1] == 'w' || m[k - 1] == 'n')) {
        m[k - 2] = 0;
    }
    if (m[0] == 0) {
        return;                                    /* K_UNKNOWN */
    }
    if (m[0] == 'i' && m[1] == 't' && strspn(m + 2, "te") == strlen(m + 2) &&
        strlen(m) <= 5) {
        c->cls = K_IT;
        return;
    }
    e = lookup_mnemonic(m, &cond);
    if (!e) {
        return;                                    /* K_UNKNOWN */
    }
    c->cls = (uint8_t)e->cls;
    c->cond = cond;
    switch (e->cls) {
    case K_ALU:
    case K_LDR:
        c->pc = dest_is_pc(ops);
        break;
    case K_LDM:
    case K_STM:
        n = count_reglist(ops, &pc);
        c->n = (uint8_t)(n > 255 ? 255 : n);
        c->pc = e->cls == K_LDM && pc;
        break;
    default:
        break;
    }
}

/* ---- verify=1: cross-check the decoder against the capstone text ------------------- */

#define MAX_MISMATCHES 64

typedef struct {
    uint64_t vaddr;
    uint64_t count;         /* translations of this instruction that mismatched */
    uint8_t bytes[8];
    uint8_t len;
    Class dec, txt;
    char disas[64];
} Mismatch;

static bool verify;
static uint64_t verify_insns;       /* translated instructions checked */
static uint64_t verify_mismatches;  /* of which decoder and capstone text disagree */
static uint64_t verify_lost;        /* distinct mismatches beyond MAX_MISMATCHES */
static Mismatch mismatches[MAX_MISMATCHES];
static int n_mismatches;

static void verify_insn(struct qemu_plugin_insn *insn, uint64_t vaddr,
                        const uint8_t *data, size_t len, const Class *dec)
{
    char *text = qemu_plugin_insn_disas(insn);
    Class txt;
    Mismatch *m;
    int i;

    classify_text(text ? text : "", &txt);
    verify_insns++;
    if (txt.cls == dec->cls && class_cost(&txt, ws) == class_cost(dec, ws) &&
        class_cost(&txt, ws + 1) == class_cost(dec, ws + 1)) {
        free(text);
        return;
    }
    verify_mismatches++;
    if (len > sizeof(mismatches[0].bytes)) {
        len = sizeof(mismatches[0].bytes);
    }
    for (i = 0; i < n_mismatches; i++) {
        m = &mismatches[i];
        if (m->vaddr == vaddr && m->len == len && memcmp(m->bytes, data, len) == 0) {
            m->count++;
            free(text);
            return;
        }
    }
    if (n_mismatches == MAX_MISMATCHES) {
        verify_lost++;
        free(text);
        return;
    }
    m = &mismatches[n_mismatches++];
    memset(m, 0, sizeof(*m));
    m->vaddr = vaddr;
    m->count = 1;
    m->len = (uint8_t)len;
    memcpy(m->bytes, data, len);
    m->dec = *dec;
    m->txt = txt;
    /* printable ASCII only: the plugin file is ASCII */
    for (i = 0; text && text[i] && i + 1 < (int)sizeof(m->disas); i++) {
        unsigned char ch = (unsigned char)text[i];
        m->disas[i] = (ch >= 0x20 && ch < 0x7f && ch != '"') ? (char)ch : '?';
    }
    free(text);
}

static void format_class(char *buf, size_t size, const Class *c)
{
    int k = snprintf(buf, size, "%s", c->cls < K_COUNT ? cls_names[c->cls] : "?");

    if (c->cls == K_LDM || c->cls == K_STM) {
        k += snprintf(buf + k, size - (size_t)k, "(n=%u)", c->n);
    }
    if (c->pc) {
        k += snprintf(buf + k, size - (size_t)k, ",pc");
    }
    if (c->cond) {
        snprintf(buf + k, size - (size_t)k, ",cond");
    }
}

static void write_verify(FILE *f)
{
    fprintf(f, "# verify insns %" PRIu64 " mismatches %" PRIu64 " distinct %d%s\n",
            verify_insns, verify_mismatches, n_mismatches, verify_lost ? "+" : "");
    for (int i = 0; i < n_mismatches; i++) {
        const Mismatch *m = &mismatches[i];
        char hex[24] = "", dc[32], tc[32];

        for (int h = 0; h + 1 < m->len; h += 2) {
            snprintf(hex + strlen(hex), sizeof(hex) - strlen(hex), "%s%02x%02x",
                     h ? " " : "", m->bytes[h + 1], m->bytes[h]);
        }
        format_class(dc, sizeof(dc), &m->dec);
        format_class(tc, sizeof(tc), &m->txt);
        fprintf(f, "# mismatch 0x%08" PRIx64 " %s \"%s\" decoder=%s capstone=%s x%" PRIu64
                "\n", m->vaddr, hex, m->disas, dc, tc, m->count);
    }
}

/* ---- translation --------------------------------------------------------------- */

/*
 * Counting is exact per instruction, but needs no inline op on most of them:
 *
 * - A segment is a run of instructions of one TB that ends at the first instruction
 *   that may stop the TB before its end: a memory access (an MMIO access in the middle
 *   of a TB under -icount makes QEMU abandon the TB at that instruction and re-execute
 *   it in a new TB without instruction instrumentation, see cpu_io_recompile; or it
 *   faults), a helper that may raise an exception (divide, MSR/MRS, ...), anything not
 *   decoded. The other instructions (data processing, multiplies, barriers) cannot,
 *   and branches end the TB anyway. Once a segment's first instruction starts, all of
 *   the segment retires (up to and including the instruction that ends it, which
 *   counts even when it is abandoned, as before), so one pair of inline adds on its
 *   first instruction counts the whole segment: `insns += n`, `extra_cycles += sum of
 *   (cost - 1)` (omitted when 0). Interrupts are taken only between TBs.
 * - An event stub starts a new segment: its exec callback, registered first, runs
 *   before the stub's own adds and so stamps everything retired before the stub.
 * - A run killed by a signal mid-segment may have counted up to one segment ahead.
 */

/* May this instruction stop its TB before the TB's end? (see above) */
static bool ends_segment(const Class *c)
{
    switch ((enum cls)c->cls) {
    case K_ALU:
    case K_MUL:
    case K_MLA:
    case K_LMUL:
    case K_LMLA:
    case K_IT:
    case K_BARRIER:
    case K_ISB:
    case K_B:               /* branches: last in their TB */
    case K_BL:
    case K_BX:
    case K_CBZ:
        return false;
    default:
        return true;        /* loads/stores, tbb, div, sys, svc, nop (bkpt, udf), unknown */
    }
}

typedef struct {
    struct qemu_plugin_insn *first;
    uint64_t n, cost;
} Segment;

static void segment_end(Segment *seg)
{
    if (!seg->first) {
        return;
    }
    if (seg->cost > seg->n) {
        qemu_plugin_register_vcpu_insn_exec_inline(
            seg->first, QEMU_PLUGIN_INLINE_ADD_U64, &extra_cycles, seg->cost - seg->n);
    }
    qemu_plugin_register_vcpu_insn_exec_inline(
        seg->first, QEMU_PLUGIN_INLINE_ADD_U64, &insns, seg->n);
    memset(seg, 0, sizeof(*seg));
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    Segment seg = {0};

    (void)id;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
        const uint8_t *data = qemu_plugin_insn_data(insn);
        size_t len = qemu_plugin_insn_size(insn);
        Class c;
        uint64_t cost;

        decode_thumb(data, len, &c);
        if (c.cls == K_UNKNOWN) {
            unclassified++;
        }
        if (verify) {
            verify_insn(insn, vaddr, data, len, &c);
        }
        cost = class_cost(&c, ws);
        for (int h = 0; h < n_handlers; h++) {
            if (handlers[h] == vaddr) {
                cost += C_EXC_ENTRY;
            }
        }
        if (vaddr >= trace_base && vaddr < trace_base + TRACE_SPAN) {
            segment_end(&seg);
            /* Registered before the segment's adds: the stamp excludes the stub. */
            qemu_plugin_register_vcpu_insn_exec_cb(
                insn, vcpu_trace_stub, QEMU_PLUGIN_CB_NO_REGS,
                (void *)(uintptr_t)(vaddr - trace_base));
        }
        if (!seg.first) {
            seg.first = insn;
        }
        seg.n++;
        seg.cost += cost;
        if (ends_segment(&c)) {
            segment_end(&seg);
        }
    }
    segment_end(&seg);
}

/* ---- exit: write the file once ----------------------------------------------- */

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    char *tmp;
    FILE *f;
    size_t len;

    (void)id;
    (void)p;
    if (!out_path) {
        return;
    }
    len = strlen(out_path) + 8;
    tmp = malloc(len);
    if (!tmp) {
        return;
    }
    snprintf(tmp, len, "%s.part", out_path);
    f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "slicert_cycles: cannot write %s: %s\n", tmp, strerror(errno));
        free(tmp);
        return;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    fprintf(f, "# slicert-plugin %s cycle-model %s\n",
            SLICERT_PLUGIN_VERSION, CYCLE_MODEL_VERSION);
    fprintf(f, "# trace_base 0x%" PRIx64 " ws %u handlers %d unclassified %" PRIu64 "\n",
            trace_base, ws, n_handlers, unclassified);
    if (verify) {
        write_verify(f);
    }
    for (size_t i = 0; i < n_events; i++) {
        fprintf(f, "E %" PRIu32 " %" PRIu64 " %" PRIu64 " %" PRIu32 "\n",
                events[i].id, events[i].cycles, events[i].insns, events[i].payload);
    }
    if (dropped_events) {
        fprintf(f, "# overflow dropped %" PRIu64 " events after %zu\n",
                dropped_events, n_events);
    }
    fprintf(f, "T %" PRIu64 " %" PRIu64 "\n", insns + extra_cycles, insns);
    if (fclose(f) != 0 || rename(tmp, out_path) != 0) {
        fprintf(stderr, "slicert_cycles: cannot write %s: %s\n", out_path, strerror(errno));
    }
    free(tmp);
    free(events);
    events = NULL;
    n_events = cap_events = 0;
}

/* ---- arguments ------------------------------------------------------------------- */

static bool parse_u64(const char *s, uint64_t *v)
{
    char *end;
    unsigned long long x;

    if (!s || !*s) {
        return false;
    }
    errno = 0;
    x = strtoull(s, &end, 0);
    if (errno || *end) {
        return false;
    }
    *v = x;
    return true;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        const char *val = eq ? eq + 1 : "";
        size_t klen = eq ? (size_t)(eq - a) : strlen(a);
        uint64_t v;

        if (klen == 10 && strncmp(a, "trace_base", klen) == 0 && parse_u64(val, &v)) {
            trace_base = v & ~(uint64_t)1;
        } else if (klen == 3 && strncmp(a, "out", klen) == 0 && *val) {
            free(out_path);
            out_path = strdup(val);
        } else if (klen == 2 && strncmp(a, "ws", klen) == 0 && parse_u64(val, &v)
                   && v <= 64) {
            ws = (unsigned)v;
        } else if (klen == 6 && strncmp(a, "verify", klen) == 0 && parse_u64(val, &v)
                   && v <= 1) {
            verify = v != 0;
        } else if (klen == 7 && strncmp(a, "handler", klen) == 0 && parse_u64(val, &v)) {
            if (n_handlers == MAX_HANDLERS) {
                fprintf(stderr, "slicert_cycles: more than %d handler= options\n",
                        MAX_HANDLERS);
                return -1;
            }
            handlers[n_handlers++] = v & ~(uint64_t)1;  /* clear the thumb bit */
        } else {
            fprintf(stderr, "slicert_cycles: bad option '%s' (expected trace_base=ADDR, "
                    "out=FILE, ws=N, handler=ADDR, verify=0|1)\n", a);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "slicert_cycles: missing out=FILE\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}

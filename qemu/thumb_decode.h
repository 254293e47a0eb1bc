/*
 * thumb_decode.h: a table-driven Thumb / Thumb-2 (ARMv7-M) instruction classifier and
 * operand decoder, shared by the SliceRT cycle plugin (qemu/slicert_cycles.c) and its
 * cross-check against capstone (tests/support/decoder_check.c).
 *
 * decode_thumb() gives the class of an instruction (what its cost depends on), ARMv7-M;
 * decode_thumb_m4() the same for ARMv7E-M (the Cortex-M4F: DSP and FP instructions too);
 * decode_operands() the registers it writes, the registers its address uses and,
 * for direct branches, the target. Header-only (static functions), no glib.
 */
#ifndef SLICERT_THUMB_DECODE_H
#define SLICERT_THUMB_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- instruction classes ----------------------------------------------------------- */

enum cls {
    K_UNKNOWN,      /* not in the table: cost 1, counted as `unclassified` */
    K_ALU, K_MUL, K_MLA, K_LMUL, K_LMLA, K_DIV, K_LDR, K_LDRD, K_STR, K_STRD,
    K_LDM, K_STM, K_B, K_BL, K_BX, K_CBZ, K_TBB, K_IT, K_NOP, K_SYS,
    K_BARRIER, K_ISB, K_SVC,
    /* ARMv7E-M (Cortex-M4) only: decode_thumb_m4(); decode_thumb() leaves them K_UNKNOWN */
    K_DSP,          /* DSP data processing: SIMD add/sub, QADD.., SSAT16, PKH, SEL, SXTB16.. */
    K_DMUL,         /* DSP multiplies: SMULxy, SMLAxy, SMLAD, SMUAD, SMLALxy, SMLALD, UMAAL.. */
    K_VALU,         /* FP data processing, 1 cycle: VADD VSUB VMUL VNMUL VABS VNEG VCMP VCVT VMOV */
    K_VMLA,         /* FP multiply-accumulate, fused too: VMLA VMLS VNMLA VNMLS VFMA VFMS.. */
    K_VDIV,         /* VDIV, VSQRT */
    K_VLDR,         /* VLDR, VSTR (n = words: 1 single, 2 double) */
    K_VLDM,         /* VLDM, VSTM, VPUSH, VPOP (n = words transferred) */
    K_VMOV,         /* core <-> FP register moves, VMRS, VMSR (n = core registers moved) */
    K_COUNT
};

#define K_FIRST_M4 K_DSP

static const char *const cls_names[K_COUNT] = {
    "unknown", "alu", "mul", "mla", "lmul", "lmla", "div", "ldr", "ldrd", "str", "strd",
    "ldm", "stm", "b", "bl", "bx", "cbz", "tbb", "it", "nop", "sys",
    "barrier", "isb", "svc",
    "dsp", "dmul", "valu", "vmla", "vdiv", "vldr", "vldm", "vmov",
};

/* What the cost of one instruction depends on. */
typedef struct {
    uint8_t cls;    /* enum cls */
    uint8_t n;      /* LDM/STM: registers in the list */
    bool cond;      /* has its own condition field (B<cond>) */
    bool pc;        /* writes the PC: ALU/LDR destination, PC in an LDM list */
} Class;


/* ---- classification from the instruction bytes (the normal path) -----------------
 *
 * A first-match table over the Thumb / Thumb-2 encodings of ARMv7-M (ARM DDI 0403,
 * A5.2 16-bit and A5.3 32-bit encodings). 16-bit instructions are matched on the
 * halfword, 32-bit ones on (hw1 << 16) | hw2. `x` says how to read the operands that
 * the cost depends on. Reserved encodings and those of other profiles or extensions
 * (DSP, FP, coprocessor, ...) fall through to K_UNKNOWN, as capstone's mnemonics for
 * them are not in the table either (the Cortex-M3 models). decode_thumb_m4() (below)
 * classifies the ARMv7E-M DSP and FPv4-SP ones for the Cortex-M4 (cm4-v1).
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
static inline void decode_ls(uint32_t w, Class *c)
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

/*
 * The instruction word: (hw1 << 16) | hw2 for a 32-bit instruction, hw1 for a 16-bit
 * one. False when `len` is too short. The width comes from the first halfword, not
 * from `len` (see decode_thumb).
 */
static inline bool thumb_word(const uint8_t *p, size_t len, uint32_t *w, bool *wide)
{
    uint32_t hw1;

    if (len < 2) {
        return false;
    }
    hw1 = (uint32_t)p[0] | (uint32_t)p[1] << 8;
    *wide = (hw1 & 0xE000) == 0xE000 && (hw1 & 0x1800) != 0;
    if (!*wide) {
        *w = hw1;
        return true;
    }
    if (len < 4) {
        return false;
    }
    *w = hw1 << 16 | (uint32_t)p[2] | (uint32_t)p[3] << 8;
    return true;
}

static inline void decode_thumb(const uint8_t *p, size_t len, Class *c)
{
    uint32_t w;
    bool wide;
    const Pattern *t, *end;
    unsigned rd, sysm;

    /*
     * The length comes from the first halfword, not from `len`: QEMU 7.2 appends the
     * halfword after an instruction near the end of a (1 KiB) guest page to its data
     * (the Thumb translator peeks at it to see whether the next instruction crosses
     * the page), so `len` can be 4 for a 16-bit and 6 for a 32-bit instruction.
     */
    memset(c, 0, sizeof(*c));
    if (!thumb_word(p, len, &w, &wide)) {
        return;
    }
    if (wide) {
        t = thumb32;
        end = thumb32 + sizeof(thumb32) / sizeof(thumb32[0]);
    } else {
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


/* ---- ARMv7E-M: the DSP extension and the FPv4-SP FPU (Cortex-M4F) -----------------
 *
 * decode_thumb_m4() is decode_thumb() plus the encodings the Cortex-M4 adds: only the
 * ones decode_thumb() leaves K_UNKNOWN are looked at, so every ARMv7-M instruction keeps
 * its class (and its cm3 cost rules) on the M4. References: ARM DDI 0403 (ARMv7-M ARM)
 * A5.3.3 (SSAT16, USAT16), A5.3.11 (PKHBT, PKHTB), A5.3.12-15 (extend-and-add, parallel
 * add/sub, QADD.., SEL), A5.3.16-17 (DSP multiplies), A6.4-6.6 (FP data processing,
 * extension register loads/stores, core <-> FP register transfers). Checked against
 * capstone by tests/support/decoder_check.c (--m4).
 */

/* 32-bit DSP encodings (first match). X_NONE: valid as matched; the X_* below check. */
enum xop_m4 {
    XM_NONE,
    XM_PAR,         /* parallel add/sub: op1 = hw1[6:4] not 011/111, op2 = hw2[5:4] != 11 */
    XM_MUL16,       /* A5.3.16: op1 = hw1[6:4]: 001 any op2; 010-110 op2 0x; 111 op2 00 */
    XM_EXT,         /* A5.3.12 extend (and add): op1 = hw1[6:4] 000-101 (110, 111 undefined) */
};

typedef struct {
    uint32_t mask, match;
    uint8_t cls;
    uint8_t x;      /* enum xop_m4 */
} PatternM4;

static const PatternM4 thumb32_m4[] = {
    {0xFFF00010, 0xEAC00000, K_DSP, XM_NONE},       /* pkhbt, pkhtb (hw2[15]: capstone ignores it) */
    {0xFFF0F0F0, 0xF3200000, K_DSP, XM_NONE},       /* ssat16 */
    {0xFFF0F0F0, 0xF3A00000, K_DSP, XM_NONE},       /* usat16 */
    {0xFF80F080, 0xFA00F080, K_DSP, XM_EXT},        /* sxtah uxtah sxtab16 uxtab16 sxtab
                                                       uxtab, sxtb16 uxtb16 (Rn = 1111) */
    {0xFF80F080, 0xFA80F000, K_DSP, XM_PAR},        /* [su]add16 [su]asx .. [us]h/q forms */
    {0xFFF0F0C0, 0xFA80F080, K_DSP, XM_NONE},       /* qadd qdadd qsub qdsub */
    {0xFFF0F0F0, 0xFAA0F080, K_DSP, XM_NONE},       /* sel */
    {0xFF8000C0, 0xFB000000, K_DMUL, XM_MUL16},     /* smulxy smlaxy smuad smlad smulwy
                                                       smlawy smusd smlsd smmul smmla
                                                       smmls usad8 usada8 */
    {0xFFF000C0, 0xFBC00080, K_DMUL, XM_NONE},      /* smlalbb smlalbt smlaltb smlaltt */
    {0xFFF000E0, 0xFBC000C0, K_DMUL, XM_NONE},      /* smlald, smlaldx */
    {0xFFF000E0, 0xFBD000C0, K_DMUL, XM_NONE},      /* smlsld, smlsldx */
    {0xFFF000F0, 0xFBE00060, K_DMUL, XM_NONE},      /* umaal */
};

/* FP (coprocessor 10/11) encodings: hw1 = 1110 11xx, coproc = hw2[11:9] = 101. */
static inline void decode_vfp(uint32_t w, Class *c)
{
    uint32_t hw1 = w >> 16, hw2 = w & 0xFFFF;
    bool dbl = (hw2 & 0x100) != 0;

    if ((hw2 & 0x0E00) != 0x0A00) {
        return;                                     /* other coprocessors: K_UNKNOWN */
    }
    if ((hw1 & 0xFF00) == 0xEE00 && !(hw2 & 0x10)) {
        /* A6.4 data processing: opc1 = hw1[7], hw1[5:4] (hw1[6] is D), opc3 = hw2[7:6] */
        unsigned op = (hw1 >> 5 & 4) | (hw1 >> 4 & 3), opc2 = hw1 & 15;
        bool o6 = (hw2 & 0x40) != 0, o7 = (hw2 & 0x80) != 0;

        switch (op) {
        case 0: case 1:                             /* vmla vmls, vnmla vnmls */
        case 5: case 6:                             /* vfnma vfnms, vfma vfms */
            c->cls = K_VMLA;
            break;
        case 2: case 3:                             /* vmul vnmul, vadd vsub */
            c->cls = K_VALU;
            break;
        case 4:                                     /* vdiv */
            if (!o6) {
                c->cls = K_VDIV;
            }
            break;
        default:                                    /* 7: other data processing */
            if (!o6) {
                if (!(hw2 & 0xB0)) {
                    c->cls = K_VALU;                /* vmov immediate (hw2[7:4] = 0000) */
                }
            } else if (opc2 == 1 && o7) {
                c->cls = K_VDIV;                    /* vsqrt */
            } else if (opc2 == 5 && (hw2 & 0x2F)) {
                /* vcmp(e) with #0.0: M, Vm should be zero */
            } else if (opc2 != 6 && opc2 != 9 && !(opc2 == 7 && !o7)) {
                /* vmov reg, vabs, vneg, vcvtb/t, vcmp(e), vcvt f32<->f64 / int / fixed */
                c->cls = K_VALU;
            }
            break;
        }
        c->n = 1;
        return;
    }
    if ((hw1 & 0xFF00) == 0xEE00) {
        /* A6.6 8/16/32-bit transfers: L = hw1[4], C = hw2[8], A = hw1[7:5] */
        unsigned a = hw1 >> 5 & 7, reg = hw1 & 15;
        bool sbz = (hw2 & 0x6F) == 0, ok;

        if (!dbl && a == 7) {
            /* vmrs: fpsid fpscr mvfr2-0 fpexc fpinst(2); vmsr: fpsid fpscr fpexc fpinst(2),
             * its should-be-zero bits 6:5, 3:0 not checked (as capstone decodes them) */
            ok = (hw1 & 0x10) ? !(hw2 & 0xEF) && (reg <= 1 || (reg >= 5 && reg <= 10))
                              : !(hw2 & 0x80) && (reg <= 1 || (reg >= 8 && reg <= 10));
        } else {
            ok = sbz && ((!dbl && a == 0) || (dbl && (a & 6) == 0));
        }
        if (ok) {
            c->cls = K_VMOV;                        /* vmov s<->r, vmrs/vmsr, vmov d[x]<->r */
            c->n = 1;
        }
        return;
    }
    /* A6.5 extension register load/store (hw1 = 1110 110P UDWL Rn) */
    {
        unsigned puw = (hw1 >> 6 & 6) | (hw1 >> 5 & 1);    /* P U W */
        unsigned imm8 = hw2 & 0xFF;

        if ((hw1 & 0xFFE0) == 0xEC40) {
            /* 64-bit transfers (A6.7): vmov r, r <-> s, s / d */
            if ((hw2 & 0xD0) == 0x10 && (dbl || ((hw2 & 15) << 1 | (hw2 >> 5 & 1)) != 31)) {
                c->cls = K_VMOV;                    /* (two singles: Sm up to s30) */
                c->n = 2;
            }
            return;
        }
        if ((hw1 & 0xFE00) != 0xEC00 || (hw1 & 0x1F0) == 0) {
            return;
        }
        switch (puw) {
        case 2: case 3:                             /* vstm/vldm ia(!), vpop */
        case 5: {                                   /* vstmdb!/vldmdb!, vpush */
            /* n = words; a list past the last register (UNPREDICTABLE) is counted to it,
             * at most 16 doubles, as capstone lists it */
            unsigned vd = hw2 >> 12, d = hw1 >> 6 & 1;

            if (dbl && (imm8 & 1)) {
                return;                             /* fldmx/fstmx (not ARMv7-M) */
            }
            imm8 = imm8 ? imm8 : (dbl ? 2 : 1);     /* capstone lists one register */
            if (dbl) {
                unsigned first = d << 4 | vd, regs = imm8 / 2;

                regs = regs > 16 ? 16 : regs;
                regs = regs > 32 - first ? 32 - first : regs;
                c->n = (uint8_t)(2 * regs);
            } else {
                unsigned first = vd << 1 | d;

                c->n = (uint8_t)(imm8 > 32 - first ? 32 - first : imm8);
            }
            if (c->n) {
                c->cls = K_VLDM;
            }
            return;
        }
        case 4: case 6:                             /* vstr, vldr (P = 1, W = 0) */
            c->cls = K_VLDR;
            c->n = dbl ? 2 : 1;
            return;
        default:
            return;
        }
    }
}

static inline void decode_thumb_m4(const uint8_t *p, size_t len, Class *c)
{
    uint32_t w;
    bool wide;
    const PatternM4 *t, *end = thumb32_m4 + sizeof(thumb32_m4) / sizeof(thumb32_m4[0]);

    decode_thumb(p, len, c);
    if (c->cls != K_UNKNOWN || !thumb_word(p, len, &w, &wide) || !wide) {
        return;
    }
    if ((w & 0xEC000000) == 0xEC000000 && !(w & 0x10000000)) {
        decode_vfp(w, c);
        return;
    }
    for (t = thumb32_m4; t < end && (w & t->mask) != t->match; t++) {
    }
    if (t == end) {
        return;
    }
    switch ((enum xop_m4)t->x) {
    case XM_NONE:
        break;
    case XM_PAR: {
        unsigned op1 = w >> 20 & 7, op2 = w >> 4 & 3;

        if (op1 == 3 || op1 == 7 || op2 == 3) {
            return;
        }
        break;
    }
    case XM_EXT:
        if ((w >> 20 & 7) > 5) {
            return;
        }
        break;
    case XM_MUL16: {
        unsigned op1 = w >> 20 & 7, op2 = w >> 4 & 3;

        if (op1 == 0 || (op1 >= 2 && op1 <= 6 && op2 > 1) || (op1 == 7 && op2 != 0)) {
            return;
        }
        break;
    }
    }
    c->cls = t->cls;
}


/* ---- operands (for the pipeline rules of cm3-v2) ----------------------------------- */

typedef struct {
    bool wide;          /* 32-bit encoding */
    uint16_t wmask;     /* registers written (data processing, load destination) */
    uint16_t amask;     /* registers used to form a load/store address (Rn, Rm) */
    bool str_imm;       /* store with an immediate offset (STR Rx,[Ry,#imm] and SP forms) */
    bool literal;       /* PC-relative load */
    bool direct;        /* direct branch with a known target */
    uint32_t target;    /* its target address */
} Operands;

static inline uint32_t sext(uint32_t v, unsigned bits)
{
    uint32_t m = 1u << (bits - 1);
    return (v ^ m) - m;
}

#define R(x) ((uint16_t)(1u << ((x) & 15)))

/* Operands of the instruction at `addr` (bytes p, class c from decode_thumb). */
static inline void decode_operands(const uint8_t *p, size_t len, uint32_t addr, const Class *c,
                            Operands *o)
{
    uint32_t hw1, hw2, w;
    bool wide;

    memset(o, 0, sizeof(*o));
    if (!thumb_word(p, len, &w, &wide)) {
        return;
    }
    if (wide) {
        o->wide = true;
        hw1 = w >> 16;
        hw2 = w & 0xFFFF;
        switch ((enum cls)c->cls) {
        case K_ALU:
        case K_MUL:
        case K_MLA:
        case K_DIV:
            o->wmask = R(hw2 >> 8);
            break;
        case K_LMUL:
        case K_LMLA:
            o->wmask = R(hw2 >> 8) | R(hw2 >> 12);
            break;
        case K_LDR:
        case K_STR:
            if ((hw1 & 0xFE00) == 0xE800) {         /* ldrex/strex */
                o->amask = R(hw1);
                o->wmask = c->cls == K_LDR ? R(hw2 >> 12) : 0;
                break;
            }
            o->literal = (hw1 & 15) == 15;
            o->amask = R(hw1);
            if (!(w & 0x800000) && !(hw2 & 0x800) && !o->literal) {
                o->amask |= R(hw2);                 /* [Rn, Rm, lsl #k] */
            } else if (c->cls == K_STR) {
                o->str_imm = true;
            }
            if (c->cls == K_LDR) {
                o->wmask = R(hw2 >> 12);
            }
            break;
        case K_LDRD:
        case K_STRD:
        case K_LDM:
        case K_STM:
            o->amask = R(hw1);
            break;
        case K_TBB:
            o->amask = R(hw1) | R(hw2);
            break;
        case K_DSP:                                 /* ARMv7E-M (decode_thumb_m4) */
        case K_DMUL:
            o->wmask = R(hw2 >> 8);
            if ((hw1 & 0xFF80) == 0xFB80) {         /* long forms: RdLo, RdHi */
                o->wmask |= R(hw2 >> 12);
            }
            break;
        case K_VLDR:
        case K_VLDM:
            o->amask = R(hw1);
            o->literal = c->cls == K_VLDR && (hw1 & 15) == 15;
            break;
        case K_VMOV:
            if ((hw1 & 0x10) && (hw2 >> 12) != 15) {  /* to core registers (L = 1);
                                                         not vmrs APSR_nzcv */
                o->wmask = (c->n == 2 ? R(hw1) : 0) | R(hw2 >> 12);
            }
            break;
        case K_B:
        case K_BL:
            o->direct = true;
            if (c->cond) {                          /* T3: S:J2:J1:imm6:imm11:0 */
                uint32_t imm = ((hw1 >> 10) & 1) << 20 | ((hw2 >> 11) & 1) << 19 |
                               ((hw2 >> 13) & 1) << 18 | (hw1 & 0x3F) << 12 |
                               (hw2 & 0x7FF) << 1;
                o->target = addr + 4 + sext(imm, 21);
            } else {                                /* T4: S:I1:I2:imm10:imm11:0 */
                uint32_t s = (hw1 >> 10) & 1;
                uint32_t i1 = !(((hw2 >> 13) & 1) ^ s), i2 = !(((hw2 >> 11) & 1) ^ s);
                uint32_t imm = s << 24 | i1 << 23 | i2 << 22 | (hw1 & 0x3FF) << 12 |
                               (hw2 & 0x7FF) << 1;
                o->target = addr + 4 + sext(imm, 25);
            }
            break;
        default:
            break;
        }
        return;
    }
    switch ((enum cls)c->cls) {
    case K_ALU:
    case K_MUL:
        if ((w & 0xC000) == 0x0000) {               /* shift, add, sub, mov, cmp */
            if ((w & 0xE000) == 0x2000) {
                o->wmask = ((w >> 11) & 3) == 1 ? 0 : R(w >> 8);   /* cmp: none */
            } else {
                o->wmask = R(w);
            }
        } else if ((w & 0xFC00) == 0x4000) {        /* data processing */
            unsigned op = (w >> 6) & 15;
            o->wmask = (op == 8 || op == 10 || op == 11) ? 0 : R(w);
        } else if ((w & 0xFC00) == 0x4400) {        /* add/cmp/mov high */
            o->wmask = ((w >> 8) & 3) == 1 ? 0 : R((w >> 4 & 8) | (w & 7));
        } else if ((w & 0xF000) == 0xA000) {        /* adr, add rd, sp, #imm */
            o->wmask = R(w >> 8);
        } else if ((w & 0xFF00) == 0xB000) {        /* add/sub sp, sp, #imm */
            o->wmask = R(13);
        } else {                                    /* extend, reverse */
            o->wmask = R(w);
        }
        break;
    case K_LDR:
    case K_STR:
        if ((w & 0xF800) == 0x4800) {               /* ldr rt, [pc, #imm] */
            o->literal = true;
            o->wmask = R(w >> 8);
        } else if ((w & 0xF000) == 0x9000) {        /* [sp, #imm] */
            o->amask = R(13);
            o->wmask = c->cls == K_LDR ? R(w >> 8) : 0;
            o->str_imm = c->cls == K_STR;
        } else if ((w & 0xF000) == 0x5000) {        /* [rn, rm] */
            o->amask = R(w >> 3) | R(w >> 6);
            o->wmask = c->cls == K_LDR ? R(w) : 0;
        } else {                                    /* [rn, #imm5] */
            o->amask = R(w >> 3);
            o->wmask = c->cls == K_LDR ? R(w) : 0;
            o->str_imm = c->cls == K_STR;
        }
        break;
    case K_LDM:
    case K_STM:
        o->amask = (w & 0xF000) == 0xB000 ? R(13) : R(w >> 8);
        break;
    case K_B:
        o->direct = true;
        if (c->cond) {
            o->target = addr + 4 + sext((w & 0xFF) << 1, 9);
        } else {
            o->target = addr + 4 + sext((w & 0x7FF) << 1, 12);
        }
        break;
    case K_CBZ:
        o->direct = true;
        o->target = addr + 4 + (((w >> 9) & 1) << 6 | ((w >> 3) & 0x1F) << 1);
        break;
    default:
        break;
    }
}

#undef R

/* Length in bytes of the instruction whose first halfword is hw1. */
static inline unsigned thumb_insn_len(uint32_t hw1)
{
    return ((hw1 & 0xE000) == 0xE000 && (hw1 & 0x1800) != 0) ? 4 : 2;
}

#endif /* SLICERT_THUMB_DECODE_H */

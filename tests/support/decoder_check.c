/*
 * Cross-check of qemu/thumb_decode.h (the cycle plugin's byte decoder) against the
 * capstone-text classifier it replaced (plugin 1.0.0), over Thumb encodings, calling
 * capstone the way QEMU 7.2's qemu_plugin_insn_disas() did (CS_MODE_THUMB |
 * CS_MODE_MCLASS, skipdata on, a fresh handle per instruction, so no IT-block state).
 * The classes must agree, and so must the cm3-v1 costs of each class (ws 0..2), which
 * compares the operand fields (register counts, PC writes, conditions) that matter.
 *
 *   decoder_check [SAMPLES [FULL_HW1...]]
 *   decoder_check --m4 [SAMPLES [FULL_HW1...]]
 *
 * Checks all 16-bit encodings and, for every 32-bit first halfword, SAMPLES random
 * second halfwords (all 65536 for the FULL_HW1 values given, in hex). Prints each
 * mismatch (up to 50) and a summary line; exits 1 on any mismatch.
 *
 * --m4: decode_thumb_m4() (the Cortex-M4's DSP and FPv4-SP encodings, model cm4-v1)
 * against capstone's text over the first halfwords that hold them (PKH 0xEA, the
 * coprocessor space 0xEC-0xEF, SSAT16/USAT16 0xF3, the DSP space 0xFA-0xFB): the class
 * and the operand count its cost depends on (FP registers moved, core registers moved)
 * must agree. Capstone decodes Advanced SIMD (NEON) and double-precision arithmetic,
 * which no Cortex-M has: those texts (a `q`/`d` register or an `.f64`/`.i`/`.u` type in a
 * data-processing form) are expected to be unclassified on the decoder's side too only
 * where the encoding is outside coprocessors 10/11; double-precision VFP forms
 * (UNDEFINED on the single-precision FPU) keep their single-precision class.
 *
 * Build: gcc -O2 -I qemu decoder_check.c -lcapstone
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "thumb_decode.h"

#include <capstone/capstone.h>

/* ---- cycle model cm3-v1 (the table the classifiers were checked with) ---------- */
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
    case K_DSP:                 /* ARMv7E-M classes: class_cost_m4() (--m4) */
    case K_DMUL:
    case K_VALU:
    case K_VMLA:
    case K_VDIV:
    case K_VLDR:
    case K_VLDM:
    case K_VMOV:
    case K_UNKNOWN:
    case K_COUNT:
        break;
    }
    return 1;
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

/* ---- ARMv7E-M (--m4): the DSP and FP mnemonics of capstone, and their classes ---- */

static const Mnem mnems_m4[] = {
    {"sxtab", K_DSP, 0}, {"sxtah", K_DSP, 0}, {"uxtab", K_DSP, 0}, {"uxtah", K_DSP, 0},
    {"sxtab16", K_DSP, 0}, {"uxtab16", K_DSP, 0}, {"sxtb16", K_DSP, 0},
    {"uxtb16", K_DSP, 0}, {"sel", K_DSP, 0}, {"ssat16", K_DSP, 0}, {"usat16", K_DSP, 0},
    {"pkhbt", K_DSP, 0}, {"pkhtb", K_DSP, 0}, {"qadd", K_DSP, 0}, {"qdadd", K_DSP, 0},
    {"qsub", K_DSP, 0}, {"qdsub", K_DSP, 0},
    {"smulbb", K_DMUL, 0}, {"smulbt", K_DMUL, 0}, {"smultb", K_DMUL, 0},
    {"smultt", K_DMUL, 0}, {"smlabb", K_DMUL, 0}, {"smlabt", K_DMUL, 0},
    {"smlatb", K_DMUL, 0}, {"smlatt", K_DMUL, 0}, {"smlad", K_DMUL, 0},
    {"smladx", K_DMUL, 0}, {"smuad", K_DMUL, 0}, {"smuadx", K_DMUL, 0},
    {"smlsd", K_DMUL, 0}, {"smlsdx", K_DMUL, 0}, {"smusd", K_DMUL, 0},
    {"smusdx", K_DMUL, 0}, {"smulwb", K_DMUL, 0}, {"smulwt", K_DMUL, 0},
    {"smlawb", K_DMUL, 0}, {"smlawt", K_DMUL, 0}, {"smmul", K_DMUL, 0},
    {"smmulr", K_DMUL, 0}, {"smmla", K_DMUL, 0}, {"smmlar", K_DMUL, 0},
    {"smmls", K_DMUL, 0}, {"smmlsr", K_DMUL, 0}, {"usad8", K_DMUL, 0},
    {"usada8", K_DMUL, 0}, {"smlalbb", K_DMUL, 0}, {"smlalbt", K_DMUL, 0},
    {"smlaltb", K_DMUL, 0}, {"smlaltt", K_DMUL, 0}, {"smlald", K_DMUL, 0},
    {"smlaldx", K_DMUL, 0}, {"smlsld", K_DMUL, 0}, {"smlsldx", K_DMUL, 0},
    {"umaal", K_DMUL, 0},
    {"vadd", K_VALU, 0}, {"vsub", K_VALU, 0}, {"vmul", K_VALU, 0}, {"vnmul", K_VALU, 0},
    {"vabs", K_VALU, 0}, {"vneg", K_VALU, 0}, {"vcmp", K_VALU, 0}, {"vcmpe", K_VALU, 0},
    {"vcvt", K_VALU, 0}, {"vcvtr", K_VALU, 0}, {"vcvtb", K_VALU, 0}, {"vcvtt", K_VALU, 0},
    {"vmla", K_VMLA, 0}, {"vmls", K_VMLA, 0}, {"vnmla", K_VMLA, 0}, {"vnmls", K_VMLA, 0},
    {"vfma", K_VMLA, 0}, {"vfms", K_VMLA, 0}, {"vfnma", K_VMLA, 0}, {"vfnms", K_VMLA, 0},
    {"vdiv", K_VDIV, 0}, {"vsqrt", K_VDIV, 0},
    {"vldr", K_VLDR, 0}, {"vstr", K_VLDR, 0},
    {"vldmia", K_VLDM, 0}, {"vldmdb", K_VLDM, 0}, {"vstmia", K_VLDM, 0},
    {"vstmdb", K_VLDM, 0}, {"vpush", K_VLDM, 0}, {"vpop", K_VLDM, 0},
    {"vmrs", K_VMOV, 0}, {"vmsr", K_VMOV, 0}, {"vmov", K_VMOV, 0},
};

/* The parallel add/subtract family: <prefix><op><size> (A5.3.13-14). */
static bool is_parallel(const char *m)
{
    static const char *const pre[] = {"s", "q", "sh", "u", "uq", "uh"};
    static const char *const ops[] = {"add16", "asx", "sax", "sub16", "add8", "sub8"};
    char name[16];

    for (size_t i = 0; i < 6; i++) {
        for (size_t j = 0; j < 6; j++) {
            snprintf(name, sizeof(name), "%s%s", pre[i], ops[j]);
            if (strcmp(m, name) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* Registers of a {...} list, counting a d register as two words. */
static unsigned count_fp_words(const char *ops)
{
    const char *p = strchr(ops, '{');
    unsigned n = 0;

    if (!p) {
        return 0;
    }
    for (p++; *p && *p != '}'; p++) {
        if ((*p == 's' || *p == 'd') && (p[-1] == '{' || p[-1] == ' ' || p[-1] == '-')) {
            unsigned w = *p == 'd' ? 2u : 1u;
            unsigned a = (unsigned)atoi(p + 1);
            const char *q = p + 1;

            while (isdigit((unsigned char)*q)) {
                q++;
            }
            if (*q == '-') {
                unsigned b = (unsigned)atoi(q + 2);
                n += (b >= a ? b - a + 1 : 1) * w;
                p = q + 1;
                while (isdigit((unsigned char)p[1])) {
                    p++;
                }
            } else {
                n += w;
            }
        }
    }
    return n;
}

/* Core registers among the operands (r0-r12, sp, lr, pc, apsr_nzcv). */
static unsigned count_core_regs(const char *ops)
{
    unsigned n = 0;
    const char *p = ops;

    while (*p) {
        while (*p == ' ' || *p == ',') {
            p++;
        }
        static const char *const alias[] = {"sp", "lr", "pc", "ip", "sb", "sl", "fp"};
        bool two = false;

        for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++) {
            two |= strncmp(p, alias[i], 2) == 0 && (p[2] == 0 || p[2] == ',');
        }
        if ((p[0] == 'r' && isdigit((unsigned char)p[1])) || two ||
            strncmp(p, "apsr", 4) == 0) {
            n++;
        }
        while (*p && *p != ',') {
            p++;
        }
    }
    return n;
}

/* Class of an instruction from capstone's text, ARMv7E-M: the ARMv7-M classifier, then
 * the DSP and FP mnemonics. *simd: capstone's text is Advanced SIMD (no Cortex-M has it). */
static void classify_text_m4(const char *text, Class *c, bool *simd)
{
    char m[24];
    size_t k = 0;
    const char *ops;
    char *dot;

    *simd = false;
    classify_text(text, c);
    if (c->cls != K_UNKNOWN) {
        return;
    }
    while (*text == ' ') {
        text++;
    }
    while (text[k] && !isspace((unsigned char)text[k]) && k + 1 < sizeof(m)) {
        m[k] = (char)tolower((unsigned char)text[k]);
        k++;
    }
    m[k] = 0;
    ops = text + k;
    if (strstr(ops, "q") && m[0] == 'v' && strstr(ops, " q")) {
        *simd = true;
        return;
    }
    dot = strchr(m, '.');
    if (dot) {
        if (strstr(dot, ".i") || strstr(dot, ".u") || strstr(dot, ".s8") ||
            strstr(dot, ".s16") || strstr(dot, ".p") || strstr(dot, ".8") ||
            strstr(dot, ".16")) {
            if (strncmp(m, "vcvt", 4) != 0) {
                *simd = true;
                return;
            }
        }
        *dot = 0;
    }
    if (is_parallel(m)) {
        c->cls = K_DSP;
        return;
    }
    for (size_t i = 0; i < sizeof(mnems_m4) / sizeof(mnems_m4[0]); i++) {
        if (strcmp(m, mnems_m4[i].name) != 0) {
            continue;
        }
        c->cls = (uint8_t)mnems_m4[i].cls;
        switch (c->cls) {
        case K_VLDR:
            while (*ops == ' ') {
                ops++;
            }
            c->n = *ops == 'd' ? 2 : 1;
            break;
        case K_VLDM:
            c->n = (uint8_t)count_fp_words(ops);
            break;
        case K_VMOV:
            c->n = (uint8_t)count_core_regs(ops);
            if (c->n == 0) {
                c->cls = K_VALU;            /* vmov between FP registers, immediate */
            }
            break;
        default:
            break;
        }
        if (c->cls == K_VALU || c->cls == K_VMLA || c->cls == K_VDIV) {
            c->n = 1;
        }
        return;
    }
}

/* cm4-v1 cost of a class (what a disagreement on the fields would change). */
static uint64_t class_cost_m4(const Class *c)
{
    switch ((enum cls)c->cls) {
    case K_DSP:
    case K_DMUL:
    case K_VALU:
        return 1;
    case K_VMLA:
        return 3;
    case K_VDIV:
        return 14;
    case K_VLDR:
    case K_VLDM:
        return 1 + c->n;
    case K_VMOV:
        return c->n;
    default:
        return class_cost(c, 0);
    }
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

static csh handle;
static cs_insn *cap;
static uint64_t checked, bad, simd_skipped;
static bool m4_mode;

static void cap_open(void)
{
    if (cs_open(CS_ARCH_ARM, CS_MODE_THUMB | CS_MODE_MCLASS | CS_MODE_LITTLE_ENDIAN,
                &handle) != CS_ERR_OK) {
        fprintf(stderr, "decoder_check: cs_open failed\n");
        exit(2);
    }
    cs_option(handle, CS_OPT_SKIPDATA, CS_OPT_ON);
    cap = cs_malloc(handle);
}

static void check(uint32_t w, size_t len)
{
    uint8_t b[4];
    const uint8_t *p = b;
    size_t size = len;
    uint64_t pc = 0x1000;
    char text[256] = "";
    Class dec, txt;

    if (len == 2) {
        b[0] = (uint8_t)w;
        b[1] = (uint8_t)(w >> 8);
    } else {
        b[0] = (uint8_t)(w >> 16);
        b[1] = (uint8_t)(w >> 24);
        b[2] = (uint8_t)w;
        b[3] = (uint8_t)(w >> 8);
    }
    if (cs_disasm_iter(handle, &p, &size, &pc, cap)) {
        snprintf(text, sizeof(text), "%s %s", cap->mnemonic, cap->op_str);
        if (cap->mnemonic[0] == 'i' && cap->mnemonic[1] == 't') {
            /* capstone keeps IT state in the handle; QEMU uses a fresh one */
            cs_free(cap, 1);
            cs_close(&handle);
            cap_open();
        }
    }
    if (m4_mode) {
        bool simd;

        decode_thumb_m4(b, len, &dec);
        classify_text_m4(text, &txt, &simd);
        checked++;
        simd |= (w >> 24) == 0xEF;          /* Advanced SIMD data processing space */
        if (simd && dec.cls == K_UNKNOWN) {
            simd_skipped++;                 /* Advanced SIMD: not on any Cortex-M */
            return;
        }
        if (dec.cls != txt.cls || class_cost_m4(&dec) != class_cost_m4(&txt)) {
            char dc[32], tc[32];

            if (bad++ < 50) {
                format_class(dc, sizeof(dc), &dec);
                format_class(tc, sizeof(tc), &txt);
                printf("mismatch %08x \"%s\" decoder=%s/%u capstone=%s/%u\n", w, text,
                       dc, dec.n, tc, txt.n);
            }
        }
        return;
    }
    decode_thumb(b, len, &dec);
    classify_text(text, &txt);
    checked++;
    for (unsigned ws_ = 0; ws_ < 3; ws_++) {
        if (dec.cls != txt.cls || class_cost(&dec, ws_) != class_cost(&txt, ws_)) {
            char dc[32], tc[32];

            if (bad++ < 50) {
                format_class(dc, sizeof(dc), &dec);
                format_class(tc, sizeof(tc), &txt);
                printf("mismatch %0*x \"%s\" decoder=%s capstone=%s\n",
                       len == 2 ? 4 : 8, w, text, dc, tc);
            }
            return;
        }
    }
}

/* --m4: the first halfwords that hold ARMv7E-M encodings. */
static bool m4_space(uint32_t h1)
{
    return (h1 >= 0xEA00 && h1 <= 0xEBFF) || (h1 >= 0xEC00 && h1 <= 0xEFFF) ||
           (h1 >= 0xF300 && h1 <= 0xF3FF) || (h1 >= 0xFA00 && h1 <= 0xFBFF);
}

int main(int argc, char **argv)
{
    unsigned samples;
    uint64_t x = 0x9E3779B97F4A7C15ull;

    if (argc > 1 && strcmp(argv[1], "--m4") == 0) {
        m4_mode = true;
        argv++;
        argc--;
    }
    samples = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 0) : 256;
    cap_open();
    if (m4_mode) {
        for (uint32_t h1 = 0xE800; h1 < 0x10000; h1++) {
            if (!m4_space(h1)) {
                continue;
            }
            for (unsigned k = 0; k < samples; k++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                check(h1 << 16 | (uint32_t)(x & 0xFFFF), 4);
            }
        }
        for (int a = 2; a < argc; a++) {
            uint32_t h1 = (uint32_t)strtoul(argv[a], NULL, 16);
            for (uint32_t h2 = 0; h2 < 0x10000; h2++) {
                check(h1 << 16 | h2, 4);
            }
        }
        printf("checked %" PRIu64 " (advanced SIMD %" PRIu64 ") mismatches %" PRIu64 "\n",
               checked, simd_skipped, bad);
        return bad != 0;
    }
    for (uint32_t h = 0; h < 0x10000; h++) {
        if (!((h & 0xE000) == 0xE000 && (h & 0x1800) != 0)) {
            check(h, 2);
        }
    }
    for (uint32_t h1 = 0xE800; h1 < 0x10000; h1++) {
        for (unsigned k = 0; k < samples; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(h1 << 16 | (uint32_t)(x & 0xFFFF), 4);
        }
    }
    for (int a = 2; a < argc; a++) {
        uint32_t h1 = (uint32_t)strtoul(argv[a], NULL, 16);
        for (uint32_t h2 = 0; h2 < 0x10000; h2++) {
            check(h1 << 16 | h2, 4);
        }
    }
    printf("checked %" PRIu64 " mismatches %" PRIu64 "\n", checked, bad);
    return bad != 0;
}

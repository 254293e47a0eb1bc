/*
 * slicert_cycles: SliceRT-Farm TCG plugin (QEMU plugin API v1, QEMU 7.2).
 *
 * - Modelled Cortex-M3 cycles and retired instructions, counted exactly per
 *   instruction with inline ops (no helper call on ordinary instructions). The
 *   cost of each instruction is decided once, at translation time, from the
 *   capstone text of qemu_plugin_insn_disas(); the table is documented in
 *   qemu/cycle_model.md (CYCLE_MODEL_VERSION below).
 * - Trace events: the firmware calls one-instruction stubs (`bx lr`) placed at
 *   trace_base (event id at +2*id) and trace_base+0x100 (payload byte lanes,
 *   +0x100 + lane*0x200 + byte*2). Only those addresses get an exec callback,
 *   which stamps the event with the counters (see docs/contracts.md).
 * - At exit, writes one text file (header, `E id cycles insns payload` lines,
 *   `T cycles insns`), once.
 *
 * Usage:
 *   -plugin libslicert_cycles.so,trace_base=0x3e000,out=FILE[,ws=N][,handler=0xADDR ...]
 *
 * Deliberately glib-free: builds with `gcc -O2 -shared -fPIC -Wall -Werror`
 * against QEMU's include/qemu/qemu-plugin.h only. Strings returned by
 * qemu_plugin_insn_disas() are g_malloc'ed; since glib 2.46 g_free() is free().
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

#define SLICERT_PLUGIN_VERSION "1.0.0"
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

static uint64_t cycles;         /* modelled cycles (inline add) */
static uint64_t insns;          /* retired instructions (inline add) */
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
    events[n_events].cycles = cycles;
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

/* ---- instruction classification -------------------------------------------- */

enum cls {
    K_ALU, K_MUL, K_MLA, K_LMUL, K_LMLA, K_DIV, K_LDR, K_LDRD, K_STR, K_STRD,
    K_LDM, K_STM, K_B, K_BL, K_BX, K_CBZ, K_TBB, K_IT, K_NOP, K_SYS,
    K_BARRIER, K_ISB, K_SVC,
};

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

/* Modelled cost of one instruction, from its capstone text. */
static uint64_t insn_cost(const char *text)
{
    char m[24];
    size_t k = 0;
    const char *ops;
    const Mnem *e;
    bool cond = false, pc = false;
    unsigned refill = C_PIPE_REFILL + ws;          /* taken branch: P + ws */
    unsigned cond_refill = (refill + 1) / 2;       /* conditional: average */
    unsigned n;

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
        unclassified++;
        return 1;
    }
    if (m[0] == 'i' && m[1] == 't' && strspn(m + 2, "te") == strlen(m + 2) &&
        strlen(m) <= 5) {
        return 1;                                  /* IT */
    }
    e = lookup_mnemonic(m, &cond);
    if (!e) {
        unclassified++;
        return 1;
    }
    switch (e->cls) {
    case K_ALU:
        return dest_is_pc(ops) ? 1 + (cond ? cond_refill : refill) : C_ALU;
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
        return dest_is_pc(ops) ? C_LDR + (cond ? cond_refill : refill) : C_LDR;
    case K_LDRD:
        return 3;                                  /* 1 + N, N = 2 */
    case K_STR:
        return C_STR;
    case K_STRD:
        return 3;
    case K_LDM:
        n = count_reglist(ops, &pc);
        return 1 + (n ? n : 1) + (pc ? (cond ? cond_refill : refill) : 0);
    case K_STM:
        n = count_reglist(ops, &pc);
        return 1 + (n ? n : 1);
    case K_B:
    case K_BL:
    case K_BX:
        return 1 + (cond ? cond_refill : refill);
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
    }
    unclassified++;
    return 1;
}

/* ---- translation --------------------------------------------------------------- */

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);

    (void)id;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
        char *text = qemu_plugin_insn_disas(insn);
        uint64_t cost = insn_cost(text ? text : "");

        free(text);  /* g_malloc'ed; g_free == free since glib 2.46 */
        for (int h = 0; h < n_handlers; h++) {
            if (handlers[h] == vaddr) {
                cost += C_EXC_ENTRY;
            }
        }
        if (vaddr >= trace_base && vaddr < trace_base + TRACE_SPAN) {
            /* Registered before the inline ops: the stamp excludes the stub. */
            qemu_plugin_register_vcpu_insn_exec_cb(
                insn, vcpu_trace_stub, QEMU_PLUGIN_CB_NO_REGS,
                (void *)(uintptr_t)(vaddr - trace_base));
        }
        qemu_plugin_register_vcpu_insn_exec_inline(
            insn, QEMU_PLUGIN_INLINE_ADD_U64, &cycles, cost);
        qemu_plugin_register_vcpu_insn_exec_inline(
            insn, QEMU_PLUGIN_INLINE_ADD_U64, &insns, 1);
    }
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
    for (size_t i = 0; i < n_events; i++) {
        fprintf(f, "E %" PRIu32 " %" PRIu64 " %" PRIu64 " %" PRIu32 "\n",
                events[i].id, events[i].cycles, events[i].insns, events[i].payload);
    }
    if (dropped_events) {
        fprintf(f, "# overflow dropped %" PRIu64 " events after %zu\n",
                dropped_events, n_events);
    }
    fprintf(f, "T %" PRIu64 " %" PRIu64 "\n", cycles, insns);
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
        } else if (klen == 7 && strncmp(a, "handler", klen) == 0 && parse_u64(val, &v)) {
            if (n_handlers == MAX_HANDLERS) {
                fprintf(stderr, "slicert_cycles: more than %d handler= options\n",
                        MAX_HANDLERS);
                return -1;
            }
            handlers[n_handlers++] = v & ~(uint64_t)1;  /* clear the thumb bit */
        } else {
            fprintf(stderr, "slicert_cycles: bad option '%s' (expected trace_base=ADDR, "
                    "out=FILE, ws=N, handler=ADDR)\n", a);
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

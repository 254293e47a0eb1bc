/*
 * slicert_cycles: SliceRT-Farm TCG plugin (QEMU plugin API v4, QEMU 10 with
 * qemu/patches/: a virtual clock driven by the plugin, M-profile exception events).
 *
 * - Modelled Cortex-M3 cycles (model `cm3-v2`, qemu/cycle_model.md: every rule cites
 *   the TRM) and retired instructions. Costs are decided at translation time from
 *   the instruction bytes and their neighbours in the TB (thumb_decode.h); outcomes
 *   only known at run time (conditional branches, indirect branch targets, exception
 *   entry/return) are charged by cheap callbacks described below.
 * - Virtual time IS modelled cycles: QEMU maps the plugin's cycle count to
 *   QEMU_CLOCK_VIRTUAL at one period of the board's CPU clock per cycle, so SysTick,
 *   the GPTM timers and DWT_CYCCNT count modelled cycles. A per-vCPU countdown to
 *   the next timer deadline is checked once per block (a block whose deadline falls
 *   past its first segment runs again with a check per segment); the timers run at
 *   their exact deadlines and an interrupt they pend that the CPU takes is taken right
 *   before the instruction where the deadline fell (vcpu_deadline).
 * - Trace events: the firmware calls one-instruction stubs (`bx lr`) at trace_base
 *   (event id at +2*id) and trace_base+0x100 (payload byte lanes); exception
 *   entries are recorded with their assertion time (IRQ latency as on silicon).
 * - At exit, writes one text file (header, `E`/`X` lines, `T` totals), once.
 *
 * Usage:
 *   -accel tcg,thread=single -plugin libslicert_cycles.so,trace_base=0x3e000,out=FILE
 *       [,ws=N][,flash_end=0x20000000][,classes=1][,core=cm3|cm4]
 * classes=1 also counts retired instructions per class (`slicert cycles`). core=cm4
 * (mps2-an386): model cm4-v1, the Cortex-M4 with FPU (DSP and FP instructions decoded,
 * single-cycle multiplies, FP timings, lazy FP stacking); default cm3 (cm3-v2).
 * (not with -icount: the plugin is the clock).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

#include "thumb_decode.h"

#define SLICERT_PLUGIN_VERSION "2.1.0"
#define CYCLE_MODEL_VERSION "cm3-v2"       /* core=cm3 (default): Cortex-M3 */
#define CYCLE_MODEL_VERSION_CM4 "cm4-v1"   /* core=cm4: Cortex-M4 with FPU (mps2-an386) */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* ---- cycle model cm3-v2 (keep in sync with qemu/cycle_model.md) ---------------- */
#define C_LMUL 4         /* UMULL, SMULL: 3-5 by operand size (TRM table 3-1 [a]) */
#define C_LMLA 5         /* UMLAL, SMLAL: 4-7 by operand size */
#define C_DIV 7          /* SDIV, UDIV: 2-12 by operand size (TRM table 3-1 [b]) */
#define C_EXC_ENTRY 12   /* exception entry: stacking + vector fetch (TRM 5.5.1) */
#define C_TAIL_CHAIN 6   /* exception return straight into the next handler */
#define C_EXC_RETURN 10  /* exception return: unstacking + refill */

/* ---- cycle model cm4-v1 (core=cm4; qemu/cycle_model.md, section cm4-v1) ---------------
 * ARM DDI 0439 (Cortex-M4 TRM) Table 3-1 and, for the FPU, Table 7-1; what is not listed
 * here is cm3-v2's rule (the M4 shares the M3's pipeline, load/store and branch timing). */
#define C4_MLA 1         /* MLA, MLS: 1 on the M4 (2 on the M3) */
#define C4_LMUL 1        /* UMULL, SMULL, UMLAL, SMLAL: 1 on the M4 */
#define C4_DIV 7         /* SDIV, UDIV: 2-12 by operand size (constant, as cm3-v2) */
#define C4_DSP 1         /* DSP data processing and DSP multiplies (all 1) */
#define C4_VALU 1        /* VADD VSUB VMUL VNMUL VABS VNEG VCMP VCVT VMOV (Table 7-1) */
#define C4_VMLA 3        /* VMLA VMLS VNMLA VNMLS VFMA VFMS VFNMA VFNMS */
#define C4_VDIV 14       /* VDIV, VSQRT */
#define C4_FP_STACK 17   /* lazy stacking / unstacking of s0-s15 + FPSCR (17 words) */
#define MAX_NEST 64      /* exception frames tracked for the FP context */

#define TRACE_SPAN 0x900u        /* events 0x000-0x0ff, lanes 0x100-0x8ff */
#define TRACE_LANES_OFF 0x100u
#define TRACE_LANE_SPAN 0x200u
#define MAX_EVENTS (4u * 1024u * 1024u)
#define MAX_EXC 512
#define SIGN64 0x8000000000000000ull
#define PEND_INDIRECT 1u          /* Counters.pend: an indirect branch (no code at 1) */

typedef struct {
    uint64_t cycles;
    uint64_t insns;
    uint64_t pend;      /* X records: assertion time (UINT64_MAX: not recorded) */
    uint32_t payload;   /* E: payload; X: exception number */
    uint32_t id;        /* E: event id; X: UINT32_MAX */
} Event;

/*
 * Per-vCPU counters, updated by inline ops. Modelled cycles are `anchor - left`, where
 * `left` counts down to the next timer deadline in offset binary: left = D - 1 - cycles
 * + 2^63, so "the deadline D has been reached" is one unsigned compare, `left < 2^63`,
 * in the generated code (and "reached before the instruction that starts k cycles into
 * a segment not charged yet" is `left < 2^63 + k`).
 */
typedef struct {
    uint64_t insns;     /* retired instructions */
    uint64_t left;      /* anchor - cycles */
    uint64_t pend;      /* branch outcome to settle at the next block start: the
                         * fall-through address of a conditional branch, PEND_INDIRECT
                         * after an indirect one, else 0 */
    uint64_t ft_refund; /* the conditional branch's refill, refunded when it falls through */
    uint64_t fpca;      /* cm4: an FP context is active (CONTROL.FPCA) */
    uint64_t lspact;    /* cm4: lazy FP state preservation pending (FPCCR.LSPACT) */
} Counters;

static struct qemu_plugin_scoreboard *sb;
static qemu_plugin_u64 e_insns, e_left, e_pend, e_fpca, e_lspact;
static uint64_t anchor;          /* only the vCPU thread touches it */

static Event *events;
static size_t n_events, cap_events;
static uint64_t dropped_events;
static uint32_t pending_payload;
static uint64_t unclassified;
static uint64_t pend_at[MAX_EXC];  /* cycle an exception became pending, +1 (0: none) */
static uint64_t exit_insns = UINT64_MAX;  /* insns at the last exception return */
static uint64_t exit_cycles;               /* cycles when that return began */

static uint64_t trace_base = 0x3e000;
static char *out_path;
static unsigned ws;                /* flash wait states */
static uint64_t flash_end = 0x20000000;  /* instruction/data fetches below stall by ws */
static bool cm4;                   /* core=cm4: model cm4-v1 */
static bool frame_fp[MAX_NEST];    /* cm4: the exception frames that are FP frames */
static unsigned n_frames;
static bool exit_frame_fp;         /* cm4: the frame the last exception return popped */
static uint64_t exit_lspact;       /* and LSPACT when that return began */

/* classes=1: one execution counter per segment and its class histogram */
#define MAX_SEGS (1u << 17)
static bool count_classes;
static struct qemu_plugin_scoreboard *seg_sb;
static uint16_t (*seg_hist)[K_COUNT];
static uint32_t n_segs;
static bool segs_full;

static inline Counters *ctr(void)
{
    return qemu_plugin_scoreboard_find(sb, 0);
}

static inline uint64_t cycles_now(const Counters *c)
{
    return anchor - c->left;
}

static inline void add_cycles(Counters *c, uint64_t k)
{
    c->left -= k;
}

/* ---- virtual clock ------------------------------------------------------------ */

static int64_t clock_now(void)
{
    return (int64_t)cycles_now(ctr());
}

/* The cycle of the next timer deadline: rebase the countdown. */
static void clock_deadline(int64_t deadline)
{
    Counters *c = ctr();
    uint64_t now = cycles_now(c);
    uint64_t d;

    if (deadline == INT64_MAX || deadline < 0) {
        d = now + (1ull << 60);
    } else {
        d = (uint64_t)deadline;
        if (d <= now) {
            d = now + 1;        /* due now: the next check runs it */
        }
    }
    anchor = d - 1 + SIGN64;
    c->left = anchor - now;
}

/*
 * What a deadline check needs: the cycles before each instruction it covers (allocated
 * at translation, kept for the life of the block). A segment's check covers the segment;
 * the one check of a block translated as usual covers the block, and when the deadline
 * falls past its first segment, the block is translated again with a check per segment
 * (qemu_plugin_retranslate: a "precise" block, the same instructions and costs).
 */
typedef struct {
    uint64_t pc;        /* the first instruction covered */
    uint32_t n;         /* the instructions covered */
    uint32_t seg_end;   /* the end of the first segment (n for a segment's check) */
    uint32_t before[];  /* cycles before instruction j (before[0] = 0) */
} Span;

/* A block requested by vcpu_deadline: the next block translated at pc with n
 * instructions is a replay (the start of a segment already charged: no instrumentation)
 * or a precise block (a deadline check per segment). */
static struct {
    uint64_t pc;
    size_t n;
    bool armed, precise;
} next_tb;

/*
 * A timer deadline is reached before some instruction j that this check covers (the check
 * is the first thing of its segment or block: nothing of it is charged yet). Run the due
 * timers at the start of j, with the clock reading that start. The instructions before j
 * in the first segment are pure register operations (a segment's memory access or system
 * instruction is its last), so running the timers now is not observable before j, except
 * for an interrupt they pend that the CPU takes: that must be taken right before j. For
 * j = 0 the block is left here; for j > 0 the first j instructions are charged and
 * re-executed as a replay block, and the interrupt is taken after them
 * (qemu_plugin_clock_sync_after). Repeated while a later deadline still falls inside.
 * A deadline past the first segment of a usual block: the block runs again as a precise
 * one, whose segment checks handle it.
 */
static void vcpu_deadline(unsigned int vcpu_index, void *udata)
{
    const Span *sp = udata;
    void *host_pc = __builtin_return_address(0);
    Counters *c = ctr();
    uint32_t j = 0;

    (void)vcpu_index;
    for (;;) {
        while (j < sp->n && c->left >= SIGN64 + sp->before[j]) {
            j++;
        }
        if (j == sp->n) {
            return;
        }
        if (j >= sp->seg_end) {
            next_tb.pc = sp->pc;
            next_tb.n = sp->n;
            next_tb.armed = next_tb.precise = true;
            qemu_plugin_retranslate(host_pc, sp->n);
            next_tb.armed = false;   /* not reached */
            return;
        }
        if (j == 0) {
            qemu_plugin_clock_sync(host_pc);
        } else {
            c->left -= sp->before[j];
            c->insns += j;
            next_tb.pc = sp->pc;
            next_tb.n = j;
            next_tb.armed = true;
            next_tb.precise = false;
            qemu_plugin_clock_sync_after(host_pc, j);
            next_tb.armed = false;       /* no interrupt: the segment goes on in place */
            c = ctr();
            c->left += sp->before[j];
            c->insns -= j;
        }
        c = ctr();
    }
}

/* ---- event recording ------------------------------------------------------------ */

static Event *new_event(void)
{
    if (n_events == cap_events) {
        size_t ncap = cap_events ? cap_events * 2 : 4096;
        Event *ne;

        if (ncap > MAX_EVENTS) {
            ncap = MAX_EVENTS;
        }
        if (n_events >= ncap || !(ne = realloc(events, ncap * sizeof(Event)))) {
            dropped_events++;
            return NULL;
        }
        events = ne;
        cap_events = ncap;
    }
    return &events[n_events++];
}

/* Exec callback on a trace stub; udata = offset from trace_base. */
static void vcpu_trace_stub(unsigned int vcpu_index, void *udata)
{
    uint32_t off = (uint32_t)(uintptr_t)udata;
    Counters *c = ctr();
    Event *e;

    (void)vcpu_index;
    if (off >= TRACE_LANES_OFF) {
        uint32_t lane = (off - TRACE_LANES_OFF) / TRACE_LANE_SPAN;
        uint32_t byte = ((off - TRACE_LANES_OFF) % TRACE_LANE_SPAN) / 2;

        pending_payload |= byte << (8 * lane);
        return;
    }
    e = new_event();
    if (e) {
        e->cycles = cycles_now(c);
        e->insns = c->insns;
        e->pend = 0;
        e->payload = pending_payload;
        e->id = off / 2;
    }
    pending_payload = 0;
}

/* ---- run-time branch outcomes ------------------------------------------------------ */

/* The refill charged with an indirect branch: P of an aligned or 16-bit target in flash. */
static uint64_t indirect_refill(void)
{
    return 1 + (uint64_t)ws;
}

/* TB start reached by falling through the last conditional branch: it was not taken. */
static void vcpu_fell_through(unsigned int vcpu_index, void *udata)
{
    Counters *c = ctr();

    (void)vcpu_index;
    (void)udata;
    c->left += c->ft_refund;
    c->pend = 0;
}

/* TB start after an indirect branch, at a target whose refill is not indirect_refill():
 * charge the difference (udata, signed). */
static void vcpu_indirect_target(unsigned int vcpu_index, void *udata)
{
    Counters *c = ctr();

    (void)vcpu_index;
    add_cycles(c, (uint64_t)(intptr_t)udata);
    c->pend = 0;
}

/*
 * An exception entry or return settles the pending branch outcome: the fall-through of
 * a conditional branch refunds its refill; the refill charged with an indirect branch is
 * refunded too (the entry and the return include the refill).
 */
static void settle_branch(Counters *c, uint64_t resume_pc)
{
    if (c->pend == PEND_INDIRECT) {
        c->left += indirect_refill();
    } else if (c->pend && c->pend == resume_pc) {
        c->left += c->ft_refund;        /* that branch fell through */
    }
    c->pend = 0;
}

/*
 * cm4: an FP instruction while lazy state preservation is pending (the first one of a
 * handler entered with an FP context active): the core stacks s0-s15 and FPSCR into the
 * space reserved in the frame, stalling the instruction.
 */
static void vcpu_lazy_stack(unsigned int vcpu_index, void *udata)
{
    Counters *c = ctr();

    (void)vcpu_index;
    (void)udata;
    add_cycles(c, C4_FP_STACK);
    c->lspact = 0;
}

/* ---- exception entry and return (QEMU patch: qemu_plugin_v7m_register) -------------- */

static void v7m_event(int kind, int exc, uint64_t arg)
{
    Counters *c;
    Event *e;

    if (exc < 0 || exc >= MAX_EXC) {
        return;
    }
    if (kind == 0) {
        /* pending; arg: the cycle it was asserted (also at machine reset: no vCPU yet) */
        if (!pend_at[exc]) {
            pend_at[exc] = arg + 1;
        }
        return;
    }
    c = ctr();
    switch (kind) {
    case 1:     /* taken; arg: the PC where the interrupted code resumes */
        next_tb.armed = false;              /* a replay block, if any, has run */
        settle_branch(c, arg);
        if (c->insns == exit_insns) {
            /*
             * Taken at an exception return, with no instruction in between: pending
             * when the return began, it tail-chains (no unstacking, no new stacking);
             * asserted during the unstacking, it pre-empts the pop the same way, from
             * its assertion. The handler starts 6 cycles after the later of the two.
             */
            uint64_t from = exit_cycles;

            if (pend_at[exc] && pend_at[exc] - 1 > from) {
                from = pend_at[exc] - 1;
            }
            c->left = anchor - from;
            add_cycles(c, C_TAIL_CHAIN + 2 * (uint64_t)ws);
        } else {
            add_cycles(c, C_EXC_ENTRY + 2 * (uint64_t)ws);
        }
        e = new_event();
        if (e) {
            e->cycles = cycles_now(c);
            e->insns = c->insns;
            e->pend = pend_at[exc] ? pend_at[exc] - 1 : UINT64_MAX;
            e->payload = (uint32_t)exc;
            e->id = UINT32_MAX;
        }
        pend_at[exc] = 0;
        if (cm4) {
            /*
             * FP context active: an FP frame, space reserved, stacked lazily (the entry
             * costs what an integer frame costs); the handler starts without one. A
             * tail-chain keeps the frame the return did not pop, and its LSPACT.
             */
            bool fp = c->insns == exit_insns ? exit_frame_fp : c->fpca != 0;

            if (n_frames < MAX_NEST) {
                frame_fp[n_frames] = fp;
            }
            n_frames++;
            if (c->insns == exit_insns) {
                c->lspact = exit_lspact;
            } else if (fp) {
                c->lspact = 1;
            }
            c->fpca = 0;
        }
        break;
    case 2:     /* exception return */
        settle_branch(c, 0);
        exit_cycles = cycles_now(c);
        exit_insns = c->insns;
        add_cycles(c, C_EXC_RETURN + (uint64_t)ws);
        if (cm4 && n_frames) {
            bool fp = --n_frames < MAX_NEST && frame_fp[n_frames];

            exit_frame_fp = fp;
            exit_lspact = c->lspact;
            if (fp && c->lspact) {
                c->lspact = 0;                  /* never stacked: nothing to unstack */
            } else if (fp) {
                add_cycles(c, C4_FP_STACK);     /* unstack s0-s15 + FPSCR */
            }
            c->fpca = fp;
        }
        break;
    default:
        break;
    }
}

/* ---- translation: static costs ------------------------------------------------------ */

/* Refill P for a branch to `target` (TRM 3.3.1: 1-3 by alignment and width). */
static uint64_t refill(uint64_t target)
{
    static GByteArray *buf;     /* translation is single-threaded here */
    uint8_t b[2];
    uint64_t p = 1, fetches = 1;

    if (!buf) {
        buf = g_byte_array_new();
    }
    g_byte_array_set_size(buf, 0);

    if (qemu_plugin_read_memory_vaddr(target, buf, 2) && buf->len >= 2) {
        memcpy(b, buf->data, 2);
        if ((target & 2) && thumb_insn_len((uint32_t)b[0] | (uint32_t)b[1] << 8) == 4) {
            p = 2;              /* unaligned 32-bit target: two fetches */
            fetches = 2;
        }
    }
    return p + (target < flash_end ? fetches * ws : 0);
}

/* What the previous instruction of the TB leaves for the pipeline rules. */
typedef struct {
    bool valid;
    bool wide;
    bool load;          /* single load (LDR*, LDREX): the next load/store may pipeline */
    bool dp;            /* data processing: its result feeds no address for a cycle */
    uint16_t wmask;
} Prev;

static bool is_dp(uint8_t cls)
{
    return cls == K_ALU || cls == K_MUL || cls == K_MLA || cls == K_LMUL ||
           cls == K_LMLA || cls == K_DIV || cls == K_DSP || cls == K_DMUL || cls == K_VMOV;
}

/*
 * Static cost of one instruction given the previous one (cm3-v2). Branches: the
 * taken cost of a direct branch (its refill is refunded at run time when a
 * conditional one falls through), 1 for an indirect one (the target's refill is
 * charged at the target). *ind: indirect branch; *refund: refill of a conditional.
 */
static uint64_t insn_cost(const Class *c, const Operands *o, const Prev *prev,
                          bool *ind, uint64_t *refund)
{
    bool pipe = prev->valid && prev->load && !(prev->wmask & o->amask);
    uint64_t stall = (prev->valid && prev->dp && (prev->wmask & o->amask)) ? 1 : 0;
    uint64_t lit = (o->literal && ws) ? ws : 0;  /* literal pool in flash */

    *ind = false;
    *refund = 0;
    switch ((enum cls)c->cls) {
    case K_ALU:
        if (c->pc) {
            *ind = true;
        }
        return 1;
    case K_MUL:
        return 1;
    case K_MLA:
        return cm4 ? C4_MLA : 2;
    case K_LMUL:
        return cm4 ? C4_LMUL : C_LMUL;
    case K_LMLA:
        return cm4 ? C4_LMUL : C_LMLA;
    case K_DIV:
        return cm4 ? C4_DIV : C_DIV;
    case K_DSP:                 /* the K_FIRST_M4 classes: cm4 only (decode_thumb_m4) */
    case K_DMUL:
        return C4_DSP;
    case K_VALU:
        return C4_VALU;
    case K_VMLA:
        return C4_VMLA;
    case K_VDIV:
        return C4_VDIV;
    case K_VLDR:                /* 2 single, 3 double */
    case K_VLDM:                /* 1 + N words (1 + 2N doubles) */
        return 1 + (c->n ? c->n : 1) + stall + lit;
    case K_VMOV:                /* 1, or 2 for two core registers */
        return c->n ? c->n : 1;
    case K_LDR:
        if (c->pc) {
            *ind = true;
            return 2 + stall;
        }
        return (pipe ? 1 : 2) + stall + lit;
    case K_STR:
        return ((o->str_imm || pipe) ? 1 : 2) + stall;
    case K_LDRD:
    case K_STRD:
        return 3 + stall;
    case K_LDM:
        if (c->pc) {
            *ind = true;
        }
        return 1 + (c->n ? c->n : 1) + stall;
    case K_STM:
        return 1 + (c->n ? c->n : 1) + stall;
    case K_B:
    case K_BL:
    case K_CBZ:
        if (o->direct) {
            uint64_t p = refill(o->target);

            if (c->cond || c->cls == K_CBZ) {
                *refund = p;
            }
            return 1 + p;
        }
        return 1;
    case K_BX:
        *ind = true;
        return 1;
    case K_TBB:
        *ind = true;
        return 2 + stall;
    case K_IT:
        /* folded onto a preceding 16-bit instruction (TRM 3.3.1) */
        return (prev->valid && !prev->wide) ? 0 : 1;
    case K_NOP:
    case K_SYS:
    case K_SVC:
    case K_BARRIER:
        return 1;
    case K_ISB:
        return 2;
    case K_UNKNOWN:
    case K_COUNT:
        break;
    }
    return 1;
}

/*
 * Counting:
 * - A segment is a run of instructions of a TB that ends at the first one that may
 *   stop the TB early (memory access, helper that may raise, anything undecoded);
 *   once its first instruction starts, the whole segment retires. Its first
 *   instruction carries: the deadline check (a conditional callback; in a usual TB
 *   only the first segment has one, covering the TB: see vcpu_deadline), then, for an
 *   event stub, the event callback, then two inline adds (`left -= cost`,
 *   `insns += n`).
 * - The TB start carries the run-time branch outcomes: a refund when it is the
 *   fall-through of the last conditional branch, the correction of an indirect
 *   branch's refill when this target's P is not the one it was charged with.
 * - Flash wait states also stall sequential fetches: with ws > 0 each 32-bit fetch
 *   from below flash_end takes 1 + ws cycles, and an instruction waits for its bytes.
 */
static bool ends_segment(const Class *c)
{
    switch ((enum cls)c->cls) {
    case K_ALU:
    case K_MUL:
    case K_MLA:
    case K_LMUL:
    case K_LMLA:
    case K_DSP:
    case K_DMUL:
    case K_IT:
    case K_BARRIER:
    case K_ISB:
    case K_B:
    case K_BL:
    case K_BX:
    case K_CBZ:
        return false;
    default:
        return true;
    }
}

#define MAX_TB_INSNS 512  /* TCG_MAX_INSNS */
/*
 * Longer TBs get a check per segment from the start. A precise translation is larger host
 * code than the usual one; for a long TB it could exceed what QEMU allows a TB (64 KB), and
 * QEMU would then split it, moving a TB boundary (which rules 7, 11 and 18 see). 64
 * instructions of precise code stay far below that, and below CF_COUNT_MASK.
 */
#define MAX_RETRANSLATED 64

/* One instruction of a TB being translated (pass 1 of vcpu_tb_trans). */
typedef struct {
    struct qemu_plugin_insn *insn;
    uint64_t vaddr;
    uint64_t cost;
    uint64_t refund;    /* a conditional branch's refill, else 0 */
    uint8_t cls;
    bool wide, stub, ind, ends;
} InsnInfo;

static InsnInfo tb_insns[MAX_TB_INSNS];  /* translation is single-threaded here */

static void decode_class(const uint8_t *data, size_t len, Class *c)
{
    if (cm4) {
        decode_thumb_m4(data, len, c);
    } else {
        decode_thumb(data, len, c);
    }
}

/* Decode the TB and cost each instruction given the one before (cm3-v2 / cm4-v1). */
static void cost_tb(struct qemu_plugin_tb *tb, size_t n)
{
    uint64_t tb_pc = qemu_plugin_tb_vaddr(tb);
    Prev prev = {0};
    uint64_t exec_t = 0;        /* cycles since the TB started (fetch model) */
    uint64_t word0 = tb_pc >> 2;

    for (size_t i = 0; i < n; i++) {
        InsnInfo *ii = &tb_insns[i];
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
        uint8_t data[8];
        size_t len = qemu_plugin_insn_data(insn, data, sizeof(data));
        bool ind;
        uint64_t cost, refund;
        Class c;
        Operands o;

        decode_class(data, len, &c);
        if (c.cls == K_UNKNOWN) {
            unclassified++;
        }
        decode_operands(data, len, (uint32_t)vaddr, &c, &o);
        cost = insn_cost(&c, &o, &prev, &ind, &refund);
        if (ws && vaddr < flash_end) {
            /* fetch: word k of the TB is in at k * (1 + ws) cycles */
            uint64_t last_word = (vaddr + (o.wide ? 3 : 1)) >> 2;
            uint64_t ready = (last_word - word0) * (1 + ws);

            if (ready > exec_t) {
                cost += ready - exec_t;
            }
        }
        exec_t += cost;
        if (ind) {
            cost += indirect_refill();  /* a target with another P settles at its start */
        }
        *ii = (InsnInfo){
            .insn = insn, .vaddr = vaddr, .cost = cost, .refund = refund, .cls = c.cls,
            .wide = o.wide, .ind = ind, .ends = ends_segment(&c),
            .stub = vaddr >= trace_base && vaddr < trace_base + TRACE_SPAN,
        };
        prev.valid = true;
        prev.wide = o.wide;
        prev.load = c.cls == K_LDR && !c.pc;
        prev.dp = is_dp(c.cls);
        prev.wmask = o.wmask;
    }
}

/* The instructions [i, end) of segment starting at i: a stub is a segment of its own. */
static size_t segment_end_of(size_t i, size_t n)
{
    size_t e = i;

    if (tb_insns[i].stub) {
        return i + 1;
    }
    while (e < n && !tb_insns[e].stub) {
        if (tb_insns[e++].ends) {
            break;
        }
    }
    return e;
}

/* classes=1: one execution counter for instructions [i, e) */
static void count_segment(size_t i, size_t e)
{
    qemu_plugin_u64 cnt;

    if (n_segs >= MAX_SEGS) {
        segs_full = true;
        return;
    }
    cnt = (qemu_plugin_u64){ .score = seg_sb, .offset = (size_t)n_segs * 8 };
    qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(
        tb_insns[i].insn, QEMU_PLUGIN_INLINE_ADD_U64, cnt, 1);
    memset(seg_hist[n_segs], 0, sizeof(seg_hist[n_segs]));
    for (size_t k = i; k < e; k++) {
        seg_hist[n_segs][tb_insns[k].cls]++;
    }
    n_segs++;
}

/*
 * Instrument segment [i, e): on its first instruction, the deadline check (a conditional
 * callback: is the deadline reached before any of its instructions? in a usual block only
 * the first segment has one, covering the block), then for an event
 * stub the event callback, then the two adds (`left -= cost`, `insns += n`); branch
 * outcomes and the FP state on the instructions that have them. The check comes first:
 * when it leaves the TB nothing of the segment has happened.
 */
/* The deadline check of instructions [i, e), on instruction i (seg_end: see Span). */
static void register_check(size_t i, size_t e, size_t seg_end)
{
    size_t n = e - i;
    Span *sp = g_malloc(sizeof(Span) + n * sizeof(uint32_t));
    uint64_t cost = 0;

    sp->pc = tb_insns[i].vaddr;
    sp->n = (uint32_t)n;
    sp->seg_end = (uint32_t)(seg_end - i);
    for (size_t k = i; k < e; k++) {
        sp->before[k - i] = (uint32_t)cost;
        cost += tb_insns[k].cost;
    }
    qemu_plugin_register_vcpu_insn_exec_cond_cb(
        tb_insns[i].insn, vcpu_deadline, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_COND_LT,
        e_left, SIGN64 + sp->before[n - 1], sp);
}

static void instrument_segment(size_t i, size_t e, size_t tb_end, bool precise)
{
    size_t n = e - i;
    uint64_t cost = 0;

    if (precise) {
        register_check(i, e, e);
    } else if (i == 0) {
        register_check(0, tb_end, e);   /* the block's one check */
    }
    for (size_t k = i; k < e; k++) {
        cost += tb_insns[k].cost;
    }
    if (tb_insns[i].stub) {
        /* after the deadline check (the stub may be re-executed), before the adds */
        qemu_plugin_register_vcpu_insn_exec_cb(
            tb_insns[i].insn, vcpu_trace_stub, QEMU_PLUGIN_CB_NO_REGS,
            (void *)(uintptr_t)(tb_insns[i].vaddr - trace_base));
    }
    for (size_t k = i; k < e; k++) {
        const InsnInfo *ii = &tb_insns[k];

        if (ii->refund) {
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(
                ii->insn, QEMU_PLUGIN_INLINE_STORE_U64, e_pend,
                ii->vaddr + (ii->wide ? 4 : 2));
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(
                ii->insn, QEMU_PLUGIN_INLINE_STORE_U64,
                qemu_plugin_scoreboard_u64_in_struct(sb, Counters, ft_refund), ii->refund);
        }
        if (ii->ind) {
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(
                ii->insn, QEMU_PLUGIN_INLINE_STORE_U64, e_pend, PEND_INDIRECT);
        }
        if (ii->cls >= K_VALU) {
            /* cm4 FP instruction: pending lazy stacking happens now; FP context active */
            qemu_plugin_register_vcpu_insn_exec_cond_cb(
                ii->insn, vcpu_lazy_stack, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_COND_NE,
                e_lspact, 0, NULL);
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(
                ii->insn, QEMU_PLUGIN_INLINE_STORE_U64, e_fpca, 1);
        }
    }
    if (count_classes) {
        count_segment(i, e);
    }
    if (cost) {
        qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(
            tb_insns[i].insn, QEMU_PLUGIN_INLINE_ADD_U64, e_left, (uint64_t)0 - cost);
    }
    qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(
        tb_insns[i].insn, QEMU_PLUGIN_INLINE_ADD_U64, e_insns, n);
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t tb_pc = qemu_plugin_tb_vaddr(tb);
    int64_t delta;
    bool precise;

    (void)id;
    if (n == 0 || n > MAX_TB_INSNS) {
        return;
    }
    precise = n > MAX_RETRANSLATED;
    if (next_tb.armed && next_tb.pc == tb_pc && next_tb.n == n && next_tb.precise) {
        next_tb.armed = false;
        precise = true;
    } else if (next_tb.armed && next_tb.pc == tb_pc && next_tb.n == n) {
        /* a replay block: charged by vcpu_deadline, counted here only for classes=1 */
        next_tb.armed = false;
        if (count_classes) {
            for (size_t i = 0; i < n; i++) {
                struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
                uint8_t data[8];
                size_t len = qemu_plugin_insn_data(insn, data, sizeof(data));
                Class c;

                decode_class(data, len, &c);
                tb_insns[i] = (InsnInfo){ .insn = insn, .cls = c.cls };
            }
            count_segment(0, n);
        }
        return;
    }
    next_tb.armed = false;      /* whatever was asked for ran from the cache */
    cost_tb(tb, n);
    /* the run-time outcome of the branch that led here (the block's first callbacks) */
    qemu_plugin_register_vcpu_tb_exec_cond_cb(
        tb, vcpu_fell_through, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_COND_EQ,
        e_pend, tb_pc, NULL);
    delta = (int64_t)refill(tb_pc) - (int64_t)indirect_refill();
    if (delta) {
        qemu_plugin_register_vcpu_tb_exec_cond_cb(
            tb, vcpu_indirect_target, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_COND_EQ,
            e_pend, PEND_INDIRECT, (void *)(intptr_t)delta);
    }
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
        tb, QEMU_PLUGIN_INLINE_STORE_U64, e_pend, 0);
    for (size_t i = 0; i < n;) {
        size_t e = segment_end_of(i, n);

        instrument_segment(i, e, n, precise);
        i = e;
    }
}

/* ---- exit: write the file once ----------------------------------------------- */

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    Counters *c = ctr();
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
            SLICERT_PLUGIN_VERSION, cm4 ? CYCLE_MODEL_VERSION_CM4 : CYCLE_MODEL_VERSION);
    fprintf(f, "# trace_base 0x%" PRIx64 " ws %u unclassified %" PRIu64 "\n",
            trace_base, ws, unclassified);
    if (count_classes) {
        uint64_t total[K_COUNT] = {0};
        const uint64_t *cnt = qemu_plugin_scoreboard_find(seg_sb, 0);

        for (uint32_t k = 0; k < n_segs; k++) {
            for (int cl = 0; cl < K_COUNT; cl++) {
                total[cl] += cnt[k] * seg_hist[k][cl];
            }
        }
        fprintf(f, "# classes%s", segs_full ? " incomplete" : "");
        for (int cl = 0; cl < K_COUNT; cl++) {
            if (total[cl]) {
                fprintf(f, " %s=%" PRIu64, cls_names[cl], total[cl]);
            }
        }
        fprintf(f, "\n");
    }
    for (size_t i = 0; i < n_events; i++) {
        const Event *e = &events[i];

        if (e->id == UINT32_MAX) {
            if (e->pend == UINT64_MAX) {
                fprintf(f, "X %" PRIu32 " - %" PRIu64 " %" PRIu64 "\n",
                        e->payload, e->cycles, e->insns);
            } else {
                fprintf(f, "X %" PRIu32 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                        e->payload, e->pend, e->cycles, e->insns);
            }
        } else {
            fprintf(f, "E %" PRIu32 " %" PRIu64 " %" PRIu64 " %" PRIu32 "\n",
                    e->id, e->cycles, e->insns, e->payload);
        }
    }
    if (dropped_events) {
        fprintf(f, "# overflow dropped %" PRIu64 " events after %zu\n",
                dropped_events, n_events);
    }
    fprintf(f, "T %" PRIu64 " %" PRIu64 "\n", cycles_now(c), c->insns);
    if (fclose(f) != 0 || rename(tmp, out_path) != 0) {
        fprintf(stderr, "slicert_cycles: cannot write %s: %s\n", out_path, strerror(errno));
    }
    free(tmp);
    free(events);
    events = NULL;
    n_events = cap_events = 0;
}

/* The first deadline check fires at once (cycles 0, deadline 0): QEMU then tells it. */
static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    (void)id;
    if (vcpu_index == 0) {
        anchor = SIGN64 - 1;
        ctr()->left = SIGN64 - 1;
    }
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

static bool arg_is(const char *a, size_t klen, const char *key)
{
    return klen == strlen(key) && strncmp(a, key, klen) == 0;
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

        if (arg_is(a, klen, "trace_base") && parse_u64(val, &v)) {
            trace_base = v & ~(uint64_t)1;
        } else if (arg_is(a, klen, "out") && *val) {
            free(out_path);
            out_path = strdup(val);
        } else if (arg_is(a, klen, "ws") && parse_u64(val, &v) && v <= 64) {
            ws = (unsigned)v;
        } else if (arg_is(a, klen, "flash_end") && parse_u64(val, &v)) {
            flash_end = v;
        } else if (arg_is(a, klen, "classes") && parse_u64(val, &v) && v <= 1) {
            count_classes = v != 0;
        } else if (arg_is(a, klen, "core") && (!strcmp(val, "cm3") || !strcmp(val, "cm4"))) {
            cm4 = !strcmp(val, "cm4");
        } else {
            fprintf(stderr, "slicert_cycles: bad option '%s' (expected trace_base=ADDR, "
                    "out=FILE, ws=N, flash_end=ADDR, classes=0|1, core=cm3|cm4)\n", a);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "slicert_cycles: missing out=FILE\n");
        return -1;
    }
    if (count_classes) {
        seg_sb = qemu_plugin_scoreboard_new((size_t)MAX_SEGS * 8);
        seg_hist = calloc(MAX_SEGS, sizeof(*seg_hist));
        if (!seg_hist) {
            return -1;
        }
    }
    sb = qemu_plugin_scoreboard_new(sizeof(Counters));
    e_insns = qemu_plugin_scoreboard_u64_in_struct(sb, Counters, insns);
    e_left = qemu_plugin_scoreboard_u64_in_struct(sb, Counters, left);
    e_pend = qemu_plugin_scoreboard_u64_in_struct(sb, Counters, pend);
    e_fpca = qemu_plugin_scoreboard_u64_in_struct(sb, Counters, fpca);
    e_lspact = qemu_plugin_scoreboard_u64_in_struct(sb, Counters, lspact);
    if (!qemu_plugin_clock_register(clock_now, clock_deadline)) {
        fprintf(stderr, "slicert_cycles: cannot drive the virtual clock (a QEMU without "
                "qemu/patches, or -icount given: the plugin is the clock)\n");
        return -1;
    }
    if (!qemu_plugin_v7m_register(v7m_event)) {
        fprintf(stderr, "slicert_cycles: exception events unavailable\n");
        return -1;
    }
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}

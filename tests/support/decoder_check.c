/*
 * Cross-check of qemu/slicert_cycles.c: its byte decoder against its capstone-text
 * classifier (cm3-v1), over Thumb encodings, calling capstone the way QEMU 7.2's
 * qemu_plugin_insn_disas() does (CS_MODE_THUMB | CS_MODE_MCLASS, skipdata on, a fresh
 * handle per instruction, so no IT-block state).
 *
 *   decoder_check [SAMPLES [FULL_HW1...]]
 *
 * Checks all 16-bit encodings and, for every 32-bit first halfword, SAMPLES random
 * second halfwords (all 65536 for the FULL_HW1 values given, in hex). Prints each
 * mismatch (up to 50) and a summary line; exits 1 on any mismatch.
 *
 * Build: gcc -O2 -I qemu/include/qemu decoder_check.c -lcapstone
 */
#include "../../qemu/slicert_cycles.c"

#include <capstone/capstone.h>

/* The QEMU plugin API is not called here: link stubs. */
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb) { (void)tb; return 0; }
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx)
{ (void)tb; (void)idx; return NULL; }
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn) { (void)insn; return 0; }
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn) { (void)insn; return NULL; }
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn) { (void)insn; return 0; }
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn) { (void)insn; return NULL; }
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn,
                                                enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm)
{ (void)insn; (void)op; (void)ptr; (void)imm; }
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata)
{ (void)insn; (void)cb; (void)flags; (void)userdata; }
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           qemu_plugin_vcpu_tb_trans_cb_t cb)
{ (void)id; (void)cb; }
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata)
{ (void)id; (void)cb; (void)userdata; }

static csh handle;
static cs_insn *cap;
static uint64_t checked, bad;

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

int main(int argc, char **argv)
{
    unsigned samples = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 0) : 256;
    uint64_t x = 0x9E3779B97F4A7C15ull;

    cap_open();
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

/*
 * Arm semihosting, the only channel between the firmware and the host
 * (QEMU -semihosting-config enable=on,target=native): the run's seed from the command
 * line, the output frame on stdout, the stats line on stderr, the exit code.
 * Shared by the bare-metal and Zephyr ports (ports/common/semihost.c).
 */
#ifndef SLICERT_SEMIHOST_H_
#define SLICERT_SEMIHOST_H_

#include <stdint.h>

#define SLICERT_SYS_OPEN 0x01u
#define SLICERT_SYS_WRITE 0x05u
#define SLICERT_SYS_GET_CMDLINE 0x15u
#define SLICERT_SYS_EXIT 0x18u
#define SLICERT_SYS_EXIT_EXTENDED 0x20u
#define SLICERT_ADP_STOPPED_APPLICATION_EXIT 0x20026u

static inline int32_t slicert_semihost(uint32_t op, const void *arg)
{
	register uint32_t r0 __asm__("r0") = op;
	register const void *r1 __asm__("r1") = arg;

	__asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
	return (int32_t)r0;
}

/* "seed=<decimal>" from the command line (QEMU: "<elf> <-append text>"), else 0.
 * `buf` is scratch space for the command line. */
uint32_t slicert_semihost_seed(char *buf, uint32_t size);
/* Write all of buf to ":tt" opened for "w" (stdout) or "a" (stderr). */
void slicert_semihost_stdout(const void *buf, uint32_t n);
void slicert_semihost_stderr(const void *buf, uint32_t n);
/* SYS_EXIT_EXTENDED with `code` (falls back to SYS_EXIT). */
void slicert_semihost_exit(int code) __attribute__((noreturn));

#endif /* SLICERT_SEMIHOST_H_ */

/* Arm semihosting helpers shared by the ports (see slicert/semihost.h). */
#include "slicert/semihost.h"

static int32_t open_tt(uint32_t mode)
{
	static const char tt[] = ":tt";
	uint32_t args[3] = {(uint32_t)tt, mode, 3u};

	return slicert_semihost(SLICERT_SYS_OPEN, args);
}

static void write_all(int32_t fd, const void *buf, uint32_t n)
{
	const uint8_t *p = (const uint8_t *)buf;

	while (n > 0u) {
		uint32_t args[3] = {(uint32_t)fd, (uint32_t)p, n};
		int32_t left = slicert_semihost(SLICERT_SYS_WRITE, args);

		if (fd < 0 || left < 0 || (uint32_t)left >= n) {
			slicert_semihost_exit(1); /* the host is gone: runtime assertion */
		}
		p += n - (uint32_t)left;
		n = (uint32_t)left;
	}
}

void slicert_semihost_stdout(const void *buf, uint32_t n)
{
	static int32_t fd = -1;

	if (fd < 0) {
		fd = open_tt(4u); /* "w" = stdout */
	}
	write_all(fd, buf, n);
}

void slicert_semihost_stderr(const void *buf, uint32_t n)
{
	static int32_t fd = -1;

	if (fd < 0) {
		fd = open_tt(8u); /* "a" = stderr (semihosting extension SH_EXT_STDOUT_STDERR) */
	}
	write_all(fd, buf, n);
}

void slicert_semihost_exit(int code)
{
	uint32_t args[2] = {SLICERT_ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};

	(void)slicert_semihost(SLICERT_SYS_EXIT_EXTENDED, args);
	(void)slicert_semihost(SLICERT_SYS_EXIT, (const void *)SLICERT_ADP_STOPPED_APPLICATION_EXIT);
	for (;;) {
		__asm__ volatile("wfi");
	}
}

uint32_t slicert_semihost_seed(char *buf, uint32_t size)
{
	uint32_t args[2] = {(uint32_t)buf, size - 1u};
	uint32_t i, n, seed = 0;

	if (slicert_semihost(SLICERT_SYS_GET_CMDLINE, args) != 0) {
		return 0;
	}
	n = args[1] < size ? args[1] : size - 1u;
	buf[n] = '\0';
	for (i = 0; i + 5u <= n; i++) {
		if ((i == 0u || buf[i - 1u] == ' ') && buf[i] == 's' && buf[i + 1u] == 'e' &&
		    buf[i + 2u] == 'e' && buf[i + 3u] == 'd' && buf[i + 4u] == '=') {
			uint32_t j = i + 5u;

			seed = 0;
			while (j < n && buf[j] >= '0' && buf[j] <= '9') {
				seed = seed * 10u + (uint32_t)(buf[j] - '0');
				j++;
			}
		}
	}
	return seed;
}

/*
 * The few libc symbols GCC may emit calls to in freestanding code (struct copies,
 * zero-initialised arrays in generated kernels). Byte loops: small and obvious.
 */
#include <stddef.h>

#define SLICERT_NO_PATTERNS __attribute__((optimize("no-tree-loop-distribute-patterns")))

SLICERT_NO_PATTERNS void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = (unsigned char *)dst;

	while (n--) {
		*d++ = (unsigned char)c;
	}
	return dst;
}

SLICERT_NO_PATTERNS void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = (unsigned char *)dst;
	const unsigned char *s = (const unsigned char *)src;

	while (n--) {
		*d++ = *s++;
	}
	return dst;
}

SLICERT_NO_PATTERNS void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = (unsigned char *)dst;
	const unsigned char *s = (const unsigned char *)src;

	if (d < s) {
		while (n--) {
			*d++ = *s++;
		}
	} else {
		while (n--) {
			d[n] = s[n];
		}
	}
	return dst;
}

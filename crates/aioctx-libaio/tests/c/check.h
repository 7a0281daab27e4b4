/* Shared by the drop-in's C test programs: checks that name the failing line, and helpers
   for files, pipes and bad addresses. Each program exits 0 only if every check held. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                               \
			exit(1);                                                      \
		}                                                                     \
	} while (0)

/* `call` returns `want`, and leaves errno as it was (the return carries the error). */
#define CHECK_RET(call, want)                                                          \
	do {                                                                           \
		errno = 4242;                                                          \
		long got_ = (long)(call);                                              \
		if (got_ != (long)(want) || errno != 4242) {                           \
			fprintf(stderr, "%s:%d: %s returned %ld (errno %d), wanted %ld\n", \
				__FILE__, __LINE__, #call, got_, errno, (long)(want));  \
			exit(1);                                                       \
		}                                                                      \
	} while (0)

/* Addresses no call may dereference. */
#define KERNEL_ADDR ((void *)0xffff888000000000UL)
#define MINUS_ONE ((void *)-1L)

/* Reports which library serves io_setup, so the test harness can see it is the drop-in. */
static inline void report_library(void)
{
	Dl_info info;
	CHECK(dladdr((void *)io_setup, &info) != 0);
	printf("libaio: %s\n", info.dli_fname);
}

/* A page no access may touch (PROT_NONE: unlike an unmapped page, its address is never
   handed out again by a later mmap). */
static inline void *unmapped_page(void)
{
	void *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(page != MAP_FAILED);
	return page;
}

/* A zeroed page that may be read but not written. */
static inline void *readonly_page(void)
{
	void *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(page != MAP_FAILED);
	return page;
}

/* A temporary file of `size` bytes, byte i being (i * 7 + seed) & 0xff, opened with `flags`
   and already unlinked. /tmp is where O_DIRECT works here. */
static inline int temp_file(size_t size, int seed, int flags)
{
	char path[] = "/tmp/aioctx-libaio-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	unsigned char *bytes = malloc(size);
	CHECK(bytes != NULL);
	for (size_t i = 0; i < size; i++)
		bytes[i] = (unsigned char)(i * 7 + seed);
	CHECK(pwrite(fd, bytes, size, 0) == (ssize_t)size);
	CHECK(fsync(fd) == 0);
	free(bytes);
	close(fd);
	fd = open(path, flags);
	CHECK(fd >= 0);
	CHECK(unlink(path) == 0);
	return fd;
}

static inline unsigned char file_byte(size_t offset, int seed)
{
	return (unsigned char)(offset * 7 + seed);
}

/* Writes `seed`'s bytes (file_byte) over the first `size` bytes of the file `fd` names,
   through the page cache, and leaves the pages dirty: an O_DIRECT read of them then waits
   for the kernel to write them back first. */
static inline void dirty_pages(int fd, size_t size, int seed)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int buffered = open(path, O_WRONLY);
	CHECK(buffered >= 0);
	unsigned char *bytes = malloc(size);
	CHECK(bytes != NULL);
	for (size_t i = 0; i < size; i++)
		bytes[i] = file_byte(i, seed);
	CHECK(pwrite(buffered, bytes, size, 0) == (ssize_t)size);
	free(bytes);
	close(buffered);
}

/* Waits for exactly `n` events (5 s at most) into `events`. */
static inline void reap(io_context_t ctx, int n, struct io_event *events)
{
	struct timespec limit = {5, 0};
	int got = 0;
	while (got < n) {
		int ret = io_getevents(ctx, n - got, n - got, events + got, &limit);
		CHECK(ret > 0);
		got += ret;
	}
}

/* Checks that each of `n` events is a whole read of `len` bytes whose buffer holds the
   file's bytes (file_byte of `seed`) at its iocb's offset, looked at every 512 bytes. */
static inline void check_whole_reads(const struct io_event *events, int n, size_t len, int seed)
{
	for (int i = 0; i < n; i++) {
		CHECK(events[i].res == len);
		unsigned char *buf = events[i].obj->u.c.buf;
		size_t offset = (size_t)events[i].obj->u.c.offset;
		for (size_t j = 0; j < len; j += 512)
			CHECK(buf[j] == file_byte(offset + j, seed));
	}
}

static inline void *aligned(size_t size)
{
	void *buf = NULL;
	CHECK(posix_memalign(&buf, 4096, size) == 0);
	memset(buf, 0, size);
	return buf;
}

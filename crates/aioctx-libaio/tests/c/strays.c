/* A program that closes low descriptor numbers it did not open (a double close, a cleanup
   loop over the first few hundred) while a context has requests in flight, then opens
   pipes that take the freed numbers. The library keeps its own descriptors above them:
   the requests in flight complete whole, later ones work, destroy returns, and nothing of
   the library's lands in the program's pipes. On the kernel, contexts are no descriptors,
   so this always holds there. */
#include "check.h"
#include <signal.h>

#define SIZE (1 << 20)
#define N 8
#define CLOSED_BELOW 256
#define PIPES 16

/* Reads N blocks of `fd` at spread offsets into `bufs` and returns once all N are in. */
static void submit_reads(io_context_t ctx, int fd, unsigned char *bufs, struct iocb *iocbs)
{
	struct iocb *list[N];
	for (int i = 0; i < N; i++) {
		io_prep_pread(&iocbs[i], fd, bufs + i * 4096, 4096, (off_t)i * 65536);
		list[i] = &iocbs[i];
	}
	CHECK_RET(io_submit(ctx, N, list), N);
}

static void reap_whole(io_context_t ctx, int seed, unsigned char *bufs)
{
	struct io_event events[N];
	reap(ctx, N, events);
	check_whole_reads(events, N, 4096, seed);
	for (int i = 0; i < N; i++) {
		unsigned char *buf = events[i].obj->u.c.buf;
		CHECK(buf >= bufs && buf < bufs + N * 4096);
	}
}

int main(void)
{
	report_library();
	/* A hang is a failure, not a stuck test run. */
	alarm(30);
	int direct = temp_file(SIZE, 3, O_RDONLY | O_DIRECT);
	int cold = temp_file(SIZE, 5, O_RDONLY);
	CHECK(posix_fadvise(cold, 0, SIZE, POSIX_FADV_DONTNEED) == 0);
	/* Fewer workers than the warm-up's reads (set before the pool is made). */
	CHECK(setenv("AIOCTX_WORKERS", "4", 1) == 0);
	io_context_t ctx = 0;
	CHECK_RET(io_setup(4 * N, &ctx), 0);
	unsigned char *bufs = aligned(4 * N * 4096);
	static struct iocb iocbs[4 * N];
	/* First a wait (the waiting thread's own wake-up descriptor is made), and more cold
	   reads in flight than the pool has workers: the pool is at its size before the
	   program closes numbers below. (A thread that starts meanwhile opens files of its
	   own, glibc the CPU list for its malloc arena, under numbers the loop may close: a
	   race of the program's with any thread's start, not one of the library's
	   descriptors.) */
	submit_reads(ctx, direct, bufs, iocbs);
	reap_whole(ctx, 3, bufs);
	for (int round = 0; round < 4; round++)
		submit_reads(ctx, cold, bufs + round * N * 4096, iocbs + round * N);
	struct io_event warm[4 * N];
	reap(ctx, 4 * N, warm);
	for (int i = 0; i < 4 * N; i++)
		CHECK(warm[i].res == 4096);
	CHECK(posix_fadvise(cold, 0, SIZE, POSIX_FADV_DONTNEED) == 0);

	submit_reads(ctx, direct, bufs, iocbs);
	submit_reads(ctx, cold, bufs + N * 4096, iocbs + N);
	for (int fd = 3; fd < CLOSED_BELOW; fd++)
		if (fd != direct && fd != cold)
			close(fd);
	int pipes[PIPES][2];
	for (int i = 0; i < PIPES; i++)
		CHECK(pipe2(pipes[i], O_NONBLOCK) == 0);

	struct io_event events[2 * N];
	reap(ctx, 2 * N, events);
	for (int i = 0; i < 2 * N; i++)
		CHECK(events[i].res == 4096);

	submit_reads(ctx, direct, bufs + 2 * N * 4096, iocbs + 2 * N);
	reap_whole(ctx, 3, bufs + 2 * N * 4096);
	CHECK(posix_fadvise(cold, 0, SIZE, POSIX_FADV_DONTNEED) == 0);
	submit_reads(ctx, cold, bufs + 3 * N * 4096, iocbs + 3 * N);
	reap_whole(ctx, 5, bufs + 3 * N * 4096);
	CHECK_RET(io_destroy(ctx), 0);

	for (int i = 0; i < PIPES; i++) {
		char byte;
		CHECK(read(pipes[i][0], &byte, 1) == -1 && errno == EAGAIN);
	}
	return 0;
}

/* A program that closes every descriptor number but its own files (closefrom(3), as a
   daemon's cleanup or a test harness between cases does) while a context is set up and
   has been used, then fills every free number with files that always poll ready, and
   goes on using the context. The library's own descriptors are gone, some numbers now
   name the program's files: requests still complete whole, waits neither hang nor
   return early, destroy returns, and a new context works too. */
#include "check.h"
#include <signal.h>
#include <sys/resource.h>

#define SIZE (1 << 20)
#define N 8

static void round_trip(io_context_t ctx, int fd, int seed, unsigned char *bufs)
{
	static struct iocb iocbs[N];
	struct iocb *list[N];
	for (int i = 0; i < N; i++) {
		io_prep_pread(&iocbs[i], fd, bufs + i * 4096, 4096, (off_t)i * 65536);
		list[i] = &iocbs[i];
	}
	CHECK_RET(io_submit(ctx, N, list), N);
	struct io_event events[N];
	reap(ctx, N, events);
	check_whole_reads(events, N, 4096, seed);
}

int main(void)
{
	report_library();
	/* A hang is a failure, not a stuck test run. */
	alarm(30);
	struct rlimit limit;
	CHECK(getrlimit(RLIMIT_NOFILE, &limit) == 0);
	limit.rlim_cur = limit.rlim_cur > 1024 ? 1024 : limit.rlim_cur;
	CHECK(setrlimit(RLIMIT_NOFILE, &limit) == 0);
	int direct = temp_file(SIZE, 3, O_RDONLY | O_DIRECT);
	int buffered = temp_file(SIZE, 5, O_RDONLY);
	CHECK(direct < buffered);
	io_context_t ctx = 0;
	CHECK_RET(io_setup(4 * N, &ctx), 0);
	unsigned char *bufs = aligned(N * 4096);
	round_trip(ctx, direct, 3, bufs);
	round_trip(ctx, buffered, 5, bufs);

	for (int fd = 3; fd < (int)limit.rlim_cur; fd++)
		if (fd != direct && fd != buffered)
			close(fd);
	/* Every free number now names /dev/null, which always polls readable; a few are let
	   go again, for descriptors the library may make anew. */
	int last = -1;
	for (int fd; (fd = open("/dev/null", O_RDONLY)) >= 0;)
		last = fd;
	CHECK(errno == EMFILE && last > buffered);
	for (int fd = last; fd > last - 16; fd--)
		close(fd);

	for (int round = 0; round < 4; round++) {
		round_trip(ctx, direct, 3, bufs);
		round_trip(ctx, buffered, 5, bufs);
	}
	/* A wait with nothing to come times out; it does not return early. */
	struct io_event event;
	struct timespec brief = {0, 20 * 1000 * 1000};
	CHECK_RET(io_getevents(ctx, 1, 1, &event, &brief), 0);
	CHECK_RET(io_destroy(ctx), 0);

	io_context_t fresh = 0;
	CHECK_RET(io_setup(4 * N, &fresh), 0);
	round_trip(fresh, direct, 3, bufs);
	CHECK_RET(io_destroy(fresh), 0);
	return 0;
}

/* A steady stream of 4 KiB reads in batches of 16, for counting the system calls the
   library makes per request (the test runs it under strace -c -f). Usage:
   syscalls REQUESTS buffered|direct */
#include "check.h"

#define BATCH 16
#define FILE_SIZE (1 << 20)

int main(int argc, char **argv)
{
	report_library();
	CHECK(argc == 3);
	long requests = atol(argv[1]);
	int direct = strcmp(argv[2], "direct") == 0;
	int file = temp_file(FILE_SIZE, 6, O_RDONLY | (direct ? O_DIRECT : 0));
	io_context_t ctx = 0;
	CHECK_RET(io_setup(BATCH * 2, &ctx), 0);
	unsigned char *bufs = aligned(BATCH * 4096);
	struct iocb iocbs[BATCH];
	struct iocb *list[BATCH];
	struct io_event events[BATCH];
	for (long done = 0; done < requests; done += BATCH) {
		for (int i = 0; i < BATCH; i++) {
			off_t offset = ((done + i) * 4096) % FILE_SIZE;
			io_prep_pread(&iocbs[i], file, bufs + i * 4096, 4096, offset);
			list[i] = &iocbs[i];
		}
		CHECK_RET(io_submit(ctx, BATCH, list), BATCH);
		reap(ctx, BATCH, events);
		for (int i = 0; i < BATCH; i++)
			CHECK(events[i].res == 4096);
	}
	CHECK_RET(io_destroy(ctx), 0);
	return 0;
}

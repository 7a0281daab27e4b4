/* A steady stream of 4 KiB reads, for counting the system calls the library makes per
   request (the test runs it under strace -c -f). DEPTH requests are kept in flight,
   submitted BATCH per io_submit as events come back BATCH at a time (fio's way with
   --iodepth_batch_submit and --iodepth_batch_complete_min). "cold" reads are buffered
   reads of pages dropped from the cache after every reap, so that each waits for the
   device. Usage:
   syscalls REQUESTS buffered|direct|cold [BATCH [DEPTH]]   (default: 16 16) */
#include "check.h"

#define MAX_DEPTH 256
#define FILE_SIZE (1 << 20)

int main(int argc, char **argv)
{
	report_library();
	CHECK(argc == 3 || argc == 4 || argc == 5);
	long requests = atol(argv[1]);
	int direct = strcmp(argv[2], "direct") == 0;
	int cold = strcmp(argv[2], "cold") == 0;
	CHECK(direct || cold || strcmp(argv[2], "buffered") == 0);
	int batch = argc > 3 ? atoi(argv[3]) : 16;
	int depth = argc > 4 ? atoi(argv[4]) : batch;
	CHECK(batch > 0 && depth >= batch && depth <= MAX_DEPTH && depth % batch == 0);
	int file = temp_file(FILE_SIZE, 6, O_RDONLY | (direct ? O_DIRECT : 0));
	io_context_t ctx = 0;
	CHECK_RET(io_setup(depth * 2, &ctx), 0);
	unsigned char *bufs = aligned((size_t)depth * 4096);
	static struct iocb iocbs[MAX_DEPTH];
	static struct iocb *free_iocbs[MAX_DEPTH];
	static struct io_event events[MAX_DEPTH];
	for (int i = 0; i < depth; i++)
		free_iocbs[i] = &iocbs[i];
	int free_count = depth;
	long submitted = 0, reaped = 0;
	while (reaped < requests) {
		while (free_count >= batch && submitted < requests) {
			struct iocb **list = &free_iocbs[free_count - batch];
			for (int i = 0; i < batch; i++) {
				long slot = list[i] - iocbs;
				off_t offset = ((submitted + i) * 4096) % FILE_SIZE;
				io_prep_pread(list[i], file, bufs + slot * 4096, 4096, offset);
			}
			CHECK_RET(io_submit(ctx, batch, list), batch);
			free_count -= batch;
			submitted += batch;
		}
		int want = submitted - reaped < batch ? (int)(submitted - reaped) : batch;
		reap(ctx, want, events);
		for (int i = 0; i < want; i++) {
			CHECK(events[i].res == 4096);
			free_iocbs[free_count++] = events[i].obj;
		}
		reaped += want;
		/* Pages of reads still in flight stay; the next batch's are read from the disk. */
		if (cold)
			CHECK(posix_fadvise(file, 0, FILE_SIZE, POSIX_FADV_DONTNEED) == 0);
	}
	CHECK_RET(io_destroy(ctx), 0);
	return 0;
}

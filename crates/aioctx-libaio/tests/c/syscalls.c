/* A steady stream of 4 KiB reads, for counting the system calls the library makes per
   request (the test runs it under strace -c -f). DEPTH requests are kept in flight,
   submitted BATCH per io_submit as events come back BATCH at a time (fio's way with
   --iodepth_batch_submit and --iodepth_batch_complete_min). "cold" reads are buffered
   reads of pages dropped from the cache after every reap, so that each waits for the
   device. With "+eventfd" every request also signals one eventfd (QEMU's way), which the
   program reads before it reaps. Usage:
   syscalls REQUESTS buffered|direct|cold[+eventfd] [BATCH [DEPTH]]   (default: 16 16) */
#include "check.h"
#include <sys/eventfd.h>

#define MAX_DEPTH 256
#define FILE_SIZE (1 << 20)

int main(int argc, char **argv)
{
	report_library();
	CHECK(argc == 3 || argc == 4 || argc == 5);
	long requests = atol(argv[1]);
	char mode[32];
	snprintf(mode, sizeof(mode), "%s", argv[2]);
	char *plus = strchr(mode, '+');
	int efd = -1;
	if (plus) {
		CHECK(strcmp(plus, "+eventfd") == 0);
		*plus = 0;
		efd = eventfd(0, EFD_CLOEXEC);
	}
	int direct = strcmp(mode, "direct") == 0;
	int cold = strcmp(mode, "cold") == 0;
	CHECK(direct || cold || strcmp(mode, "buffered") == 0);
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
				if (efd >= 0)
					io_set_eventfd(list[i], efd);
			}
			CHECK_RET(io_submit(ctx, batch, list), batch);
			free_count -= batch;
			submitted += batch;
		}
		int want = submitted - reaped < batch ? (int)(submitted - reaped) : batch;
		/* The eventfd counts what is in the ring already: reap that much at least. */
		for (uint64_t signalled = 0; efd >= 0 && signalled < (uint64_t)want;) {
			uint64_t count;
			CHECK(read(efd, &count, sizeof(count)) == sizeof(count));
			signalled += count;
			if (signalled > (uint64_t)want)
				want = signalled;
		}
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

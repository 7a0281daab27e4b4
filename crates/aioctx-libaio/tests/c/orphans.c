/* Requests on regular files whose submitting thread exits as soon as io_submit returned:
   every event comes with its whole result and the data is right. On io_uring such a
   request is tied to the thread that submitted it, and the kernel cancels what of it is
   still queued when that thread exits (a request on a C caller's number holds no copy of
   the fd there, so it cannot be submitted again later: the thread waits for it as it
   exits). The requests here are the ones that wait in the kernel: buffered reads of a
   file not in the page cache (woken when the page is read, to be issued again on the
   submitting thread), O_DIRECT reads of a file whose pages are dirty (the kernel writes
   them back first, in its workers) and buffered writes with RWF_DSYNC (which wait for the
   device in a worker, one at a time per file). */
#include "check.h"
#include <sys/uio.h>

#define BLOCK 4096
#define READS 32
#define WRITES 32
#define COLD 32
#define ALL (READS + WRITES + COLD)
#define ROUNDS 8

struct round {
	io_context_t ctx;
	int direct; /* the file read, O_DIRECT */
	int out;    /* the file written, buffered */
	int cold;   /* the file read, buffered, evicted from the page cache */
	unsigned char *reads;
	unsigned char *writes;
	unsigned char *colds;
	struct iocb iocbs[ALL];
};

static void *submit_and_exit(void *arg)
{
	struct round *round = arg;
	struct iocb *list[ALL];
	for (int i = 0; i < READS; i++) {
		io_prep_pread(&round->iocbs[i], round->direct, round->reads + i * BLOCK, BLOCK,
			      (long long)i * BLOCK);
		list[i] = &round->iocbs[i];
	}
	for (int i = 0; i < WRITES; i++) {
		struct iocb *iocb = &round->iocbs[READS + i];
		io_prep_pwrite(iocb, round->out, round->writes + i * BLOCK, BLOCK,
			       (long long)i * BLOCK);
		iocb->aio_rw_flags = RWF_DSYNC;
		list[READS + i] = iocb;
	}
	for (int i = 0; i < COLD; i++) {
		struct iocb *iocb = &round->iocbs[READS + WRITES + i];
		io_prep_pread(iocb, round->cold, round->colds + i * BLOCK, BLOCK, (long long)i * BLOCK);
		list[READS + WRITES + i] = iocb;
	}
	CHECK_RET(io_submit(round->ctx, ALL, list), ALL);
	return NULL;
}

int main(void)
{
	report_library();
	static struct round round;
	CHECK_RET(io_setup(ALL, &round.ctx), 0);
	round.direct = temp_file(READS * BLOCK, 1, O_RDONLY | O_DIRECT);
	round.out = temp_file(WRITES * BLOCK, 2, O_RDWR);
	round.cold = temp_file(COLD * BLOCK, 3, O_RDONLY);
	round.reads = aligned(READS * BLOCK);
	round.writes = aligned(WRITES * BLOCK);
	round.colds = aligned(COLD * BLOCK);
	unsigned char *back = aligned(WRITES * BLOCK);
	for (int r = 0; r < ROUNDS; r++) {
		int seed = 10 + r;
		dirty_pages(round.direct, READS * BLOCK, seed);
		memset(round.reads, 0, READS * BLOCK);
		memset(round.colds, 0, COLD * BLOCK);
		CHECK(posix_fadvise(round.cold, 0, 0, POSIX_FADV_DONTNEED) == 0);
		for (size_t i = 0; i < WRITES * BLOCK; i++)
			round.writes[i] = file_byte(i, seed + 100);
		pthread_t thread;
		CHECK(pthread_create(&thread, NULL, submit_and_exit, &round) == 0);
		CHECK(pthread_join(thread, NULL) == 0);
		struct io_event events[ALL];
		reap(round.ctx, ALL, events);
		for (int e = 0; e < ALL; e++) {
			if (events[e].res != BLOCK)
				fprintf(stderr, "round %d: iocb %ld: res %ld\n", r,
					(long)(events[e].obj - round.iocbs), (long)events[e].res);
			CHECK(events[e].res == BLOCK);
		}
		for (size_t i = 0; i < READS * BLOCK; i++)
			CHECK(round.reads[i] == file_byte(i, seed));
		for (size_t i = 0; i < COLD * BLOCK; i++)
			CHECK(round.colds[i] == file_byte(i, 3));
		CHECK(pread(round.out, back, WRITES * BLOCK, 0) == WRITES * BLOCK);
		for (size_t i = 0; i < WRITES * BLOCK; i++)
			CHECK(back[i] == file_byte(i, seed + 100));
	}
	CHECK_RET(io_destroy(round.ctx), 0);
	free(back);
	free(round.reads);
	free(round.writes);
	free(round.colds);
	close(round.cold);
	close(round.direct);
	close(round.out);
	return 0;
}

/* SPEC §2 IOCB_FLAG_RESFD: the event is in the ring before the eventfd moves, so a reader
   that reads N from the eventfds reaps exactly N events without waiting, and every
   request counts once on its own eventfd. Buffered reads (done inside io_submit), and
   O_DIRECT reads, which complete later in bursts taken at once, with requests of one
   batch spread over one eventfd or two. */
#include "check.h"
#include <poll.h>
#include <sys/eventfd.h>

#define TOTAL 400
#define BATCH 20
#define SIZE 4096

static void run(int direct, int eventfds)
{
	io_context_t ctx = 0;
	CHECK_RET(io_setup(TOTAL, &ctx), 0);
	int efd[2];
	for (int e = 0; e < eventfds; e++)
		efd[e] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int file = temp_file((size_t)TOTAL * SIZE, 2, O_RDONLY | (direct ? O_DIRECT : 0));
	unsigned char *bufs = aligned((size_t)TOTAL * SIZE);
	static struct iocb iocbs[TOTAL];
	struct iocb *list[BATCH];
	struct io_event events[TOTAL];
	struct timespec zero = {0, 0};
	int submitted = 0, reaped = 0;
	uint64_t signalled[2] = {0, 0};
	while (reaped < TOTAL) {
		if (submitted < TOTAL) {
			for (int i = 0; i < BATCH; i++) {
				int n = submitted + i;
				io_prep_pread(&iocbs[n], file, bufs + (size_t)n * SIZE, SIZE,
					      (long long)n * SIZE);
				io_set_eventfd(&iocbs[n], efd[n % eventfds]);
				list[i] = &iocbs[n];
			}
			CHECK_RET(io_submit(ctx, BATCH, list), BATCH);
			submitted += BATCH;
		}
		struct pollfd pfds[2];
		for (int e = 0; e < eventfds; e++)
			pfds[e] = (struct pollfd){.fd = efd[e], .events = POLLIN};
		CHECK(poll(pfds, eventfds, 10000) > 0);
		uint64_t ready = 0;
		for (int e = 0; e < eventfds; e++) {
			uint64_t count;
			if (read(efd[e], &count, sizeof(count)) == sizeof(count)) {
				ready += count;
				signalled[e] += count;
			} else {
				CHECK(errno == EAGAIN);
			}
		}
		CHECK(ready >= 1 && ready <= (uint64_t)(submitted - reaped));
		CHECK_RET(io_getevents(ctx, ready, ready, events, &zero), (long)ready);
		for (uint64_t i = 0; i < ready; i++) {
			size_t index = (struct iocb *)events[i].obj - iocbs;
			CHECK(index < TOTAL && events[i].res == SIZE);
			CHECK(bufs[index * SIZE + 5] == file_byte(index * SIZE + 5, 2));
		}
		reaped += ready;
	}
	/* Each request counted once, on the eventfd it named, and nothing more. */
	for (int e = 0; e < eventfds; e++) {
		CHECK(signalled[e] == TOTAL / eventfds);
		uint64_t count;
		CHECK(read(efd[e], &count, sizeof(count)) == -1 && errno == EAGAIN);
		close(efd[e]);
	}
	CHECK_RET(io_destroy(ctx), 0);
	close(file);
	free(bufs);
}

int main(void)
{
	report_library();
	run(0, 1);
	run(1, 1);
	run(1, 2);
	puts("ok");
	return 0;
}
